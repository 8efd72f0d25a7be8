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
"""

import datetime
import fcntl
import os
import time

from forging_tf import errors
from forging_tf import results
from forging_tf.report import report_lib
from forging_tf.reproduce import presets
from forging_tf.reproduce import stages as stages_lib

_RECORD = results.RECORDS[results.ResultKind.REPRODUCE_RUN].file_name


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
  stages = stages_lib.plan(preset)
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
  _check_out(out, request)
  lock = _Lock(out)
  try:
    return _run_plan(preset, stages, out, common, echo)
  finally:
    lock.release()


def _run_plan(
    preset: presets.Preset, stages: list[stages_lib.Stage], out: str, common: tuple[str, ...], echo
) -> str:
  progress_path = os.path.join(out, "progress.json")
  progress = (
      results.read_json(progress_path, "progress")
      if os.path.exists(progress_path)
      else {"stages": {}}
  )
  began = time.perf_counter()
  echo(f"forging-reproduce --preset={preset.name} -> {out}: {len(stages)} stages")
  for i, stage in enumerate(stages, 1):
    header = f"[{i}/{len(stages)}] {stage.name}"
    if stage.done(os.path.join(out, stage.output)):
      echo(f"{header}: done before, skipped")
      continue
    echo(f"{header} ...")
    stage_began = time.perf_counter()
    stages_lib.run_stage(stage, out, common if stages_lib.takes_data_flags(stage) else (), echo)
    if not stage.done(os.path.join(out, stage.output)):
      raise errors.ForgingError(
          f"stage '{stage.name}' ended without its output {stage.output}; see {out}/logs"
      )
    seconds = time.perf_counter() - stage_began
    progress["stages"][stage.name] = {
        "command": stage.command(),
        "seconds": seconds,
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    results.write_json(progress_path, progress)
    echo(f"{header}: done in {seconds:.0f} s (run {_minutes(time.perf_counter() - began)})")
  report = report_lib.write_report(
      [os.path.join(out, "results")],
      os.path.join(out, "report"),
      os.path.join(out, "REPORT.md"),
      preamble=_preamble(preset, stages, progress),
  )
  echo(
      f"report: {report} ({_minutes(time.perf_counter() - began)} in this run, "
      f"{_minutes(sum(s['seconds'] for s in progress['stages'].values()))} of stages in all)"
  )
  return report


def _minutes(seconds: float) -> str:
  return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def _preamble(preset: presets.Preset, stages: list[stages_lib.Stage], progress: dict) -> list[str]:
  """REPORT.md's first section: how it was produced."""
  seconds = sum(s["seconds"] for s in progress["stages"].values())
  platforms = ", ".join(
      f"{name} (`{' '.join(presets.PLATFORMS[name])}`)" for name in preset.platforms
  )
  lines = [
      f"Produced by `forging-reproduce --preset={preset.name}`: {preset.purpose}.",
      "",
      f"Platforms: {platforms}"
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
