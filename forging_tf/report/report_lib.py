"""REPORT.md: the tables, the figures, and what they say, from saved results only.

write_report renders Tables I-IV and Figures 2-6 (table_builders, figure_panels, plotting), and
where the reproduction error sits (fig_repro_steps, tables repro_distribution and
repro_variables), and writes one Markdown report around them that answers the questions a reader
brings: how large benign reproduction errors are on each platform pair and how many steps set the
largest, how large the attacks' approximation errors are, which of those a verifier would accept
at which threshold, what exact forging achieved, and how all of it compares with the paper's
published Tables I-III (paper_comparison: "Comparison with the paper").
Table III, Figures 2, 3, 6 and R, the attack findings and "Choosing epsilon" read the paper's
attacks only (saved_results.paper_attacks: Thudi's and Zhang's with no distinctness margin), so
that the searches against a margin saved beside them change none of their numbers; those
searches have a section of their own, Figure 7 and its table (margin_figure), rendered only where
they were run.
Every number in it is read from a result file, and every platform is spelled out from its
fingerprint.
"""

import collections
import os

import numpy as np

from forging_tf import results
from forging_tf.calibrate import calibrate_lib
from forging_tf.calibrate import plotting as calibrate_plotting
from forging_tf.report import exact_question
from forging_tf.report import figure_panels
from forging_tf.report import margin_figure
from forging_tf.report import paper_comparison
from forging_tf.report import platforms
from forging_tf.report import plotting
from forging_tf.report import render
from forging_tf.report import saved_results
from forging_tf.report import table_builders

_fmt = table_builders.format_error

_FIGURE3_CAPTION = (
    "Figure 3: approximation error over training, one line per true batch (Thudi et al.)"
)
_COMPARISON_TEXT = (
    "The paper's published Tables I-III (orders of magnitude, on an RTX 4090 and a V100) beside "
    "ours (the records above, on our platforms). Approximation errors are compared in the paper's "
    "released code's scale as well as in its definition, which we measure: "
    + paper_comparison.RELEASED_SCALE
    + ". Where ours and the paper's differ by more than one order of magnitude, the last column "
    "gives the measured facts behind it.",
)


def write_report(
    results_dirs: list[str],
    report_dir: str,
    report_path: str,
    title: str = "Data forging: reproduction and approximation errors",
    preamble: tuple[str, ...] | list[str] = (),
) -> str:
  """Renders the tables and figures into report_dir and writes REPORT.md around them.

  Args:
    results_dirs: folders whose saved results (every record under them) are read.
    report_dir: where the tables (.md, .tex, .csv) and figures (.png, .pdf) are written.
    report_path: the Markdown report to write; it links to report_dir.
    title: its first heading.
    preamble: lines that go first (forging-reproduce: how the study was produced).

  Returns:
    report_path.

  Raises:
    ConfigError: no results under results_dirs.
    ForgingError: a record lacks a field the tables read, or cannot be read.
  """
  found = saved_results.find_results(results_dirs)
  tables, figures = render_tables_and_figures(found, report_dir)
  by_name = {table.name: table for table in tables}
  link = os.path.relpath(report_dir, os.path.dirname(os.path.abspath(report_path)))

  def figure(name: str, caption: str, alt: str | None = None) -> list[str]:
    if os.path.join(report_dir, f"{name}.png") not in figures:
      return []
    return [
        f"![{alt or caption}]({link}/{name}.png)",
        "",
        f"*{caption}* ([PDF]({link}/{name}.pdf))",
        "",
    ]

  def table(name: str) -> list[str]:
    if name not in by_name:
      return []
    return [
        render.to_markdown(by_name[name]),
        f"([LaTeX]({link}/{name}.tex), [CSV]({link}/{name}.csv))",
        "",
    ]

  lines = [f"# {title}", "", *preamble, ""]
  lines += ["## Findings", ""]
  lines += _reproduction_findings(found.reproduction)
  lines += _attack_findings(found.reproduction, found.paper_attacks)
  margin_panels = margin_figure.margin_panels(found.reproduction, found.attacks)
  lines += _margin_findings(margin_panels)
  lines += _exact_findings(found.exact, found.table4)
  lines += ["## Platforms", ""] + _platforms(found) + [""]
  lines += ["## Benign reproduction errors (Tables I and II)", ""]
  lines += [line for name in ("table1", "table2a", "table2b", "table2c") for line in table(name)]
  lines += ["## Where the reproduction error sits (per step and per variable)", ""]
  lines += figure(
      "fig_repro_steps",
      _repro_steps_caption(found.reproduction, found.paper_attacks),
      "Figure R: the reproduction error step by step",
  )
  lines += table("repro_distribution") + table("repro_variables") + table("outlier_causes")
  if "repro_distribution" in by_name and "repro_variables" not in by_name:
    lines += [
        "Which variable carries the error: not recorded (these results were written before "
        "forging-recompute split its distances by variable; recompute to see it).",
        "",
    ]
  lines += ["## Approximation errors of the attacks (Table III, Figures 2, 3 and 6)", ""]
  lines += table("table3")
  lines += figure(
      "fig2",
      "Figure 2: approximation error vs forging fraction at the middle step (Thudi et al.; "
      "the records that attacked the trace's own batches)",
  )
  lines += figure("fig3", _FIGURE3_CAPTION)
  lines += figure(
      "fig6",
      "Figure 6: Thudi et al. vs Zhang et al. at the middle step (the records that attacked the "
      "trace's own batches)",
  )
  if "comparison" in by_name:
    lines += ["## Comparison with the paper", "", *_COMPARISON_TEXT, ""] + table("comparison")
  lines += _choosing_epsilon(found, report_dir, link) + table("pol_coverage")
  if margin_panels:
    lines += ["## Forging against a distinctness margin (Figure 7)", ""]
    lines += _margin_text(margin_panels, found.attacks)
    lines += figure("fig7", margin_figure.caption(margin_panels), "Figure 7") + table("fig7_table")
  lines += ["## Exact forging (Figures 4 and 5, Table IV)", ""]
  lines += figure("fig4", "Figure 4: mini-batch perturbation (Prop. 2)")
  lines += figure("fig5", "Figure 5: error-matrix sampling (Prop. 3)")
  lines += exact_question.exact_question_lines(found.exact)
  lines += table("table4")
  lines += ["## Where the numbers come from", ""] + _sources(found, report_path) + [""]
  results.write_text(report_path, "\n".join(lines))
  return report_path


def render_tables_and_figures(
    found: saved_results.FoundResults, out_dir: str
) -> tuple[list[table_builders.Table], list[str]]:
  """Renders every table and figure `found` allows into out_dir (tables as .md/.tex/.csv plus
  tables.md with all of them; figures as .png/.pdf)."""
  tables = []
  if found.reproduction:
    tables += [
        table_builders.table1(found.reproduction),
        *(table_builders.table2(found.reproduction, part) for part in "abc"),
        table_builders.repro_distribution(found.reproduction),
        table_builders.repro_variables(found.reproduction),
        table_builders.outlier_causes(list(found.outliers)),
        table_builders.pol_coverage(found.reproduction),
    ]
  if found.paper_attacks:
    tables.append(table_builders.table3(found.reproduction, found.paper_attacks))
  if found.reproduction or found.paper_attacks:
    tables.append(paper_comparison.comparison(found.reproduction, found.paper_attacks))
  margin_panels = margin_figure.margin_panels(found.reproduction, found.attacks)
  if margin_panels:
    tables.append(margin_figure.margin_table(margin_panels, found.attacks))
  if found.table4:
    tables.append(table_builders.table4(found.table4))
  tables = [table for table in tables if table.rows]  # Nothing measured: no table.
  for table in tables:
    render.write_table(table, out_dir)
  results.write_text(
      os.path.join(out_dir, "tables.md"), "\n".join(render.to_markdown(table) for table in tables)
  )
  figures = _render_figures(found.reproduction, found.paper_attacks, found.exact, out_dir)
  if margin_panels:
    figures += margin_figure.margin_figure(
        margin_panels, os.path.join(out_dir, "fig7"), margin_figure.caption(margin_panels)
    )
  return tables, figures


def _render_figures(
    reproduction: list[dict], attack_records: list[dict], exact: list[dict], out_dir: str
) -> list[str]:
  """The paper's figures and fig_repro_steps; attack_records: the paper's attacks' only."""
  figures = []
  if rows := figure_panels.reproduction_steps_rows(reproduction, attack_records):
    figures += plotting.reproduction_steps_figure(
        rows,
        os.path.join(out_dir, "fig_repro_steps"),
        _repro_steps_caption(reproduction, attack_records),
    )
  if attack_records:
    platform_ids = ", ".join(
        sorted({r["platform"]["id"] for r in attack_records if r.get("platform")})
    )
    measured = (
        "Approximation error re-scored with the SGD step, on platform "
        + (platform_ids or "not recorded")
        + "; "
        + table_builders.attack_runs_note(attack_records, ", M = {M}")
        + ". "
    )
    threshold = "dotted: the largest reproduction error measured for the model (forging-recompute)."
    middle = (
        measured
        + "The records that attacked the trace's own batch B_i at the middle step (those that "
        "forged random true batches are in Figure 3). Line: mean over runs, band: min..max, "
        "dashed: min; " + threshold
    )
    over_training = (
        f"{_FIGURE3_CAPTION}. "
        + measured
        + "Rows: "
        + "; ".join(title for _, title in figure_panels.FIGURE3_ROWS)
        + " (a mode no record used has no row). Columns: per model, the largest b and T that "
        "Thudi's attack reached at 3 or more steps. Thin lines: each run's error "
        "(approximation_error.npy) over the record's attacked steps, colour by forging fraction; "
        "a record that kept no per-run array: its mean over runs, min..max band, dashed min; "
        + threshold
    )
    for name, grid, x_label, log_x, caption in (
        (
            "fig2",
            figure_panels.figure2_panels(reproduction, attack_records),
            "forging fraction",
            True,
            middle,
        ),
        (
            "fig3",
            figure_panels.figure3_panels(reproduction, attack_records),
            "training step",
            False,
            over_training,
        ),
        (
            "fig6",
            figure_panels.figure6_panels(reproduction, attack_records),
            "forging fraction",
            True,
            middle,
        ),
    ):
      if grid:
        figures += plotting.approximation_error_figure(
            grid, os.path.join(out_dir, name), x_label, log_x, caption
        )
  for summary in exact:
    batches = os.path.join(os.path.dirname(summary["path"]), "data.npz")
    if not os.path.exists(batches):
      continue  # The batches were not kept (e.g. dataset images left out of git).
    with np.load(batches, allow_pickle=False) as arrays:
      figures += plotting.draw_exact(
          summary, dict(arrays), os.path.join(out_dir, summary["experiment"])
      )
  return figures


def _choosing_epsilon(found: saved_results.FoundResults, report_dir: str, link: str) -> list[str]:
  """The section "Choosing epsilon": forging-calibrate on the same results (calibrate_lib), its
  trade-off figure and tables."""
  if not found.reproduction:
    return []
  calibration = calibrate_lib.calibrate(list(found.dirs), paper_attacks_only=True)
  drawn = calibrate_plotting.tradeoff(calibration.models, os.path.join(report_dir, "tradeoff"))
  body = calibrate_lib.markdown(calibration).splitlines()[1:]  # Its title is this section's.
  lines = [
      "## Choosing epsilon",
      "",
      "The verifier's threshold from the measured reproduction errors (forging-calibrate on the "
      "results above; docs/CALIBRATION.md): each policy is fitted to all platform pairs of a "
      "model but one and judged on the honest steps of the pair left out (LOPO), and against "
      "the forged steps of the paper's attacks (Thudi's and Zhang's, with no distinctness "
      "margin).",
  ]
  if drawn:
    caption = (
        "Trade-off: honest steps rejected (LOPO mean over held-out platform pairs) against forged "
        "cells accepted, one curve per policy swept over its parameter"
    )
    lines += [
        "",
        f"![{caption}]({link}/tradeoff.png)",
        "",
        f"*{caption}* ([PDF]({link}/tradeoff.pdf))",
    ]
  demoted = [line.replace("## ", "### ", 1) if line.startswith("## ") else line for line in body]
  return lines + demoted + [""]


def _repro_steps_caption(reproduction: list[dict], attack_records: list[dict]) -> str:
  """What fig_repro_steps draws, and from which results."""
  rows = figure_panels.reproduction_steps_rows(reproduction, attack_records)
  results_drawn = sum(len(row.series) for row in rows)
  attacks = [p for row in rows for p in row.attacks]
  kept = {p.per_run for p in attacks}
  drawn = {
      frozenset({True}): "every run's error (approximation_error.npy)",
      frozenset({False}): "the smallest over runs (summary.json; the per-run arrays were not kept)",
      frozenset({True, False}): "every run's error (approximation_error.npy), or the smallest over "
      "runs (summary.json) where the per-run arrays were not kept",
  }
  attack_text = (
      f" Markers: the approximation errors of the attacks on the same model, dataset and b "
      f"(forging-attack), at their attacked steps, {drawn[frozenset(kept)]}; one shape per "
      "forging fraction, filled or open by attack family; in the histogram, a rug at its right "
      "edge."
      if attacks
      else " No attack was run on these models and batch sizes."
  )
  return (
      "Figure R: the reproduction error step by step. Left, per model and b: the l2 distance "
      "between each recomputed update and the logged parameters, the largest over repeats "
      f"(summary.json's max_l2_per_step of {results_drawn} forging-recompute results), one line "
      "per result, named generated on -> recomputed on and, where any, how many of its steps "
      "reproduced bitwise; exact zeros are drawn at a dotted floor a decade below the smallest "
      "positive value, since a log axis has no 0. Beside it: the same distances as a histogram "
      "(log-spaced bins, log counts) on the same axis: eps_repr, the paper's reproduction error, "
      "is the highest step of the left panel and the top of the histogram." + attack_text
  )


def _model(record_trace: dict) -> str:
  return saved_results.model_label(record_trace["model"], record_trace["dataset"])


def _same_platform(record: dict) -> bool:
  return record["generator_platform"]["id"] == record["platform"]["id"]


def _reproduction_findings(reproduction: list[dict]) -> list[str]:
  if not reproduction:
    return ["- **Reproduction errors:** none measured (no forging-recompute results).", ""]
  labels = _labels(reproduction, [])
  lines = [
      "- **Benign reproduction error on the generating platform** (the verifier recomputes "
      "on the hardware and settings that trained):"
  ]
  by_model = collections.defaultdict(list)
  for record in reproduction:
    if _same_platform(record):
      by_model[_model(record["trace"])].append(record)
  for model, records in sorted(by_model.items()):
    bitwise = sum(r["eps_repr"] == 0 for r in records)
    lines.append(
        f"  - {model}: largest eps_repr {_fmt(max(r['eps_repr'] for r in records))} "
        f"over {len(records)} results ({bitwise} bitwise), "
        f"b = {', '.join(str(b) for b in sorted({r['trace']['batch_size'] for r in records}))}, "
        f"on {', '.join(sorted({labels[r['generator_platform']['id']] for r in records}))}."
    )
  pairs = collections.defaultdict(list)
  for record in reproduction:
    if not _same_platform(record):
      pairs[(labels[record["generator_platform"]["id"]], labels[record["platform"]["id"]])].append(
          record
      )
  if pairs:
    lines.append(
        "- **Benign reproduction error across platforms** (generated on -> recomputed "
        "on: largest eps_repr, and what was recomputed):"
    )
    for (generator, recomputer), records in sorted(pairs.items()):
      what = ", ".join(
          sorted({f"{_model(r['trace'])} b={r['trace']['batch_size']}" for r in records})
      )
      lines.append(
          f"  - {generator} -> {recomputer}: "
          f"{_fmt(max(r['eps_repr'] for r in records))} ({what})"
      )
  else:
    lines.append(
        "- **Across platforms:** not measured (every result recomputed on its "
        "generating platform)."
    )
  return lines + [""]


def _thresholds(reproduction: list[dict], model: str) -> list[tuple[str, float]]:
  """The verifier thresholds a reader can justify for `model` from what was measured, named."""
  measured = saved_results.thresholds(reproduction, model)
  return [
      (what, value)
      for what, value in (
          (
              "same platform (largest eps_repr recomputing on the generating platform)",
              measured.same_platform,
          ),
          (
              "any measured platform pair (largest eps_repr over all pairs; Table III's)",
              measured.cross_platform,
          ),
      )
      if value is not None
  ]


def _attack_findings(reproduction: list[dict], attacks: list[dict]) -> list[str]:
  if not attacks:
    return ["- **Attacks:** none run (no forging-attack results).", ""]
  lines = [
      "- **Approximation errors of the attacks** (smallest over runs, re-scored with the "
      "SGD step; per model, attack and forging fraction, over the attacked steps):"
  ]
  # (model, b, attack, fraction label) -> [(error, step)]
  best = collections.defaultdict(list)
  for record in attacks:
    for entry in record["results"]:
      if entry["min_approximation_error"] is not None:
        best[
            (
                _model(record["trace"]),
                record["trace"]["model"],
                record["trace"]["batch_size"],
                record["settings"]["attack"],
                entry["label"],
            )
        ].append((entry["min_approximation_error"], entry["step"], entry["forging_fraction"]))
  for (model, _, b, attack, fraction), values in sorted(
      best.items(), key=lambda item: (*item[0][:4], item[1][0][2])
  ):
    error, step, _ = min(values)
    lines.append(
        f"  - {model} b={b}, {attack}, fraction {fraction}: {_fmt(error)} "
        f"(step {step}; {len(values)} step(s) attacked)"
    )
  lines.append(
      "- **Stealth** (an attack result is stealthy at a threshold when its error is at "
      "or below it; the verifier cannot then tell the forged step from benign noise):"
  )
  for model_name in sorted({key[1] for key in best}):
    cells = {key: min(values)[0] for key, values in best.items() if key[1] == model_name}
    model = next(iter(cells))[0]
    thresholds = _thresholds(reproduction, model_name)
    if not thresholds:
      lines.append(f"  - {model}: no reproduction error measured, so no threshold to judge by.")
    for what, threshold in thresholds:
      stealthy = [
          f"{attack} b={b} fraction {fraction} ({_fmt(error)})"
          for (_, _, b, attack, fraction), error in sorted(cells.items())
          if error <= threshold
      ]
      lines.append(
          f"  - {model}, threshold {_fmt(threshold)} = {what}: {len(stealthy)} of "
          f"{len(cells)} stealthy" + (f": {'; '.join(stealthy)}." if stealthy else ".")
      )
  return lines + [""]


def _margin_findings(panels: list[margin_figure.Panel]) -> list[str]:
  """Per attack and margin, in how many of Figure 7's settings it is stealthy at each threshold."""
  if not panels:
    return []
  counts = {}  # (attack, D label) -> [same-platform stealthy, cross-platform stealthy, settings]
  for panel in panels:
    for point in sorted(panel.points, key=lambda p: p.order):
      count = counts.setdefault((point.order, point.attack, point.margin_label()), [0, 0, 0])
      count[0] += bool(margin_figure.stealthy(point.error, panel.thresholds.same_platform))
      count[1] += bool(margin_figure.stealthy(point.error, panel.thresholds.cross_platform))
      count[2] += 1
  return [
      "- **Forging against a distinctness margin D (Figure 7)**, settings in which the smallest "
      "error is stealthy at the same-platform / cross-platform threshold of its model and b, of "
      "the settings attacked: "
      + "; ".join(
          f"{attack} D = {margin}: {same} / {cross} of {settings}"
          for (_, attack, margin), (same, cross, settings) in sorted(counts.items())
      )
      + ".",
      "",
  ]


def _margin_text(panels: list[margin_figure.Panel], attack_records: list[dict]) -> list[str]:
  """What Figure 7 measures, on which platforms and with which settings."""
  fingerprints = [
      r["platform"] for r in margin_figure.records_used(panels, attack_records) if r.get("platform")
  ]
  labels = platforms.platform_labels(fingerprints)
  stages = {}  # trace -> {step: stage}
  for panel in panels:
    setting = panel.setting
    stages.setdefault(f"{setting.trace_label()} (T = {setting.trace_steps})", {})[
        setting.step
    ] = setting.stage
  return [
      "Definition 1 calls a forged batch distinct when it differs from the logged one, so a "
      "deleted example moved by one grey level counts as a replacement. The distinctness margin D "
      "asks more: every replacement at least D grey levels (l2 over the pixels in 0..255 units) "
      "from every deleted example (forging-attack --min_distance; D = 0 is Definition 1). perturb "
      "moves each deleted example D away along the directions its gradient barely sees: at D = 1 "
      "grey level it measures Definition 1's loophole, and at larger D how far it reaches. "
      "gradmatch starts from Thudi's and Zhang's replacements and moves their pixels to match the "
      "deleted examples' gradient. Both search new images on the 8-bit pixel grid "
      "(attacks/pixel_search.py); 'Thudi/Zhang' are the paper's attacks at D = 0, whose "
      "replacements are other real training images, on the same trace, step and fraction. Each "
      "point is the smallest approximation error over the runs, re-scored with the float32 SGD "
      "step the verifier runs; the thresholds are those measured for the model and b: "
      "same-platform, the largest eps_repr recomputing on the generating platform (Table I), and "
      "cross-platform, the largest over every measured platform pair (Table II).",
      "",
      "Attacked on "
      + (
          ", ".join(
              f"`{labels[platform_id]}` ({platform_id})"
              for platform_id in sorted({f["id"] for f in fingerprints})
          )
          or "a platform not recorded"
      )
      + f"; {margin_figure.settings_note(panels, attack_records)}. Steps: "
      + "; ".join(
          f"{trace}: "
          + ", ".join(f"{stage} = step {step}" for step, stage in sorted(by_step.items()))
          for trace, by_step in stages.items()
      )
      + ".",
      "",
  ]


def _exact_findings(exact: list[dict], table4: dict | None) -> list[str]:
  lines = []
  for summary in sorted(exact, key=lambda s: s["experiment"]):
    if summary["experiment"] == "fig4":
      space = summary["solution_space"]
      lines.append(
          f"- **Exact forging by mini-batch perturbation (Prop. 2, Fig. 4):** {summary['model']} "
          f"with {summary['hidden']} hidden units on {summary['dataset']}, b = "
          f"{summary['batch_size']}: a distinct batch (distinct: {summary['distinct']}) with "
          f"approximation error {_fmt(summary['approximation_error'])} in the float32 SGD step "
          f"and {_fmt(summary['approximation_error_float64'])} in float64; solution space of "
          f"dimension {space['dimension']}. In the data domain: {summary['in_domain']} (pixels "
          f"leave [0, 1] by up to {summary['domain_box']:.3g}, the 8-bit grid by "
          f"{summary['domain_grid']:.3g})."
      )
    elif summary["experiment"] == "fig5":
      parts = [
          f"{name}: error {_fmt(d['approximation_error'])} (float64 "
          f"{_fmt(d['approximation_error_float64'])}), in the domain: {d['in_domain']} "
          f"(labels off one-hot by {d['domain_label']:.3g})"
          for name, d in summary["datasets"].items()
      ]
      lines.append(
          "- **Exact forging by error-matrix sampling (Prop. 3, Fig. 5)**, softmax "
          "regression: " + "; ".join(parts) + "."
      )
    elif summary["experiment"] == "domain":
      best = summary.get("best")
      where = (
          f"checkpoint {summary['checkpoint']} of a trained trace, biases up to "
          f"{summary.get('biases_max_abs', float('nan')):.2g}"
          if summary.get("checkpoint") is not None
          else "theta_0, the random initialisation with zero biases"
      )
      if best and best.get("in_domain") and best.get("distinct"):
        error64 = best.get("approximation_error_float64")
        exact = error64 is not None and error64 < 1e-15
        lines.append(
            f"- **In-domain {'exact' if exact else 'approximate'} forgery** "
            f"({summary['model']}, {summary['dataset']}, b = {summary['batch_size']}, at "
            f"{where}): the {best['method']} search found a valid, distinct batch "
            f"({best.get('pixels_changed', '?')} pixels changed) with approximation error "
            f"{_fmt(best['approximation_error'])} in the float32 step and {_fmt(error64)} in "
            "float64 (an exact forgery is at float64 rounding, ~1e-17)."
        )
      else:
        lines.append(
            f"- **In-domain forgery** ({summary['model']}, {summary['dataset']}, "
            f"b = {summary['batch_size']}, at {where}): no valid distinct batch found."
        )
  if table4:
    cells = table4["cells"]
    lines.append(
        f"- **Brute force (Table IV):** {sum(c['decided'] for c in cells)} of "
        f"{len(cells)} cells decided; {sum(c['found'] for c in cells)} with a distinct "
        "batch of exactly the true batch's gradient."
    )
  if not lines:
    lines = ["- **Exact forging:** not run (no forging-exact or forging-bruteforce results)."]
  return lines + [""]


def _labels(reproduction: list[dict], others: list[dict]) -> dict[str, str]:
  return platforms.platform_labels(
      [r[side] for r in reproduction for side in ("generator_platform", "platform")] + others
  )


def _platforms(found: saved_results.FoundResults) -> list[str]:
  fingerprints = (
      [r[side] for r in found.reproduction for side in ("generator_platform", "platform")]
      + [r["platform"] for r in found.attacks + found.exact if r.get("platform")]
      + ([found.table4["platform"]] if found.table4 and found.table4.get("platform") else [])
  )
  return [
      f"- `{label}` (id {platform_id}): {description}."
      for label, platform_id, description in platforms.described_platforms(fingerprints)
  ]


def _relative(path: str, report_path: str) -> str:
  """`path` as REPORT.md names it: relative to the report's folder, or as given where no relative
  path leads there (a URL, another drive)."""
  if "://" in path:
    return path
  try:
    return os.path.relpath(path, os.path.dirname(os.path.abspath(report_path)))
  except ValueError:
    return path


def _sources(found: saved_results.FoundResults, report_path: str) -> list[str]:
  """Each result folder (relative to the report's) and the command that wrote it."""
  folders = ", ".join(f"`{_relative(d, report_path)}`" for d in found.dirs)
  lines = [f"Results read from {folders} (relative to this report's folder):", ""]
  for record in found.reproduction + found.attacks + found.exact:
    lines.append(f"- `{record['folder']}`: {_command(record)}")
  if found.table4:
    lines.append(f"- `{_relative(found.table4['path'], report_path)}`: {_command(found.table4)}")
  return lines


def _command(record: dict) -> str:
  """The command that wrote a record, without the interpreter's path (which says nothing about
  the result; earlier versions recorded it)."""
  command = record.get("command")
  if not command:
    version = record.get("package_version")
    return f"(no command recorded{f': written by forging_tf {version}' if version else ''})"
  words = command.split()
  while words and (os.path.basename(words[0]).startswith("python") or words[0] == "-m"):
    words = words[1:]
  return f"`{' '.join([os.path.basename(words[0]), *words[1:]]) if words else command}`"
