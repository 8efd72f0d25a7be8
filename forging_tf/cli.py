"""What every binary shares: one-line errors, the data and platform flags, its command line.

Only binaries import this module (flags are defined in binaries, never in libraries). Importing it
does not load TensorFlow, so that forging-tables and forging-reproduce run without it; the
binaries that compute define the platform flags (define_platform_flags), whose holder loads
TensorFlow when it is first asked for the platform.
"""

import os
import shlex
import sys
from collections.abc import Callable

from absl import app
from absl import flags

import forging_tf
from forging_tf import data
from forging_tf import errors

_REEXEC_GUARD = "FORGING_TF_ONEDNN_REEXEC"


def define_data_flags():
  """--data_dir and --download, for the binaries that load a dataset; returns their holders."""
  data_dir = flags.DEFINE_string(
      "data_dir",
      None,
      f"Local data directory (default: ${data.DATA_DIR_ENV}, then tensorflow-datasets' own).",
  )
  download = flags.DEFINE_boolean(
      "download", True, "Let tensorflow-datasets download a dataset when no local copy is found."
  )
  return data_dir, download


def define_model_fn_flag():
  """--model_fn, for the binaries that compute on a trace; returns its holder."""
  return flags.DEFINE_string(
      "model_fn",
      None,
      "For a trace written by keras.Model.fit (forging_tf.keras): module:function, your "
      "function that builds its model (looked up from the working folder if not installed).",
  )


def define_executor_flags(ray_work: str):
  """--executor and --ray_address, for the binaries that can run their work as Ray tasks
  (`ray_work` says what runs as a task); returns their holders."""
  from forging_tf import ray_util  # pylint: disable=import-outside-toplevel

  executor = flags.DEFINE_enum_class(
      "executor",
      ray_util.Executor.LOCAL,
      ray_util.Executor,
      f"local: on this machine; ray: {ray_work} as Ray tasks.",
      case_sensitive=False,
  )
  ray_address = flags.DEFINE_string(
      "ray_address", None, "Ray cluster to join (default: start a local one on 127.0.0.1)."
  )
  return executor, ray_address


class PlatformFlags:
  """The flags that choose a platform (platform.Platform); made by define_platform_flags()."""

  def __init__(self):
    self._device = flags.DEFINE_string("device", "cpu", "Device to compute on: cpu or gpu:N.")
    self._deterministic = flags.DEFINE_boolean(
        "deterministic",
        True,
        "Op determinism (tf.config.experimental.enable_op_determinism); "
        "false lets GPUs auto-tune.",
    )
    self._intra_op_threads = flags.DEFINE_integer(
        "intra_op_threads", 0, "Intra-op threads (0: TensorFlow's default).", lower_bound=0
    )
    self._inter_op_threads = flags.DEFINE_integer(
        "inter_op_threads", 0, "Inter-op threads (0: TensorFlow's default).", lower_bound=0
    )
    self._onednn = flags.DEFINE_enum(
        "onednn",
        "default",
        ["default", "on", "off"],
        "oneDNN custom ops "
        "(TF_ENABLE_ONEDNN_OPTS); the binary re-executes itself if TensorFlow was imported with "
        "the other setting.",
    )
    self._tf32 = flags.DEFINE_boolean("tf32", False, "TensorFloat-32 on GPUs (off: full float32).")

  def requested(self):
    """The platform.Platform the flags ask for.

    TF_ENABLE_ONEDNN_OPTS is read when TensorFlow is imported, which the binary has done by now:
    if --onednn asks for the other setting, this runs the same command again with the variable
    set (so a binary asks first, before it does any work).
    """
    from forging_tf import platform as platform_lib  # pylint: disable=import-outside-toplevel

    onednn = {"default": None, "on": True, "off": False}[self._onednn.value]
    if onednn is not None and onednn != platform_lib.onednn_enabled():
      if os.environ.get(_REEXEC_GUARD):
        raise errors.PlatformError(
            f"--onednn={self._onednn.value} has no effect with this TensorFlow build"
        )
      os.environ[platform_lib.ONEDNN_ENV] = "1" if onednn else "0"
      os.environ[_REEXEC_GUARD] = "1"
      sys.stdout.flush()
      sys.stderr.flush()
      os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    return platform_lib.Platform(
        device=self._device.value,
        deterministic=self._deterministic.value,
        intra_op_threads=self._intra_op_threads.value,
        inter_op_threads=self._inter_op_threads.value,
        onednn=onednn,
        tf32=self._tf32.value,
    )

  def applied(self):
    """requested(), applied to this process (platform.apply_platform)."""
    from forging_tf import platform as platform_lib  # pylint: disable=import-outside-toplevel

    platform = self.requested()
    platform_lib.apply_platform(platform)
    return platform


def define_platform_flags() -> PlatformFlags:
  """--device, --deterministic, --intra_op_threads, --inter_op_threads, --onednn and --tf32, for
  the binaries that compute; returns their holder."""
  return PlatformFlags()


def program_name() -> str:
  """The forging-* command this process runs, also when it runs as `python -m MODULE` (else the
  script's name)."""
  spec = getattr(sys.modules["__main__"], "__spec__", None)
  commands = {module: command for command, module in forging_tf.COMMANDS.items()}
  return (commands.get(spec.name) if spec else None) or os.path.basename(sys.argv[0])


def command_line() -> str:
  """The command as the user typed it, for the results to record: program_name() and the
  arguments, quoted for a shell."""
  return shlex.join([program_name(), *sys.argv[1:]])


def parse_step_range(text: str) -> tuple[int, int | None]:
  """'START:END' -> (START, END); a missing START is 0, a missing END is None (the trace's T)."""
  start, colon, stop = text.partition(":")
  try:
    if not colon:
      raise ValueError
    return (int(start) if start.strip() else 0), (int(stop) if stop.strip() else None)
  except ValueError:
    raise errors.ConfigError(f"--steps={text!r} is not START:END (e.g. --steps=0:600)") from None


def trace_and_dataset(trace_path: str, data_dir: str | None, download: bool):
  """The trace at trace_path and the dataset it names. The fingerprint is checked later, by the
  library, so that cheaper flag errors are reported first."""
  from forging_tf import trace as trace_lib  # pylint: disable=import-outside-toplevel

  trace = trace_lib.Trace(trace_path)
  return trace, data.load_dataset(trace.manifest["dataset"]["name"], data_dir, download)


def run(main: Callable[[], None]) -> None:
  """Runs a binary: absl parses the flags, then main() runs; stray arguments and the package's
  errors are one line on stderr and a nonzero exit."""
  program = program_name()

  def guarded_main(argv):
    try:
      if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
      return main()
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
