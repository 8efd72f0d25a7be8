"""Exact data forging (SPEC section 6): Prop. 1, mini-batch perturbation (Prop. 2) and
error-matrix sampling (Prop. 3).

Each works on the float64 layers of dense.py. The paper's perturbation P (d x b) is returned as
its transpose, p [b, d], since batches are x [b, d] here (one row per example).
"""

import dataclasses

import numpy as np

from forging_tf import errors
from forging_tf.exact import dense

# Singular values below this fraction of the largest count as zero when ranks are taken (float64
# arithmetic on float32 weights: the true zeros sit near 1e-16, real ones far above 1e-10).
_RANK_RTOL = 1e-10


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


def prop1_check(layers, x: np.ndarray, labels: np.ndarray, tolerance: float = 1e-12) -> Prop1Check:
  """Checks Prop. 1 on examples x [m, d] float64 with class ids labels [m] int (float64 math)."""
  x = np.asarray(x, np.float64)
  labels = np.asarray(labels)
  y = np.eye(layers[-1].kernel.shape[1])[labels]
  gradients = dense.per_example_gradients(layers, x, y)
  distances = np.sqrt(((gradients[:, None, :] - gradients[None, :, :]) ** 2).sum(axis=2))
  pairs = np.triu(
      ~(x[:, None, :] == x[None, :, :]).all(axis=2) | (labels[:, None] != labels[None, :]), k=1
  )
  inactive = ~dense.first_layer_errors(layers, x, y).any(axis=1)
  excepted = pairs & inactive[:, None] & inactive[None, :]
  covered = pairs & ~excepted
  if not covered.any():
    raise errors.ConfigError(
        "prop1_check needs two distinct examples, one of them with a nonzero first-layer error"
    )
  min_distance = float(distances[covered].min())
  return Prop1Check(
      examples=len(x),
      min_distance=min_distance,
      holds=min_distance > tolerance,
      inactive_pairs=int(excepted.sum()),
  )


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
    return {
        "d": self.d,
        "b": self.b,
        "d1": self.d1,
        "rank_w1": self.w1_basis.shape[1],
        "rank_d1": self.d1_basis.shape[1],
        "dimension": self.dimension,
        "paper_condition_db_gt_d1_d_plus_b": self.paper_condition,
    }


def _column_basis(matrix: np.ndarray) -> np.ndarray:
  """Orthonormal basis [rows, rank] of the column space of matrix (SVD, relative threshold)."""
  u, s, _ = np.linalg.svd(matrix, full_matrices=False)
  rank = int((s > _RANK_RTOL * s[0]).sum()) if s.size and s[0] > 0 else 0
  return u[:, :rank]


def solution_space(layers, x: np.ndarray, y: np.ndarray) -> SolutionSpace:
  """The Prop. 2 solution space of batch (x [b, d] float64, y [b, n] float64)."""
  w1 = layers[0].kernel
  d1 = dense.first_layer_errors(layers, x, y)
  return SolutionSpace(
      w1_basis=_column_basis(w1),
      d1_basis=_column_basis(d1),
      d=w1.shape[0],
      b=x.shape[0],
      d1=w1.shape[1],
  )


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


def mini_batch_perturbation(
    layers, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, scale: float
) -> tuple[np.ndarray, SolutionSpace]:
  """Prop. 2: a random perturbation p [b, d] in the solution space, max |p| = scale.

  F is standard normal; the projection of F is rescaled, which keeps it in the (linear) space.
  Raises ConfigError when the space is {0} (no distinct batch has this batch's gradient this way).
  """
  space = solution_space(layers, x, y)
  if space.dimension == 0:
    raise errors.ConfigError(
        f"the Prop. 2 solution space of this batch is {{0}} (d={space.d}, b={space.b}, "
        f"rank W1={space.w1_basis.shape[1]}, rank D1={space.d1_basis.shape[1]}): use a larger "
        "batch or a narrower first layer"
    )
  p = project(space, rng.standard_normal(x.shape))
  return p * (scale / np.abs(p).max()), space


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


def error_matrix_sampling(
    layers, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, scale: float
) -> ErrorMatrixForgery:
  """Prop. 3 for L = 1 (softmax regression, with or without bias).

  x: [b, d] float64, y: [b, n] float64. D' = M D + N with M = I + scale R (columns of R summing to
  zero when there is a bias, so the bias gradient 1^T D' / b is kept) and N a scaled random matrix
  with zero row sums (and, with a bias, zero column sums). N is added only when rank D = n - 1:
  then D' has the same row space as D (all rows sum to zero, Lemma 1), so X' D' = X D = b G is
  solvable; with b < n - 1 the row space of D' must stay that of D, which M alone guarantees.
  X' = X + X (D - D') D'^+ is the solution closest to X, and Y' = f(X') diag(v) - D'^T.
  """
  if len(layers) != 1:
    raise errors.ConfigError(
        f"error-matrix sampling (Prop. 3) is for L = 1 (softmax regression); "
        f"this model has L = {len(layers)}"
    )
  layer = layers[0]
  b, n = y.shape
  v = y.sum(axis=1)
  logits = x @ layer.kernel + (0.0 if layer.bias is None else layer.bias)
  d_original = dense.softmax(logits) * v[:, None] - y
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
  forged_y = dense.softmax(forged_logits) * v[:, None] - d_forged
  residual = float(np.abs(forged_x.T @ d_forged - x.T @ d_original).max())
  gradient = x.T @ d_original / b
  return ErrorMatrixForgery(
      x=forged_x,
      y=forged_y,
      errors=d_original,
      forged_errors=d_forged,
      rank_gradient=int(np.linalg.matrix_rank(gradient)),
      rank_forged_errors=int(np.linalg.matrix_rank(d_forged)),
      residual=residual,
  )
