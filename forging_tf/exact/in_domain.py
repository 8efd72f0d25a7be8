"""The in-domain search: is there an exact forgery with pixels on the grid {q / 255}?

The question the paper leaves open (SPEC section 6). `in_domain_search` runs a box-constrained
linear program over the Prop. 2 solution space (HiGHS), rounds its solution to the grid at several
scales, and solves a small mixed-integer program over a few examples and pixels; it reports what it
reached, each attempt scored by scoring.ForgeryScorer.
"""

import dataclasses
import itertools

import numpy as np
import scipy.optimize
import scipy.sparse

from forging_tf import domain
from forging_tf.exact import dense
from forging_tf.exact import propositions
from forging_tf.exact import scoring


@dataclasses.dataclass(frozen=True)
class InDomainAttempt:
  """One candidate of the in-domain search, its forged inputs [b, d] and its score."""

  method: str
  detail: dict
  forged: np.ndarray
  score: scoring.ForgeryScore

  def as_dict(self) -> dict:
    return {"method": self.method, **self.detail, **self.score.as_dict()}


def box_perturbation(
    space: propositions.SolutionSpace, x: np.ndarray, direction: np.ndarray
) -> tuple[np.ndarray, dict]:
  """LP: maximise <direction, p> over the solution space with x + p in the box [0, 1].

  x, direction: [b, d]. The equality rows are W1^T P = 0 and P D1 = 0 written out (sparse, in the
  reduced bases U, V of the column spaces: rank W1 * b + d * rank D1 rows), solved by HiGHS. The
  LP's answer is projected back onto the space exactly (HiGHS meets equalities to ~1e-9). Returns
  p [b, d] and what the LP reported.
  """
  b, d = x.shape
  u, v = space.w1_basis, space.d1_basis
  # vec in C order of p [b, d]: row k*d + i is example k, pixel i.
  rows = scipy.sparse.vstack(
      [scipy.sparse.kron(scipy.sparse.eye(b), u.T), scipy.sparse.kron(v.T, scipy.sparse.eye(d))]
  ).tocsr()
  bounds = np.stack([-x.reshape(-1), 1.0 - x.reshape(-1)], axis=1)
  result = scipy.optimize.linprog(
      -direction.reshape(-1), A_eq=rows, b_eq=np.zeros(rows.shape[0]), bounds=bounds, method="highs"
  )
  if result.status != 0:
    return np.zeros_like(x), {"lp_status": int(result.status), "lp_message": result.message}
  raw = result.x.reshape(b, d)
  p = propositions.project(space, raw)
  return p, {
      "lp_status": 0,
      "lp_objective": float(-result.fun),
      "lp_max_abs": float(np.abs(raw).max()),
      "lp_equality_residual": float(np.abs(rows @ result.x).max()),
  }


def grid_rounding(
    scorer: scoring.ForgeryScorer, x: np.ndarray, y: np.ndarray, p: np.ndarray, scales
) -> list[InDomainAttempt]:
  """Rounds x + s p to the pixel grid for each s in scales; attempts that changed a pixel."""
  attempts = []
  for s in scales:
    levels = domain.pixel_levels(x + s * p)
    forged = domain.PIXEL_VALUES[levels]
    changed = int((forged != np.asarray(x, np.float32)).sum())
    if changed:
      attempts.append(
          InDomainAttempt(
              "lp_rounding",
              {"scale": float(s), "pixels_changed": changed},
              forged,
              scorer.score(x, y, forged, y),
          )
      )
  return attempts


def gradient_jacobian(
    layers, x: np.ndarray, y: np.ndarray, examples, pixels, step: float = 1e-6
) -> np.ndarray:
  """d grad L(B) / d x[k, i] for k in examples, i in pixels: [P, len(examples) * len(pixels)].

  Central differences in float64 (the gradient is smooth in x away from ReLU kinks). Column
  order: example-major.
  """
  b = x.shape[0]
  columns = []
  for k, i in itertools.product(examples, pixels):
    plus, minus = x[k : k + 1].copy(), x[k : k + 1].copy()
    plus[0, i] += step
    minus[0, i] -= step
    difference = (
        dense.per_example_gradients(layers, plus, y[k : k + 1])
        - dense.per_example_gradients(layers, minus, y[k : k + 1])
    )[0]
    columns.append(difference / (2 * step * b))
  return np.stack(columns, axis=1)


def milp_grid_perturbation(
    layers, x: np.ndarray, y: np.ndarray, examples, pixels, max_levels: int, time_limit_s: float
) -> tuple[np.ndarray, dict]:
  """MILP over integer level changes q [len(examples), len(pixels)] of x[examples][:, pixels].

  q != 0, every pixel stays in 0..255 and moves at most max_levels. Objective: the l1 norm of the
  linearised batch-gradient change J q / 255, taken in the orthonormal coordinates of J's column
  space (||J q||_2 = ||S V^T q||_2; the l1 norm there is within sqrt(rank) of it), so the MILP has
  rank-many auxiliary variables instead of P. Sharing pixels across examples lets it cancel the
  direct term P D1 between examples, as Prop. 2 does. Returns the forged x [b, d] (on the grid
  where x is) and what HiGHS reported.
  """
  examples, pixels = list(examples), list(pixels)
  jacobian = gradient_jacobian(layers, x, y, examples, pixels) / 255.0
  _, s, vt = np.linalg.svd(jacobian, full_matrices=False)
  reduced = s[:, None] * vt  # [r, m]
  r, m = reduced.shape
  current = domain.pixel_levels(x[np.ix_(examples, pixels)]).reshape(-1)
  up = np.minimum(255 - current, max_levels).astype(np.float64)
  down = np.minimum(current, max_levels).astype(np.float64)
  # Variables: q_plus [m], q_minus [m] (integers), z [m] (binary sign choice), t [r] >= |reduced q|.
  cost = np.concatenate([np.zeros(3 * m), np.ones(r)])
  eye, zeros = np.eye(m), np.zeros((m, m))
  constraints = [
      # t >= reduced (q+ - q-) and t >= -reduced (q+ - q-).
      scipy.optimize.LinearConstraint(
          np.block(
              [
                  [reduced, -reduced, np.zeros((r, m)), -np.eye(r)],
                  [-reduced, reduced, np.zeros((r, m)), -np.eye(r)],
              ]
          ),
          -np.inf,
          0.0,
      ),
      # q+ <= up z and q- <= down (1 - z): one sign per entry, so that sum(q+ + q-) >= 1 is q != 0.
      scipy.optimize.LinearConstraint(
          np.block(
              [
                  [eye, zeros, -np.diag(up), np.zeros((m, r))],
                  [zeros, eye, np.diag(down), np.zeros((m, r))],
              ]
          ),
          -np.inf,
          np.concatenate([np.zeros(m), down]),
      ),
      scipy.optimize.LinearConstraint(
          np.concatenate([np.ones(2 * m), np.zeros(m + r)])[None, :], 1.0, np.inf
      ),
  ]
  bounds = scipy.optimize.Bounds(
      np.zeros(3 * m + r), np.concatenate([up, down, np.ones(m), np.full(r, np.inf)])
  )
  integrality = np.concatenate([np.ones(3 * m), np.zeros(r)])
  result = scipy.optimize.milp(
      cost,
      constraints=constraints,
      bounds=bounds,
      integrality=integrality,
      options={"time_limit": time_limit_s, "disp": False},
  )
  # The simplest candidate, for comparison: the best change of one pixel by one level.
  detail = {
      "milp_status": int(result.status),
      "milp_message": result.message,
      "milp_examples": [int(k) for k in examples],
      "milp_pixels": [int(i) for i in pixels],
      "milp_max_levels": max_levels,
      "best_one_level_gradient_change": float(np.linalg.norm(jacobian, axis=0).min()),
  }
  forged = np.asarray(x, np.float64).copy()
  if result.x is None:
    return forged, detail
  q = np.rint(result.x[:m] - result.x[m : 2 * m]).astype(np.int64)
  block = forged[np.ix_(examples, pixels)]
  levels = domain.pixel_levels(block).reshape(-1) + q
  forged[np.ix_(examples, pixels)] = domain.PIXEL_VALUES[levels].reshape(block.shape)
  detail.update(
      {
          "milp_objective": float(result.fun),
          "linearised_gradient_change": float(np.linalg.norm(jacobian @ q)),
          "pixels_changed": int((q != 0).sum()),
          "levels_changed": int(np.abs(q).sum()),
      }
  )
  return forged, detail


def quietest_pixels(layers, count: int) -> np.ndarray:
  """The `count` pixels the first layer weighs least (smallest ||W1[i, :]||): changing them moves
  the first-layer pre-activations least."""
  norms = np.linalg.norm(layers[0].kernel, axis=1)
  return np.sort(np.argsort(norms, kind="stable")[:count])


@dataclasses.dataclass(frozen=True)
class InDomainReport:
  """What the in-domain search reached; best is the distinct in-domain attempt of smallest float32
  approximation error, best_float64 the one of smallest float64 error (None if no attempt was
  distinct and in the domain). The float64 error is the measure of exactness: the float32 step
  rounds theta (~6e-8 |theta|), so it cannot tell an error of 1e-8 from 0."""

  space: dict
  lp: dict
  attempts: list[InDomainAttempt]

  def _smallest(self, error: str) -> InDomainAttempt | None:
    valid = [a for a in self.attempts if a.score.distinct and a.score.in_domain]
    return min(valid, key=lambda a: getattr(a.score, error)) if valid else None

  @property
  def best(self) -> InDomainAttempt | None:
    return self._smallest("approximation_error")

  @property
  def best_float64(self) -> InDomainAttempt | None:
    return self._smallest("approximation_error_float64")

  def as_dict(self) -> dict:
    best, best_float64 = self.best, self.best_float64
    return {
        "space": self.space,
        "lp": self.lp,
        "attempts": [a.as_dict() for a in self.attempts],
        "best": None if best is None else best.as_dict(),
        "best_float64": None if best_float64 is None else best_float64.as_dict(),
    }


def in_domain_search(
    scorer: scoring.ForgeryScorer,
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    rounding_scales,
    milp_examples: int,
    milp_pixels: int,
    milp_max_levels: int,
    milp_time_limit_s: float,
) -> InDomainReport:
  """Searches for a distinct forgery inside the domain, starting from batch (x [b, d] on the grid,
  y [b, n] one-hot). Labels are kept, so only pixels can leave the domain.

  1. LP: the perturbation of the Prop. 2 space that goes furthest along a random direction of the
     space while x + p stays in [0, 1]; scored as is (real-valued, in the box).
  2. Grid rounding of x + s p for each s in rounding_scales.
  3. MILP over the first `milp_examples` examples x the `milp_pixels` quietest pixels.
  """
  layers = scorer.layers
  space = propositions.solution_space(layers, x, y)
  attempts = []
  lp = {"dimension": space.dimension}
  if space.dimension > 0:
    direction = propositions.project(space, rng.standard_normal(x.shape))
    p, lp = box_perturbation(space, x, direction)
    if np.abs(p).max() > 0:
      attempts.append(
          InDomainAttempt("lp_box", {"scale": 1.0}, x + p, scorer.score(x, y, x + p, y))
      )
      attempts += grid_rounding(scorer, x, y, p, rounding_scales)
  examples = range(min(milp_examples, x.shape[0]))
  forged, detail = milp_grid_perturbation(
      layers,
      x,
      y,
      examples,
      quietest_pixels(layers, milp_pixels),
      milp_max_levels,
      milp_time_limit_s,
  )
  attempts.append(InDomainAttempt("milp", detail, forged, scorer.score(x, y, forged, y)))
  return InDomainReport(space=space.as_dict(), lp=lp, attempts=attempts)
