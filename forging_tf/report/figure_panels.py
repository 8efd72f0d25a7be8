"""The series of the figures, from saved records.

Figures 2, 3 and 6, the attacks' approximation errors: each figure is a list of panels, each panel
its lines (min, mean and max over runs) and the verifier threshold it is judged by;
plotting.approximation_error_figure draws them.

fig_repro_steps, the reproduction error step by step: one row per (model, dataset, b), each
reproduction result's per-step distance and the attacks' approximation errors at their steps;
plotting.reproduction_steps_figure draws them.
"""

import collections
import dataclasses
import math

from forging_tf.report import saved_results


@dataclasses.dataclass(frozen=True)
class Series:
  """One line of a figure: x [k], the minimum, mean and maximum over runs [k], and its label."""

  label: str
  x: tuple[float, ...]
  minimum: tuple[float, ...]
  mean: tuple[float, ...]
  maximum: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Panel:
  """One panel of a figure: its title, lines, and the verifier threshold to draw (if measured)."""

  title: str
  series: tuple[Series, ...]
  threshold: float | None


def _series(label: str, entries: list[dict], x_key: str) -> Series:
  entries = sorted(entries, key=lambda e: e[x_key])
  return Series(
      label,
      tuple(e[x_key] for e in entries),
      tuple(e["min_approximation_error"] for e in entries),
      tuple(e["mean_approximation_error"] for e in entries),
      tuple(e["max_approximation_error"] for e in entries),
  )


def figure2_panels(reproduction: list[dict], attack_records: list[dict]) -> list[Panel]:
  """Fig. 2: Thudi's error vs forging fraction at the middle step, one line per b, per model."""
  panels = []
  for model in sorted({r["trace"]["model"] for r in attack_records}):
    lines = []
    for b in sorted(
        {r["trace"]["batch_size"] for r in attack_records if r["trace"]["model"] == model}
    ):
      middle = [
          e
          for e in saved_results.attack_entries(attack_records, model, b)
          if e["attack"] == "thudi" and e["step"] == e["trace_steps"] // 2
      ]
      if middle:
        lines.append(_series(f"b = {b} (step {middle[0]['step']})", middle, "forging_fraction"))
    if lines:
      panels.append(
          Panel(
              saved_results.model_label(model),
              tuple(lines),
              saved_results.largest_reproduction_error(reproduction, model),
          )
      )
  return panels


def figure3_panels(reproduction: list[dict], attack_records: list[dict]) -> list[Panel]:
  """Fig. 3: Thudi's error at every attacked stage, fractions 1/b and 1, at the largest b that
  was attacked at three or more steps, per model."""
  panels = []
  for model in sorted({r["trace"]["model"] for r in attack_records}):
    for b in sorted(
        {r["trace"]["batch_size"] for r in attack_records if r["trace"]["model"] == model},
        reverse=True,
    ):
      entries = [
          e
          for e in saved_results.attack_entries(attack_records, model, b)
          if e["attack"] == "thudi"
      ]
      if len({e["step"] for e in entries}) < 3:
        continue
      lines = tuple(
          _series(f"fraction {label}", chosen, "step")
          for label, replaced in (("1/b", 1), ("1", b))
          if (chosen := [e for e in entries if e["num_replaced"] == replaced])
      )
      panels.append(
          Panel(
              f"{saved_results.model_label(model)}, b = {b}",
              lines,
              saved_results.largest_reproduction_error(reproduction, model),
          )
      )
      break
  return panels


def figure6_panels(reproduction: list[dict], attack_records: list[dict]) -> list[Panel]:
  """Fig. 6: Thudi vs Zhang at the middle step, vs forging fraction, per model and b."""
  panels = []
  for model, b in sorted({(r["trace"]["model"], r["trace"]["batch_size"]) for r in attack_records}):
    middle = [
        e
        for e in saved_results.attack_entries(attack_records, model, b)
        if e["step"] == e["trace_steps"] // 2
    ]
    lines = tuple(
        _series(attack.capitalize(), chosen, "forging_fraction")
        for attack in ("thudi", "zhang")
        if (chosen := [e for e in middle if e["attack"] == attack])
    )
    if len(lines) == 2:
      panels.append(
          Panel(
              f"{saved_results.model_label(model)}, b = {b}",
              lines,
              saved_results.largest_reproduction_error(reproduction, model),
          )
      )
  return panels


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
