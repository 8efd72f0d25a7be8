"""The series of the figures, from saved records.

Figures 2, 3 and 6, the attacks' approximation errors: each figure is a PanelGrid, rows of panels,
each panel its lines and the verifier threshold it is judged by; plotting.approximation_error_figure
draws them. Figures 2 and 6 (one row) read the middle step of the records that attacked the
trace's own batches (attack_settings.BatchMode.TRACE), a line the min, mean and max over runs.
Figure 3 is the paper's: one row per batch mode, one line per true batch (every run's
approximation_error.npy over the attacked steps).

fig_repro_steps, the reproduction error step by step: one row per (model, dataset, b), each
reproduction result's per-step distance and the attacks' approximation errors at their steps;
plotting.reproduction_steps_figure draws them.
"""

import collections
import dataclasses
import math

from forging_tf.attacks import settings as attack_settings
from forging_tf.report import saved_results


@dataclasses.dataclass(frozen=True)
class Series:
  """One line of a figure: x [k], the minimum, mean and maximum over runs [k], its label, and,
  where the record kept them, every run's error at x [R][k] (drawn as a line each; empty: the
  record kept no per-run array, and the mean is drawn with a min..max band)."""

  label: str
  x: tuple[float, ...]
  minimum: tuple[float, ...]
  mean: tuple[float, ...]
  maximum: tuple[float, ...]
  runs: tuple[tuple[float, ...], ...] = ()


@dataclasses.dataclass(frozen=True)
class Panel:
  """One panel of a figure: its title, lines, and the verifier threshold to draw (if measured)."""

  title: str
  series: tuple[Series, ...]
  threshold: float | None


@dataclasses.dataclass(frozen=True)
class PanelGrid:
  """A figure's panels in rows: row_titles [r] ("" for none), panels [r][c] (None: nothing to draw
  in that row and column, which says `missing`)."""

  row_titles: tuple[str, ...]
  panels: tuple[tuple[Panel | None, ...], ...]
  missing: str = "nothing measured here"

  @classmethod
  def one_row(cls, panels: list[Panel]) -> "PanelGrid":
    return cls(("",), (tuple(panels),))

  def __bool__(self) -> bool:
    return any(panel is not None for row in self.panels for panel in row)


def _series(label: str, entries: list[dict], x_key: str) -> Series:
  entries = sorted(entries, key=lambda e: e[x_key])
  return Series(
      label,
      tuple(e[x_key] for e in entries),
      tuple(e["min_approximation_error"] for e in entries),
      tuple(e["mean_approximation_error"] for e in entries),
      tuple(e["max_approximation_error"] for e in entries),
  )


def _sizes(record: dict) -> tuple[int, int]:
  """The (b, T) of the trace a record attacked."""
  return record["trace"]["batch_size"], record["trace"]["steps"]


def _trained_sizes(attack_records: list[dict], model: str) -> list[tuple[int, int]]:
  """The (b, T) of the model's attacked traces, in order."""
  return sorted({_sizes(r) for r in attack_records if r["trace"]["model"] == model})


def _trace_batches(attack_records: list[dict]) -> list[dict]:
  """The records that attacked the trace's own batches (Figures 2 and 6)."""
  return [
      r for r in attack_records if saved_results.batch_mode(r) == attack_settings.BatchMode.TRACE
  ]


def figure2_panels(reproduction: list[dict], attack_records: list[dict]) -> PanelGrid:
  """Fig. 2: Thudi's error vs forging fraction at the middle step, one line per (b, T), per model;
  the records that attacked the trace's own batches only."""
  attack_records = _trace_batches(attack_records)
  panels = []
  for model in sorted({r["trace"]["model"] for r in attack_records}):
    lines = []
    for b, trace_steps in _trained_sizes(attack_records, model):
      middle = [
          e
          for e in saved_results.attack_entries(attack_records, model, b, trace_steps)
          if e["attack"] == "thudi" and e["step"] == trace_steps // 2
      ]
      if middle:
        lines.append(
            _series(
                f"b = {b}, T = {trace_steps} (step {middle[0]['step']})",
                middle,
                "forging_fraction",
            )
        )
    if lines:
      panels.append(
          Panel(
              saved_results.model_label(model),
              tuple(lines),
              saved_results.largest_reproduction_error(reproduction, model),
          )
      )
  return PanelGrid.one_row(panels)


FIGURE3_ROWS = (
    (
        attack_settings.BatchMode.RANDOM,
        "random batches: the paper's design, one fixed true batch B_r per line, forged at every "
        "attacked step",
    ),
    (
        attack_settings.BatchMode.TRACE,
        "trace batches: the trace's own B_i at each step, one line per run",
    ),
)


def _run_errors(record: dict, replaced: int) -> dict[int, tuple[float, ...]] | None:
  """Every run's error at one fraction (m = replaced), by attacked step, from the record's
  approximation_error.npy (None: not kept)."""
  errors = saved_results.attack_run_errors(record)
  fractions = [f["num_replaced"] for f in record.get("forging_fractions", ())]
  if errors is None or replaced not in fractions:
    return None
  f = fractions.index(replaced)
  return {step: tuple(float(e) for e in errors[s, f]) for s, step in enumerate(record["steps"])}


def _run_series(label: str, records: list[dict], replaced: int) -> list[Series]:
  """The records' errors at one fraction (m = replaced) over their attacked steps: min, mean and
  max over runs from the summaries and every run's line from approximation_error.npy where kept.
  Records that all kept their runs, as many in each and with one seed, make one line per run
  index (the same true batch B_r in random mode); the others each make a series of their own."""
  entries = {
      id(record): [e for e in record["results"] if e["num_replaced"] == replaced]
      for record in records
  }
  records = [record for record in records if entries[id(record)]]
  runs = [_run_errors(record, replaced) for record in records]
  draws = {(record["settings"]["runs"], record["settings"].get("seed")) for record in records}
  if records and all(r is not None for r in runs) and len(draws) == 1:
    by_step = {}
    for record, errors in zip(records, runs):
      for entry in entries[id(record)]:
        by_step.setdefault(entry["step"], (entry, errors[entry["step"]]))
    series = _series(label, [entry for entry, _ in by_step.values()], "step")
    lines = tuple(zip(*(by_step[step][1] for step in series.x)))
    return [dataclasses.replace(series, runs=lines)]
  separate = []
  for record, errors in zip(records, runs):
    series = _series(label, entries[id(record)], "step")
    if errors is not None:
      series = dataclasses.replace(series, runs=tuple(zip(*(errors[step] for step in series.x))))
    separate.append(series)
  return separate


def figure3_panels(reproduction: list[dict], attack_records: list[dict]) -> PanelGrid:
  """Fig. 3: Thudi's error over training, fractions 1/b and 1, one line per true batch.

  One row per batch mode (FIGURE3_ROWS: random, then trace; a mode with no panel has no row), one
  column per (model, b, T) that Thudi's attack reached at three or more steps in some mode: per
  model the largest such (b, T), the same for both modes where both reached it, else each mode's
  largest. A panel holds, per record and fraction, every run's line (or, where the record kept no
  per-run array, the mean over runs with its min..max band)."""
  thudi = [r for r in attack_records if r["settings"]["attack"] == "thudi"]
  steps = collections.defaultdict(set)  # (model, mode, b, T) -> attacked steps
  for record in thudi:
    trace = record["trace"]
    key = (trace["model"], saved_results.batch_mode(record), trace["batch_size"], trace["steps"])
    steps[key] |= {e["step"] for e in record["results"]}
  reached = collections.defaultdict(set)  # (model, mode) -> {(b, T)} at 3 or more steps
  for (model, mode, b, trace_steps), attacked in steps.items():
    if len(attacked) >= 3:
      reached[(model, mode)].add((b, trace_steps))
  columns = []
  for model in sorted({model for model, _ in reached}):
    by_mode = [reached[(model, mode)] for mode, _ in FIGURE3_ROWS]
    common = set.intersection(*by_mode)
    chosen = {max(common)} if common else {max(settings) for settings in by_mode if settings}
    columns += [(model, b, trace_steps) for b, trace_steps in sorted(chosen)]
  row_titles, rows = [], []
  for mode, title in FIGURE3_ROWS:
    row = []
    for model, b, trace_steps in columns:
      if (b, trace_steps) not in reached[(model, mode)]:
        row.append(None)
        continue
      records = [
          r
          for r in thudi
          if (r["trace"]["model"], saved_results.batch_mode(r)) == (model, mode)
          and (r["trace"]["batch_size"], r["trace"]["steps"]) == (b, trace_steps)
      ]
      lines = tuple(
          series
          for label, replaced in (("1/b", 1), ("1", b))
          for series in _run_series(f"fraction {label}", records, replaced)
      )
      row.append(
          Panel(
              f"{saved_results.model_label(model)}, b = {b}, T = {trace_steps}",
              lines,
              saved_results.largest_reproduction_error(reproduction, model),
          )
      )
    if any(row):
      row_titles.append(title)
      rows.append(tuple(row))
  return PanelGrid(
      tuple(row_titles), tuple(rows), "Thudi's attack reached fewer than 3 steps\nin this mode"
  )


def figure6_panels(reproduction: list[dict], attack_records: list[dict]) -> PanelGrid:
  """Fig. 6: Thudi vs Zhang at the middle step, vs forging fraction, per model, b and T; the
  records that attacked the trace's own batches only."""
  attack_records = _trace_batches(attack_records)
  panels = []
  for model, b, trace_steps in sorted({(r["trace"]["model"], *_sizes(r)) for r in attack_records}):
    middle = [
        e
        for e in saved_results.attack_entries(attack_records, model, b, trace_steps)
        if e["step"] == trace_steps // 2
    ]
    lines = tuple(
        _series(attack.capitalize(), chosen, "forging_fraction")
        for attack in ("thudi", "zhang")
        if (chosen := [e for e in middle if e["attack"] == attack])
    )
    if len(lines) == 2:
      panels.append(
          Panel(
              f"{saved_results.model_label(model)}, b = {b}, T = {trace_steps}",
              lines,
              saved_results.largest_reproduction_error(reproduction, model),
          )
      )
  return PanelGrid.one_row(panels)


@dataclasses.dataclass(frozen=True)
class StepSeries:
  """A reproduction result step by step: steps [S] (each update's start step i) and the l2 distance
  of each update, the largest over repeats [S] (summary.json's max_l2_per_step)."""

  label: str
  steps: tuple[int, ...]
  distances: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class AttackPoints:
  """One attack family at one forging fraction on the same (model, dataset, b): its approximation
  errors [k] at the attacked steps [k], every run's (per_run) or, where the runs' array was not
  kept, the smallest over runs."""

  attack: str
  fraction: str
  forging_fraction: float
  steps: tuple[int, ...]
  errors: tuple[float, ...]
  per_run: bool


@dataclasses.dataclass(frozen=True)
class StepsRow:
  """One row of fig_repro_steps: a (model, dataset, b), its reproduction results and attacks."""

  title: str
  series: tuple[StepSeries, ...]
  attacks: tuple[AttackPoints, ...]


def _attack_points(record: dict) -> list[AttackPoints]:
  """Per forging fraction, an attack record's errors by step (non-finite ones, failed runs, left
  out): from approximation_error.npy [S, F, R], or the summary's smallest over runs."""
  runs = saved_results.attack_run_errors(record)
  points = []
  for f, fraction in enumerate(record.get("forging_fractions", ())):
    if runs is not None:
      found = [
          (step, float(error))
          for s, step in enumerate(record["steps"])
          for error in runs[s, f]
          if math.isfinite(error)
      ]
    else:
      found = [
          (e["step"], e["min_approximation_error"])
          for e in record["results"]
          if e["num_replaced"] == fraction["num_replaced"]
          and e["min_approximation_error"] is not None
          and math.isfinite(e["min_approximation_error"])
      ]
    if found:
      points.append(
          AttackPoints(
              record["settings"]["attack"],
              fraction["label"],
              fraction["forging_fraction"],
              tuple(step for step, _ in found),
              tuple(error for _, error in found),
              runs is not None,
          )
      )
  return points


def _trained(record: dict) -> tuple[str, str, int]:
  """The model, dataset and b of the trace a record is about."""
  return record["trace"]["model"], record["trace"]["dataset"], record["trace"]["batch_size"]


def reproduction_steps_rows(reproduction: list[dict], attack_records: list[dict]) -> list[StepsRow]:
  """fig_repro_steps: per (model, dataset, b) with reproduction results that kept their per-step
  distances, one series per result and the attacks on the same model, dataset and b."""
  with_steps = [r for r in reproduction if (r.get("summary") or {}).get("max_l2_per_step")]
  rows = []
  for model, dataset, b in sorted({_trained(r) for r in with_steps}):
    records = [r for r in with_steps if _trained(r) == (model, dataset, b)]
    labels = saved_results.reproduction_labels(records, with_model=False)
    series = sorted(
        (
            StepSeries(label, tuple(r["summary"]["steps"]), tuple(r["summary"]["max_l2_per_step"]))
            for label, r in zip(labels, records)
        ),
        key=lambda line: line.label,
    )
    attacks = collections.defaultdict(list)  # (attack, forging fraction) -> [AttackPoints]
    for record in attack_records:
      if _trained(record) == (model, dataset, b):
        for points in _attack_points(record):
          attacks[(points.attack, points.forging_fraction)].append(points)
    rows.append(
        StepsRow(
            f"{saved_results.model_label(model, dataset)}, b = {b}",
            tuple(series),
            tuple(_merged(attacks[key]) for key in sorted(attacks)),
        )
    )
  return rows


def _merged(points: list[AttackPoints]) -> AttackPoints:
  """The points of one attack and forging fraction from several records (e.g. the middle step and
  the stages), as one."""
  return dataclasses.replace(
      points[0],
      steps=tuple(step for p in points for step in p.steps),
      errors=tuple(error for p in points for error in p.errors),
      per_run=all(p.per_run for p in points),
  )
