"""Figure 7 and its table: the smallest approximation error each attack reaches against a
distinctness margin D.

The margin D (grey levels: l2 over the pixels in 0..255 units; forging-attack --min_distance)
asks every replacement to lie at least D from every deleted example. D = 0 is the paper's
Definition 1, under which a deleted example moved by one grey level is a distinct replacement.
perturb and gradmatch (attacks/pixel_search.py) search new images on the pixel grid at each D;
Thudi's and Zhang's attacks at D = 0, whose replacements are other real training images, are the
paper's (saved_results.is_paper_attack) and are drawn at a category of their own, "Thudi/Zhang".

A panel is one setting: a trace's (model, dataset, b, T) and a forging fraction at one attacked
step, early, middle or late in training (before, at or after T // 2, the step that
forging-attack --steps=middle attacks). The panels are the settings that an attack other than the
paper's attacked; the paper's attacks join a panel where they attacked the same step of the same
trace (manifest digest) at the same fraction. Each point is one attack at one D: the smallest
approximation error over the runs of its records (re-scored with the float32 SGD step the verifier
runs), judged against the same-platform and the cross-platform thresholds measured for the
panel's model and b (saved_results.thresholds: Tables I and II).

margin_panels builds the panels, margin_table the table (render.py writes it), margin_figure
draws them and caption says what it draws.
"""

import collections
import dataclasses
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
from matplotlib import lines as mlines  # pylint: disable=wrong-import-position

from forging_tf.attacks import settings as attack_settings  # pylint: disable=wrong-import-position
from forging_tf.report import plotting  # pylint: disable=wrong-import-position
from forging_tf.report import saved_results  # pylint: disable=wrong-import-position
from forging_tf.report import table_builders  # pylint: disable=wrong-import-position

REAL_IMAGES = "Thudi/Zhang"  # The x category of the paper's attacks: D = 0, other real images.
# Colour and marker of each attack; an attack added later gets the next of _OTHER_STYLES.
_STYLES = {
    attack_settings.Attack.THUDI: ("tab:green", "^"),
    attack_settings.Attack.ZHANG: ("tab:red", "v"),
    attack_settings.Attack.PERTURB: ("tab:blue", "o"),
    attack_settings.Attack.GRADMATCH: ("tab:orange", "s"),
}
_OTHER_STYLES = (("tab:purple", "D"), ("tab:brown", "P"), ("tab:olive", "X"))
# What each attack's search is, by the settings it records (forging-attack's flags).
_SEARCH_SETTINGS = {
    attack_settings.Attack.THUDI: ("M", "n"),
    attack_settings.Attack.ZHANG: ("neighbours_k",),
    attack_settings.Attack.PERTURB: ("search_iterations", "grid_rounds", "grid_moves"),
    attack_settings.Attack.GRADMATCH: (
        "M",
        "n",
        "neighbours_k",
        "search_iterations",
        "grid_rounds",
        "grid_moves",
    ),
}


@dataclasses.dataclass(frozen=True)
class Setting:
  """One panel's setting: the trace (model, dataset, b, T = trace_steps), the forging fraction
  (m = num_replaced examples replaced; `fraction` is its label as the first record asked it, and
  does not tell settings apart) and the attacked step i."""

  model: str
  dataset: str
  batch_size: int
  trace_steps: int
  num_replaced: int
  forging_fraction: float
  step: int
  fraction: str = dataclasses.field(compare=False)

  @property
  def stage(self) -> str:
    """'early', 'middle' or 'late': the step before, at or after T // 2."""
    middle = self.trace_steps // 2
    return "middle" if self.step == middle else "early" if self.step < middle else "late"

  def trace_label(self) -> str:
    return f"{saved_results.model_label(self.model, self.dataset)}, b = {self.batch_size}"

  def stage_label(self) -> str:
    return f"{self.stage} (step {self.step} of {self.trace_steps})"


@dataclasses.dataclass(frozen=True)
class Point:
  """One attack at one margin D (grey levels) in one setting, over the runs of its records
  (`folders`): the smallest approximation error re-scored with the float32 SGD step, the smallest
  with both updates in float64, and the smallest replacement-to-deleted distance (grey levels);
  None where the records did not record it (forging-attack before 0.2). paper: Thudi's or Zhang's
  attack at D = 0 (drawn at REAL_IMAGES)."""

  attack: str
  min_distance: float
  paper: bool
  error: float
  error_float64: float | None
  margin: float | None
  folders: tuple[str, ...]

  @property
  def order(self) -> tuple:
    """How points are ordered: the paper's attacks first, then by attack and D."""
    return (not self.paper, _attack_order(self.attack), self.attack, self.min_distance)

  def margin_label(self) -> str:
    return "0 (real images)" if self.paper else f"{self.min_distance:g}"


@dataclasses.dataclass(frozen=True)
class Panel:
  """One setting, its points (the paper's attacks first, then each other attack by D) and the
  thresholds of its model and b."""

  setting: Setting
  points: tuple[Point, ...]
  thresholds: saved_results.Thresholds

  @property
  def judged_by(self) -> float | None:
    """The threshold the figure's markers are judged by: the cross-platform one, or where no
    platform pair crossed, the same-platform one."""
    cross = self.thresholds.cross_platform
    return self.thresholds.same_platform if cross is None else cross


def stealthy(error: float, threshold: float | None) -> bool | None:
  """Whether a verifier with `threshold` accepts an error (None: no threshold measured)."""
  return table_builders.StealthCell(error, threshold=threshold).stealthy


def _finite(value) -> bool:
  return value is not None and math.isfinite(value)


def _setting(record: dict, entry: dict) -> Setting:
  trace = record["trace"]
  return Setting(
      trace["model"],
      trace["dataset"],
      int(trace["batch_size"]),
      int(trace["steps"]),
      int(entry["num_replaced"]),
      float(entry["forging_fraction"]),
      int(entry["step"]),
      entry.get("label", f"{entry['forging_fraction']:g}"),
  )


def _smallest(entries: list[dict], key: str) -> float | None:
  return min((e[key] for e in entries if _finite(e.get(key))), default=None)


def _attack_order(attack: str) -> int:
  known = list(attack_settings.Attack)
  return known.index(attack) if attack in known else len(known)


def margin_panels(reproduction: list[dict], attack_records: list[dict]) -> list[Panel]:
  """Figure 7's panels (module docstring), by model, dataset, b, T, forging fraction and step.

  Args:
    reproduction: the reproduction-error records (saved_results.FoundResults.reproduction): the
      thresholds.
    attack_records: every attack record (FoundResults.attacks), the paper's and the others.

  Returns:
    One Panel per setting that an attack other than the paper's attacked with a finite error;
    none when no such attack was run.
  """
  cells = collections.defaultdict(list)  # setting -> [(record, entry)]
  traces = collections.defaultdict(set)  # setting -> manifest digests of its traces
  paper = saved_results.paper_attacks(attack_records)
  for record in attack_records:
    if saved_results.is_paper_attack(record):
      continue
    for entry in record["results"]:
      if _finite(entry["min_approximation_error"]):
        setting = _setting(record, entry)
        cells[setting].append((record, entry))
        traces[setting].add(record["trace"].get("manifest_sha256"))
  for record in paper:
    for entry in record["results"]:
      setting = _setting(record, entry)
      if (
          setting in cells
          and record["trace"].get("manifest_sha256") in traces[setting]
          and _finite(entry["min_approximation_error"])
      ):
        cells[setting].append((record, entry))
  panels = []
  for setting in sorted(
      cells,
      key=lambda s: (s.model, s.dataset, s.batch_size, s.trace_steps, s.forging_fraction, s.step),
  ):
    by_attack = collections.defaultdict(list)  # (paper, attack, D) -> [(record, entry)]
    for record, entry in cells[setting]:
      key = (
          saved_results.is_paper_attack(record),
          record["settings"]["attack"],
          saved_results.min_distance(record),
      )
      by_attack[key].append((record, entry))
    points = [
        Point(
            attack,
            margin,
            is_paper,
            _smallest([entry for _, entry in found], "min_approximation_error"),
            _smallest([entry for _, entry in found], "min_approximation_error_float64"),
            _smallest([entry for _, entry in found], "min_margin"),
            tuple(sorted({record["folder"] for record, _ in found})),
        )
        for (is_paper, attack, margin), found in by_attack.items()
    ]
    panels.append(
        Panel(
            setting,
            tuple(sorted(points, key=lambda point: point.order)),
            saved_results.thresholds(reproduction, setting.model, setting.batch_size),
        )
    )
  return panels


def records_used(panels: list[Panel], attack_records: list[dict]) -> list[dict]:
  """The attack records behind the panels' points, in the order given."""
  folders = {folder for panel in panels for point in panel.points for folder in point.folders}
  return [record for record in attack_records if record["folder"] in folders]


def settings_note(panels: list[Panel], attack_records: list[dict]) -> str:
  """'perturb: 2 runs, search_iterations=100, ...; thudi: 2 runs, M=300, n=3000': each attack's
  runs and search as its records of the panels recorded them."""
  described = set()
  for record in records_used(panels, attack_records):
    settings = record["settings"]
    attack = settings["attack"]
    search = ", ".join(
        f"{name}={settings[name]}" for name in _SEARCH_SETTINGS.get(attack, ()) if name in settings
    )
    described.add(
        (
            _attack_order(attack),
            attack,
            f"{settings['runs']} run(s)" + (f", {search}" if search else ""),
        )
    )
  return "; ".join(f"{attack}: {text}" for _, attack, text in sorted(described))


def _threshold_note(panel: Panel) -> str:
  same, cross = (
      "none measured" if value is None else table_builders.format_error(value)
      for value in (panel.thresholds.same_platform, panel.thresholds.cross_platform)
  )
  return (
      f"{panel.setting.trace_label()}: same-platform threshold {same} (largest eps_repr "
      f"recomputing on the generating platform, Table I), cross-platform threshold {cross} "
      "(largest eps_repr over every measured platform pair, Table II)"
  )


def margin_table(panels: list[Panel], attack_records: list[dict]) -> table_builders.Table:
  """Figure 7's numbers, a row per panel and point (render.py writes it as fig7_table).

  Args:
    panels: margin_panels' panels.
    attack_records: the attack records they were built from (their settings and platforms go
      in the notes).
  """
  rows = []
  for panel in panels:
    setting = panel.setting
    for point in panel.points:
      rows.append(
          (
              setting.trace_label(),
              (
                  table_builders.NameCell(setting.fraction),
                  table_builders.NameCell(setting.stage_label()),
                  table_builders.NameCell(point.attack),
                  table_builders.NameCell(point.margin_label()),
                  table_builders.Cell(point.error, point.folders),
                  table_builders.Cell(point.error_float64),
                  table_builders.LevelCell(point.margin),
                  table_builders.VerdictCell(point.error, threshold=panel.thresholds.same_platform),
                  table_builders.VerdictCell(
                      point.error, threshold=panel.thresholds.cross_platform
                  ),
              ),
          )
      )
  used = records_used(panels, attack_records)
  notes = (
      "stage: early, middle or late in training, before, at or after step T // 2 (the step "
      "forging-attack --steps=middle attacks); fraction: the forging fraction, m = round(f b) "
      "examples of the batch replaced",
      "D: the distinctness margin, every replacement at least D grey levels (l2 over the pixels "
      "in 0..255) from every deleted example (forging-attack --min_distance; 0 is Definition 1); "
      "0 (real images): Thudi's and Zhang's attacks as the paper runs them, replacements other "
      "training images, on the same trace, step and fraction",
      "smallest error: the smallest approximation error over the runs (and over every result of "
      "the attack, D and setting), re-scored with the float32 SGD step the verifier runs; "
      "float64 error: the smallest over the same runs with both updates in float64 from the "
      "logged theta_i, how exact the forgery is free of float32 rounding; margin reached: the "
      "smallest replacement-to-deleted distance over the runs, grey levels; n/a: not recorded "
      "(results of forging-attack before 0.2)",
      "stealthy at a threshold iff the smallest error (float32) is at or below it; n/a: no "
      "threshold measured for the model and b",
      *dict.fromkeys(_threshold_note(panel) for panel in panels),
      f"attacks: {settings_note(panels, attack_records)}",
      *table_builders.platform_notes([r["platform"] for r in used if r.get("platform")]),
  )
  return table_builders.Table(
      "fig7_table",
      "Figure 7's numbers: the smallest approximation error each attack reaches against the "
      "distinctness margin D, stealthy or caught at the same-platform and the cross-platform "
      "thresholds",
      "model / dataset, b",
      (
          "fraction",
          "stage (step)",
          "attack",
          "D (grey levels)",
          "smallest error (float32 SGD step)",
          "float64 error",
          "margin reached (grey levels)",
          "stealthy at same-platform",
          "stealthy at cross-platform",
      ),
      tuple(rows),
      notes if rows else (),
  )


def caption(panels: list[Panel]) -> str:
  """What margin_figure draws."""
  judged = (
      ""
      if all(panel.thresholds.cross_platform is not None for panel in panels)
      else " (where no platform pair crossed for the model and b, at the same-platform one; with "
      "neither measured, hollow)"
  )
  return (
      "Figure 7: the smallest approximation error (over runs, re-scored with the float32 SGD "
      "step) each attack reaches against the distinctness margin D, grey levels (l2 over the "
      "pixels in 0..255), one panel per model, b, forging fraction and attacked step; "
      f"'{REAL_IMAGES}': the paper's attacks (D = 0, replacements other real images). Dashed: "
      "the same-platform threshold (Table I), dotted: the cross-platform threshold (Table II) of "
      "the model and b. Marker filled: stealthy at the cross-platform threshold" + judged + "; "
      "hollow: caught. An error of exactly 0 is drawn a decade below the panel's smallest "
      "positive value."
  )


def _style(attack: str, others: dict) -> tuple[str, str]:
  if attack in _STYLES:
    return _STYLES[attack]
  return others.setdefault(attack, _OTHER_STYLES[len(others) % len(_OTHER_STYLES)])


def _threshold_lines(axis, panel: Panel) -> None:
  for name, value, linestyle, color in (
      ("same-platform", panel.thresholds.same_platform, "--", "tab:gray"),
      ("cross-platform", panel.thresholds.cross_platform, ":", "black"),
  ):
    if value is None:
      continue
    if value > 0:
      axis.axhline(
          value, color=color, linestyle=linestyle, linewidth=1, label=f"{name} {value:.2e}"
      )
    else:  # Bitwise reproduction: a threshold of 0 has no place on a log axis.
      axis.plot([], [], color=color, linestyle=linestyle, label=f"{name} 0 (bitwise), not drawn")


def margin_figure(panels: list[Panel], path_prefix: str, caption_text: str) -> list[str]:
  """Figure 7: a row of panels per trace (model, dataset, b, T), one panel per forging fraction
  and step. x: the margin D as categories ('Thudi/Zhang', then every D of the panels, evenly
  spaced), y: the smallest approximation error, log; a line per attack over its margins, the
  paper's attacks side by side at 'Thudi/Zhang'; the thresholds of the model and b as horizontal
  lines; markers filled when stealthy at the cross-platform threshold (Panel.judged_by), hollow
  when caught. Returns the files written."""
  margins = sorted({p.min_distance for panel in panels for p in panel.points if not p.paper})
  categories = ([REAL_IMAGES] if any(p.paper for pl in panels for p in pl.points) else []) + [
      f"{margin:g}" for margin in margins
  ]
  position = {margin: categories.index(f"{margin:g}") for margin in margins}
  rows = list(dict.fromkeys(panel.setting.trace_label() for panel in panels))
  by_row = [[panel for panel in panels if panel.setting.trace_label() == row] for row in rows]
  columns = max(len(row) for row in by_row)
  height = 3.4 * len(rows) + 1.0  # a row of panels with their threshold legends, the key above
  figure, axes = plt.subplots(len(rows), columns, figsize=(3.1 * columns, height), squeeze=False)
  others = {}
  for r, row_panels in enumerate(by_row):
    for c in range(columns):
      axis = axes[r][c]
      if c >= len(row_panels):
        axis.axis("off")
        continue
      panel = row_panels[c]
      floor = plotting.zero_floor(
          [p.error for p in panel.points]
          + [t for t in (panel.thresholds.same_platform, panel.thresholds.cross_platform) if t]
      )
      paper = [p for p in panel.points if p.paper]
      for attack in dict.fromkeys(p.attack for p in panel.points if not p.paper):
        chosen = [p for p in panel.points if p.attack == attack and not p.paper]
        color, _ = _style(attack, others)
        axis.plot(
            [position[p.min_distance] for p in chosen],
            [p.error if p.error > 0 else floor for p in chosen],
            color=color,
            linewidth=1,
        )
      for point in panel.points:
        color, marker = _style(point.attack, others)
        x = position.get(point.min_distance, 0)
        if point.paper:
          x = 0.15 * (paper.index(point) - (len(paper) - 1) / 2)
        judged = stealthy(point.error, panel.judged_by)
        axis.scatter(
            [x],
            [point.error if point.error > 0 else floor],
            marker=marker,
            s=30,
            facecolors=color if judged else "none",
            edgecolors=color,
            linewidths=1,
            zorder=3,
        )
      _threshold_lines(axis, panel)
      axis.set_yscale("log")
      axis.set_xticks(range(len(categories)))
      axis.set_xticklabels([category.replace("/", "/\n") for category in categories], fontsize=6.5)
      axis.set_xlim(-0.5, len(categories) - 0.5)
      setting = panel.setting
      axis.set_title(
          f"{setting.trace_label()}\nfraction {setting.fraction}, {setting.stage_label()}"
          + ("" if panel.judged_by is not None else "\nno threshold measured"),
          fontsize=7.5,
      )
      axis.set_xlabel("margin D (grey levels)", fontsize=7)
      if c == 0:
        axis.set_ylabel("smallest approximation error (l2)", fontsize=7)
      axis.tick_params(labelsize=6.5)
      if axis.get_legend_handles_labels()[0]:  # Below the panel: the points may be anywhere.
        axis.legend(
            fontsize=5.5,
            title="thresholds",
            title_fontsize=5.5,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.3),
            frameon=False,
        )
  attacks = list(dict.fromkeys(p.attack for panel in panels for p in panel.points))
  handles = [
      mlines.Line2D(
          [],
          [],
          color=_style(attack, others)[0],
          marker=_style(attack, others)[1],
          linestyle="-",
          linewidth=1,
          label=attack.capitalize(),
      )
      for attack in sorted(attacks, key=lambda a: (_attack_order(a), a))
  ]
  handles += [
      mlines.Line2D([], [], color="tab:gray", linestyle="--", label="same-platform threshold"),
      mlines.Line2D([], [], color="black", linestyle=":", label="cross-platform threshold"),
      mlines.Line2D([], [], color="gray", marker="o", linestyle="", label="filled: stealthy"),
      mlines.Line2D(
          [],
          [],
          color="gray",
          marker="o",
          markerfacecolor="none",
          linestyle="",
          label="hollow: caught",
      ),
  ]
  figure.legend(
      handles=handles, loc="upper center", ncol=min(len(handles), 5), fontsize=7, frameon=False
  )
  figure.tight_layout(rect=(0, 0, 1, 1 - 0.55 / height))
  figure.text(0.01, -0.01, caption_text, ha="left", va="top", fontsize=6.5, wrap=True)
  return plotting.save_figure(figure, path_prefix)
