r"""The verifier's side of the forging game (paper Algorithm 1) for one forged batch.

  forging-verify --trace=runs/traces/lenet_mnist_b1000 --step=600 \
      (--epsilon=1e-6 | --epsilon_from=calibration/calibration.json) \
      (--forged_indices=3,17,... | --forged_indices=batch.npy | --forged_npz=forged.npz) \
      [--min_distance=D] [--data_dir=...] [platform flags: the verifier's platform]
  forging-verify --trace=... --step=random [--seed=S] (--epsilon=... | --epsilon_from=...) \
      (--forged_indices=batches.npy | --forged_npz=forged.npz) [--min_distance=D] [...]

--step: t, the step whose batch B_t the forgery replaces. `random` plays Algorithm 1 as the paper
states it: the verifier draws t itself, uniformly over the trace's steps 0..T-1 from --seed
(forging_game.random_step), and prints the t and seed it used; an integer replays a given step.
Since the adversary does not know t, with --step=random it commits to a forged batch for every
step: --forged_indices is then a .npy of shape [T, b] (row t is B'_t), or --forged_npz holds x
[T, b, h, w, c] and y [T, b] or [T, b, n]. The seed is the verifier's: choose it after the
adversary has committed, or keep it from them (the default 0 makes runs replayable, not secret).

--epsilon_from: a calibration written by forging-calibrate; its threshold for the trace's model,
dataset and batch size is used: an epsilon, or for a relative policy its ratio times
||theta_end - theta_start|| of the logged checkpoints the verifier recomputes between.

--forged_indices: indices into the training split, as a comma list or a .npy file holding a 1-D
integer array. --forged_npz: explicit examples, `x` [b, h, w, c] (uint8 levels 0..255 or float
pixels q/255) and `y` ([b] class ids or [b, n] float rows).

--min_distance: the distinctness margin D in grey levels (l2 over the image's pixels in 0..255
units): every example the forged batch adds must be at least D from every example it removes, or
the batch is REJECTed with the nearest such pair named. 0 (the default) is the paper's
Definition 1: any example that differs counts.

Prints one line, ACCEPT or REJECT with the measured error or the reason (and how t was chosen, with
--epsilon_from the policy and epsilon used, and the margin D if it is not 0). Exit code: 0 ACCEPT
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
_STEP = flags.DEFINE_string(
    "step",
    None,
    "Step t whose batch B_t the forgery replaces: an integer, or 'random' (the verifier draws t "
    "from --seed, as in Algorithm 1; the forged input then holds a batch for every step).",
)
_SEED = flags.DEFINE_integer(
    "seed", 0, "Seed of the verifier's draw of t for --step=random.", lower_bound=0
)
_MIN_DISTANCE = flags.DEFINE_float(
    "min_distance",
    0.0,
    "Distinctness margin D in grey levels: every example the forged batch adds must be at "
    "least D (l2, pixels in 0..255) from every example it removes; 0 is the paper's Definition 1.",
)
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


def _step(trace) -> tuple[int, str]:
  """(t, how it was chosen: '' for an integer --step) for --step and --seed."""
  value = _STEP.value.strip()
  if value == "random":
    step = forging_game.random_step(trace.steps, _SEED.value)
    return step, f"step {step} drawn by the verifier, seed {_SEED.value}; "
  try:
    return int(value), ""
  except ValueError:
    raise errors.ConfigError(
        f"--step={_STEP.value!r} is neither an integer step nor 'random'"
    ) from None


def _committed(arrays, ndims: tuple[int, ...], step: int, steps: int, what: str):
  """Row `step` (B'_t) of each array, which holds a forged batch for every step: the adversary's
  commitment for --step=random. ndims: the number of dimensions each array must have (with T)."""
  if any(a.ndim != n or a.shape[0] != steps for a, n in zip(arrays, ndims, strict=True)):
    raise errors.ConfigError(
        f"--step=random: the verifier draws t, so the forgery must hold a batch for every one of "
        f"the trace's {steps} steps (row t is B'_t): give {what}; got shape "
        f"{' and '.join(str(a.shape) for a in arrays)}"
    )
  return tuple(a[step] for a in arrays)


def _forged_examples(dataset: data.Dataset, drawn: int | None, steps: int):
  """The forged batch (x, y) at t; `drawn`: t when the verifier drew it, else None."""
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
    if drawn is not None:
      (indices,) = _committed(
          (indices,), (2,), drawn, steps, f"--forged_indices as a .npy of shape [{steps}, b]"
      )
    return forging_game.examples_from_indices(dataset, indices)
  try:
    with np.load(_FORGED_NPZ.value, allow_pickle=False) as forged:
      images, labels = forged["x"], forged["y"]
  except (OSError, ValueError, KeyError) as e:
    raise errors.ConfigError(
        f"cannot read x and y from {_FORGED_NPZ.value} ({e}); give an .npz with arrays x and y"
    ) from e
  if drawn is not None:
    images, labels = _committed(
        (images, labels),
        (5, 3 if labels.ndim == 3 else 2),
        drawn,
        steps,
        f"--forged_npz with x [{steps}, b, h, w, c] and y [{steps}, b] or [{steps}, b, n]",
    )
  return forging_game.examples_from_arrays(images, labels, dataset.num_classes)


def _epsilon(trace, step: int) -> tuple[float, str]:
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
    start, end = forging_game.recomputation_span(trace, step)
    update_l2 = sgd_step.l2_distance(trace.checkpoint(end), trace.checkpoint(start))
  basis = "" if threshold.basis == "recommended" else ", the paper's max rule: none recommended"
  return threshold.epsilon(update_l2), (
      f"; epsilon from {_EPSILON_FROM.value}: {threshold.describe(update_l2)}{basis}"
  )


def main():
  platform = _PLATFORM.applied()
  trace, dataset = cli.trace_and_dataset(_TRACE.value, _DATA_DIR.value, _DOWNLOAD.value)
  step, drawn = _step(trace)
  epsilon, chosen = _epsilon(trace, step)
  x, y = _forged_examples(dataset, step if drawn else None, trace.steps)
  step_fn = sgd_step.step_for_trace(trace, dataset, _MODEL_FN.value)
  result = forging_game.play(
      trace, step, x, y, dataset, epsilon, step_fn, min_distance=_MIN_DISTANCE.value
  )
  margin = f"; margin D = {result.min_distance:g} grey levels" if result.min_distance else ""
  print(
      f"{result.describe()} ({drawn}verifier platform "
      f"{platform_lib.platform_fingerprint(platform)['id']}{chosen}{margin})"
  )
  if not result.accepted:
    sys.exit(EXIT_REJECT)


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
