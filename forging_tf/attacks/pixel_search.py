"""Forging by searching the pixels: the perturb and gradmatch attacks (deletion setting).

Both replace the m deleted examples U of B_i by new images on the pixel grid {q / 255}, at least
the margin D (grey levels, l2 over the pixels in 0..255 units) from every deleted example
(domain.margin_violation), and search them to make the forged step land where the logged one did:

  minimise  F(z) = || sum_j grad l(z_j, y_j; theta_i) - sum_{u in U} grad l(x_u, y_u; theta_i) ||^2

over the replacements z_j (the kept examples of B_i cancel out of the update). dF/dz is a
second-order derivative (the gradient of a gradient's norm), one double backward pass for all m
replacements at once: near z = x_u it is 2 J^T J (z - x_u), with J the Jacobian of the example's
parameter gradient with respect to its pixels, so projected descent from a point D away turns the
displacement towards the directions J barely sees, its smallest singular directions inside the
pixel box.

- perturb: z_j starts at x_u + delta, delta a random direction pointed into the box ([0, 1] per
  pixel) scaled to the margin D; labels are the deleted examples' own.
- gradmatch (optimisation forging, as the PoL "adversarial examples" attack and gradient
  cancelling, SPEC section 7): z starts at the better of Thudi's and Zhang's winners for the same
  U (both searched with the margin D), with those images' labels: never worse than either.

The search has three phases (`search`):
  1. Adam on the continuous pixels, each step projected back to the box and out of the balls of
     radius D around the deleted examples (`project`); the best iterate is kept;
  2. rounding to the grid, pushing any replacement the rounding brought closer than D back out;
  3. a grid search that re-scores exactly: each round proposes `grid_moves` single-pixel moves of
     1 level (then 4, then 16 when none helps) along -dF/dz, scores every proposal with the attack
     engine's float32 update (per-example gradients of the moved images), and takes the best
     move, or the best set of improving moves on distinct examples when that is better still.
The starting point and the searched point are both re-scored with the SGD step
(AttackEngine.approximation_error) and the better one is returned: the search never returns a
batch worse than its start.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from forging_tf import domain
from forging_tf import errors
from forging_tf.attacks import engine as engine_lib

# Adam's step on the continuous pixels, in grey levels per pixel (Adam moves every pixel by about
# its step, so a step of s moves an image by s * sqrt(d) in l2): perturb moves on a shell of
# radius D, so its step is a tenth of D / sqrt(d); gradmatch starts from another image, thousands
# of levels away, and moves every pixel by up to a level a step.
PERTURB_STEP_LEVELS = 0.1
GRADMATCH_STEP_LEVELS = 1.0
# Passes of the margin projection: pushing a replacement out of one ball can move it into another.
_PROJECTION_PASSES = 4
# Grid-move sizes in levels tried in turn when no move of the previous size helps.
_MOVE_LEVELS = (1, 4, 16)


@dataclasses.dataclass(frozen=True)
class SearchResult:
  """A searched replacement set for one cell.

  levels: [m, h, w, c] uint8 the replacements' pixel levels; labels: [m] int32 their classes;
  approximation_error: re-scored with the SGD step; start_error: the starting point's, re-scored
  the same way; margin: the smallest l2 distance (grey levels) from a replacement to a deleted
  example; engine_error: the grid search's own number for its final point; seconds: wall time.
  """

  levels: np.ndarray
  labels: np.ndarray
  approximation_error: float
  start_error: float
  engine_error: float
  margin: float


class PixelSearch:
  """The three-phase search of the module docstring at the steps of one trace's model."""

  def __init__(self, engine: engine_lib.AttackEngine):
    self.engine = engine
    step_fn = engine.step_fn
    self._shape = step_fn.input_shape
    self._objective = tf.function(
        self._objective_and_gradient,
        input_signature=[
            tf.TensorSpec([step_fn.num_parameters], tf.float32),
            tf.TensorSpec([None, *self._shape], tf.float32),
            tf.TensorSpec([None, step_fn.num_classes], tf.float32),
            tf.TensorSpec([step_fn.num_parameters], tf.float32),
        ],
        jit_compile=False,
    )

  # Phase 1: continuous --------------------------------------------------------------------

  def _objective_and_gradient(self, theta, z, y, target):
    step_fn = self.engine.step_fn
    variables = step_fn.variables(theta)
    with tf.GradientTape() as outer:
      outer.watch(z)
      with tf.GradientTape() as inner:
        inner.watch(variables)
        loss = tf.reduce_sum(step_fn.example_losses(variables, z, y))
      gradient = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(loss, variables)], 0)
      objective = tf.reduce_sum(tf.square(gradient - target))
    return objective, outer.gradient(objective, z)

  def objective(self, theta, z: np.ndarray, y: np.ndarray, target) -> tuple[float, np.ndarray]:
    """(F(z), dF/dz [m, h, w, c]) for replacements z [m, h, w, c] float pixels, labels y [m, n]."""
    value, gradient = self._objective(
        tf.convert_to_tensor(theta, tf.float32),
        tf.convert_to_tensor(z, tf.float32),
        tf.convert_to_tensor(y, tf.float32),
        target,
    )
    return float(value), gradient.numpy()

  def continuous(
      self,
      theta,
      z: np.ndarray,
      y: np.ndarray,
      target,
      removed: np.ndarray,
      min_distance: float,
      iterations: int,
      step_levels: float,
  ) -> np.ndarray:
    """Phase 1: Adam on z [m, h, w, c] float pixels, projected (`project`); the best iterate."""
    z = project(np.asarray(z, np.float64), removed, min_distance)
    best_value, best = np.inf, z
    first, second = np.zeros_like(z), np.zeros_like(z)
    step = step_levels / 255.0
    for t in range(1, iterations + 1):
      value, gradient = self.objective(theta, z, y, target)
      if value < best_value:
        best_value, best = value, z
      gradient = _tangent(gradient, z, removed, min_distance)
      first = 0.9 * first + 0.1 * gradient
      second = 0.999 * second + 0.001 * gradient * gradient
      # Adam's step is per pixel; it decays linearly so that the last iterates settle.
      rate = step * (1.0 - (t - 1) / iterations)
      moved = z - rate * (first / (1 - 0.9**t)) / (np.sqrt(second / (1 - 0.999**t)) + 1e-12)
      z = project(moved, removed, min_distance)
    if iterations:
      value, _ = self.objective(theta, z, y, target)
      if value < best_value:
        best = z
    return best

  # Phase 3: the grid ----------------------------------------------------------------------

  def grid_search(
      self,
      theta,
      theta_next,
      velocity,
      kept_sum,
      levels: np.ndarray,
      y: np.ndarray,
      target,
      removed_levels: np.ndarray,
      min_distance: float,
      rounds: int,
      moves: int,
      b: int,
  ) -> tuple[np.ndarray, float]:
    """Phase 3 on levels [m, h, w, c] int64 of a batch of b: (the levels reached, their engine
    error)."""
    engine = self.engine
    theta_t = tf.convert_to_tensor(theta, tf.float32)
    levels = np.array(levels, np.int64)
    flat_removed = removed_levels.reshape(len(removed_levels), -1).astype(np.float64)
    y_t = tf.convert_to_tensor(y, tf.float32)
    current_sum = engine.summed_gradient(theta_t, domain.PIXEL_VALUES[levels], y_t)
    current = engine.errors_of_sums(theta, theta_next, velocity, kept_sum, current_sum[None], b)[0]
    size_index = 0
    for _ in range(rounds):
      _, gradient = self.objective(theta, domain.PIXEL_VALUES[levels], y, target)
      proposals = propose_moves(
          levels, gradient, flat_removed, min_distance, moves, _MOVE_LEVELS[size_index]
      )
      if proposals is None:
        break
      rows, pixels, new_values = proposals
      moved = levels[rows].reshape(len(rows), -1).copy()
      moved[np.arange(len(rows)), pixels] = new_values
      moved = moved.reshape((len(rows), *levels.shape[1:]))
      errors, changes = self.move_errors(
          (theta, theta_next, velocity), kept_sum, current_sum, levels, y_t, rows, moved, b
      )
      improving = np.flatnonzero(errors < current)
      if not improving.size:
        if size_index + 1 == len(_MOVE_LEVELS):
          break
        size_index += 1
        continue
      # The best improving move on each example, best first; together they may help more.
      order = improving[np.argsort(errors[improving], kind="stable")]
      _, first_of_row = np.unique(rows[order], return_index=True)
      chosen = order[np.sort(first_of_row)]
      best = order[:1]
      candidates = [best]
      if len(chosen) > 1:
        combined_sum = current_sum + tf.reduce_sum(tf.gather(changes, chosen), axis=0)
        combined = engine.errors_of_sums(
            theta, theta_next, velocity, kept_sum, combined_sum[None], b
        )[0]
        # Each move was checked against the margin alone, and they change distinct examples.
        if combined < errors[best[0]]:
          candidates = [chosen]
      taken = candidates[0]
      levels[rows[taken]] = moved[taken]
      current_sum = current_sum + tf.reduce_sum(tf.gather(changes, taken), axis=0)
      current = engine.errors_of_sums(theta, theta_next, velocity, kept_sum, current_sum[None], b)[
          0
      ]
    return levels, float(current)

  def move_errors(
      self, checkpoints, kept_sum, current_sum, levels, y, rows, moved, b: int
  ) -> tuple[np.ndarray, tf.Tensor]:
    """One grid round's scoring, all moves at once: (engine errors [K] float64, gradient changes
    [K, P] float32) of K moves, move k replacing example rows[k] of levels [m, ...] by moved[k].

    checkpoints: (theta_i, theta_{i+1}, velocity); kept_sum, current_sum: [P] the kept
    examples' and the current replacements' gradient sums; y: [m, n] the replacements' labels.
    The moved images' per-example gradients come from one vectorised call and every move's
    float32 update and distance from one more (AttackEngine.errors_of_sums), where the obvious
    loop would run the SGD step once per move (benchmarks/forger_speed.py compares them).
    """
    engine = self.engine
    theta, theta_next, velocity = checkpoints
    theta_t = tf.convert_to_tensor(theta, tf.float32)
    y = tf.convert_to_tensor(y, tf.float32)
    new_gradients = engine.example_gradients(
        theta_t, domain.PIXEL_VALUES[moved], tf.gather(y, rows)
    )
    old_rows, old_where = np.unique(rows, return_inverse=True)
    old_gradients = tf.gather(
        engine.example_gradients(
            theta_t, domain.PIXEL_VALUES[levels[old_rows]], tf.gather(y, old_rows)
        ),
        old_where,
    )
    changes = new_gradients - old_gradients
    errors = engine.errors_of_sums(
        theta, theta_next, velocity, kept_sum, current_sum[None] + changes, b
    )
    return errors, changes

  # The whole search -----------------------------------------------------------------------

  def search(
      self,
      theta,
      theta_next,
      velocity,
      batch: np.ndarray,
      positions: np.ndarray,
      start_levels: np.ndarray,
      start_labels: np.ndarray,
      min_distance: float,
      iterations: int,
      rounds: int,
      moves: int,
      step_levels: float,
  ) -> SearchResult:
    """The three phases from a starting replacement set, for the deleted positions of B_i.

    theta, theta_next: [P] float32 checkpoints i and i + 1; velocity: the optimizer's [P] or None;
    batch: B_i [b] dataset indices; positions: [m] positions of U in B_i; start_levels:
    [m, h, w, c] uint8, start_labels: [m] int, the starting replacements (each at least
    min_distance from every deleted example); iterations, rounds, moves, step_levels: phase 1's
    steps and Adam step (grey levels), phase 3's rounds and moves per round.
    """
    engine, source = self.engine, self.engine.source
    theta_t = tf.convert_to_tensor(theta, tf.float32)
    kept = np.delete(np.asarray(batch), positions)
    kept_sum = (
        engine.summed_gradient(theta_t, *source(kept))
        if kept.size
        else tf.zeros([engine.step_fn.num_parameters], tf.float32)
    )
    removed_x, removed_y = source(np.asarray(batch)[positions])
    removed_levels = domain.pixel_levels(removed_x.numpy())
    target = engine.summed_gradient(theta_t, removed_x, removed_y)
    y = np.eye(engine.step_fn.num_classes, dtype=np.float32)[np.asarray(start_labels)]
    start_levels = np.asarray(start_levels, np.int64)

    def verified(levels) -> float:
      forged = engine.replaced_inputs(batch, positions, domain.PIXEL_VALUES[levels], y)
      return engine.inputs_error(theta, theta_next, *forged, velocity)

    start_error = verified(start_levels)
    z = self.continuous(
        theta,
        domain.PIXEL_VALUES[start_levels],
        y,
        target,
        removed_x.numpy(),
        min_distance,
        iterations,
        step_levels,
    )
    levels = round_to_grid(z, removed_levels, min_distance)
    if levels is None:  # Rounding could not keep the margin: search on from the start.
      levels = start_levels
    levels, engine_error = self.grid_search(
        theta,
        theta_next,
        velocity,
        kept_sum,
        levels,
        y,
        target,
        removed_levels,
        min_distance,
        rounds,
        moves,
        len(batch),
    )
    error = verified(levels)
    if start_error <= error:
      levels, error = start_levels, start_error
    margin = domain.pixel_distances(levels.astype(np.uint8), removed_levels.astype(np.uint8))
    return SearchResult(
        levels.astype(np.uint8),
        np.asarray(start_labels, np.int32),
        error,
        start_error,
        engine_error,
        float(margin.min()),
    )


def perturbation_start(
    levels: np.ndarray, min_distance: float, rng: np.random.Generator
) -> np.ndarray:
  """perturb's starting replacements [m, h, w, c] int64: x_u + delta on the grid, ||delta|| >= D.

  delta is a Gaussian direction per example, turned into the box where a pixel sits at 0 or 255,
  scaled to D (at least one level) and rounded; rounding and clipping can shorten it, so it is
  lengthened until every replacement is D away from its own deleted example.
  """
  levels = np.asarray(levels, np.int64)
  flat = levels.reshape(len(levels), -1)
  direction = rng.standard_normal(flat.shape)
  direction[flat == 0] = np.abs(direction[flat == 0])
  direction[flat == 255] = -np.abs(direction[flat == 255])
  direction /= np.linalg.norm(direction, axis=1, keepdims=True)
  radius = max(float(min_distance), 1.0)
  start = flat.copy()
  pending = np.ones(len(flat), bool)
  for scale in radius * 1.05 ** np.arange(200):
    moved = np.clip(np.rint(flat[pending] + scale * direction[pending]), 0, 255).astype(np.int64)
    start[pending] = moved
    reached = np.linalg.norm((moved - flat[pending]).astype(np.float64), axis=1) >= radius
    pending[np.flatnonzero(pending)[reached]] = False
    if not pending.any():
      break
  return start.reshape(levels.shape)


def feasible_start(
    levels: np.ndarray, removed_levels: np.ndarray, min_distance: float
) -> np.ndarray:
  """levels [m, ...] pushed (project, then round_to_grid) until at least D from every removed
  example [r, ...] uint8 levels; unchanged if they already are."""
  if domain.margin_violation(levels.astype(np.uint8), removed_levels, min_distance) is None:
    return levels
  removed = domain.PIXEL_VALUES[removed_levels].astype(np.float64)
  z = project(domain.PIXEL_VALUES[levels].astype(np.float64), removed, min_distance)
  pushed = round_to_grid(z, removed_levels, min_distance)
  if pushed is None:
    raise errors.ConfigError(
        f"no starting point on the grid keeps the margin {min_distance:g} from every deleted "
        "example; use a smaller --min_distance"
    )
  return pushed


def project(z: np.ndarray, removed: np.ndarray, min_distance: float) -> np.ndarray:
  """z [m, ...] float pixels into the box [0, 1] and at least D grey levels from every removed
  example [r, ...] (float pixels): a replacement inside a ball is pushed out along the ray from
  the ball's centre, and the box is applied again, a few passes."""
  z = np.clip(z, 0.0, 1.0)
  if min_distance <= 0:
    return z
  flat = z.reshape(len(z), -1)
  centres = np.asarray(removed, np.float64).reshape(len(removed), -1)
  radius = min_distance / 255.0
  for _ in range(_PROJECTION_PASSES):
    distances = _distances(flat, centres)
    inside = np.argwhere(distances < radius * (1 + 1e-6))
    if not inside.size:
      break
    for j, u in inside:
      offset = flat[j] - centres[u]
      norm = np.linalg.norm(offset)
      if norm < radius * (1 + 1e-6):
        if norm == 0:
          offset, norm = np.ones_like(offset), np.sqrt(offset.size)
        flat[j] = np.clip(centres[u] + offset * (radius * 1.001 / norm), 0.0, 1.0)
  return flat.reshape(z.shape)


def round_to_grid(
    z: np.ndarray, removed_levels: np.ndarray, min_distance: float
) -> np.ndarray | None:
  """Phase 2: z [m, ...] float pixels -> levels [m, ...] int64 at least D from every removed
  example, pushing the replacements that rounding brought inside a ball further out along their
  ray; None if that fails."""
  levels = domain.pixel_levels(z)
  if min_distance <= 0:
    return levels
  removed = removed_levels.reshape(len(removed_levels), -1).astype(np.float64)
  for scale in 1.0 + 0.02 * np.arange(1, 50):
    flat = levels.reshape(len(levels), -1).astype(np.float64)
    distances = domain.pixel_distances(flat.astype(np.uint8), removed.astype(np.uint8))
    close = np.flatnonzero(distances.min(axis=1) < min_distance)
    if not close.size:
      return levels
    for j in close:
      u = int(np.argmin(distances[j]))
      pushed = removed[u] + (np.asarray(z[j], np.float64).reshape(-1) * 255.0 - removed[u]) * scale
      levels.reshape(len(levels), -1)[j] = np.clip(np.rint(pushed), 0, 255).astype(np.int64)
  return None


def propose_moves(levels, gradient, flat_removed, min_distance, moves, size):
  """Phase 3's proposals: up to `moves` single-pixel moves of `size` levels along -dF/dz
  (gradient [m, ...]) of levels [m, ...] that stay on the grid and keep the margin from every
  removed example (flat_removed [r, d] float64 levels): (rows, pixels, new levels) [K] each, or
  None if there is none."""
  flat_levels = levels.reshape(len(levels), -1)
  flat_gradient = gradient.reshape(len(levels), -1)
  direction = -np.sign(flat_gradient).astype(np.int64)
  new = np.clip(flat_levels + size * direction, 0, 255)
  gain = np.abs(flat_gradient) * np.abs(new - flat_levels)
  gain[new == flat_levels] = 0.0
  order = np.argsort(-gain, axis=None, kind="stable")
  order = order[gain.reshape(-1)[order] > 0][: 4 * moves]
  if not order.size:
    return None
  rows, pixels = np.unravel_index(order, flat_levels.shape)
  values = new[rows, pixels]
  if min_distance > 0:
    keep = np.array(
        [
            _moved_distance_ok(flat_levels[j], i, v, flat_removed, min_distance)
            for j, i, v in zip(rows, pixels, values)
        ],
        bool,
    )
    rows, pixels, values = rows[keep], pixels[keep], values[keep]
  if not rows.size:
    return None
  return rows[:moves], pixels[:moves], values[:moves]


def _moved_distance_ok(row, pixel, value, flat_removed, min_distance) -> bool:
  squared = ((row.astype(np.float64)[None, :] - flat_removed) ** 2).sum(axis=1)
  old = (row[pixel] - flat_removed[:, pixel]) ** 2
  new = (value - flat_removed[:, pixel]) ** 2
  return bool(np.all(squared - old + new >= min_distance**2))


def _tangent(gradient, z, removed, min_distance) -> np.ndarray:
  """The gradient without its part that would move a replacement on the surface of a margin ball
  into the ball: the projection would undo that part, and on a sphere |J delta| mostly shrinks
  along the radius, so without this the descent stalls on the surface."""
  if min_distance <= 0:
    return gradient
  flat_z = z.reshape(len(z), -1)
  centres = np.asarray(removed, np.float64).reshape(len(removed), -1)
  flat = gradient.reshape(len(z), -1).astype(np.float64).copy()
  distances = _distances(flat_z, centres)
  nearest = np.argmin(distances, axis=1)
  for j in np.flatnonzero(distances[np.arange(len(z)), nearest] < min_distance / 255.0 * 1.01):
    radial = flat_z[j] - centres[nearest[j]]
    radial /= max(np.linalg.norm(radial), 1e-30)
    inward = flat[j] @ radial
    if inward > 0:
      flat[j] -= inward * radial
  return flat.reshape(gradient.shape)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """[len a, len b] l2 distances of float64 rows (the margin's arithmetic, in pixel units)."""
  squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
  return np.sqrt(np.maximum(squared, 0.0))
