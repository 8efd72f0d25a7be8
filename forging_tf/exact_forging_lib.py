"""Exact data forging (SPEC section 6): Prop. 1, mini-batch perturbation, error-matrix sampling.

Notation follows the paper, with one change of orientation: the paper's X is d x b (one column per
example); here a batch is x [b, d] (one row per example), as everywhere else in the package. The
paper's perturbation P (d x b) is therefore returned as its transpose, p [b, d].

Everything here is linear algebra on a fully connected ReLU network (models.fcn, any depth) or
softmax regression (models.logreg), taken out of its flat parameter vector theta into float64 numpy
(`dense_layers`). Every forgery is scored twice: with the one SGD step (sgd_step.SGDStep, float32,
the number a verifier sees) and with a float64 numpy gradient (the check that the two batches have
the same gradient up to float64 rounding). How far a forgery lies from the domain of the forging
game comes from domain.distance_to_domain.

The in-domain search (`in_domain_search`) asks the question the paper leaves open: is there a
forgery inside the domain, pixels on the grid {q / 255}? It runs a box-constrained linear program
over the Prop. 2 solution space (HiGHS), rounds its solution to the grid at several scales, and
solves a small mixed-integer program over a few examples and pixels; it reports what it reached.
"""

import dataclasses
import itertools
import os

import keras
import numpy as np
import scipy.optimize
import scipy.sparse

from forging_tf import data as data_lib
from forging_tf import domain
from forging_tf import errors
from forging_tf import exact_settings
from forging_tf import models
from forging_tf import platform as platform_lib
from forging_tf import plotting
from forging_tf import results
from forging_tf import sgd_step

# Singular values below this fraction of the largest count as zero when ranks are taken (float64
# arithmetic on float32 weights: the true zeros sit near 1e-16, real ones far above 1e-10).
_RANK_RTOL = 1e-10


@dataclasses.dataclass(frozen=True)
class DenseLayer:
  """One Dense layer in float64: z = a @ kernel + bias; ReLU after every layer but the last."""
  kernel: np.ndarray  # [in, out] float64
  bias: np.ndarray | None  # [out] float64, None without biases
  kernel_offset: int  # where the kernel starts in theta (C order)
  bias_offset: int | None


def dense_layers(model: keras.Model, theta: np.ndarray) -> tuple[DenseLayer, ...]:
  """The Dense layers of an fcn or logreg model, read out of theta [P] float32 into float64."""
  dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
  others = [layer.name for layer in model.layers
            if not isinstance(layer, (keras.layers.Dense, keras.layers.Flatten))]
  activations = [layer.activation for layer in dense]
  if (others or not dense or any(a is not keras.activations.relu for a in activations[:-1])
      or activations[-1] is not keras.activations.linear):
    raise errors.ConfigError(f"exact forging needs a fully connected ReLU model (fcn or logreg); "
                             f"{model.name} has layers {[layer.name for layer in model.layers]}")
  layout = {spec.name: spec for spec in models.parameter_layout(model)}
  theta = np.asarray(theta)
  if theta.shape != (models.num_parameters(layout.values()),):
    raise errors.ConfigError(f"theta has shape {theta.shape}, the model has "
                             f"{models.num_parameters(layout.values())} parameters")
  layers = []
  for layer in dense:
    kernel = layout[layer.kernel.path]
    bias = layout[layer.bias.path] if layer.use_bias else None
    layers.append(DenseLayer(
        kernel=theta[kernel.offset:kernel.offset + kernel.size].astype(np.float64).reshape(
            kernel.shape),
        bias=None if bias is None else theta[bias.offset:bias.offset + bias.size].astype(
            np.float64),
        kernel_offset=kernel.offset, bias_offset=None if bias is None else bias.offset))
  return tuple(layers)


def _num_parameters(layers) -> int:
  return sum(layer.kernel.size + (0 if layer.bias is None else layer.bias.size)
             for layer in layers)


def _forward(layers, x: np.ndarray):
  """x [b, d] -> (activations [a_0 = x, a_1, ..., a_{L-1}], pre-activations [z_1, ..., z_L])."""
  activations, pre_activations = [x], []
  for i, layer in enumerate(layers):
    z = activations[-1] @ layer.kernel
    if layer.bias is not None:
      z = z + layer.bias
    pre_activations.append(z)
    if i < len(layers) - 1:
      activations.append(np.maximum(z, 0.0))
  return activations, pre_activations


def softmax(logits: np.ndarray) -> np.ndarray:
  """logits [b, n] float64 -> probabilities [b, n]."""
  shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
  return shifted / shifted.sum(axis=1, keepdims=True)


def layer_errors(layers, x: np.ndarray, y: np.ndarray):
  """Per-example errors delta_l = dL_k / dz_l of every layer, for crossentropy on softmax.

  x: [b, d] float64, y: [b, n] float64 (any rows). Returns (activations, deltas) with deltas[l]
  [b, width of layer l]. The output error is softmax(z_L) * sum(y) - y: the exact derivative for
  label rows that need not sum to one (Prop. 3's labels sum to one only up to rounding). ReLU's
  derivative at 0 is 0, as in TensorFlow.
  """
  activations, pre_activations = _forward(layers, x)
  delta = softmax(pre_activations[-1]) * y.sum(axis=1, keepdims=True) - y
  deltas = [delta]
  for layer, z in zip(layers[:0:-1], pre_activations[-2::-1]):
    delta = (delta @ layer.kernel.T) * (z > 0)
    deltas.insert(0, delta)
  return activations, deltas


def first_layer_errors(layers, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """D1 [b, d1] float64: the first-layer errors delta_1 of each example (Prop. 2)."""
  return layer_errors(layers, x, y)[1][0]


def per_example_gradients(layers, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """grad_theta of each example's loss: [b, P] float64, in theta's layout (C-order kernels).

  x: [b, d] float64, y: [b, n] float64. The batch gradient of SPEC 1 is the mean over rows.
  """
  activations, deltas = layer_errors(layers, x, y)
  b = x.shape[0]
  gradients = np.zeros((b, _num_parameters(layers)))
  for layer, a, delta in zip(layers, activations, deltas):
    kernel = np.einsum("bi,bj->bij", a, delta).reshape(b, -1)
    gradients[:, layer.kernel_offset:layer.kernel_offset + kernel.shape[1]] = kernel
    if layer.bias is not None:
      gradients[:, layer.bias_offset:layer.bias_offset + delta.shape[1]] = delta
  return gradients


def batch_gradient(layers, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """grad L(B; theta) [P] float64 = mean of the per-example gradients."""
  return per_example_gradients(layers, x, y).mean(axis=0)


# ----------------------------------------------------------------------------------- Prop. 1


@dataclasses.dataclass(frozen=True)
class Prop1Check:
  """Prop. 1 over a set of single examples (b = 1, one-hot labels).

  The proof reads x off the first-layer gradient x delta_1^T, which needs delta_1 != 0. Examples
  whose first-layer error vanishes (typically: a hidden layer with no active unit) are the
  exception: their gradient no longer depends on x, so two of them with the same label share it.
  Pairs of two such examples are set apart (inactive_pairs); min_distance is the smallest gradient
  distance over all other pairs of distinct examples, and holds says it is above the tolerance.
  """
  examples: int
  min_distance: float
  holds: bool
  inactive_pairs: int


def prop1_check(layers, x: np.ndarray, labels: np.ndarray, tolerance: float = 1e-12
                ) -> Prop1Check:
  """Checks Prop. 1 on examples x [m, d] float64 with class ids labels [m] int (float64 math)."""
  x = np.asarray(x, np.float64)
  labels = np.asarray(labels)
  y = np.eye(layers[-1].kernel.shape[1])[labels]
  gradients = per_example_gradients(layers, x, y)
  distances = np.sqrt(((gradients[:, None, :] - gradients[None, :, :]) ** 2).sum(axis=2))
  pairs = np.triu(~(x[:, None, :] == x[None, :, :]).all(axis=2)
                  | (labels[:, None] != labels[None, :]), k=1)
  inactive = ~first_layer_errors(layers, x, y).any(axis=1)
  excepted = pairs & inactive[:, None] & inactive[None, :]
  covered = pairs & ~excepted
  if not covered.any():
    raise errors.ConfigError("prop1_check needs two distinct examples, one of them with a "
                             "nonzero first-layer error")
  min_distance = float(distances[covered].min())
  return Prop1Check(examples=len(x), min_distance=min_distance, holds=min_distance > tolerance,
                    inactive_pairs=int(excepted.sum()))


# ----------------------------------------------------------------------------------- Prop. 2


@dataclasses.dataclass(frozen=True)
class SolutionSpace:
  """The perturbations P with W1^T P = 0 and P D1 = 0 (paper orientation P: d x b).

  They are U A V^T for any A: U [d, d - rank W1] spans the null space of W1^T, V [b, b - rank D1]
  the null space of D1^T, so the space has dimension (d - rank W1) * (b - rank D1). The paper's
  sufficient condition for solutions is d * b > d1 * (d + b) (a count of equations of K); the
  dimension says whether solutions exist for this batch.
  """
  w1_basis: np.ndarray  # [d, rank W1] orthonormal basis of the column space of W1
  d1_basis: np.ndarray  # [b, rank D1] orthonormal basis of the column space of D1
  d: int
  b: int
  d1: int

  @property
  def dimension(self) -> int:
    return (self.d - self.w1_basis.shape[1]) * (self.b - self.d1_basis.shape[1])

  @property
  def paper_condition(self) -> bool:
    return self.d * self.b > self.d1 * (self.d + self.b)

  def as_dict(self) -> dict:
    return {"d": self.d, "b": self.b, "d1": self.d1, "rank_w1": self.w1_basis.shape[1],
            "rank_d1": self.d1_basis.shape[1], "dimension": self.dimension,
            "paper_condition_db_gt_d1_d_plus_b": self.paper_condition}


def _column_basis(matrix: np.ndarray) -> np.ndarray:
  """Orthonormal basis [rows, rank] of the column space of matrix (SVD, relative threshold)."""
  u, s, _ = np.linalg.svd(matrix, full_matrices=False)
  rank = int((s > _RANK_RTOL * s[0]).sum()) if s.size and s[0] > 0 else 0
  return u[:, :rank]


def solution_space(layers, x: np.ndarray, y: np.ndarray) -> SolutionSpace:
  """The Prop. 2 solution space of batch (x [b, d] float64, y [b, n] float64)."""
  w1 = layers[0].kernel
  d1 = first_layer_errors(layers, x, y)
  return SolutionSpace(w1_basis=_column_basis(w1), d1_basis=_column_basis(d1), d=w1.shape[0],
                       b=x.shape[0], d1=w1.shape[1])


def project(space: SolutionSpace, f: np.ndarray) -> np.ndarray:
  """f [b, d] -> p [b, d] = the paper's (I - W1 W1^+) F (I - D1 D1^+), transposed.

  Factored: two thin projections, O(b d (rank W1 + rank D1)) work, never the (d1 d + d1 b) x (d b)
  Kronecker matrix K. W1 W1^+ and D1 D1^+ are the orthogonal projectors on the column spaces, which
  the orthonormal bases give without a pseudo-inverse.
  """
  p = f - (f @ space.w1_basis) @ space.w1_basis.T
  return p - space.d1_basis @ (space.d1_basis.T @ p)


def kronecker_perturbation(w1: np.ndarray, d1: np.ndarray, f: np.ndarray) -> np.ndarray:
  """Reference for tests and the speed benchmark: vec(P) = (I - K^+ K) vec(F), K dense.

  w1: [d, d1], d1: [b, d1], f: [b, d] (rows = examples, so f's C order is the paper's vec(F),
  which stacks the columns of the d x b F). K = [D1^T kron I_d ; I_b kron W1^T] is
  (d1 d + d1 b) x (d b). Returns p [b, d].
  """
  b, d = f.shape
  k = np.concatenate([np.kron(d1.T, np.eye(d)), np.kron(np.eye(b), w1.T)])
  vec_f = f.reshape(-1)
  vec_p = vec_f - np.linalg.pinv(k) @ (k @ vec_f)
  return vec_p.reshape(b, d)


def mini_batch_perturbation(layers, x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
                            scale: float) -> tuple[np.ndarray, SolutionSpace]:
  """Prop. 2: a random perturbation p [b, d] in the solution space, max |p| = scale.

  F is standard normal; the projection of F is rescaled, which keeps it in the (linear) space.
  Raises ConfigError when the space is {0} (no distinct batch has this batch's gradient this way).
  """
  space = solution_space(layers, x, y)
  if space.dimension == 0:
    raise errors.ConfigError(
        f"the Prop. 2 solution space of this batch is {{0}} (d={space.d}, b={space.b}, "
        f"rank W1={space.w1_basis.shape[1]}, rank D1={space.d1_basis.shape[1]}): use a larger "
        "batch or a narrower first layer")
  p = project(space, rng.standard_normal(x.shape))
  return p * (scale / np.abs(p).max()), space


# ----------------------------------------------------------------------------------- Prop. 3


@dataclasses.dataclass(frozen=True)
class ErrorMatrixForgery:
  """Prop. 3's output: the forged batch and the error matrices it came from (float64)."""
  x: np.ndarray  # [b, d] forged inputs X'
  y: np.ndarray  # [b, n] forged labels Y' (rows sum to v_k, need not be one-hot)
  errors: np.ndarray  # [b, n] D of the original batch (f(X) diag(v) - Y)^T
  forged_errors: np.ndarray  # [b, n] the sampled D'
  rank_gradient: int
  rank_forged_errors: int
  residual: float  # ||X' D' - X D||_max: how exactly X' D' = b G was solved


def error_matrix_sampling(layers, x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
                          scale: float) -> ErrorMatrixForgery:
  """Prop. 3 for L = 1 (softmax regression, with or without bias).

  x: [b, d] float64, y: [b, n] float64. D' = M D + N with M = I + scale R (columns of R summing to
  zero when there is a bias, so the bias gradient 1^T D' / b is kept) and N a scaled random matrix
  with zero row sums (and, with a bias, zero column sums). N is added only when rank D = n - 1:
  then D' has the same row space as D (all rows sum to zero, Lemma 1), so X' D' = X D = b G is
  solvable; with b < n - 1 the row space of D' must stay that of D, which M alone guarantees.
  X' = X + X (D - D') D'^+ is the solution closest to X, and Y' = f(X') diag(v) - D'^T.
  """
  if len(layers) != 1:
    raise errors.ConfigError(f"error-matrix sampling (Prop. 3) is for L = 1 (softmax regression); "
                             f"this model has L = {len(layers)}")
  layer = layers[0]
  b, n = y.shape
  v = y.sum(axis=1)
  logits = x @ layer.kernel + (0.0 if layer.bias is None else layer.bias)
  d_original = softmax(logits) * v[:, None] - y
  mixing = rng.standard_normal((b, b))
  if layer.bias is not None:
    mixing -= mixing.mean(axis=0, keepdims=True)
  d_forged = (np.eye(b) + scale * mixing) @ d_original
  rank_d = np.linalg.matrix_rank(d_original)
  if rank_d == n - 1:
    noise = rng.standard_normal((b, n))
    noise -= noise.mean(axis=1, keepdims=True)
    if layer.bias is not None:
      noise -= noise.mean(axis=0, keepdims=True)
    d_forged += scale * np.abs(d_original).max() * noise
  forged_x = x + np.linalg.pinv(d_forged).T @ (d_original - d_forged).T @ x
  forged_logits = forged_x @ layer.kernel + (0.0 if layer.bias is None else layer.bias)
  forged_y = softmax(forged_logits) * v[:, None] - d_forged
  residual = float(np.abs(forged_x.T @ d_forged - x.T @ d_original).max())
  gradient = x.T @ d_original / b
  return ErrorMatrixForgery(
      x=forged_x, y=forged_y, errors=d_original, forged_errors=d_forged,
      rank_gradient=int(np.linalg.matrix_rank(gradient)),
      rank_forged_errors=int(np.linalg.matrix_rank(d_forged)), residual=residual)


# ---------------------------------------------------------------------- scoring a forgery


@dataclasses.dataclass(frozen=True)
class ForgeryScore:
  """How good a forged batch is (SPEC 4): errors in theta space and distance to the domain."""
  approximation_error: float  # ||step(B) - step(B')||_2 with SGDStep, float32
  approximation_error_float64: float  # eta * ||grad(B) - grad(B')||_2 in float64 numpy
  distinct: bool  # B' != B as multisets of examples (domain.same_examples)
  domain_box: float
  domain_grid: float
  domain_label: float
  in_domain: bool
  max_pixel_change: float

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


class ForgeryScorer:
  """Scores forged batches of one model at one theta: SGDStep in float32, numpy in float64."""

  def __init__(self, model: keras.Model, theta: np.ndarray, learning_rate: float):
    self.step = sgd_step.SGDStep(model, learning_rate)
    self.theta = np.asarray(theta, np.float32)
    self.layers = dense_layers(model, self.theta)
    self.learning_rate = float(learning_rate)
    self.input_shape = self.step.input_shape

  def _step(self, x, y) -> np.ndarray:
    x32 = np.asarray(x, np.float32).reshape((len(x),) + self.input_shape)
    return self.step(self.theta, x32, np.asarray(y, np.float32)).numpy()

  def score(self, x: np.ndarray, y: np.ndarray, forged_x: np.ndarray, forged_y: np.ndarray
            ) -> ForgeryScore:
    """x, forged_x: [b, d] (or [b, h, w, c]); y, forged_y: [b, n].

    The float32 error feeds SGDStep the float32 rounding of both batches, exactly what a verifier
    recomputes. The float64 error takes the batches as given (a float64 forgery is not rounded),
    so it checks the construction itself: zero up to float64 rounding for an exact forgery.
    """
    flat = lambda a: np.asarray(a, np.float64).reshape(len(a), -1)
    x64, fx64 = flat(x), flat(forged_x)
    y64, fy64 = np.asarray(y, np.float64), np.asarray(forged_y, np.float64)
    float64_error = self.learning_rate * np.linalg.norm(
        batch_gradient(self.layers, x64, y64) - batch_gradient(self.layers, fx64, fy64))
    distance = domain.distance_to_domain(np.asarray(forged_x, np.float32), fy64)
    return ForgeryScore(
        approximation_error=sgd_step.l2_distance(self._step(x, y), self._step(forged_x, forged_y)),
        approximation_error_float64=float(float64_error),
        distinct=not domain.same_examples(x, y, forged_x, forged_y),
        domain_box=distance.box, domain_grid=distance.grid, domain_label=distance.label,
        in_domain=distance.in_domain, max_pixel_change=float(np.abs(fx64 - x64).max()))


# ------------------------------------------------------------------------ in-domain search


@dataclasses.dataclass(frozen=True)
class InDomainAttempt:
  """One candidate of the in-domain search, its forged inputs [b, d] and its score."""
  method: str
  detail: dict
  forged: np.ndarray
  score: ForgeryScore

  def as_dict(self) -> dict:
    return {"method": self.method, **self.detail, **self.score.as_dict()}


def box_perturbation(space: SolutionSpace, x: np.ndarray, direction: np.ndarray
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
  rows = scipy.sparse.vstack([scipy.sparse.kron(scipy.sparse.eye(b), u.T),
                              scipy.sparse.kron(v.T, scipy.sparse.eye(d))]).tocsr()
  bounds = np.stack([-x.reshape(-1), 1.0 - x.reshape(-1)], axis=1)
  result = scipy.optimize.linprog(-direction.reshape(-1), A_eq=rows,
                                  b_eq=np.zeros(rows.shape[0]), bounds=bounds, method="highs")
  if result.status != 0:
    return np.zeros_like(x), {"lp_status": int(result.status), "lp_message": result.message}
  raw = result.x.reshape(b, d)
  p = project(space, raw)
  return p, {"lp_status": 0, "lp_objective": float(-result.fun),
             "lp_max_abs": float(np.abs(raw).max()),
             "lp_equality_residual": float(np.abs(rows @ result.x).max())}


def grid_rounding(scorer: ForgeryScorer, x: np.ndarray, y: np.ndarray, p: np.ndarray,
                  scales) -> list[InDomainAttempt]:
  """Rounds x + s p to the pixel grid for each s in scales; attempts that changed a pixel."""
  attempts = []
  for s in scales:
    levels = domain.pixel_levels(x + s * p)
    forged = domain.PIXEL_VALUES[levels]
    changed = int((forged != np.asarray(x, np.float32)).sum())
    if changed:
      attempts.append(InDomainAttempt("lp_rounding", {"scale": float(s), "pixels_changed": changed},
                                      forged, scorer.score(x, y, forged, y)))
  return attempts


def gradient_jacobian(layers, x: np.ndarray, y: np.ndarray, examples, pixels,
                      step: float = 1e-6) -> np.ndarray:
  """d grad L(B) / d x[k, i] for k in examples, i in pixels: [P, len(examples) * len(pixels)].

  Central differences in float64 (the gradient is smooth in x away from ReLU kinks). Column
  order: example-major.
  """
  b = x.shape[0]
  columns = []
  for k, i in itertools.product(examples, pixels):
    plus, minus = x[k:k + 1].copy(), x[k:k + 1].copy()
    plus[0, i] += step
    minus[0, i] -= step
    difference = (per_example_gradients(layers, plus, y[k:k + 1])
                  - per_example_gradients(layers, minus, y[k:k + 1]))[0]
    columns.append(difference / (2 * step * b))
  return np.stack(columns, axis=1)


def milp_grid_perturbation(layers, x: np.ndarray, y: np.ndarray, examples, pixels,
                           max_levels: int, time_limit_s: float) -> tuple[np.ndarray, dict]:
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
          np.block([[reduced, -reduced, np.zeros((r, m)), -np.eye(r)],
                    [-reduced, reduced, np.zeros((r, m)), -np.eye(r)]]), -np.inf, 0.0),
      # q+ <= up z and q- <= down (1 - z): one sign per entry, so that sum(q+ + q-) >= 1 is q != 0.
      scipy.optimize.LinearConstraint(
          np.block([[eye, zeros, -np.diag(up), np.zeros((m, r))],
                    [zeros, eye, np.diag(down), np.zeros((m, r))]]),
          -np.inf, np.concatenate([np.zeros(m), down])),
      scipy.optimize.LinearConstraint(
          np.concatenate([np.ones(2 * m), np.zeros(m + r)])[None, :], 1.0, np.inf),
  ]
  bounds = scipy.optimize.Bounds(np.zeros(3 * m + r),
                                 np.concatenate([up, down, np.ones(m), np.full(r, np.inf)]))
  integrality = np.concatenate([np.ones(3 * m), np.zeros(r)])
  result = scipy.optimize.milp(cost, constraints=constraints, bounds=bounds,
                               integrality=integrality,
                               options={"time_limit": time_limit_s, "disp": False})
  # The simplest candidate, for comparison: the best change of one pixel by one level.
  detail = {"milp_status": int(result.status), "milp_message": result.message,
            "milp_examples": [int(k) for k in examples], "milp_pixels": [int(i) for i in pixels],
            "milp_max_levels": max_levels,
            "best_one_level_gradient_change": float(np.linalg.norm(jacobian, axis=0).min())}
  forged = np.asarray(x, np.float64).copy()
  if result.x is None:
    return forged, detail
  q = np.rint(result.x[:m] - result.x[m:2 * m]).astype(np.int64)
  block = forged[np.ix_(examples, pixels)]
  levels = domain.pixel_levels(block).reshape(-1) + q
  forged[np.ix_(examples, pixels)] = domain.PIXEL_VALUES[levels].reshape(block.shape)
  detail.update({"milp_objective": float(result.fun),
                 "linearised_gradient_change": float(np.linalg.norm(jacobian @ q)),
                 "pixels_changed": int((q != 0).sum()), "levels_changed": int(np.abs(q).sum())})
  return forged, detail


def quietest_pixels(layers, count: int) -> np.ndarray:
  """The `count` pixels the first layer weighs least (smallest ||W1[i, :]||): changing them moves
  the first-layer pre-activations least."""
  norms = np.linalg.norm(layers[0].kernel, axis=1)
  return np.sort(np.argsort(norms, kind="stable")[:count])


@dataclasses.dataclass(frozen=True)
class InDomainReport:
  """What the in-domain search reached; best is the distinct in-domain attempt of smallest float32
  approximation error (None if no attempt was distinct and in the domain)."""
  space: dict
  lp: dict
  attempts: list[InDomainAttempt]

  @property
  def best(self) -> InDomainAttempt | None:
    valid = [a for a in self.attempts if a.score.distinct and a.score.in_domain]
    return min(valid, key=lambda a: a.score.approximation_error) if valid else None

  def as_dict(self) -> dict:
    best = self.best
    return {"space": self.space, "lp": self.lp,
            "attempts": [a.as_dict() for a in self.attempts],
            "best": None if best is None else best.as_dict()}


def in_domain_search(scorer: ForgeryScorer, x: np.ndarray, y: np.ndarray,
                     rng: np.random.Generator, rounding_scales, milp_examples: int,
                     milp_pixels: int, milp_max_levels: int, milp_time_limit_s: float
                     ) -> InDomainReport:
  """Searches for a distinct forgery inside the domain, starting from batch (x [b, d] on the grid,
  y [b, n] one-hot). Labels are kept, so only pixels can leave the domain.

  1. LP: the perturbation of the Prop. 2 space that goes furthest along a random direction of the
     space while x + p stays in [0, 1]; scored as is (real-valued, in the box).
  2. Grid rounding of x + s p for each s in rounding_scales.
  3. MILP over the first `milp_examples` examples x the `milp_pixels` quietest pixels.
  """
  layers = scorer.layers
  space = solution_space(layers, x, y)
  attempts = []
  lp = {"dimension": space.dimension}
  if space.dimension > 0:
    direction = project(space, rng.standard_normal(x.shape))
    p, lp = box_perturbation(space, x, direction)
    if np.abs(p).max() > 0:
      attempts.append(InDomainAttempt("lp_box", {"scale": 1.0}, x + p,
                                      scorer.score(x, y, x + p, y)))
      attempts += grid_rounding(scorer, x, y, p, rounding_scales)
  examples = range(min(milp_examples, x.shape[0]))
  forged, detail = milp_grid_perturbation(layers, x, y, examples,
                                          quietest_pixels(layers, milp_pixels), milp_max_levels,
                                          milp_time_limit_s)
  attempts.append(InDomainAttempt("milp", detail, forged, scorer.score(x, y, forged, y)))
  return InDomainReport(space=space.as_dict(), lp=lp, attempts=attempts)


# ---------------------------------------------------------------------------- experiments


@dataclasses.dataclass(frozen=True)
class ExperimentResult:
  """A forging experiment's result: JSON-able summary and the arrays to redraw its figure."""
  summary: dict
  arrays: dict[str, np.ndarray]


def sample_batch(dataset: data_lib.Dataset, batch_size: int, seed: int):
  """A batch of distinct training examples: (images [b, h, w, c] uint8, labels [b] int, indices).

  The indices are the first b of a PCG64(seed) permutation of the training set.
  """
  if not 0 < batch_size <= dataset.x_train.shape[0]:
    raise errors.ConfigError(f"batch size must be in 1..{dataset.x_train.shape[0]}, "
                             f"got {batch_size}")
  rng = np.random.Generator(np.random.PCG64(seed))
  indices = np.sort(rng.permutation(dataset.x_train.shape[0])[:batch_size])
  return dataset.x_train[indices], dataset.y_train[indices], indices


def _setting(dataset, model_name: str, model_config: dict, batch_size: int, seed: int,
             learning_rate: float):
  model = models.build_model(model_name, dataset.x_train.shape[1:], dataset.num_classes,
                             **model_config)
  theta = models.initial_parameters(models.parameter_layout(model), seed)
  scorer = ForgeryScorer(model, theta, learning_rate)
  images, labels, indices = sample_batch(dataset, batch_size, seed)
  x = domain.PIXEL_VALUES[images].reshape(batch_size, -1).astype(np.float64)
  y = np.eye(dataset.num_classes)[labels]
  setting = {"dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint,
             "model": model_name, **model_config, "num_parameters": scorer.step.num_parameters,
             "batch_size": batch_size, "seed": seed, "learning_rate": learning_rate,
             "theta": f"models.initial_parameters(seed={seed})",
             "batch_indices": indices.tolist()}
  return scorer, x, y, labels, setting


def fig4_experiment(dataset: data_lib.Dataset,
                    settings: exact_settings.ExactSettings) -> ExperimentResult:
  """Fig. 4: Prop. 2 on a ReLU network with one hidden layer of settings.hidden units (L = 2)."""
  scorer, x, y, labels, setting = _setting(dataset, "fcn", {"hidden": [settings.hidden]},
                                           settings.batch_size, settings.seed,
                                           settings.learning_rate)
  rng = np.random.Generator(np.random.PCG64(settings.seed))
  p, space = mini_batch_perturbation(scorer.layers, x, y, rng, settings.perturbation_scale)
  score = scorer.score(x, y, x + p, y)
  shape = dataset.x_train.shape[1:]
  summary = {"experiment": "fig4", "method": "mini-batch perturbation (Prop. 2)", **setting,
             "perturbation_scale": settings.perturbation_scale,
             "solution_space": space.as_dict(), **score.as_dict()}
  arrays = {"original": x.reshape((-1,) + shape).astype(np.float32),
            "forged": (x + p).reshape((-1,) + shape).astype(np.float32),
            "labels": labels.astype(np.int32), "forged_labels": labels.astype(np.int32)}
  return ExperimentResult(summary, arrays)


def fig5_experiment(datasets, settings: exact_settings.ExactSettings) -> ExperimentResult:
  """Fig. 5: Prop. 3 (error-matrix sampling) with softmax regression on each dataset."""
  per_dataset, arrays = {}, {}
  for dataset in datasets:
    scorer, x, y, labels, setting = _setting(dataset, "logreg", {"use_bias": settings.use_bias},
                                             settings.batch_size, settings.seed,
                                             settings.learning_rate)
    rng = np.random.Generator(np.random.PCG64(settings.seed))
    forgery = error_matrix_sampling(scorer.layers, x, y, rng, settings.error_matrix_scale)
    score = scorer.score(x, y, forgery.x, forgery.y)
    per_dataset[dataset.name] = {
        **setting, "rank_gradient": forgery.rank_gradient,
        "rank_forged_errors": forgery.rank_forged_errors, "solve_residual": forgery.residual,
        "forged_label_rows_sum": [float(forgery.y.sum(axis=1).min()),
                                  float(forgery.y.sum(axis=1).max())],
        **score.as_dict()}
    shape = dataset.x_train.shape[1:]
    arrays[f"{dataset.name}_original"] = x.reshape((-1,) + shape).astype(np.float32)
    arrays[f"{dataset.name}_forged"] = forgery.x.reshape((-1,) + shape).astype(np.float32)
    arrays[f"{dataset.name}_labels"] = labels.astype(np.int32)
    arrays[f"{dataset.name}_forged_labels"] = forgery.y.astype(np.float32)
  summary = {"experiment": "fig5", "method": "error-matrix sampling (Prop. 3)",
             "error_matrix_scale": settings.error_matrix_scale, "datasets": per_dataset,
             "approximation_error": max(d["approximation_error"] for d in per_dataset.values()),
             "approximation_error_float64": max(d["approximation_error_float64"]
                                                for d in per_dataset.values()),
             "distinct": all(d["distinct"] for d in per_dataset.values())}
  return ExperimentResult(summary, arrays)


def domain_experiment(dataset: data_lib.Dataset,
                      settings: exact_settings.ExactSettings) -> ExperimentResult:
  """The in-domain question on the Fig. 4 setting (in_domain_search)."""
  scorer, x, y, labels, setting = _setting(dataset, "fcn", {"hidden": [settings.hidden]},
                                           settings.batch_size, settings.seed,
                                           settings.learning_rate)
  rng = np.random.Generator(np.random.PCG64(settings.seed))
  report = in_domain_search(scorer, x, y, rng, settings.rounding_scales, settings.milp_examples,
                            settings.milp_pixels, settings.milp_max_levels,
                            settings.milp_time_limit_s)
  best = report.best
  summary = {"experiment": "domain", "method": "in-domain search (LP box, grid rounding, MILP)",
             **setting, **report.as_dict(),
             "approximation_error": None if best is None else best.score.approximation_error,
             "distinct": best is not None}
  shape = dataset.x_train.shape[1:]
  arrays = {"original": x.reshape((-1,) + shape).astype(np.float32),
            "labels": labels.astype(np.int32)}
  if best is not None:
    arrays["forged"] = best.forged.reshape((-1,) + shape).astype(np.float32)
  return ExperimentResult(summary, arrays)


SUMMARY = results.RECORDS[results.ResultKind.EXACT_FORGING].file_name


def run_experiment(settings: exact_settings.ExactSettings, out: str,
                   data_dir: str | None = None, download: bool = True,
                   platform: platform_lib.Platform = platform_lib.Platform(),
                   overwrite: bool = False, command: str | None = None) -> dict:
  """Runs an exact-forging experiment and writes its result folder `out`, whole or not at all.

  OUT holds summary.json (the record: header, settings, and the experiment's approximation
  errors, distinctness, domain distances and set-up), data.npz (the original and forged batches)
  and, for fig4 and fig5, the figure as fig4.{png,pdf} or fig5.{png,pdf}.

  Args:
    settings: the experiment and its parameters.
    out: the result folder.
    data_dir: local data directory (None: $FORGING_TF_DATA, then tensorflow-datasets).
    download: let tensorflow-datasets download a dataset it does not have.
    platform: the platform of the SGD step that scores forgeries, applied to this process.
    overwrite: replace an exact-forging result already at `out`.
    command: the command line to record (None: called from Python).

  Returns:
    The record, as written to OUT/summary.json.

  Raises:
    ConfigError: OUT holds other data (or a result, without overwrite), or the experiment has
      no solution for these settings.
    DatasetError: a dataset cannot be loaded.
  """
  out = os.path.abspath(out)
  results.check_out(out, SUMMARY, results.ResultKind.EXACT_FORGING, overwrite)
  platform_lib.apply_platform(platform)
  load = lambda name: data_lib.load_dataset(name, data_dir, download)
  experiment = settings.experiment
  if experiment == exact_settings.ExactExperiment.FIG4:
    result = fig4_experiment(load("mnist"), settings)
  elif experiment == exact_settings.ExactExperiment.FIG5:
    result = fig5_experiment([load("mnist"), load("cifar10")], settings)
  else:
    result = domain_experiment(load("mnist"), settings)
  summary = results.header(results.ResultKind.EXACT_FORGING, command,
                           platform_lib.platform_fingerprint(platform)) | {
      "settings": settings.as_dict(), **result.summary}

  def fill(folder: str) -> None:
    results.write_npz(os.path.join(folder, "data.npz"), **result.arrays)
    plotting.draw_exact(summary, result.arrays, os.path.join(folder, experiment.value))
    results.write_json(os.path.join(folder, SUMMARY), summary)

  results.write_folder(out, SUMMARY, results.ResultKind.EXACT_FORGING, fill, overwrite)
  return summary
