r"""Calibrates the verifier's threshold epsilon on saved reproduction errors and attacks.

  forging-calibrate --results=results[,benchmarks/results] --out=calibration \
      [--target_false_reject=0.0] [--overwrite]

Reads every reproduction-error and attack result under --results (recursively), fits each
threshold policy per model (model, dataset, batch size), estimates its honest false-reject rate
by leaving one platform pair out, counts the forged steps it accepts, and writes
OUT/calibration.json, OUT/calibration.md and OUT/tradeoff.{png,pdf} (calibrate_lib). Prints one
line per model: the recommended threshold next to the paper's max rule.
forging-verify --epsilon_from=OUT/calibration.json uses it.
"""

from absl import flags

from forging_tf import cli
from forging_tf.calibrate import calibrate_lib

_RESULTS = flags.DEFINE_list("results", None, "Folders holding saved results.")
_OUT = flags.DEFINE_string("out", None, "Folder to write the calibration to.")
_TARGET = flags.DEFINE_float(
    "target_false_reject",
    0.0,
    "Honest false-reject rate allowed on every held-out platform pair (0: none).",
    lower_bound=0.0,
    upper_bound=1.0,
)
_OVERWRITE = flags.DEFINE_boolean(
    "overwrite", False, "Replace a different calibration already at --out."
)
flags.mark_flags_as_required(["results", "out"])


def main():
  calibration = calibrate_lib.calibrate(_RESULTS.value, _TARGET.value)
  written = calibrate_lib.write(calibration, _OUT.value, cli.command_line(), _OVERWRITE.value)
  for model in calibration.models:
    print(f"{model.key.label()}: {calibrate_lib.summary_line(model)}")
  print(f"written to {_OUT.value}/: {', '.join(written)}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
