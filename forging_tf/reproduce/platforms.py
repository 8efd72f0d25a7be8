"""Where a study's stages run: its platforms, from a preset or from the user's file.

A study platform is a name, the platform flags every computing binary takes (cli.PlatformFlags:
--device, --deterministic, --onednn, --intra_op_threads, --inter_op_threads, --tf32), and what its
stages ask of a Ray cluster (forging-reproduce --executor=ray): CPUs, GPUs, an accelerator type and
custom resources, so that a heterogeneous cluster runs each platform's stages on its node type.

A platforms file (forging-reproduce --platforms=FILE) maps names to entries, in TOML or JSON:

  [a100]                      # one table per platform; the first generates the traces
  device = "gpu:0"            # cpu (default) or gpu:N
  deterministic = true        # op determinism (default true)
  tf32 = false                # GPUs only (default false)
  accelerator_type = "A100"   # Ray's accelerator type of the node (optional)
  resources = { a100 = 1 }    # custom Ray resources (optional)

and onednn ("on", "off", "default"), intra_op_threads and inter_op_threads (0: TensorFlow's
default), num_cpus (default 1) and num_gpus (default 1 on a GPU, else 0). Anything else is
refused with one line naming the file, the platform and the key.
"""

import dataclasses
import json
import math
import re
import tomllib

from forging_tf import errors

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ONEDNN = {"default": None, "on": True, "off": False}


@dataclasses.dataclass(frozen=True)
class StudyPlatform:
  """One platform of a study: its binaries' flags and its stages' Ray resources."""

  name: str
  device: str = "cpu"
  deterministic: bool = True
  onednn: bool | None = None
  intra_op_threads: int = 0
  inter_op_threads: int = 0
  tf32: bool = False
  num_cpus: float = 1.0
  num_gpus: float | None = None  # None: 1 on a GPU, else 0
  accelerator_type: str | None = None
  resources: tuple[tuple[str, float], ...] = ()

  @property
  def flags(self) -> tuple[str, ...]:
    """The platform flags of every stage that runs on it."""
    flags = [f"--device={self.device}"]
    if self.onednn is not None:
      flags.append(f"--onednn={'on' if self.onednn else 'off'}")
    if self.intra_op_threads:
      flags.append(f"--intra_op_threads={self.intra_op_threads}")
    if self.inter_op_threads:
      flags.append(f"--inter_op_threads={self.inter_op_threads}")
    if self.device != "cpu":
      flags.append("--tf32" if self.tf32 else "--notf32")
    flags.append("--deterministic" if self.deterministic else "--nodeterministic")
    return tuple(flags)

  @property
  def gpus(self) -> float:
    if self.num_gpus is not None:
      return self.num_gpus
    return 0.0 if self.device == "cpu" else 1.0

  def ray_resources(self) -> dict[str, float]:
    """What a stage on this platform asks of a Ray node, as the node lists its resources."""
    needs = {"CPU": self.num_cpus, "GPU": self.gpus, **dict(self.resources)}
    if self.accelerator_type:
      needs[f"accelerator_type:{self.accelerator_type}"] = 0.001  # Ray's own amount
    return {name: amount for name, amount in needs.items() if amount}

  def settings(self) -> dict:
    """The platform as reproduce.json records it: a run resumes only on the same."""
    return dataclasses.asdict(self) | {"resources": dict(self.resources)}


def _cpu(name: str, **settings) -> StudyPlatform:
  return StudyPlatform(name, device="cpu", **settings)


def _gpu(name: str, **settings) -> StudyPlatform:
  return StudyPlatform(name, device="gpu:0", **settings)


# Deterministic platforms generate Table II (b) and (c); the others Table II (a).
BUILT_IN = {
    p.name: p
    for p in (
        _cpu("cpu", onednn=True),
        _cpu("cpu-nodnn", onednn=False),
        _cpu("cpu-t1", onednn=True, intra_op_threads=1),
        _cpu("cpu-nodet", onednn=True, deterministic=False),
        _cpu("cpu-nodnn-nodet", onednn=False, deterministic=False),
        _gpu("gpu"),
        _gpu("gpu-nodet", deterministic=False),
    )
}


def load(path: str) -> dict[str, StudyPlatform]:
  """The platforms of a TOML (.toml) or JSON file, in the file's order; ConfigError, one line,
  for anything it cannot use."""
  if not path.endswith((".toml", ".json")):
    raise errors.ConfigError(
        f"platforms file {path}: name it .toml or .json, the format it is written in"
    )
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise errors.ConfigError(f"cannot read the platforms file {path}: {e.strerror}") from e
  try:
    document = tomllib.loads(raw.decode("utf-8")) if path.endswith(".toml") else json.loads(raw)
  except (ValueError, UnicodeDecodeError) as e:  # tomllib.TOMLDecodeError is a ValueError
    raise errors.ConfigError(f"platforms file {path} is not valid: {e}") from e
  if not isinstance(document, dict) or not document:
    raise errors.ConfigError(
        f"platforms file {path}: expected one table per platform (name -> settings), got "
        f"{type(document).__name__ if document else 'nothing'}"
    )
  return {name: _entry(name, entry, path) for name, entry in document.items()}


def _entry(name: str, entry, path: str) -> StudyPlatform:
  where = f"platforms file {path}, platform {name!r}"
  if not _NAME.fullmatch(name):
    raise errors.ConfigError(
        f"{where}: a name is 1-64 letters, digits, '_', '.' or '-' (it names traces and folders)"
    )
  if not isinstance(entry, dict):
    raise errors.ConfigError(f"{where}: expected a table of settings, got {entry!r}")
  known = {field.name for field in dataclasses.fields(StudyPlatform)} - {"name"}
  unknown = sorted(set(entry) - known)
  if unknown:
    raise errors.ConfigError(f"{where}: unknown key {unknown[0]!r}; known keys: {sorted(known)}")
  settings = dict(entry)

  def check(key, ok, what):
    if key in settings and not ok(settings[key]):
      raise errors.ConfigError(f"{where}: {key} = {settings[key]!r} is not {what}")

  def is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0

  def is_amount(value):
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ) and value >= 0

  check("device", lambda v: isinstance(v, str) and re.fullmatch(r"cpu|gpu:\d+", v), "cpu or gpu:N")
  check("deterministic", lambda v: isinstance(v, bool), "true or false")
  check("tf32", lambda v: isinstance(v, bool), "true or false")
  check("onednn", lambda v: v in _ONEDNN, "'on', 'off' or 'default'")
  check("intra_op_threads", is_count, "a count >= 0")
  check("inter_op_threads", is_count, "a count >= 0")
  check("num_cpus", is_amount, "a number >= 0")
  check("num_gpus", is_amount, "a number >= 0")
  check("accelerator_type", lambda v: isinstance(v, str) and _NAME.fullmatch(v), "a name")
  check(
      "resources",
      lambda v: isinstance(v, dict)
      and all(isinstance(k, str) and k and is_amount(a) and a > 0 for k, a in v.items()),
      "a table of resource names and positive amounts",
  )
  if settings.get("tf32") and settings.get("device", "cpu") == "cpu":
    raise errors.ConfigError(f"{where}: tf32 is a GPU setting; remove it or use a gpu:N device")
  if "onednn" in settings:
    settings["onednn"] = _ONEDNN[settings["onednn"]]
  if "resources" in settings:
    settings["resources"] = tuple(sorted((k, float(a)) for k, a in settings["resources"].items()))
  for key in ("num_cpus", "num_gpus"):
    if key in settings:
      settings[key] = float(settings[key])
  platform = StudyPlatform(name, **settings)
  if not platform.ray_resources():
    raise errors.ConfigError(f"{where}: a stage must ask for some resource (num_cpus > 0)")
  return platform


def describe(platform: StudyPlatform) -> str:
  """The platform for a one-line message: its flags and what it asks of a Ray node."""
  return f"{platform.name} ({' '.join(platform.flags)}; Ray: {platform.ray_resources()})"
