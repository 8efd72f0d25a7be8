"""What every binary shares: the platform flags, one-line errors and the oneDNN re-exec.

Only binaries import this module (flags are defined in binaries, never in libraries).
"""

import os
import sys

from absl import app
from absl import flags

from forging_tf import data
from forging_tf import errors
from forging_tf import platform as platform_lib
from forging_tf import trace as trace_lib

DEVICE = flags.DEFINE_string("device", "cpu", "Device to compute on: cpu or gpu:N.")
DETERMINISTIC = flags.DEFINE_boolean(
    "deterministic", True, "Op determinism (tf.config.experimental.enable_op_determinism); "
    "false lets GPUs auto-tune.")
INTRA_OP_THREADS = flags.DEFINE_integer("intra_op_threads", 0,
                                        "Intra-op threads (0: TensorFlow's default).",
                                        lower_bound=0)
INTER_OP_THREADS = flags.DEFINE_integer("inter_op_threads", 0,
                                        "Inter-op threads (0: TensorFlow's default).",
                                        lower_bound=0)
ONEDNN = flags.DEFINE_enum("onednn", "default", ["default", "on", "off"],
                           "oneDNN custom ops (TF_ENABLE_ONEDNN_OPTS); the binary re-executes "
                           "itself if TensorFlow was imported with the other setting.")
TF32 = flags.DEFINE_boolean("tf32", False, "TensorFloat-32 on GPUs (off: full float32).")

_REEXEC_GUARD = "FORGING_TF_ONEDNN_REEXEC"


def define_data_flags():
  """--data_dir and --download, for the binaries that load a dataset; returns their holders."""
  data_dir = flags.DEFINE_string(
      "data_dir", None, f"Local data directory (default: ${data.DATA_DIR_ENV}, then "
      "tensorflow-datasets' own).")
  download = flags.DEFINE_boolean("download", True, "Let tensorflow-datasets download a dataset "
                                  "when no local copy is found.")
  return data_dir, download


def platform_from_flags() -> platform_lib.Platform:
  onednn = {"default": None, "on": True, "off": False}[ONEDNN.value]
  return platform_lib.Platform(device=DEVICE.value, deterministic=DETERMINISTIC.value,
                               intra_op_threads=INTRA_OP_THREADS.value,
                               inter_op_threads=INTER_OP_THREADS.value, onednn=onednn,
                               tf32=TF32.value)


def honour_onednn_flag() -> None:
  """TF_ENABLE_ONEDNN_OPTS is read when TensorFlow is imported, which a binary has already done
  by now; if --onednn asks for the other setting, run this same command again with the variable
  set."""
  if ONEDNN.value == "default" or (ONEDNN.value == "on") == platform_lib.onednn_enabled():
    return
  if os.environ.get(_REEXEC_GUARD):
    raise errors.PlatformError(f"--onednn={ONEDNN.value} has no effect with this TensorFlow "
                               "build")
  os.environ[platform_lib.ONEDNN_ENV] = "1" if ONEDNN.value == "on" else "0"
  os.environ[_REEXEC_GUARD] = "1"
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def applied_platform() -> platform_lib.Platform:
  """The platform the flags ask for, applied to this process (re-executing it for --onednn)."""
  honour_onednn_flag()
  platform = platform_from_flags()
  platform_lib.apply_platform(platform)
  return platform


def trace_and_dataset(trace_path: str, data_dir: str | None, download: bool):
  """The trace at trace_path and the dataset it names. The fingerprint is checked later, by the
  library, so that cheaper flag errors are reported first."""
  trace = trace_lib.Trace(trace_path)
  return trace, data.load_dataset(trace.manifest["dataset"]["name"], data_dir, download)


def run(main) -> None:
  """app.run(main), with the package's errors printed as one line and a nonzero exit."""
  program = os.path.basename(sys.argv[0])

  def guarded_main(argv):
    try:
      return main(argv)
    except errors.ForgingError as e:
      sys.exit(f"{program}: error: {e}")
    except app.UsageError as e:  # absl would print the whole usage text before the error.
      sys.exit(f"{program}: error: {e} (see --helpshort)")
    except OSError as e:  # A file or folder named by a flag that cannot be read or written.
      sys.exit(f"{program}: error: {e}")
    except KeyboardInterrupt:
      sys.exit(f"{program}: interrupted; run the same command again to continue")

  def parse_flags(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      sys.exit(f"{program}: error: {e} (see --helpshort)")

  app.run(guarded_main, flags_parser=parse_flags)
