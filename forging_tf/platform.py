"""Platform control: everything that changes floating-point order, applied and recorded here.

A platform (SPEC section 2) is: device, op determinism, intra/inter-op threads, oneDNN, TF32 and
XLA, plus the software and hardware underneath. `apply_platform` configures this process;
`platform_fingerprint` records what is in force, and goes into every trace and every result.

Two settings have to be chosen early:
- oneDNN is read from TF_ENABLE_ONEDNN_OPTS when TensorFlow is imported. A process that imported
  TensorFlow with the other setting cannot switch; the binaries re-execute themselves
  (cli.PlatformFlags.requested), library callers get a PlatformError that says which variable to
  set.
- Thread counts are fixed once TensorFlow's runtime has started (the first op).

XLA is always off: Keras 3 compiles with XLA by default, XLA reorders arithmetic, and max-pool
gradients have no deterministic XLA kernel. Every tf.function in the package passes
jit_compile=False and auto-clustering is switched off here.
"""

import dataclasses
import hashlib
import json
import os
import platform as python_platform
import re
import sys

import numpy as np
import tensorflow as tf

# No public API says whether op determinism or oneDNN is in force, or switches determinism off
# again; these internal ones do.
from tensorflow.python.framework import config as tf_config
from tensorflow.python.util import _pywrap_util_port

from forging_tf import errors

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
_SIMD_FLAGS = re.compile(r"^(sse\d.*|ssse3|avx.*|fma\w*|f16c|amx\w*|neon|asimd\w*|sve\w*)$")


@dataclasses.dataclass(frozen=True)
class Platform:
  """The settings a user chooses. 0 threads means TensorFlow's default; onednn None means the
  build's default (on for x86 Linux builds)."""

  device: str = "cpu"
  deterministic: bool = True
  intra_op_threads: int = 0
  inter_op_threads: int = 0
  onednn: bool | None = None
  tf32: bool = False

  def __post_init__(self):
    if not re.fullmatch(r"cpu|gpu:\d+", self.device):
      raise errors.ConfigError(f"device {self.device!r} is neither 'cpu' nor 'gpu:N'")
    if self.intra_op_threads < 0 or self.inter_op_threads < 0:
      raise errors.ConfigError("thread counts must be >= 0 (0 = TensorFlow's default)")


def onednn_enabled() -> bool:
  """Whether oneDNN custom ops are on in this process (fixed when TensorFlow was imported)."""
  return bool(_pywrap_util_port.IsMklEnabled())


def apply_platform(platform: Platform) -> None:
  """Configures this process for `platform`; raises PlatformError where it cannot."""
  if platform.onednn is not None and platform.onednn != onednn_enabled():
    want = "1" if platform.onednn else "0"
    raise errors.PlatformError(
        f"oneDNN is {'on' if onednn_enabled() else 'off'} in this process and can only be "
        f"changed before TensorFlow is imported: set {ONEDNN_ENV}={want} in the environment "
        "(the binaries' --onednn flag does this)"
    )
  _apply_devices(platform)
  _apply_threads(platform)
  if platform.deterministic:
    tf.config.experimental.enable_op_determinism()
  else:
    tf_config.disable_op_determinism()  # Not in the public API; off is the default.
  tf.config.experimental.enable_tensor_float_32_execution(platform.tf32)
  tf.config.optimizer.set_jit(False)


def _apply_devices(platform: Platform) -> None:
  gpus = tf.config.list_physical_devices("GPU")
  wanted = [] if platform.device == "cpu" else [int(platform.device.split(":")[1])]
  if wanted and not gpus:
    raise errors.PlatformError(
        f"device {platform.device} asked for, but this process sees no "
        "GPU; use --device=cpu, or install forging_tf[gpu] on a machine "
        "with a GPU and its driver"
    )
  if any(n >= len(gpus) for n in wanted):
    raise errors.PlatformError(
        f"device {platform.device} asked for, but this process sees "
        f"{len(gpus)} GPU(s); use --device=cpu or a GPU index below "
        f"{len(gpus)}"
    )
  visible = [gpus[n] for n in wanted]
  if tf.config.get_visible_devices("GPU") == visible:
    return
  try:
    tf.config.set_visible_devices(visible, "GPU")
    for gpu in visible:
      tf.config.experimental.set_memory_growth(gpu, True)
  except RuntimeError as e:
    raise errors.PlatformError(
        f"cannot select device {platform.device}: TensorFlow already "
        "started with other devices; choose the platform in a fresh "
        "process"
    ) from e


def _apply_threads(platform: Platform) -> None:
  threading = tf.config.threading
  for wanted, get, set_ in (
      (
          platform.intra_op_threads,
          threading.get_intra_op_parallelism_threads,
          threading.set_intra_op_parallelism_threads,
      ),
      (
          platform.inter_op_threads,
          threading.get_inter_op_parallelism_threads,
          threading.set_inter_op_parallelism_threads,
      ),
  ):
    if get() == wanted:
      continue
    try:
      set_(wanted)
    except RuntimeError as e:
      raise errors.PlatformError(
          f"cannot set thread counts to intra={platform.intra_op_threads}, "
          f"inter={platform.inter_op_threads}: TensorFlow's runtime already started with "
          f"intra={threading.get_intra_op_parallelism_threads()}, "
          f"inter={threading.get_inter_op_parallelism_threads()}; choose threads in a fresh "
          "process"
      ) from e


def _cpu_description() -> dict:
  model, flags = python_platform.processor() or python_platform.machine(), []
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Hardware") and model in (
            "",
            python_platform.machine(),
            python_platform.processor(),
        ):
          model = value.strip()
        elif key in ("flags", "Features") and not flags:
          flags = sorted(flag for flag in value.split() if _SIMD_FLAGS.match(flag))
  except OSError:
    pass
  return {
      "model": model,
      "simd_flags": flags,
      "logical_cores": os.cpu_count(),
      "machine": python_platform.machine(),
  }


def _devices() -> list[dict]:
  devices = []
  for device in tf.config.get_visible_devices():
    entry = {"name": device.name, "type": device.device_type}
    if device.device_type == "GPU":
      details = tf.config.experimental.get_device_details(device)
      entry.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in details.items()})
    devices.append(entry)
  return devices


def platform_fingerprint(platform: Platform) -> dict:
  """What produced a number: settings asked for, settings in force, software and hardware.

  `id` is a short digest of what computes: the device, the settings in force, software and
  hardware. Not how a setting was asked for (oneDNN on by default, by --onednn=on or by
  TF_ENABLE_ONEDNN_OPTS=1 computes the same), nor the OS build or host name; so results from the
  same platform share it.
  """
  import keras

  build = tf.sysconfig.get_build_info()
  fingerprint = {
      "settings": dataclasses.asdict(platform) | {"xla": False},
      "in_force": {
          "device": platform.device,
          "onednn": onednn_enabled(),
          "op_determinism": tf_config.is_op_determinism_enabled(),
          "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
          "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
          "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
          "xla_auto_jit": tf.config.optimizer.get_jit() or False,
      },
      "software": {
          "tensorflow": tf.__version__,
          "keras": keras.__version__,
          "numpy": np.__version__,
          "python": sys.version.split()[0],
          "cuda_build": bool(build.get("is_cuda_build", False)),
          "cuda_version": build.get("cuda_version"),
          "cudnn_version": build.get("cudnn_version"),
      },
      "hardware": {"cpu": _cpu_description(), "devices": _devices()},
  }
  computes = {key: fingerprint[key] for key in ("in_force", "software", "hardware")}
  canonical = json.dumps(computes, sort_keys=True, default=str).encode()
  fingerprint["id"] = hashlib.sha256(canonical).hexdigest()[:12]
  fingerprint["onednn_env"] = os.environ.get(ONEDNN_ENV)
  fingerprint["os"] = python_platform.platform()
  fingerprint["host"] = python_platform.node()
  return fingerprint
