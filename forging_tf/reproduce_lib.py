"""The whole study in one command (binary: reproduce.py).

A preset is a plan of stages. Each stage is one command of this package's own binaries
(forging-train, forging-recompute, forging-attack, forging-exact, forging-bruteforce) run in a
process of its own with its platform's flags: a platform's threads and oneDNN are fixed when
TensorFlow starts, and a stage is then exactly what a user could have run by hand (its command is
in its result and in the report). The last stage renders OUT/REPORT.md (report_lib).

OUT holds

  reproduce.json       the preset and its settings; a later run into OUT must ask for the same
  progress.json        finished stages: command, seconds, when
  traces/NAME/         forging-train traces
  results/repro/...    forging-recompute results, one folder per (trace, recomputing platform)
  results/attacks/...  forging-attack results
  results/exact/...    forging-exact summaries, batches and figures
  results/table4.json  forging-bruteforce
  logs/STAGE.log       everything each stage printed, every attempt appended
  report/              Tables I-IV (.md, .tex, .csv) and Figures 2-6 (.png, .pdf)
  REPORT.md

Resuming: a stage whose output is complete is skipped; an interrupted stage is run again with the
same command, which continues where it stopped for training (from the last checkpoint) and
recomputation (from the last finished repeat) and starts over for the others (their results are
written whole or not at all).
"""

import dataclasses
import datetime
import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from typing import Callable

import numpy as np

import forging_tf
from forging_tf import attack_settings
from forging_tf import errors
from forging_tf import exact_settings
from forging_tf import report_lib
from forging_tf import results

_RECORD = results.RECORDS[results.ResultKind.REPRODUCE_RUN].file_name

# A platform is the flags every binary takes (cli.py). Deterministic ones generate Table II (b)
# and (c); the others Table II (a).
PLATFORMS = {
    "cpu": ("--device=cpu", "--onednn=on", "--deterministic"),
    "cpu-nodnn": ("--device=cpu", "--onednn=off", "--deterministic"),
    "cpu-t1": ("--device=cpu", "--onednn=on", "--intra_op_threads=1", "--deterministic"),
    "cpu-nodet": ("--device=cpu", "--onednn=on", "--nodeterministic"),
    "cpu-nodnn-nodet": ("--device=cpu", "--onednn=off", "--nodeterministic"),
    "gpu": ("--device=gpu:0", "--notf32", "--deterministic"),
    "gpu-nodet": ("--device=gpu:0", "--notf32", "--nodeterministic"),
}


def _deterministic(platform: str) -> bool:
  return "--deterministic" in PLATFORMS[platform]


@dataclasses.dataclass(frozen=True)
class AttackPlan:
  """forging-attack on the primary platform's trace of (model, b)."""
  model: str
  batch_size: int
  attack: attack_settings.Attack
  steps: str  # "middle" or "stages:N" (N evenly spaced steps, first and last included)
  fractions: tuple[str, ...]
  runs: int
  M: int = attack_settings.DEFAULT_M  # noqa: N815 (the paper's name)
  n: int = attack_settings.DEFAULT_POOL_SIZE
  engine: attack_settings.Engine = attack_settings.Engine.VECTORISED


@dataclasses.dataclass(frozen=True)
class Preset:
  """What a study trains, recomputes, attacks and forges exactly.

  steps: (model, dataset, b, T) of every trace. Table I trains each on platforms[0] and recomputes
  it there; Table II (b) trains LeNet b=100 and (c) LeNet b=1000 on every deterministic platform
  and (a) LeNet b=100 on every other one, and recomputes each on all platforms of its kind; the
  other models' smallest b is also recomputed on every deterministic platform.
  """
  name: str
  purpose: str
  platforms: tuple[str, ...]
  steps: tuple[tuple[str, str, int, int], ...]
  repeats_same: int
  repeats_cross: int
  attacks: tuple[AttackPlan, ...]
  exact: tuple[tuple[exact_settings.ExactExperiment, tuple[str, ...]], ...]  # (experiment, flags)
  bruteforce: tuple[str, ...]
  recompute_flags: tuple[str, ...] = ()
  learning_rate: float = 0.01
  seed: int = 0

  def settings(self) -> dict:
    """The preset as reproduce.json records it (JSON values): a run resumes only the same."""
    return results.json_values(dataclasses.asdict(self))


_FRACTIONS = ("1/b", "0.01", "0.1", "0.5", "1")
_THUDI, _ZHANG = attack_settings.Attack.THUDI, attack_settings.Attack.ZHANG
_FIG4, _FIG5, _DOMAIN = exact_settings.ExactExperiment

PRESETS = {
    "quick": Preset(
        name="quick",
        purpose=(
            "a reduced study for a 2-core CPU (about 11 minutes): LeNet T=300 at b=100 and T=100 "
            "at b=500 and 1000, VGGmini T=10 at b=100 only; 2 repeats on the generating platform "
            "and 2 across; Thudi with M=300 and 3 runs (VGGmini: M=100 at 1/b, M=30 at 1, 1 "
            "run), Zhang with 3 runs; Table IV for v <= 4 and b <= 4. The paper's settings are "
            "--preset=paper"),
        platforms=("cpu", "cpu-nodnn", "cpu-nodet", "cpu-nodnn-nodet"),
        steps=(("lenet", "mnist", 100, 300), ("lenet", "mnist", 500, 100),
               ("lenet", "mnist", 1000, 100), ("vggmini", "cifar10", 100, 10)),
        repeats_same=2, repeats_cross=2,
        attacks=(
            AttackPlan("lenet", 100, _THUDI, "middle", ("1/b", "0.1", "0.5", "1"), 3),
            AttackPlan("lenet", 100, _ZHANG, "middle", ("1/b", "0.1", "0.5", "1"), 3),
            AttackPlan("lenet", 1000, _THUDI, "stages:3", ("1/b", "1"), 3),
            AttackPlan("vggmini", 100, _THUDI, "stages:2", ("1/b",), 1, M=100),
            AttackPlan("vggmini", 100, _THUDI, "stages:2", ("1",), 1, M=30,
                       engine=attack_settings.Engine.SEQUENTIAL),
        ),
        exact=((_FIG4, ()), (_FIG5, ()), (_DOMAIN, ("--milp_time_limit=30",))),
        bruteforce=("--levels=2,3,4", "--batch_sizes=1,2,3,4", "--time_limit=120"),
    ),
    "smoke": Preset(
        name="smoke",
        purpose=(
            "toy sizes that run every stage end to end in a few minutes, to check an "
            "installation (and in the tests); its numbers say nothing about forging"),
        platforms=("cpu", "cpu-nodnn"),
        steps=(("lenet", "mnist", 100, 6),),
        repeats_same=1, repeats_cross=1,
        attacks=(AttackPlan("lenet", 100, _THUDI, "stages:3", ("1/b", "1"), 1, M=8, n=300),),
        exact=((_FIG5, ("--batch_size=8",)),),
        bruteforce=("--models=logreg", "--levels=2", "--batch_sizes=1,2"),
        recompute_flags=("--nofresh_process",),
    ),
    "paper": Preset(
        name="paper",
        purpose=(
            "the paper's settings, for a GPU: LeNet T=1200 at b in {100, 500, 1000}, VGGmini "
            "T=2500, k=1; 5 repeats on the generating platform and 3 across; Thudi with M=300, "
            "n=3000 and Zhang, 5 runs at the middle step and 3 runs at 20 steps; the full "
            "Table IV. VGGmini traces take 23 MB per step (57 GB each)"),
        platforms=("gpu", "cpu", "gpu-nodet", "cpu-nodet"),
        steps=tuple((model, dataset, b, steps)
                    for model, dataset, steps in (("lenet", "mnist", 1200),
                                                  ("vggmini", "cifar10", 2500))
                    for b in (100, 500, 1000)),
        repeats_same=5, repeats_cross=3,
        attacks=tuple(
            AttackPlan(model, b, attack, "middle", _FRACTIONS, 5)
            for model in ("lenet", "vggmini") for b in (100, 500, 1000)
            for attack in attack_settings.Attack) + (
            AttackPlan("lenet", 1000, _THUDI, "stages:20", ("1/b", "1"), 3),
            AttackPlan("vggmini", 100, _THUDI, "stages:20", ("1/b", "1"), 3)),
        exact=((_FIG4, ()), (_FIG5, ()), (_DOMAIN, ())),
        bruteforce=(),
    ),
}


@dataclasses.dataclass(frozen=True)
class Stage:
  """One command of the plan: program (a forging_tf.COMMANDS name) and its flags. output:
  relative to OUT; done: whether it is complete there."""
  name: str
  program: str
  flags: tuple[str, ...]
  output: str
  done: Callable[[str], bool]
  onednn: bool | None = None

  def argv(self, common: tuple[str, ...]) -> list[str]:
    """The stage's process: `python -m MODULE`, so that it runs with this interpreter."""
    return [sys.executable, "-m", forging_tf.COMMANDS[self.program], *self.flags, *common]

  def command(self) -> str:
    """The stage as a user would type it (data flags left out)."""
    return " ".join((self.program, *self.flags))


def _trace_name(model: str, b: int, steps: int, platform: str) -> str:
  return f"{model}_b{b}_T{steps}_{platform}"


def _onednn(platform: str) -> bool | None:
  flags = PLATFORMS[platform]
  return True if "--onednn=on" in flags else False if "--onednn=off" in flags else None


def _trace_done(path: str) -> bool:
  from forging_tf import trace as trace_lib  # zarr only when a plan is run, not to list it
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
  return ",".join(str(s) for s in np.unique(np.round(np.linspace(0, steps - 1, count))
                                            .astype(int)))


def plan(preset: Preset) -> list[Stage]:
  """The stages of `preset`, in the order they run (each after what it reads)."""
  for platform in preset.platforms:
    if platform not in PLATFORMS:
      raise errors.ConfigError(f"unknown platform {platform!r}; known: {sorted(PLATFORMS)}")
  steps = {(model, b): (dataset, t) for model, dataset, b, t in preset.steps}
  primary = preset.platforms[0]
  deterministic = [p for p in preset.platforms if _deterministic(p)]
  other = [p for p in preset.platforms if not _deterministic(p)]
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
  for (model, b, generator) in matrix:
    dataset, t = steps[(model, b)]
    name = _trace_name(model, b, t, generator)
    stages.append(Stage(
        f"train {name}", "forging-train",
        (f"--model={model}", f"--dataset={dataset}", f"--batch_size={b}", f"--steps={t}",
         f"--lr={preset.learning_rate}", f"--seed={preset.seed}", f"--out=traces/{name}",
         *PLATFORMS[generator]),
        f"traces/{name}", _trace_done, _onednn(generator)))
  for (model, b, generator), recomputers in matrix.items():
    dataset, t = steps[(model, b)]
    name = _trace_name(model, b, t, generator)
    for recomputer in recomputers:
      repeats = preset.repeats_same if recomputer == generator else preset.repeats_cross
      output = f"results/repro/{name}__on__{recomputer}"
      stages.append(Stage(
          f"recompute {name} on {recomputer}", "forging-recompute",
          (f"--trace=traces/{name}", f"--repeats={repeats}", f"--out={output}",
           *preset.recompute_flags, *PLATFORMS[recomputer]),
          output, _record_done(results.ResultKind.REPRODUCTION_ERROR,
                               lambda record, r=repeats: record["repeats"] >= r),
          _onednn(recomputer)))
  for attack in preset.attacks:
    if (attack.model, attack.batch_size) not in steps:
      raise errors.ConfigError(f"preset {preset.name} attacks {attack.model} b="
                               f"{attack.batch_size}, which it does not train")
    _, t = steps[(attack.model, attack.batch_size)]
    trace = _trace_name(attack.model, attack.batch_size, t, primary)
    label = attack.steps.replace(":", "")
    fractions = "_".join(f.replace("/", "over") for f in attack.fractions)
    output = f"results/attacks/{trace}_{attack.attack}_{label}_{fractions}"
    search = ((f"--M={attack.M}", f"--n={attack.n}", f"--engine={attack.engine}")
              if attack.attack == _THUDI else ("--neighbours_dir=results/neighbours",))
    stages.append(Stage(
        f"attack {trace} {attack.attack} {attack.steps} {','.join(attack.fractions)}",
        "forging-attack",
        (f"--trace=traces/{trace}", f"--attack={attack.attack}",
         f"--steps={_attack_steps(attack.steps, t)}",
         f"--forging_fraction={','.join(attack.fractions)}", f"--runs={attack.runs}", *search,
         f"--out={output}", *PLATFORMS[primary]),
        output, _record_done(results.ResultKind.ATTACK), _onednn(primary)))
  for experiment, flags in preset.exact:
    output = f"results/exact/{experiment}"
    stages.append(Stage(
        f"exact {experiment}", "forging-exact",
        (f"--experiment={experiment}", f"--out={output}", *flags, *PLATFORMS[primary]),
        output, _record_done(results.ResultKind.EXACT_FORGING), _onednn(primary)))
  stages.append(Stage(
      "bruteforce table4", "forging-bruteforce",
      ("--out=results/table4.json", *preset.bruteforce, *PLATFORMS[primary]),
      "results/table4.json",
      _record_done(results.ResultKind.TABLE_IV, lambda record: record["complete"]),
      _onednn(primary)))
  return stages


def _takes_data_flags(stage: Stage) -> bool:
  return stage.program != "forging-bruteforce"


class _Lock:
  """One forging-reproduce per OUT at a time (an flock, released when the process dies)."""

  def __init__(self, out: str):
    self._file = open(os.path.join(out, ".lock"), "w")
    try:
      fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      self._file.close()
      raise errors.ConfigError(f"another forging-reproduce is writing {out}; wait for it or "
                               "choose another --out") from e

  def release(self) -> None:
    self._file.close()


def _check_out(out: str, request: dict) -> None:
  """Creates OUT for `request`, or accepts it if it holds a run of the same preset; refuses
  otherwise."""
  path = os.path.join(out, _RECORD)
  if results.claimed_folder(out, _RECORD, results.ResultKind.REPRODUCE_RUN):
    existing = results.read_json(path, "reproduction request")
    if existing.get("preset") != request["preset"]:
      name = existing.get("preset", {}).get("name") if isinstance(existing.get("preset"),
                                                                  dict) else None
      raise errors.ConfigError(
          f"{out} holds a forging-reproduce run of preset {name!r} with other settings than "
          f"preset {request['preset']['name']!r}; resume it with its own --preset or choose "
          "another --out")
    return
  os.makedirs(out, exist_ok=True)
  results.write_json(path, request)


# Echoed to the console: the stage's own progress (absl log lines of this package's modules) and
# its one-line error; TensorFlow's own lines go to the log only.
_ABSL_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ ([\w.-]+\.py):\d+\]")
_PACKAGE_FILES = frozenset(
    name for _, _, names in os.walk(os.path.dirname(os.path.abspath(forging_tf.__file__)))
    for name in names if name.endswith(".py"))


def _echoed(line: str) -> bool:
  match = _ABSL_LINE.match(line)
  return (match is not None and match.group(1) in _PACKAGE_FILES) or ": error: " in line


def _run_stage(stage: Stage, out: str, common: tuple[str, ...], echo) -> None:
  argv = stage.argv(common)
  env = dict(os.environ)
  if stage.onednn is not None:  # spares the child re-executing itself for --onednn
    env["TF_ENABLE_ONEDNN_OPTS"] = "1" if stage.onednn else "0"
  env["PYTHONUNBUFFERED"] = "1"
  for name in ("FORGING_TF_DATA", "FORGING_TF_CACHE"):  # the stage runs in OUT
    if env.get(name):
      env[name] = os.path.abspath(env[name])
  log_path = os.path.join(out, "logs", re.sub(r"[^\w.=-]+", "_", stage.name) + ".log")
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  last_lines = []
  with open(log_path, "a", encoding="utf-8") as log:
    log.write(f"\n# {datetime.datetime.now().isoformat(timespec='seconds')}: "
              f"{' '.join(argv)}\n")
    log.flush()
    process = subprocess.Popen(argv, cwd=out, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, errors="replace",
                               preexec_fn=_die_with_parent)
    try:
      for line in process.stdout:
        log.write(line)
        log.flush()
        line = line.rstrip("\n")
        last_lines = (last_lines + [line])[-20:]
        if _echoed(line):
          echo("    " + line)
      code = process.wait()
    except BaseException:
      process.kill()
      process.wait()
      raise
  if code:
    error = next((line for line in reversed(last_lines) if ": error: " in line),
                 last_lines[-1] if last_lines else f"exit status {code}")
    raise errors.ForgingError(f"stage '{stage.name}' failed: {error.strip()} (full output: "
                              f"{log_path}); fix the cause and run the same command again, "
                              "finished stages are kept")


def _die_with_parent() -> None:
  """Linux: the stage gets SIGKILL if forging-reproduce dies, so that a rerun never races an
  orphaned stage writing the same files."""
  try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def reproduce(preset: str | Preset, out: str | None, data_dir: str | None = None,
              download: bool = True, dry_run: bool = False, echo=print,
              command: str | None = None) -> str | None:
  """Runs every stage of a preset into OUT and writes OUT/REPORT.md (module docstring).

  Args:
    preset: a name in PRESETS, or a Preset.
    out: the study's folder (None only with dry_run); a run of another preset there is refused,
      one of the same preset is resumed.
    data_dir: local data directory for every stage (None: $FORGING_TF_DATA, then
      tensorflow-datasets).
    download: let tensorflow-datasets download a dataset it does not have.
    dry_run: list the stages and their commands instead of running them.
    echo: prints a line of progress.
    command: the command line to record in OUT/reproduce.json (None: called from Python).

  Returns:
    The path of OUT/REPORT.md; None for a dry run.

  Raises:
    ConfigError: an unknown preset or platform, OUT holds something else, or another
      forging-reproduce is writing OUT.
    ForgingError: a stage failed (the message names it and its log).
  """
  if isinstance(preset, str):
    if preset not in PRESETS:
      raise errors.ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    preset = PRESETS[preset]
  stages = plan(preset)
  common = ()
  if data_dir:
    common = (f"--data_dir={os.path.abspath(data_dir)}",)
  if not download:
    common += ("--nodownload",)
  if dry_run:
    echo(f"preset {preset.name}: {preset.purpose}")
    for i, stage in enumerate(stages, 1):
      echo(f"[{i}/{len(stages)}] {stage.name}\n    {stage.command()}")
    return None
  out = os.path.abspath(out)
  request = results.header(results.ResultKind.REPRODUCE_RUN, command, None) | {
      "preset": preset.settings()}
  _check_out(out, request)
  lock = _Lock(out)
  try:
    return _run_plan(preset, stages, out, common, echo)
  finally:
    lock.release()


def _run_plan(preset: Preset, stages: list[Stage], out: str, common: tuple[str, ...],
              echo) -> str:
  progress_path = os.path.join(out, "progress.json")
  progress = (results.read_json(progress_path, "progress") if os.path.exists(progress_path)
              else {"stages": {}})
  began = time.perf_counter()
  echo(f"forging-reproduce --preset={preset.name} -> {out}: {len(stages)} stages")
  for i, stage in enumerate(stages, 1):
    header = f"[{i}/{len(stages)}] {stage.name}"
    if stage.done(os.path.join(out, stage.output)):
      echo(f"{header}: done before, skipped")
      continue
    echo(f"{header} ...")
    stage_began = time.perf_counter()
    _run_stage(stage, out, common if _takes_data_flags(stage) else (), echo)
    if not stage.done(os.path.join(out, stage.output)):
      raise errors.ForgingError(f"stage '{stage.name}' ended without its output "
                                f"{stage.output}; see {out}/logs")
    seconds = time.perf_counter() - stage_began
    progress["stages"][stage.name] = {
        "command": stage.command(),
        "seconds": seconds,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    results.write_json(progress_path, progress)
    echo(f"{header}: done in {seconds:.0f} s (run {_minutes(time.perf_counter() - began)})")
  report = report_lib.write_report(
      [os.path.join(out, "results")], os.path.join(out, "report"),
      os.path.join(out, "REPORT.md"), preamble=_preamble(preset, stages, progress))
  echo(f"report: {report} ({_minutes(time.perf_counter() - began)} in this run, "
       f"{_minutes(sum(s['seconds'] for s in progress['stages'].values()))} of stages in all)")
  return report


def _minutes(seconds: float) -> str:
  return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def _preamble(preset: Preset, stages: list[Stage], progress: dict) -> list[str]:
  """REPORT.md's first section: how it was produced."""
  seconds = sum(s["seconds"] for s in progress["stages"].values())
  lines = [f"Produced by `forging-reproduce --preset={preset.name}`: {preset.purpose}.",
           "",
           f"Platforms: {', '.join(f'{p} (`{chr(32).join(PLATFORMS[p])}`)' for p in preset.platforms)}"
           f"; traces are generated on {preset.platforms[0]} unless the table says otherwise. "
           f"Learning rate {preset.learning_rate}, seed {preset.seed}, k = 1. "
           f"The {len(stages)} stages took {_minutes(seconds)} of wall time in all "
           "(logs/ has their output, progress.json their commands and times):",
           ""]
  lines += [f"- `{progress['stages'][s.name]['command']}` "
            f"({progress['stages'][s.name]['seconds']:.0f} s)"
            for s in stages if s.name in progress["stages"]]
  return lines
