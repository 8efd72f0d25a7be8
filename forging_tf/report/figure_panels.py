"""The series of Figures 2, 3 and 6: the attacks' approximation errors from saved records.

Each figure is a list of panels, each panel its lines (min, mean and max over runs) and the
verifier threshold it is judged by; plotting.approximation_error_figure draws them.
"""

import dataclasses

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
