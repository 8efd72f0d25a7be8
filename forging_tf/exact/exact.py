r"""Runs an exact-forging experiment (SPEC section 6) and writes its results and figure.

  forging-exact --experiment=fig4 --out=runs/exact/fig4 [--data_dir=...] [--batch_size=32] \
      [--hidden=8] [--perturbation_scale=0.5] [--seed=0] [--lr=0.01] [--overwrite]
  forging-exact --experiment=fig5 --out=runs/exact/fig5 [--error_matrix_scale=0.5] [--use_bias]
  forging-exact --experiment=domain --out=runs/exact/domain [--milp_examples=4] [--milp_pixels=8] \
      [--trace=runs/traces/fcn8 --checkpoints=3000]
  forging-exact --experiment=dead_units --out=runs/exact/dead_units --trace=runs/traces/fcn8 \
      --checkpoints=0,500,3000

fig4: mini-batch perturbation (Prop. 2) on MNIST with an L = 2 ReLU network; fig5: error-matrix
sampling (Prop. 3) with softmax regression on MNIST and CIFAR-10; domain: the search for a forgery
inside the domain (LP in the box, grid rounding, MILP) on the fig4 setting, at theta_0 or at a
checkpoint of a trace of `forging-train --model=fcn --hidden=H`; dead_units: at checkpoints of a
trace (fcn or lenet), the training examples whose first-layer units are all inactive, and the
exact swap of two of one class, played by the verifier at epsilon 0.
Writes OUT whole (exact_lib.run_experiment): summary.json (approximation_error, distinct,
domain distances, settings), data.npz (original and forged batches) and, for fig4 and fig5,
fig4.{png,pdf} or fig5.{png,pdf}. A result already at OUT is replaced only with --overwrite.
"""

import os

from absl import flags

from forging_tf import cli
from forging_tf.exact import exact_lib
from forging_tf.exact import settings as exact_settings

_DEFAULTS = exact_settings.ExactSettings()
_EXPERIMENT = flags.DEFINE_enum_class(
    "experiment", None, exact_settings.ExactExperiment, "Experiment to run.", case_sensitive=False
)
_OUT = flags.DEFINE_string("out", None, "Directory to write the results into.")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace a result already at --out.")
_DATA_DIR, _DOWNLOAD = cli.define_data_flags()
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", _DEFAULTS.batch_size, "Batch size b.", lower_bound=1
)
_HIDDEN = flags.DEFINE_integer(
    "hidden",
    _DEFAULTS.hidden,
    "Hidden units of the L = 2 network (fig4, domain).",
    lower_bound=1,
)
_SEED = flags.DEFINE_integer(
    "seed", _DEFAULTS.seed, "Seed of theta, the batch and the random draws.", lower_bound=0
)
_LR = flags.DEFINE_float(
    "lr",
    _DEFAULTS.learning_rate,
    "Learning rate eta of the SGD step that scores forgeries.",
    lower_bound=0.0,
)
_PERTURBATION_SCALE = flags.DEFINE_float(
    "perturbation_scale",
    _DEFAULTS.perturbation_scale,
    "fig4: largest pixel change of the perturbation.",
    lower_bound=0.0,
)
_ERROR_MATRIX_SCALE = flags.DEFINE_float(
    "error_matrix_scale",
    _DEFAULTS.error_matrix_scale,
    "fig5: how far the sampled error matrix D' moves from D.",
    lower_bound=0.0,
)
_USE_BIAS = flags.DEFINE_boolean(
    "use_bias", _DEFAULTS.use_bias, "fig5: softmax regression with a bias."
)
_ROUNDING_SCALES = flags.DEFINE_list(
    "rounding_scales",
    [f"{s:g}" for s in _DEFAULTS.rounding_scales],
    "domain: fractions s of the LP perturbation p rounded to the grid (x + s p).",
)
flags.register_validator(
    "rounding_scales",
    lambda values: all(_is_positive_number(v) for v in values),
    "must be positive numbers, e.g. 1,0.5,0.1",
)
_MILP_EXAMPLES = flags.DEFINE_integer(
    "milp_examples",
    _DEFAULTS.milp_examples,
    "domain: examples the MILP may change.",
    lower_bound=1,
)
_MILP_PIXELS = flags.DEFINE_integer(
    "milp_pixels",
    _DEFAULTS.milp_pixels,
    "domain: pixels per example the MILP may change.",
    lower_bound=1,
)
_MILP_MAX_LEVELS = flags.DEFINE_integer(
    "milp_max_levels",
    _DEFAULTS.milp_max_levels,
    "domain: largest change of one pixel, in levels of 1/255.",
    lower_bound=1,
)
_MILP_TIME_LIMIT = flags.DEFINE_float(
    "milp_time_limit",
    _DEFAULTS.milp_time_limit_s,
    "domain: HiGHS time limit (s).",
    lower_bound=1.0,
)
_TRACE = flags.DEFINE_string(
    "trace",
    None,
    "domain, dead_units: a forging-train trace whose checkpoints give theta (domain without it: "
    "theta_0).",
)
_CHECKPOINTS = flags.DEFINE_list(
    "checkpoints",
    [],
    "Steps of --trace: domain one, dead_units one or more, e.g. 0,500,3000.",
)
flags.register_validator(
    "checkpoints",
    lambda values: all(v.strip().isdigit() for v in values),
    "must be steps >= 0, e.g. 0,500,3000",
)
_PLATFORM = cli.define_platform_flags()
flags.mark_flags_as_required(["experiment", "out"])


def _is_positive_number(text: str) -> bool:
  try:
    return float(text) > 0
  except ValueError:
    return False


def main():
  platform = _PLATFORM.requested()
  settings = exact_settings.ExactSettings(
      experiment=_EXPERIMENT.value,
      batch_size=_BATCH_SIZE.value,
      hidden=_HIDDEN.value,
      seed=_SEED.value,
      learning_rate=_LR.value,
      perturbation_scale=_PERTURBATION_SCALE.value,
      error_matrix_scale=_ERROR_MATRIX_SCALE.value,
      use_bias=_USE_BIAS.value,
      rounding_scales=tuple(float(s) for s in _ROUNDING_SCALES.value),
      milp_examples=_MILP_EXAMPLES.value,
      milp_pixels=_MILP_PIXELS.value,
      milp_max_levels=_MILP_MAX_LEVELS.value,
      milp_time_limit_s=_MILP_TIME_LIMIT.value,
      trace=_TRACE.value,
      checkpoints=tuple(int(s) for s in _CHECKPOINTS.value),
  )
  summary = exact_lib.run_experiment(
      settings,
      _OUT.value,
      data_dir=_DATA_DIR.value,
      download=_DOWNLOAD.value,
      platform=platform,
      overwrite=_OVERWRITE.value,
      command=cli.command_line(),
  )
  written = sorted(os.listdir(_OUT.value))
  print(
      f"{settings.experiment}: approximation error {summary['approximation_error']}, "
      f"distinct {summary['distinct']}; wrote {', '.join(written)} to {_OUT.value}"
  )
  for checkpoint in summary.get("checkpoints", ()):  # dead_units
    swap = checkpoint["swap"]
    outcome = (
        f"swap at step {swap['step']} ({swap['removed']} -> {swap['added']}): float64 error "
        f"{swap['approximation_error_float64']}, {swap['verifier']['decision']} at epsilon 0"
        if swap["found"]
        else f"no swap in {swap['steps_searched']} stored steps"
    )
    print(
        f"  checkpoint {checkpoint['step']}: {checkpoint['dead']} of {checkpoint['examples']} "
        f"examples dead ({checkpoint['certainly_dead']} certainly in float32); {outcome}"
    )


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
