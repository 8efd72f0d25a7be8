r"""The verifier's side of the forging game (paper Algorithm 1) for one forged batch.

  forging-verify --trace=runs/traces/lenet_mnist_b1000 --step=600 \
      (--epsilon=1e-6 | --epsilon_from=calibration/calibration.json) \
      (--forged_indices=3,17,... | --forged_indices=batch.npy | --forged_npz=forged.npz) \
      [--data_dir=...] [platform flags: the verifier's platform]

--epsilon_from: a calibration written by forging-calibrate; its threshold for the trace's model,
dataset and batch size is used: an epsilon, or for a relative policy its ratio times
||theta_end - theta_start|| of the logged checkpoints the verifier recomputes between.

--forged_indices: indices into the training split, as a comma list or a .npy file holding a 1-D
integer array. --forged_npz: explicit examples, `x` [b, h, w, c] (uint8 levels 0..255 or float
pixels q/255) and `y` ([b] class ids or [b, n] float rows).

Prints one line, ACCEPT or REJECT with the measured error or the reason (and, with
--epsilon_from, the policy and epsilon used). Exit code: 0 ACCEPT
(the forgery is stealthy at --epsilon), 3 REJECT, 1 an error (one line on stderr).
"""

import sys

import numpy as np
from absl import flags

from forging_tf import cli
from forging_tf import data
from forging_tf import errors
from forging_tf import forging_game
from forging_tf import platform as platform_lib
from forging_tf import sgd_step
from forging_tf.calibrate import calibrate_lib

EXIT_REJECT = 3

_TRACE = flags.DEFINE_string(
    "trace", None, "Trace directory or object-store URL (the published trace S)."
)
_STEP = flags.DEFINE_integer("step", None, "Step t whose batch B_t the forgery replaces.")
_FORGED_INDICES = flags.DEFINE_string(
    "forged_indices", None, "Forged batch as training-set indices: comma list or .npy."
)
_FORGED_NPZ = flags.DEFINE_string(
    "forged_npz", None, "Forged batch as explicit examples: an .npz with x and y."
)
_EPSILON = flags.DEFINE_float(
    "epsilon", None, "Threshold: ACCEPT iff the recomputation error is <= epsilon."
)
_EPSILON_FROM = flags.DEFINE_string(
    "epsilon_from",
    None,
    "calibration.json of forging-calibrate: the threshold it gives the trace's model, data "
    "and batch size.",
)
_MODEL_FN = cli.define_model_fn_flag()
_DATA_DIR, _DOWNLOAD = cli.define_data_flags()
_PLATFORM = cli.define_platform_flags()
flags.mark_flags_as_required(["trace", "step"])
flags.mark_flags_as_mutual_exclusive(["epsilon", "epsilon_from"], required=True)
flags.mark_flags_as_mutual_exclusive(["forged_indices", "forged_npz"], required=True)


def _load_npy(path: str) -> np.ndarray:
  try:
    return np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise errors.ConfigError(f"cannot read {path} as a .npy array ({e})") from e


def _forged_examples(dataset: data.Dataset):
  if _FORGED_INDICES.value is not None:
    value = _FORGED_INDICES.value
    if value.endswith(".npy"):
      indices = _load_npy(value)
    else:
      try:
        indices = np.array([int(i) for i in value.split(",") if i.strip()], np.int64)
      except (ValueError, OverflowError):
        raise errors.ConfigError(
            "--forged_indices must be comma-separated integers or a .npy file"
        ) from None
    return forging_game.examples_from_indices(dataset, indices)
  try:
    with np.load(_FORGED_NPZ.value, allow_pickle=False) as forged:
      images, labels = forged["x"], forged["y"]
  except (OSError, ValueError, KeyError) as e:
    raise errors.ConfigError(
        f"cannot read x and y from {_FORGED_NPZ.value} ({e}); give an .npz with arrays x and y"
    ) from e
  return forging_game.examples_from_arrays(images, labels, dataset.num_classes)


def _epsilon(trace) -> tuple[float, str]:
  """(epsilon, how it was chosen: '' for --epsilon) for the step under test."""
  if _EPSILON_FROM.value is None:
    return _EPSILON.value, ""
  threshold = calibrate_lib.verifier_threshold(
      _EPSILON_FROM.value,
      trace.manifest["model"]["name"],
      trace.manifest["dataset"]["name"],
      trace.batch_size,
  )
  update_l2 = None
  if threshold.relative:
    start, end = forging_game.recomputation_span(trace, _STEP.value)
    update_l2 = sgd_step.l2_distance(trace.checkpoint(end), trace.checkpoint(start))
  basis = "" if threshold.basis == "recommended" else ", the paper's max rule: none recommended"
  return threshold.epsilon(update_l2), (
      f"; epsilon from {_EPSILON_FROM.value}: {threshold.describe(update_l2)}{basis}"
  )


def main():
  platform = _PLATFORM.applied()
  trace, dataset = cli.trace_and_dataset(_TRACE.value, _DATA_DIR.value, _DOWNLOAD.value)
  epsilon, chosen = _epsilon(trace)
  x, y = _forged_examples(dataset)
  step_fn = sgd_step.step_for_trace(trace, dataset, _MODEL_FN.value)
  result = forging_game.play(trace, _STEP.value, x, y, dataset, epsilon, step_fn)
  print(
      f"{result.describe()} (verifier platform "
      f"{platform_lib.platform_fingerprint(platform)['id']}{chosen})"
  )
  if not result.accepted:
    sys.exit(EXIT_REJECT)


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
