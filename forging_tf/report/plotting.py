"""Figures, drawn from saved results only (the arrays and summary an experiment wrote), so that a
figure can be redrawn without re-running anything. Each figure is written as PNG and PDF.

Fig. 2, 3 and 6: approximation error of the greedy attacks (rows of panels from figure_panels),
with the largest measured reproduction error as the verifier's threshold.
Fig. 4 and Fig. 5: original batch against forged batch, the measured approximation error in the
caption. Images are shown clipped to [0, 1]; how far the forged pixels leave [0, 1] is in the
caption, since clipping hides it.
fig_repro_steps: the reproduction error step by step and as a histogram, the attacks'
approximation errors on the same axis (rows from figure_panels.reproduction_steps_rows).
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from matplotlib import transforms  # pylint: disable=wrong-import-position


def save_figure(figure, path_prefix: str) -> list[str]:
  """Writes `figure` as path_prefix.png (150 dpi) and .pdf, closes it; returns the two paths."""
  os.makedirs(os.path.dirname(os.path.abspath(path_prefix)), exist_ok=True)
  paths = [f"{path_prefix}.png", f"{path_prefix}.pdf"]
  figure.savefig(paths[0], dpi=150, bbox_inches="tight")
  figure.savefig(paths[1], bbox_inches="tight")
  plt.close(figure)
  return paths


def _show(axis, image: np.ndarray, title: str | None = None) -> None:
  """image [h, w, c] float: grey for c = 1, RGB for c = 3, clipped to [0, 1]."""
  image = np.clip(image, 0.0, 1.0)
  if image.shape[-1] == 1:
    axis.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
  else:
    axis.imshow(image)
  axis.set_xticks([])
  axis.set_yticks([])
  if title is not None:
    axis.set_title(title, fontsize=6, pad=2)


def _grid(figure, cell, images: np.ndarray, columns: int, heading: str, titles=None) -> None:
  """Draws images [k, h, w, c] as a grid with `columns` columns inside one gridspec cell."""
  rows = -(-len(images) // columns)
  inner = cell.subgridspec(rows, columns, wspace=0.05, hspace=0.25 if titles else 0.05)
  for i, image in enumerate(images):
    axis = figure.add_subplot(inner[i // columns, i % columns])
    _show(axis, image, None if titles is None else titles[i])
    if i == 0:
      axis.text(
          0.0,
          1.35 if titles else 1.08,
          heading,
          transform=axis.transAxes,
          fontsize=8,
          fontweight="bold",
          va="bottom",
      )


def fig4(arrays, summary: dict, path_prefix: str, columns: int = 8) -> list[str]:
  """Fig. 4: a batch and its mini-batch perturbation (Prop. 2).

  arrays: "original" and "forged" [b, h, w, c] float32, "labels" [b] int (as saved by
  forging-exact --experiment=fig4); summary: its summary.json. Returns the files written.
  """
  original, forged = arrays["original"], arrays["forged"]
  labels = [f"y={int(label)}" for label in arrays["labels"]]
  rows = -(-len(original) // columns)
  figure = plt.figure(figsize=(2 * 0.9 * columns, 0.95 * rows + 1.2))
  cells = figure.add_gridspec(1, 2, wspace=0.08)
  _grid(figure, cells[0], original, columns, "original batch", labels)
  _grid(figure, cells[1], forged, columns, "forged batch (same labels)", labels)
  space = summary["solution_space"]
  figure.text(
      0.5,
      -0.02,
      f"Mini-batch perturbation (Prop. 2), {summary['dataset']}, b = {summary['batch_size']}, "
      f"L = 2 ReLU network with {space['d1']} hidden units; solution space of dimension "
      f"{space['dimension']:,}.\nApproximation error {summary['approximation_error']:.2e} "
      f"(float32 SGD step, eta = {summary['learning_rate']}), "
      f"{summary['approximation_error_float64']:.1e} in float64. Forged pixels leave [0, 1] by up "
      f"to {summary['domain_box']:.2f} (shown clipped).",
      ha="center",
      va="top",
      fontsize=8,
  )
  return save_figure(figure, path_prefix)


def fig5(arrays, summary: dict, path_prefix: str, examples: int = 8) -> list[str]:
  """Fig. 5: error-matrix sampling (Prop. 3) with softmax regression, one row pair per dataset.

  arrays: "<dataset>_original", "<dataset>_forged" [b, h, w, c] float32, "<dataset>_labels" [b]
  int, "<dataset>_forged_labels" [b, n] float32 (as saved by forging-exact --experiment=fig5);
  summary: its summary.json. Shows the first `examples` examples. Returns the files written.
  """
  names = list(summary["datasets"])
  figure = plt.figure(figsize=(0.95 * examples, 2.3 * len(names) + 0.8))
  cells = figure.add_gridspec(2 * len(names), 1, hspace=0.5)
  lines = []
  for row, name in enumerate(names):
    result = summary["datasets"][name]
    forged_labels = arrays[f"{name}_forged_labels"][:examples]
    original_titles = [f"y={int(label)}" for label in arrays[f"{name}_labels"][:examples]]
    forged_titles = [f"argmax y'={int(np.argmax(y))}" for y in forged_labels]
    _grid(
        figure,
        cells[2 * row],
        arrays[f"{name}_original"][:examples],
        examples,
        f"{name}: original",
        original_titles,
    )
    _grid(
        figure,
        cells[2 * row + 1],
        arrays[f"{name}_forged"][:examples],
        examples,
        f"{name}: forged (labels y' not one-hot)",
        forged_titles,
    )
    lines.append(
        f"{name}: approximation error {result['approximation_error']:.2e} (float32 SGD step), "
        f"{result['approximation_error_float64']:.1e} in float64; pixels leave [0, 1] by up to "
        f"{result['domain_box']:.2f}, labels are up to {result['domain_label']:.2f} from one-hot."
    )
  figure.text(
      0.5,
      0.02,
      f"Error-matrix sampling (Prop. 3), softmax regression, b = "
      f"{summary['datasets'][names[0]]['batch_size']}.\n" + "\n".join(lines),
      ha="center",
      va="top",
      fontsize=8,
  )
  return save_figure(figure, path_prefix)


def draw_exact(summary: dict, arrays, path_prefix: str) -> list[str]:
  """The figure of an exact-forging result: Fig. 4 or Fig. 5 from its summary and arrays
  (forging-exact's summary.json and data.npz); none for the in-domain search. Returns the files
  written."""
  draw = {"fig4": fig4, "fig5": fig5}.get(summary["experiment"])
  return [] if draw is None else draw(arrays, summary, path_prefix)


# Figures 2, 3 and 6: approximation error of the greedy attacks ------------------------------


def _approximation_error_panel(axis, panel, x_label: str, log_x: bool) -> None:
  """One figure_panels.Panel: one colour per series label; a series with per-run errors as a thin
  line per run, one without as its mean over runs (line), min..max (band) and minimum (dashed);
  the verifier threshold (largest measured eps_repr) dotted."""
  colors = {}
  for series in panel.series:
    first = series.label not in colors
    color = colors.setdefault(series.label, f"C{len(colors) % 10}")
    if series.runs:
      for r, run in enumerate(series.runs):
        axis.plot(
            series.x,
            run,
            color=color,
            linewidth=0.7,
            alpha=0.7,
            marker="o",
            markersize=1.5,
            label=f"{series.label} (a line per run)" if first and r == 0 else "_nolegend_",
        )
      continue
    axis.plot(
        series.x,
        series.mean,
        color=color,
        marker="o",
        markersize=3,
        label=f"{series.label} (mean)" if first else "_nolegend_",
    )
    axis.fill_between(series.x, series.minimum, series.maximum, color=color, alpha=0.2, linewidth=0)
    axis.plot(
        series.x,
        series.minimum,
        linestyle="--",
        linewidth=0.8,
        color=color,
        label=f"{series.label} (min)" if first else "_nolegend_",
    )
  if panel.threshold:  # A threshold of 0 (bitwise reproduction) has no place on a log axis.
    axis.axhline(
        panel.threshold,
        color="black",
        linestyle=":",
        linewidth=1,
        label=f"largest eps_repr {panel.threshold:.2e}",
    )
  axis.set_yscale("log")
  if log_x:
    axis.set_xscale("log")
  axis.set_title(panel.title, fontsize=9)
  axis.set_xlabel(x_label, fontsize=8)
  axis.set_ylabel("approximation error (l2)", fontsize=8)
  axis.tick_params(labelsize=7)
  axis.legend(fontsize=6)


def approximation_error_figure(
    grid, path_prefix: str, x_label: str, log_x: bool, caption: str
) -> list[str]:
  """A figure_panels.PanelGrid: a row of panels per grid row, under its row title if any, each
  panel drawn by _approximation_error_panel (an empty place says grid.missing). Returns the files
  written."""
  columns = max(len(row) for row in grid.panels)
  figure = plt.figure(figsize=(4.3 * columns, 3.6 * len(grid.panels) + 0.4), layout="constrained")
  for subfigure, title, row in zip(
      figure.subfigures(len(grid.panels), 1, squeeze=False)[:, 0], grid.row_titles, grid.panels
  ):
    if title:
      subfigure.suptitle(title, fontsize=8, x=0.01, ha="left")
    for axis, panel in zip(subfigure.subplots(1, columns, squeeze=False)[0], row):
      if panel is None:
        axis.axis("off")
        axis.text(0.5, 0.5, grid.missing, ha="center", va="center", fontsize=7)
      else:
        _approximation_error_panel(axis, panel, x_label, log_x)
  figure.text(0.01, -0.01, caption, ha="left", va="top", fontsize=6, wrap=True)
  return save_figure(figure, path_prefix)


# fig_repro_steps: the reproduction error step by step ----------------------------------------

_FRACTION_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
# Attack families by name: filled black, open black, filled grey, open grey.
_FAMILY_FACES = (("black", "black"), ("none", "black"), ("tab:gray", "tab:gray"), ("none", "gray"))


def zero_floor(values) -> float:
  """Where a log axis draws exact zeros: a decade below the smallest positive value (1e-10 when
  nothing is positive)."""
  values = np.asarray(values, np.float64)
  positive = values[values > 0]
  return 10.0 ** (np.floor(np.log10(positive.min())) - 1) if positive.size else 1e-10


def _exact_note(distances: np.ndarray) -> str:
  exact = int(np.sum(distances == 0))
  return "" if not exact else " (all exact)" if exact == len(distances) else f" ({exact} exact)"


def reproduction_steps_figure(rows, path_prefix: str, caption: str) -> list[str]:
  """One row per figure_panels.StepsRow. Left: each result's per-step distance (largest over
  repeats) over the training steps, log y, exact zeros drawn at a floor a decade below the smallest
  positive value (dotted grey line, named in the legend, which also counts each result's exact
  steps); the attacks' approximation errors at their steps, one marker shape per forging fraction
  (by its label: '1/b' is one shape whatever b), filled or open by attack family. Middle: the same
  distances as a histogram (log-spaced bins, log counts) on the same y axis, the attacks' errors
  as a rug at its right edge. Right: the legend. Returns the files written."""
  families = sorted({p.attack for row in rows for p in row.attacks})
  # A shape per fraction as the attacks name it ('1/b' is 1/b whatever b), smallest first.
  fractions = {}
  for points in sorted((p for row in rows for p in row.attacks), key=lambda p: p.forging_fraction):
    fractions.setdefault(points.fraction, len(fractions))
  face = dict(zip(families, _FAMILY_FACES * len(families)))
  shape = {label: _FRACTION_MARKERS[i % len(_FRACTION_MARKERS)] for label, i in fractions.items()}
  # A legend entry per result, attack and fraction, and the floor; two columns past 24 entries.
  entries = [len(row.series) + len(row.attacks) + 1 for row in rows]
  heights = [max(2.8, 0.13 * -(-n // (1 if n <= 24 else 2)) + 0.8) for n in entries]
  size = sum(heights) + 1.0  # and the caption
  figure = plt.figure(figsize=(14, size))
  grid = figure.add_gridspec(
      len(rows),
      3,
      width_ratios=(3, 1.1, 2.4),
      height_ratios=heights,
      hspace=0.45,
      wspace=0.08,
      left=0.06,
      right=0.99,
      top=1 - 0.3 / size,
      bottom=1.0 / size,
  )
  for r, (row, count) in enumerate(zip(rows, entries)):
    left = figure.add_subplot(grid[r, 0])
    right = figure.add_subplot(grid[r, 1], sharey=left)
    key = figure.add_subplot(grid[r, 2])
    every = np.asarray([d for line in row.series for d in line.distances], np.float64)
    floor = zero_floor(np.concatenate([every, [e for p in row.attacks for e in p.errors]]))
    bins = np.logspace(np.log10(floor) - 0.25, np.log10(max(every.max(), floor)) + 0.25, 41)
    colors = plt.get_cmap("tab10" if len(row.series) <= 10 else "tab20").colors
    for i, line in enumerate(row.series):
      distances = np.asarray(line.distances, np.float64)
      drawn = np.where(distances > 0, distances, floor)
      color = colors[i % len(colors)]
      left.plot(
          line.steps,
          drawn,
          color=color,
          linewidth=0.7,
          alpha=0.85,
          marker="." if len(drawn) <= 60 else None,
          markersize=3,
          label=line.label + _exact_note(distances),
      )
      right.hist(drawn, bins=bins, orientation="horizontal", histtype="step", color=color, log=True)
    rug = transforms.blended_transform_factory(right.transAxes, right.transData)
    for points in row.attacks:
      errors = np.asarray(points.errors, np.float64)
      facecolor, edgecolor = face[points.attack]
      style = {
          "marker": shape[points.fraction],
          "facecolors": facecolor,
          "edgecolors": edgecolor,
          "linewidths": 0.8,
          "zorder": 3,
      }
      drawn = np.where(errors > 0, errors, floor)
      left.scatter(
          points.steps,
          drawn,
          s=22,
          label=f"{points.attack.capitalize()}, fraction {points.fraction}"
          + ("" if points.per_run else " (min over runs)"),
          **style,
      )
      right.scatter(np.full(len(drawn), 0.93), drawn, s=14, transform=rug, **style)
    for axis in (left, right):
      axis.axhline(floor, color="gray", linestyle=":", linewidth=0.8)
    left.plot([], [], color="gray", linestyle=":", label=f"exact zero, drawn at {floor:.0e}")
    left.set_yscale("log")
    left.set_ylim(bottom=floor / 3, top=None if every.max() > 0 or row.attacks else floor * 30)
    left.set_title(f"{row.title}: per-step reproduction error", fontsize=9)
    left.set_xlabel("training step i (the update from theta_i)", fontsize=8)
    left.set_ylabel("l2 distance (largest over repeats)", fontsize=8)
    right.set_title("histogram of the steps", fontsize=9)
    right.set_xlabel("steps (log)", fontsize=8)
    right.tick_params(labelleft=False)
    for axis in (left, right):
      axis.tick_params(labelsize=7)
    key.axis("off")
    key.legend(
        *left.get_legend_handles_labels(),
        loc="upper left",
        fontsize=5.5,
        ncol=1 if count <= 24 else 2,
        title="generated on -> recomputed on; attacks",
        title_fontsize=6,
        frameon=False,
    )
  figure.text(0.06, 0.45 / size, caption, ha="left", va="top", fontsize=6.5, wrap=True)
  return save_figure(figure, path_prefix)
