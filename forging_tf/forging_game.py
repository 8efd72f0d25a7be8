"""The forging game (paper Algorithm 1, SPEC section 4) and the approximation error it measures.

The verifier V has published a trace S and picks a step t; the adversary returns a forged batch
B'_t. V answers

  REJECT  if B'_t equals B_t as a multiset of examples (x, y), compared by value
          (domain.same_examples), so neither reordering B_t, nor swapping an index for an
          identical copy of its example, nor writing a pixel 0 as -0.0 counts;
  REJECT  if B'_t has another size than the trace's batches, or an example lies outside the domain
          (domain.domain_violation: pixels in {q/255}, labels one-hot rows);
  REJECT  if an example B'_t adds is nearer than the distinctness margin D to an example it
          removes (`added_and_removed`: the multiset difference by value; the distance is l2 over
          the image's pixels in grey levels 0..255, domain.margin_violation, without the label, so
          an example of B_t with another label is 0 away and REJECTed at any D > 0). D = 0, the
          default, is the paper's Definition 1: any example that differs counts as a forgery;
  otherwise V recomputes on its own platform, with B'_t in place of B_t, from the last stored
  checkpoint at or before t to the first stored checkpoint after t (for a k-interval trace: from
  theta_{ik} to theta_{(i+1)k}, SPEC section 4), and
  ACCEPT  iff eps = ||theta_logged - theta_recomputed||_2 <= epsilon (the adversary wins: stealthy).

`approximation_error` is the one definition of a forged batch's error at a step: the one SGD step
(sgd_step.SGDStep) and the one distance (sgd_step.l2_distance). The attacks re-score their winners
with it, so the error they report is the number this game computes on the same platform.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from forging_tf import data
from forging_tf import domain
from forging_tf import errors
from forging_tf import sgd_step
from forging_tf import trace as trace_lib

ACCEPT = "ACCEPT"
REJECT = "REJECT"


@dataclasses.dataclass(frozen=True)
class GameResult:
  """The verifier's answer for a forged batch at `step`.

  error: the recomputation distance eps (None when the batch was rejected before recomputing);
  recomputed_from / recomputed_to: the stored checkpoints the recomputation ran between;
  min_distance: the distinctness margin D in grey levels (0: the paper's Definition 1).
  """

  decision: str
  reason: str
  error: float | None
  epsilon: float
  step: int
  recomputed_from: int | None = None
  recomputed_to: int | None = None
  min_distance: float = 0.0

  @property
  def accepted(self) -> bool:
    return self.decision == ACCEPT

  def describe(self) -> str:
    return f"{self.decision}: step {self.step}: {self.reason}"


def approximation_error(
    step_fn: sgd_step.SGDStep,
    theta: np.ndarray,
    theta_next: np.ndarray,
    x,
    y,
    velocity: np.ndarray | None = None,
) -> float:
  """||theta_next - (theta - eta * grad L(B'; theta))||_2 (SPEC section 4), float64 distance.

  theta, theta_next: [P] float32; x: [b, h, w, c] float32 pixels; y: [b, n] float32 labels;
  velocity: the optimizer's [P] at theta for a momentum SGD trace of keras.Model.fit, whose step
  is theta + (mu * v - eta * grad) (None: plain SGD). With the logged batch in place of B' this is
  the benign reproduction error of the step.
  """
  return sgd_step.l2_distance(step_fn.update(theta, velocity, x, y)[0].numpy(), theta_next)


def random_step(steps: int, seed: int) -> int:
  """The verifier's t of Algorithm 1: uniform over the trace's steps 0..steps-1, drawn from
  numpy's PCG64 seeded by SeedSequence([seed]) (seed >= 0), so a recorded seed replays the draw."""
  generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed])))
  return int(generator.integers(steps))


def added_and_removed(x, y, true_x, true_y) -> tuple[np.ndarray, np.ndarray]:
  """The multiset difference of a forged batch and B_t, by value: (added [a], removed [r]) int64.

  x, true_x: [b', ...] and [b, ...] pixels; y, true_y: [b', n] and [b, n] labels. Examples are
  compared as domain.same_examples compares them (the float32 values the model is fed, -0.0 ==
  0.0, a NaN equals nothing). added: the rows of x that B_t does not account for; removed: the rows
  of true_x that the forged batch does not. An example occurring twice in the forged batch and once
  in B_t is added once (its later occurrence); both are empty iff same_examples holds.
  """

  def keys(xs, ys) -> list:
    rows = np.concatenate(
        [
            np.asarray(xs, np.float32).reshape(len(xs), -1),
            np.asarray(ys, np.float32).reshape(len(ys), -1),
        ],
        axis=1,
    )
    rows = rows + np.float32(0.0)  # -0.0 + 0.0 is +0.0: one key for both zeros.
    nan = np.isnan(rows).any(axis=1)
    return [object() if nan[i] else row.tobytes() for i, row in enumerate(rows)]

  unmatched: dict = {}
  for k, key in enumerate(keys(true_x, true_y)):
    unmatched.setdefault(key, []).append(k)
  added = []
  for j, key in enumerate(keys(x, y)):
    if unmatched.get(key):
      unmatched[key].pop(0)
    else:
      added.append(j)
  removed = sorted(k for rows in unmatched.values() for k in rows)
  return np.array(added, np.int64), np.array(removed, np.int64)


def examples_from_indices(dataset: data.Dataset, indices) -> tuple[np.ndarray, np.ndarray]:
  """Dataset indices [b] -> (x [b, h, w, c] float32 = q / 255, y [b, n] float32 one-hot)."""
  indices = np.asarray(indices)
  num_examples = dataset.x_train.shape[0]
  if (
      indices.ndim != 1
      or not np.issubdtype(indices.dtype, np.integer)
      or indices.size
      and (indices.min() < 0 or indices.max() >= num_examples)
  ):
    raise errors.ConfigError(
        f"forged indices must be a list of integers in 0..{num_examples - 1}"
        f" (the {dataset.name} training split)"
    )
  return examples_from_arrays(
      dataset.x_train[indices], dataset.y_train[indices], dataset.num_classes
  )


def examples_from_arrays(
    images: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
  """Explicit examples -> (x, y) as the game sees them, without judging the domain.

  images: [b, h, w, c] uint8 levels q (fed as domain.PIXEL_VALUES[q], in the domain by
  construction) or float pixels (kept as given, float32 or float64, for the domain check to judge).
  labels: [b] class ids (-> one-hot float32 rows) or [b, n] float rows (kept as given).
  """
  images, labels = np.asarray(images), np.asarray(labels)
  if images.dtype == np.uint8:
    x = domain.PIXEL_VALUES[images]
  elif np.issubdtype(images.dtype, np.floating):
    x = images
  else:
    raise errors.ConfigError(
        f"forged images are {images.dtype}; give uint8 levels 0..255 or float pixels q/255"
    )
  if labels.ndim == 1:
    if (
        not np.issubdtype(labels.dtype, np.integer)
        or labels.size
        and (labels.min() < 0 or labels.max() >= num_classes)
    ):
      raise errors.ConfigError(
          f"forged labels given as class ids must be integers in "
          f"0..{num_classes - 1}; give rows [b, {num_classes}] otherwise"
      )
    y = np.eye(num_classes, dtype=np.float32)[labels]
  elif labels.ndim == 2 and np.issubdtype(labels.dtype, np.floating):
    y = labels
  else:
    raise errors.ConfigError(
        f"forged labels have shape {labels.shape} and dtype {labels.dtype}; "
        f"give class ids [b] or float rows [b, {num_classes}]"
    )
  return x, y


def recomputation_span(trace: trace_lib.Trace, step: int) -> tuple[int, int]:
  """(start, end): stored checkpoints with start <= step < end, the span the verifier recomputes."""
  trace.batch(step)  # TraceError for a step outside the trace
  stored = trace.checkpoint_steps
  start = int(stored[np.searchsorted(stored, step, side="right") - 1])
  end = int(stored[np.searchsorted(stored, step, side="right")])
  return start, end


def recomputation_error(
    trace: trace_lib.Trace,
    step: int,
    x: np.ndarray,
    y: np.ndarray,
    dataset: data.Dataset,
    step_fn: sgd_step.SGDStep,
) -> float:
  """eps of Algorithm 1: recompute the span around `step` with (x, y) in place of B_step.

  x: [b, h, w, c] float32, y: [b, n] float32. The other steps of the span use the logged batches.
  """
  start, end = recomputation_span(trace, step)

  def inputs(i: int):
    if i == step:
      return tf.convert_to_tensor(x, tf.float32), tf.convert_to_tensor(y, tf.float32)
    batch = trace.batch(i)
    return sgd_step.model_inputs(
        dataset.x_train[batch], dataset.y_train[batch], dataset.num_classes
    )

  theta, velocity = tf.convert_to_tensor(trace.checkpoint(start)), trace.optimizer_state(start)
  for i in range(start, end - 1):
    theta, velocity = step_fn.update(theta, velocity, *inputs(i))
  return approximation_error(step_fn, theta, trace.checkpoint(end), *inputs(end - 1), velocity)


def play(
    trace: trace_lib.Trace,
    step: int,
    x: np.ndarray,
    y: np.ndarray,
    dataset: data.Dataset,
    epsilon: float,
    step_fn: sgd_step.SGDStep,
    min_distance: float = 0.0,
) -> GameResult:
  """Algorithm 1 for a forged batch at `step` (module docstring).

  Args:
    trace: the published trace S.
    step: t, the step whose batch B_t the forgery replaces.
    x: [b', h, w, c] forged pixels (float; the domain check judges them as given).
    y: [b', n] forged labels (float rows).
    dataset: the trace's dataset (checked by fingerprint), for B_t and the span's other batches.
    epsilon: the verifier's threshold, >= 0.
    step_fn: the trace's SGD step (sgd_step.step_for_trace), on the verifier's platform.
    min_distance: the distinctness margin D >= 0 in grey levels (l2 over the image's pixels in
      0..255 units): every example the forged batch adds must be at least D from every example
      it removes. 0: the paper's Definition 1.

  Returns:
    ACCEPT (stealthy: error <= epsilon) or REJECT, with the reason and the error (GameResult).

  Raises:
    ConfigError: epsilon or min_distance is not a finite number >= 0, or the images have the
      wrong shape.
    TraceError: `step` is outside the trace.
    DatasetError: the dataset is not the trace's.
  """
  if not np.isfinite(epsilon) or epsilon < 0:
    raise errors.ConfigError(f"epsilon must be a finite number >= 0, got {epsilon}")
  if not np.isfinite(min_distance) or min_distance < 0:
    raise errors.ConfigError(
        f"the margin min_distance must be a finite number >= 0 (grey levels), got {min_distance}"
    )
  data.check_described(dataset, trace.manifest["dataset"])
  x, y = np.asarray(x), np.asarray(y)
  if x.ndim != 4 or tuple(x.shape[1:]) != step_fn.input_shape:
    raise errors.ConfigError(
        f"forged images have shape {x.shape}; the trace's model takes "
        f"[b, {', '.join(map(str, step_fn.input_shape))}]"
    )

  def reject(reason: str) -> GameResult:
    return GameResult(REJECT, reason, None, float(epsilon), step, min_distance=float(min_distance))

  batch = trace.batch(step)
  if len(x) != len(batch):
    return reject(f"the forged batch has {len(x)} examples, the trace's batches have {len(batch)}")
  violation = domain.domain_violation(x, y, dataset.num_classes)
  if violation is not None:
    return reject(f"outside the domain: {violation}")
  x, y = x.astype(np.float32), y.astype(np.float32)
  true_x, true_y = examples_from_indices(dataset, batch)
  if domain.same_examples(x, y, true_x, true_y):
    return reject(f"the forged batch equals B_{step} as a multiset of examples (the true batch)")
  if min_distance > 0:
    added, removed = added_and_removed(x, y, true_x, true_y)
    near = domain.margin_violation(x[added], true_x[removed], min_distance)
    if near is not None:
      j, k = int(added[near.added]), int(removed[near.removed])
      return reject(
          f"forged example at position {j} is {near.distance:.6g} grey levels from B_{step}'s "
          f"example at position {k} (training index {int(batch[k])}), less than the margin "
          f"D = {min_distance:g}"
      )
  start, end = recomputation_span(trace, step)
  error = recomputation_error(trace, step, x, y, dataset, step_fn)
  accepted = error <= epsilon
  relation = "<=" if accepted else ">"
  return GameResult(
      ACCEPT if accepted else REJECT,
      f"recomputed theta_{end} from theta_{start}: error {error:.6g} {relation} "
      f"epsilon {epsilon:.6g}",
      error,
      float(epsilon),
      step,
      start,
      end,
      float(min_distance),
  )
