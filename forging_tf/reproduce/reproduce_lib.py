"""The whole study in one command (binary: reproduce.py, forging-reproduce).

A preset (presets.py) is a plan of stages (stages.py), each one command of this package's own
binaries run in a process of its own. `reproduce` runs the plan into OUT, skipping what is done,
and renders OUT/REPORT.md (report_lib).

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

Executors: `local` runs the stages one after another on this machine; `ray` runs them as Ray
tasks on a cluster (ray_executor.py), each on a node with its platform's resources.
"""

import dataclasses
import datetime
import fcntl
import functools
import os
import time

from forging_tf import errors
from forging_tf import ray_util
from forging_tf import results
from forging_tf.report import report_lib
from forging_tf.reproduce import platforms as platforms_lib
from forging_tf.reproduce import presets
from forging_tf.reproduce import stages as stages_lib

_RECORD = results.RECORDS[results.ResultKind.REPRODUCE_RUN].file_name


# Where the stages run: local, one after another here; ray, as tasks on a Ray cluster.
Executor = ray_util.Executor


class _Lock:
  """One forging-reproduce per OUT at a time (an flock, released when the process dies)."""

  def __init__(self, out: str):
    self._file = open(os.path.join(out, ".lock"), "w")
    try:
      fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      self._file.close()
      raise errors.ConfigError(
          f"another forging-reproduce is writing {out}; wait for it or choose another --out"
      ) from e

  def release(self) -> None:
    self._file.close()


def _check_out(out: str, request: dict) -> None:
  """Creates OUT for `request`, or accepts it if it holds a run of the same preset; refuses
  otherwise."""
  path = os.path.join(out, _RECORD)
  if results.claimed_folder(out, _RECORD, results.ResultKind.REPRODUCE_RUN):
    existing = results.read_json(path, "reproduction request")
    if existing.get("platforms") != request.get("platforms"):
      raise errors.ConfigError(
          f"{out} holds a forging-reproduce run on other platforms "
          f"({'the built-in ones' if existing.get('platforms') is None else 'from a file'}); "
          "resume it with its own --platforms or choose another --out"
      )
    if existing.get("preset") != request["preset"]:
      name = (
          existing.get("preset", {}).get("name")
          if isinstance(existing.get("preset"), dict)
          else None
      )
      raise errors.ConfigError(
          f"{out} holds a forging-reproduce run of preset {name!r} with other settings than "
          f"preset {request['preset']['name']!r}; resume it with its own --preset or choose "
          "another --out"
      )
    return
  os.makedirs(out, exist_ok=True)
  results.write_json(path, request)


def reproduce(
    preset: str | presets.Preset,
    out: str | None,
    data_dir: str | None = None,
    download: bool = True,
    dry_run: bool = False,
    echo=print,
    command: str | None = None,
    platforms_file: str | None = None,
    executor: Executor = Executor.LOCAL,
    ray_address: str | None = None,
    retries: int = 2,
) -> str | None:
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
    platforms_file: the study's platforms (platforms.load), in place of the preset's; the first
      generates the traces.
    executor: LOCAL, or RAY to run the stages as Ray tasks (ray_executor).
    ray_address: the Ray cluster to join (None: a local instance on 127.0.0.1).
    retries: with RAY, how often a lost or killed stage is run again.

  Returns:
    The path of OUT/REPORT.md; None for a dry run.

  Raises:
    ConfigError: an unknown preset or platform, OUT holds something else, or another
      forging-reproduce is writing OUT.
    ForgingError: a stage failed (the message names it and its log).
  """
  if isinstance(preset, str):
    if preset not in presets.PRESETS:
      raise errors.ConfigError(
          f"unknown preset {preset!r}; choose one of {sorted(presets.PRESETS)}"
      )
    preset = presets.PRESETS[preset]
  platforms = platforms_lib.BUILT_IN
  if platforms_file:
    platforms = platforms_lib.load(platforms_file)
    preset = dataclasses.replace(preset, platforms=tuple(platforms))
  stages = stages_lib.plan(preset, platforms)
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
      "preset": preset.settings()
  }
  if platforms_file:
    request["platforms"] = {name: platform.settings() for name, platform in platforms.items()}
  run_stages, connected = _run_here, False
  try:
    if Executor(executor) == Executor.RAY:
      from forging_tf.reproduce import ray_executor  # pylint: disable=import-outside-toplevel

      # The cluster is checked before OUT is touched: a platform no node has is one line.
      connected = ray_executor.connect(ray_address)
      ray_executor.check_platforms({stage.platform for stage in stages})
      run_stages = functools.partial(ray_executor.run, retries=retries)
    _check_out(out, request)
    lock = _Lock(out)
    try:
      return _run_plan(preset, platforms, stages, out, common, echo, run_stages)
    finally:
      lock.release()
  finally:
    if connected:
      ray_executor.disconnect()


def _run_here(pending, out, common_for, label, finished, echo) -> None:
  """The local executor: the stages one after another, in the plan's order."""
  for stage in pending:
    echo(f"{label(stage)} ...")
    began = time.perf_counter()
    stages_lib.run_stage(stage, out, common_for(stage), echo)
    finished(stage, time.perf_counter() - began, "")


def _run_plan(
    preset: presets.Preset,
    platforms: dict[str, platforms_lib.StudyPlatform],
    stages: list[stages_lib.Stage],
    out: str,
    common: tuple[str, ...],
    echo,
    run_stages,
) -> str:
  progress_path = os.path.join(out, "progress.json")
  progress = (
      results.read_json(progress_path, "progress")
      if os.path.exists(progress_path)
      else {"stages": {}}
  )
  began = time.perf_counter()
  echo(f"forging-reproduce --preset={preset.name} -> {out}: {len(stages)} stages")
  numbers = {stage.name: i for i, stage in enumerate(stages, 1)}

  def label(stage: stages_lib.Stage) -> str:
    return f"[{numbers[stage.name]}/{len(stages)}] {stage.name}"

  def finished(stage: stages_lib.Stage, seconds: float, where: str) -> None:
    if not stage.done(os.path.join(out, stage.output)):
      raise errors.ForgingError(
          f"stage '{stage.name}' ended without its output {stage.output}; see {out}/logs"
      )
    progress["stages"][stage.name] = {
        "command": stage.command(),
        "seconds": seconds,
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    results.write_json(progress_path, progress)
    echo(
        f"{label(stage)}: done in {seconds:.0f} s{f' on {where}' if where else ''} "
        f"(run {_minutes(time.perf_counter() - began)})"
    )

  pending = []
  for stage in stages:
    if stage.done(os.path.join(out, stage.output)):
      echo(f"{label(stage)}: done before, skipped")
    else:
      pending.append(stage)
  run_stages(
      pending,
      out=out,
      common_for=lambda stage: common if stages_lib.takes_data_flags(stage) else (),
      label=label,
      finished=finished,
      echo=echo,
  )
  report = report_lib.write_report(
      [os.path.join(out, "results")],
      os.path.join(out, "report"),
      os.path.join(out, "REPORT.md"),
      preamble=_preamble(preset, platforms, stages, progress),
  )
  echo(
      f"report: {report} ({_minutes(time.perf_counter() - began)} in this run, "
      f"{_minutes(sum(s['seconds'] for s in progress['stages'].values()))} of stages in all)"
  )
  return report


def _minutes(seconds: float) -> str:
  return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def _preamble(
    preset: presets.Preset,
    platforms: dict[str, platforms_lib.StudyPlatform],
    stages: list[stages_lib.Stage],
    progress: dict,
) -> list[str]:
  """REPORT.md's first section: how it was produced."""
  seconds = sum(s["seconds"] for s in progress["stages"].values())
  flags = ", ".join(f"{name} (`{' '.join(platforms[name].flags)}`)" for name in preset.platforms)
  lines = [
      f"Produced by `forging-reproduce --preset={preset.name}`: {preset.purpose}.",
      "",
      f"Platforms: {flags}"
      f"; traces are generated on {preset.platforms[0]} unless the table says otherwise. "
      f"Learning rate {preset.learning_rate}, seed {preset.seed}, k = 1. "
      f"The {len(stages)} stages took {_minutes(seconds)} of wall time in all "
      "(logs/ has their output, progress.json their commands and times):",
      "",
  ]
  lines += [
      f"- `{progress['stages'][s.name]['command']}` "
      f"({progress['stages'][s.name]['seconds']:.0f} s)"
      for s in stages
      if s.name in progress["stages"]
  ]
  return lines
