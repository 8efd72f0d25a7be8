"""The calibration's trade-off figure, drawn from a calibration alone (no TensorFlow).

One panel per model: x, the honest steps rejected (LOPO mean over held-out platform pairs); y, the
forged cells accepted with the threshold fitted on every pair (worst case: cells a policy cannot
judge count as accepted, and runs known only by their min and max over runs are counted at the
upper bound; the dashed line is the lower bound). One line per policy, swept over its parameter;
the paper's max rule as a black square, the recommendation as a star.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

from forging_tf.report import plotting as report_plotting  # pylint: disable=wrong-import-position


def _drawable(model) -> bool:
  return any(e.held_out and e.forged.total.cells for e in model.evaluations if e.value is not None)


def tradeoff(models, path_prefix: str) -> list[str]:
  """Draws calibrate_lib.ModelCalibration `models` into path_prefix.{png,pdf}; a model without
  LOPO or attack results gets a panel that says so. Returns the files written."""
  models = list(models)
  columns = max(1, min(3, len(models)))
  rows = max(1, -(-len(models) // columns))
  figure, axes = plt.subplots(rows, columns, figsize=(4.3 * columns, 3.4 * rows), squeeze=False)
  for axis in axes.ravel()[len(models) :]:
    axis.set_visible(False)
  for axis, model in zip(axes.ravel(), models):
    axis.set_title(model.key.label(), fontsize=9)
    if not _drawable(model):
      why = "one platform pair: LOPO impossible" if not model.lopo_possible else "no attacks"
      axis.text(0.5, 0.5, why, ha="center", va="center", fontsize=8, transform=axis.transAxes)
      axis.set_xticks([])
      axis.set_yticks([])
      continue
    families: dict[str, list] = {}
    highest = 0.0
    for e in model.evaluations:
      if e.value is not None and e.held_out and e.forged.total.cells:
        families.setdefault(e.policy.describe().split("(")[0], []).append(e)
    for name, evaluations in families.items():
      evaluations.sort(key=lambda e: e.false_reject_mean)
      x = [100 * e.false_reject_mean for e in evaluations]
      worst = [100 * e.forged.total.worst_case for e in evaluations]
      best = [100 * e.forged.total.best_case for e in evaluations]
      highest = max(highest, *worst)
      if name == "max":
        axis.errorbar(
            x,
            worst,
            yerr=[[w - b for w, b in zip(worst, best)], [0] * len(worst)],
            fmt="s",
            color="black",
            markersize=6,
            capsize=3,
            label="max (paper)",
            zorder=3,
        )
        continue
      (line,) = axis.plot(x, worst, marker="o", markersize=3, label=name)
      if best != worst:
        axis.plot(x, best, linestyle="--", linewidth=0.8, color=line.get_color())
    chosen = model.recommended
    if chosen is not None and chosen.forged.total.cells:
      axis.plot(
          [100 * chosen.false_reject_mean],
          [100 * chosen.forged.total.worst_case],
          "*",
          color="red",
          markersize=11,
          label=f"recommended: {chosen.policy.describe()}",
          zorder=4,
      )
    axis.set_xscale("symlog", linthresh=0.1)
    axis.set_xlim(0, 110)
    axis.set_ylim(-1, max(5.0, 1.1 * highest))
    axis.set_xlabel("honest steps rejected, LOPO mean (%)", fontsize=8)
    axis.set_ylabel("forged cells accepted (%)", fontsize=8)
    axis.tick_params(labelsize=7)
    axis.legend(fontsize=6)
  figure.tight_layout()
  return report_plotting.save_figure(figure, path_prefix)
