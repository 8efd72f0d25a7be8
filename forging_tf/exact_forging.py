r"""Runs an exact-forging experiment (SPEC section 6) and writes its results and figure.

  forging-exact --experiment=fig4 --out=runs/exact/fig4 [--data_dir=...] [--batch_size=32] \
      [--hidden=8] [--perturbation_scale=0.5] [--seed=0] [--lr=0.01]
  forging-exact --experiment=fig5 --out=runs/exact/fig5 [--error_matrix_scale=0.5] [--use_bias]
  forging-exact --experiment=domain --out=runs/exact/domain [--milp_examples=4] [--milp_pixels=8]

fig4: mini-batch perturbation (Prop. 2) on MNIST with an L = 2 ReLU network; fig5: error-matrix
sampling (Prop. 3) with softmax regression on MNIST and CIFAR-10; domain: the search for a forgery
inside the domain (LP in the box, grid rounding, MILP) on the fig4 setting.
Writes OUT/summary.json (approximation_error, distinct, domain distances, settings), OUT/data.npz
(original and forged batches) and, for fig4 and fig5, OUT/fig4.{png,pdf} or OUT/fig5.{png,pdf}.
"""

import os
import sys

from absl import app
from absl import flags

from forging_tf import cli
from forging_tf import data
from forging_tf import exact_forging_lib
from forging_tf import platform as platform_lib
from forging_tf import plotting
from forging_tf import results

_EXPERIMENT = flags.DEFINE_enum("experiment", None, ["fig4", "fig5", "domain"],
                                "Experiment to run.")
_OUT = flags.DEFINE_string("out", None, "Directory to write the results into.")
_DATA_DIR, _DOWNLOAD = cli.define_data_flags()
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size b.", lower_bound=1)
_HIDDEN = flags.DEFINE_integer("hidden", 8, "Hidden units of the L = 2 network (fig4, domain).",
                               lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of theta, the batch and the random draws.",
                             lower_bound=0)
_LR = flags.DEFINE_float("lr", 0.01, "Learning rate eta of the SGD step that scores forgeries.",
                         lower_bound=0.0)
_PERTURBATION_SCALE = flags.DEFINE_float("perturbation_scale", 0.5, "fig4: largest pixel change "
                                         "of the perturbation.", lower_bound=0.0)
_ERROR_MATRIX_SCALE = flags.DEFINE_float("error_matrix_scale", 0.5, "fig5: how far the sampled "
                                         "error matrix D' moves from D.", lower_bound=0.0)
_USE_BIAS = flags.DEFINE_boolean("use_bias", True, "fig5: softmax regression with a bias.")
_ROUNDING_SCALES = flags.DEFINE_list("rounding_scales",
                                     ["1", "0.5", "0.2", "0.1", "0.05", "0.02", "0.01", "0.005"],
                                     "domain: fractions s of the LP perturbation p rounded to "
                                     "the grid (x + s p).")
flags.register_validator("rounding_scales",
                         lambda values: all(_is_positive_number(v) for v in values),
                         "must be positive numbers, e.g. 1,0.5,0.1")
_MILP_EXAMPLES = flags.DEFINE_integer("milp_examples", 4, "domain: examples the MILP may change.",
                                      lower_bound=1)
_MILP_PIXELS = flags.DEFINE_integer("milp_pixels", 8, "domain: pixels per example the MILP may "
                                    "change.", lower_bound=1)
_MILP_MAX_LEVELS = flags.DEFINE_integer("milp_max_levels", 4, "domain: largest change of one "
                                        "pixel, in levels of 1/255.", lower_bound=1)
_MILP_TIME_LIMIT = flags.DEFINE_float("milp_time_limit", 60.0, "domain: HiGHS time limit (s).",
                                      lower_bound=1.0)
flags.mark_flags_as_required(["experiment", "out"])


def _is_positive_number(text: str) -> bool:
  try:
    return float(text) > 0
  except ValueError:
    return False


def _run(experiment: str) -> exact_forging_lib.ExperimentResult:
  load = lambda name: data.load_dataset(name, _DATA_DIR.value, _DOWNLOAD.value)
  if experiment == "fig4":
    return exact_forging_lib.fig4_experiment(load("mnist"), _BATCH_SIZE.value, _HIDDEN.value,
                                             _PERTURBATION_SCALE.value, _SEED.value, _LR.value)
  if experiment == "fig5":
    return exact_forging_lib.fig5_experiment([load("mnist"), load("cifar10")], _BATCH_SIZE.value,
                                             _ERROR_MATRIX_SCALE.value, _SEED.value, _LR.value,
                                             _USE_BIAS.value)
  return exact_forging_lib.domain_experiment(
      load("mnist"), _BATCH_SIZE.value, _HIDDEN.value, _SEED.value, _LR.value,
      [float(s) for s in _ROUNDING_SCALES.value], _MILP_EXAMPLES.value, _MILP_PIXELS.value,
      _MILP_MAX_LEVELS.value, _MILP_TIME_LIMIT.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  platform = cli.applied_platform()
  experiment = _EXPERIMENT.value
  result = _run(experiment)
  summary = {"kind": exact_forging_lib.RESULT_KIND, **result.summary,
             "platform": platform_lib.platform_fingerprint(platform),
             "command": " ".join(sys.orig_argv)}
  results.write_npz(os.path.join(_OUT.value, "data.npz"), **result.arrays)
  results.write_json(os.path.join(_OUT.value, "summary.json"), summary)
  draw = {"fig4": plotting.fig4, "fig5": plotting.fig5}.get(experiment)
  figures = [] if draw is None else draw(result.arrays, result.summary,
                                         os.path.join(_OUT.value, experiment))
  print(f"{experiment}: approximation error {result.summary['approximation_error']}, "
        f"distinct {result.summary['distinct']}; wrote summary.json, data.npz"
        + "".join(f", {os.path.basename(path)}" for path in figures) + f" to {_OUT.value}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
