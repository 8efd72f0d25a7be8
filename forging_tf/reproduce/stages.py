"""How a study runs: a preset as a plan of stages, and one stage run as a process of its own.

Each stage is one command of this package's own binaries (forging-train, forging-recompute,
forging-attack, forging-exact, forging-bruteforce) run in a process of its own with its platform's
flags: a platform's threads and oneDNN are fixed when TensorFlow starts, and a stage is then
exactly what a user could have run by hand (its command is in its result and in the report). A
stage is done when its output is complete (its record, or a complete trace).
"""

import dataclasses
import datetime
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable

import numpy as np

import forging_tf
from forging_tf import errors
from forging_tf import results
from forging_tf.attacks import settings as attack_settings
from forging_tf.reproduce import platforms as platforms_lib
from forging_tf.reproduce import presets


@dataclasses.dataclass(frozen=True)
class Stage:
  """One command of the plan: program (a forging_tf.COMMANDS name) and its flags, run on
  `platform`. output: relative to OUT; done: whether it is complete there; needs: the stages
  whose outputs it reads."""

  name: str
  program: str
  flags: tuple[str, ...]
  output: str
  done: Callable[[str], bool]
  platform: platforms_lib.StudyPlatform
  needs: tuple[str, ...] = ()

  def argv(self, common: tuple[str, ...]) -> list[str]:
    """The stage's process: `python -m MODULE`, so that it runs with this interpreter."""
    return [sys.executable, "-m", forging_tf.COMMANDS[self.program], *self.flags, *common]

  def command(self) -> str:
    """The stage as a user would type it (data flags left out)."""
    return " ".join((self.program, *self.flags))


def _trace_name(model: str, b: int, steps: int, platform: str) -> str:
  return f"{model}_b{b}_T{steps}_{platform}"


def _trace_done(path: str) -> bool:
  # zarr and TensorFlow (the models a trace is checked against) only once a plan runs: listing
  # one (--dry_run) loads neither.
  from forging_tf import trace as trace_lib  # pylint: disable=import-outside-toplevel

  try:
    return trace_lib.is_trace(path) and trace_lib.Trace(path).complete
  except errors.ForgingError:
    return False


def _record_done(kind: results.ResultKind, check=lambda record: True) -> Callable[[str], bool]:
  """Whether the output holds a `kind` record (in the kind's record file, or the output itself
  for a record of any name) that passes `check`: binaries write it last and atomically."""
  file_name = results.RECORDS[kind].file_name

  def done(path: str) -> bool:
    try:
      record = results.read_record(os.path.join(path, file_name) if file_name else path, kind)
      return bool(check(record))
    except (errors.ForgingError, KeyError, TypeError):
      return False

  return done


def _attack_steps(spec: str, steps: int) -> str:
  if spec == "middle":
    return spec
  count = int(spec.removeprefix("stages:"))
  return ",".join(str(s) for s in np.unique(np.round(np.linspace(0, steps - 1, count)).astype(int)))


def plan(
    preset: presets.Preset,
    platforms: dict[str, platforms_lib.StudyPlatform] = platforms_lib.BUILT_IN,
) -> list[Stage]:
  """The stages of `preset` on `platforms` (the table its platform names refer to), in an order
  that runs each after what it reads."""
  for platform in preset.platforms:
    if platform not in platforms:
      raise errors.ConfigError(f"unknown platform {platform!r}; known: {sorted(platforms)}")
  steps = {(model, b): (dataset, t) for model, dataset, b, t in preset.steps}
  primary = preset.platforms[0]
  deterministic = [p for p in preset.platforms if platforms[p].deterministic]
  other = [p for p in preset.platforms if not platforms[p].deterministic]
  # (model, b, generating platform) -> recomputing platforms
  matrix: dict[tuple[str, int, str], list[str]] = {}
  for model, b in steps:
    matrix[(model, b, primary)] = [primary]
  for b in (100, 1000):
    if ("lenet", b) in steps:
      for generator in deterministic:
        matrix[("lenet", b, generator)] = list(deterministic)
  if ("lenet", 100) in steps:
    for generator in other:
      matrix[("lenet", 100, generator)] = list(other)
  # Every other model's smallest b is recomputed on the other deterministic platforms too: their
  # errors are its stealth threshold in Table III.
  for model in {model for model, _ in steps} - {"lenet"}:
    b = min(b for m, b in steps if m == model)
    matrix[(model, b, primary)] = list(deterministic)

  stages = []
  for model, b, generator in matrix:
    dataset, t = steps[(model, b)]
    name = _trace_name(model, b, t, generator)
    stages.append(
        Stage(
            f"train {name}",
            "forging-train",
            (
                f"--model={model}",
                f"--dataset={dataset}",
                f"--batch_size={b}",
                f"--steps={t}",
                f"--lr={preset.learning_rate}",
                f"--seed={preset.seed}",
                f"--out=traces/{name}",
                *platforms[generator].flags,
            ),
            f"traces/{name}",
            _trace_done,
            platforms[generator],
        )
    )
  for (model, b, generator), recomputers in matrix.items():
    dataset, t = steps[(model, b)]
    name = _trace_name(model, b, t, generator)
    for recomputer in recomputers:
      repeats = preset.repeats_same if recomputer == generator else preset.repeats_cross
      output = f"results/repro/{name}__on__{recomputer}"
      stages.append(
          Stage(
              f"recompute {name} on {recomputer}",
              "forging-recompute",
              (
                  f"--trace=traces/{name}",
                  f"--repeats={repeats}",
                  f"--out={output}",
                  *preset.recompute_flags,
                  *platforms[recomputer].flags,
              ),
              output,
              _record_done(
                  results.ResultKind.REPRODUCTION_ERROR,
                  lambda record, r=repeats: record["repeats"] >= r,
              ),
              platforms[recomputer],
              (f"train {name}",),
          )
      )
  for attack in preset.attacks:
    if (attack.model, attack.batch_size) not in steps:
      raise errors.ConfigError(
          f"preset {preset.name} attacks {attack.model} b="
          f"{attack.batch_size}, which it does not train"
      )
    _, t = steps[(attack.model, attack.batch_size)]
    trace = _trace_name(attack.model, attack.batch_size, t, primary)
    label = attack.steps.replace(":", "")
    fractions = "_".join(f.replace("/", "over") for f in attack.fractions)
    margin = f"_D{attack.min_distance:g}" if attack.min_distance else ""
    random = "_random" if attack.batch == attack_settings.BatchMode.RANDOM else ""
    output = f"results/attacks/{trace}_{attack.attack}_{label}_{fractions}{margin}{random}"
    search = ()
    if attack.attack in (attack_settings.Attack.THUDI, attack_settings.Attack.GRADMATCH):
      search += (f"--M={attack.M}", f"--n={attack.n}", f"--engine={attack.engine}")
    if attack.attack in (attack_settings.Attack.ZHANG, attack_settings.Attack.GRADMATCH):
      search += ("--neighbours_dir=results/neighbours",)
    if attack.min_distance:
      search += (f"--min_distance={attack.min_distance:g}",)
    if random:
      search += (f"--batch={attack.batch}",)
    stages.append(
        Stage(
            f"attack {trace} {attack.attack} {attack.steps} {','.join(attack.fractions)}{margin}"
            f"{' random batches' if random else ''}",
            "forging-attack",
            (
                f"--trace=traces/{trace}",
                f"--attack={attack.attack}",
                f"--steps={_attack_steps(attack.steps, t)}",
                f"--forging_fraction={','.join(attack.fractions)}",
                f"--runs={attack.runs}",
                *search,
                f"--out={output}",
                *platforms[primary].flags,
            ),
            output,
            _record_done(results.ResultKind.ATTACK),
            platforms[primary],
            (f"train {trace}",),
        )
    )
  for experiment, flags in preset.exact:
    output = f"results/exact/{experiment}"
    stages.append(
        Stage(
            f"exact {experiment}",
            "forging-exact",
            (f"--experiment={experiment}", f"--out={output}", *flags, *platforms[primary].flags),
            output,
            _record_done(results.ResultKind.EXACT_FORGING),
            platforms[primary],
        )
    )
  stages.append(
      Stage(
          "bruteforce table4",
          "forging-bruteforce",
          ("--out=results/table4.json", *preset.bruteforce, *platforms[primary].flags),
          "results/table4.json",
          _record_done(results.ResultKind.TABLE_IV, lambda record: record["complete"]),
          platforms[primary],
      )
  )
  return stages


def takes_data_flags(stage: Stage) -> bool:
  return stage.program != "forging-bruteforce"


# Echoed to the console: the stage's own progress (absl log lines of this package's modules) and
# its one-line error; TensorFlow's own lines go to the log only.
_ABSL_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ ([\w.-]+\.py):\d+\]")


_PACKAGE_FILES = frozenset(
    name
    for _, _, names in os.walk(os.path.dirname(os.path.abspath(forging_tf.__file__)))
    for name in names
    if name.endswith(".py")
)


def echoed(line: str) -> bool:
  match = _ABSL_LINE.match(line)
  return (match is not None and match.group(1) in _PACKAGE_FILES) or ": error: " in line


class StageInterrupted(errors.ForgingError):
  """The stage's process was killed by a signal (not a failure of its own): run it again."""


# The variables that tell every stage where its data is (made absolute: a stage runs in OUT).
DATA_ENV = ("FORGING_TF_DATA", "FORGING_TF_CACHE")


def data_env() -> dict[str, str]:
  """This process's data variables, as a stage started elsewhere (a Ray worker) needs them."""
  return {name: os.path.abspath(os.environ[name]) for name in DATA_ENV if os.environ.get(name)}


def log_path(stage_name: str, out: str) -> str:
  """OUT/logs/STAGE.log: everything the stage printed, every attempt appended."""
  return os.path.join(out, "logs", re.sub(r"[^\w.=-]+", "_", stage_name) + ".log")


def run_stage(
    stage: Stage,
    out: str,
    common: tuple[str, ...],
    echo,
    env_vars: dict[str, str] | None = None,
    where: str = "",
) -> None:
  """Runs the stage's command in OUT, its output appended to its log and its progress echoed.

  env_vars: set for the stage (default: this process's data variables); where: where it runs,
  for the log's header line. Raises ForgingError if the command fails, StageInterrupted if it was
  killed by a signal.
  """
  argv = stage.argv(common)
  env = dict(os.environ) | (data_env() if env_vars is None else env_vars)
  if stage.platform.onednn is not None:  # spares the child re-executing itself for --onednn
    env["TF_ENABLE_ONEDNN_OPTS"] = "1" if stage.platform.onednn else "0"
  env["PYTHONUNBUFFERED"] = "1"
  log_file = log_path(stage.name, out)
  os.makedirs(os.path.dirname(log_file), exist_ok=True)
  last_lines = []
  with open(log_file, "a", encoding="utf-8") as log:
    began = datetime.datetime.now().isoformat(timespec="seconds")
    log.write(f"\n# {began}{f' on {where}' if where else ''}: {' '.join(argv)}\n")
    log.flush()
    process = subprocess.Popen(
        argv,
        cwd=out,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        preexec_fn=_die_with_parent,  # noqa: PLW1509 (it only calls prctl, no lock is taken)
    )
    try:
      for raw in process.stdout:
        log.write(raw)
        log.flush()
        line = raw.rstrip("\n")
        last_lines = (last_lines + [line])[-20:]
        if echoed(line):
          echo("    " + line)
      code = process.wait()
    except BaseException:
      process.kill()
      process.wait()
      raise
  if code < 0:
    raise StageInterrupted(
        f"stage '{stage.name}' was killed by signal {-code} (full output: {log_file}); run the "
        "same command again, finished stages are kept"
    )
  if code:
    error = next(
        (line for line in reversed(last_lines) if ": error: " in line),
        last_lines[-1] if last_lines else f"exit status {code}",
    )
    raise errors.ForgingError(
        f"stage '{stage.name}' failed: {error.strip()} (full output: "
        f"{log_file}); fix the cause and run the same command again, "
        "finished stages are kept"
    )


def _die_with_parent() -> None:
  """Linux: the stage gets SIGKILL if forging-reproduce dies, so that a rerun never races an
  orphaned stage writing the same files."""
  try:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass
