"""Scoring candidate forged batches of one step: the vectorised engine and the sequential loop.

A candidate keeps the examples of B_i outside the deletion set U and puts m replacement examples
at U's positions (greedy.py). Its approximation error is
  ||theta_{i+1} - (theta_i - eta / b * (sum_{kept} g_j + sum_{replacements} g_j))||_2,
with g_j the gradient of example j's cross-entropy at theta_i.

- `AttackEngine.candidate_errors` (vectorised): the per-example gradients of every example the
  candidates use are computed once (per group, below), with tf.vectorized_map over a per-example
  gradient of SGDStep's own forward pass and loss (SGDStep.example_losses); the kept examples'
  gradient sum is one batched gradient; every candidate's gradient sum is then one matrix product
  S = A @ G (A [M, u] selects each candidate's replacements among the u examples, G [u, P] their
  gradients), and the update and distance are taken for all candidates at once, rounding the
  update to float32 as SGDStep does. The gradient buffers stay within `memory_budget_bytes`
  (activations come on top): candidates are scored in groups and pool gradients are computed in
  chunks that fit in it, recomputing a pool example's gradient in each group that uses it.
- `AttackEngine.sequential_errors` (reference): one SGDStep call per candidate batch, as the
  public implementations do. Its numbers are exactly what the verifier computes.

The engine sums gradients in another order than the batch kernels, so its numbers differ from the
SGDStep ones by float32 rounding; attacks therefore re-score the engine's winner with
`AttackEngine.approximation_error` (forging_game.approximation_error: SGDStep) and report that.
"""

import numpy as np
import tensorflow as tf

from forging_tf import forging_game
from forging_tf import sgd_step
from forging_tf.attacks import settings as attack_settings

# Pool examples per vectorized_map call: past this the map's intermediate activations, not the
# gradients, dominate memory, and there is no speed left to gain on a CPU.
_MAX_POOL_CHUNK = 512


class AttackEngine:
  """Approximation errors of candidate forged batches at a step of a trace's model.

  step_fn: the trace's SGD step; source: its dataset (indices -> model inputs).
  """

  def __init__(
      self,
      step_fn: sgd_step.SGDStep,
      source: sgd_step.BatchSource,
      memory_budget_bytes: int = attack_settings.DEFAULT_MEMORY_BUDGET,
  ):
    self.step_fn = step_fn
    self.source = source
    num_parameters = step_fn.num_parameters
    # Per candidate row: the float32 gradient sum plus the float64 difference of the distance
    # (12 bytes a parameter); a pool chunk holds float32 gradients (4 bytes). Both at most `rows`.
    rows = max(1, int(memory_budget_bytes) // (16 * num_parameters))
    self.candidates_per_group = rows
    self.pool_chunk = min(rows, _MAX_POOL_CHUNK)
    theta_spec = tf.TensorSpec([num_parameters], tf.float32)
    x_spec = tf.TensorSpec([None, *step_fn.input_shape], tf.float32)
    y_spec = tf.TensorSpec([None, step_fn.num_classes], tf.float32)
    self._per_example = tf.function(
        self._per_example_gradients, input_signature=[theta_spec, x_spec, y_spec], jit_compile=False
    )
    self._gradient_sum = tf.function(
        self._summed_gradient, input_signature=[theta_spec, x_spec, y_spec], jit_compile=False
    )
    self._distances = tf.function(
        self._update_distances,
        input_signature=[
            theta_spec,
            theta_spec,
            theta_spec,
            theta_spec,
            tf.TensorSpec([None, num_parameters], tf.float32),
            tf.TensorSpec([], tf.float32),
        ],
        jit_compile=False,
    )

  # The vectorised engine ------------------------------------------------------------------

  def per_example_gradients(self, theta: np.ndarray, indices: np.ndarray) -> tf.Tensor:
    """G [len(indices), P] float32: row j is grad of example indices[j]'s loss at theta."""
    return self._per_example(tf.convert_to_tensor(theta, tf.float32), *self.source(indices))

  def candidate_errors(
      self,
      theta: np.ndarray,
      theta_next: np.ndarray,
      batch: np.ndarray,
      positions: np.ndarray,
      candidates: np.ndarray,
      velocity: np.ndarray | None = None,
  ) -> np.ndarray:
    """Engine approximation errors [M] float64 of the candidates.

    theta, theta_next: [P] float32 checkpoints i and i + 1; batch: B_i [b] dataset indices;
    positions: [m] positions in B_i of the deleted examples U; candidates: [M, m] dataset
    indices, candidates[c, j] replacing batch[positions[j]]; velocity: the optimizer's [P] at
    step i for momentum SGD (None: plain SGD).
    """
    theta = tf.convert_to_tensor(theta, tf.float32)
    velocity = tf.zeros_like(theta) if velocity is None else tf.convert_to_tensor(velocity)
    theta_next = tf.convert_to_tensor(theta_next, tf.float32)
    kept = np.delete(np.asarray(batch), positions)
    if kept.size:
      kept_sum = self._gradient_sum(theta, *self.source(kept))
    else:
      kept_sum = tf.zeros_like(theta)
    batch_size = tf.constant(len(batch), tf.float32)
    errors = []
    for group in range(0, len(candidates), self.candidates_per_group):
      members = np.asarray(candidates[group : group + self.candidates_per_group])
      union, where = np.unique(members, return_inverse=True)
      where = where.reshape(members.shape)
      sums = tf.zeros([len(members), self.step_fn.num_parameters], tf.float32)
      for chunk in range(0, len(union), self.pool_chunk):
        chunk_indices = union[chunk : chunk + self.pool_chunk]
        gradients = self.per_example_gradients(theta, chunk_indices)
        sums += tf.matmul(_selection(where, chunk, len(chunk_indices)), gradients)
      errors.append(
          self._distances(theta, theta_next, velocity, kept_sum, sums, batch_size).numpy()
      )
    return np.concatenate(errors) if errors else np.zeros(0, np.float64)

  # The reference path and the re-scoring --------------------------------------------------

  def approximation_error(
      self,
      theta: np.ndarray,
      theta_next: np.ndarray,
      forged_batch: np.ndarray,
      velocity: np.ndarray | None = None,
  ) -> float:
    """The verifier's number for a forged batch [b] of dataset indices: the trace's step (SGDStep,
    or Keras' own update with the logged velocity) and l2."""
    return forging_game.approximation_error(
        self.step_fn, theta, theta_next, *self.source(forged_batch), velocity=velocity
    )

  def reference_update(
      self, theta: np.ndarray, batch: np.ndarray, velocity: np.ndarray | None = None
  ) -> np.ndarray:
    """theta_i - eta * grad L(B; theta_i) [P] float32 of a batch [b] of dataset indices, on this
    platform with the trace's step: the target of forging-attack --batch=random."""
    return self.step_fn.update(theta, velocity, *self.source(batch))[0].numpy()

  def replaced_inputs(
      self, batch: np.ndarray, positions: np.ndarray, x: np.ndarray, y: np.ndarray
  ) -> tuple[tf.Tensor, tf.Tensor]:
    """The forged batch's (x [b, ...], y [b, n]) float32: B_i with explicit replacement examples
    x [m, ...], y [m, n] at the deleted positions (the kept examples keep their places)."""
    batch_x, batch_y = self.source(batch)
    where = tf.constant(np.asarray(positions, np.int32)[:, None])
    return (
        tf.tensor_scatter_nd_update(batch_x, where, tf.convert_to_tensor(x, tf.float32)),
        tf.tensor_scatter_nd_update(batch_y, where, tf.convert_to_tensor(y, tf.float32)),
    )

  def inputs_error(self, theta, theta_next, x, y, velocity: np.ndarray | None = None) -> float:
    """The verifier's number for a forged batch given as model inputs (x, y)."""
    return forging_game.approximation_error(self.step_fn, theta, theta_next, x, y, velocity)

  def summed_gradient(self, theta, x, y) -> tf.Tensor:
    """sum_j grad l(x_j, y_j; theta) [P] float32 of model inputs x [k, ...], y [k, n]."""
    return self._gradient_sum(tf.convert_to_tensor(theta, tf.float32), x, y)

  def example_gradients(self, theta, x, y) -> tf.Tensor:
    """Per-example gradients [k, P] float32 of model inputs x [k, ...], y [k, n], computed in
    chunks of the engine's pool size."""
    theta = tf.convert_to_tensor(theta, tf.float32)
    x, y = tf.convert_to_tensor(x, tf.float32), tf.convert_to_tensor(y, tf.float32)
    chunks = [
        self._per_example(theta, x[i : i + self.pool_chunk], y[i : i + self.pool_chunk])
        for i in range(0, int(x.shape[0]), self.pool_chunk)
    ]
    return tf.concat(chunks, axis=0)

  def errors_of_sums(
      self, theta, theta_next, velocity, kept_sum, sums, batch_size: int
  ) -> np.ndarray:
    """Engine errors [K] float64 of forged steps whose replacements' gradient sums are sums
    [K, P] float32 and whose kept examples' sum is kept_sum [P] (the update rounded to float32 as
    the step rounds it); batch_size: b."""
    theta = tf.convert_to_tensor(theta, tf.float32)
    velocity = tf.zeros_like(theta) if velocity is None else tf.convert_to_tensor(velocity)
    return self._distances(
        theta,
        tf.convert_to_tensor(theta_next, tf.float32),
        velocity,
        tf.convert_to_tensor(kept_sum, tf.float32),
        tf.convert_to_tensor(sums, tf.float32),
        tf.constant(batch_size, tf.float32),
    ).numpy()

  def sequential_errors(
      self,
      theta: np.ndarray,
      theta_next: np.ndarray,
      batch: np.ndarray,
      positions: np.ndarray,
      candidates: np.ndarray,
      velocity: np.ndarray | None = None,
  ) -> np.ndarray:
    """Reference errors [M] float64: one step per candidate batch (same arguments)."""
    theta = tf.convert_to_tensor(theta, tf.float32)
    return np.array(
        [
            self.approximation_error(
                theta, theta_next, replace(batch, positions, replacements), velocity
            )
            for replacements in candidates
        ],
        np.float64,
    )

  # Graph functions ------------------------------------------------------------------------

  def _flat_gradient(self, variables, x, y):
    with tf.GradientTape() as tape:
      tape.watch(variables)
      loss = tf.reduce_sum(self.step_fn.example_losses(variables, x, y))
    return tf.concat([tf.reshape(g, [-1]) for g in tape.gradient(loss, variables)], axis=0)

  def _per_example_gradients(self, theta, x, y):
    # theta is split once, outside the map: differentiating through tf.split inside every
    # example's gradient made the map six times slower on LeNet. TensorFlow 2.21's pfor has no
    # vectorised Conv2DBackpropFilter for per-example inputs and runs a while_loop for it (it
    # logs "Fix that!"); that loop is what bounds the speed-up on conv-heavy VGGmini.
    variables = self.step_fn.variables(theta)
    return tf.vectorized_map(
        lambda example: self._flat_gradient(variables, example[0][None], example[1][None]), (x, y)
    )

  def _summed_gradient(self, theta, x, y):
    return self._flat_gradient(self.step_fn.variables(theta), x, y)

  def _update_distances(self, theta, theta_next, velocity, kept_sum, candidate_sums, batch_size):
    # The update in float32 as the step rounds it (mean-loss gradient, then theta - eta * g, or
    # Keras SGD's momentum update), the distance in float64 as sgd_step.l2_distance takes it.
    gradient = (kept_sum[None, :] + candidate_sums) / batch_size
    forged_next = self.step_fn.apply_gradient(theta[None, :], gradient, velocity[None, :])
    difference = tf.cast(forged_next, tf.float64) - tf.cast(theta_next, tf.float64)[None, :]
    return tf.sqrt(tf.reduce_sum(tf.square(difference), axis=1))


def _selection(where: np.ndarray, start: int, size: int) -> tf.Tensor:
  """A [M, size] float32: A[c, j] = 1 iff candidate c uses pool example start + j.

  where: [M, m] positions of each candidate's replacements in the pool; a candidate has no
  repeated example, so every entry is 0 or 1.
  """
  rows, columns = np.nonzero((where >= start) & (where < start + size))
  selection = np.zeros((where.shape[0], size), np.float32)
  selection[rows, where[rows, columns] - start] = 1.0
  return tf.constant(selection)


def replace(batch: np.ndarray, positions: np.ndarray, replacements: np.ndarray) -> np.ndarray:
  """The forged batch [b] int32: B_i with batch[positions[j]] replaced by replacements[j].

  Replacements take the deleted examples' places so that the kept examples keep theirs, and the
  batch kernels sum the kept examples in the same order as in the logged step.
  """
  forged = np.array(batch, dtype=np.int32)
  forged[np.asarray(positions)] = replacements
  return forged
