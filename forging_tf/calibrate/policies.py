"""The verifier's threshold policies: how epsilon is fitted to honest reproduction errors.

A policy turns each honest recomputed step into a score and fits one number to the scores of
some platform pairs; a step (honest or forged) is accepted iff its score is at most that number.
SPEC section 4 leaves the choice of epsilon to the verifier ("chosen from measured reproduction
errors"); the paper takes the largest one (MaxDistance).

  MaxDistance        score: the distance;                  value: the largest (the paper's rule)
  QuantileDistance   score: the distance;                  value: its q-quantile
  RelativeToUpdate   score: distance / ||theta_{i+k} - theta_i||;  value: its q-quantile, a ratio
                     c: step i is accepted iff distance_i <= c * ||theta_{i+k} - theta_i||

Quantiles are numpy's "higher" order statistic, so a fitted value is always a measured score
(q = 1 is the largest). A new policy is one more frozen dataclass here, with its place in SWEEP.
No TensorFlow: the calibration runs on saved results.
"""

import dataclasses
from typing import ClassVar

import numpy as np

# The quantiles every quantile-based policy is swept over: dense near 1, where a threshold that
# keeps (nearly) every honest step lies.
QUANTILES = (
    0.5,
    0.75,
    0.9,
    0.95,
    0.98,
    0.99,
    0.995,
    0.998,
    0.999,
    0.9995,
    0.9998,
    0.9999,
    1.0,
)


@dataclasses.dataclass(frozen=True)
class Policy:
  """A threshold policy. Subclasses set `name` (as results record it) and `fit`; a relative
  policy (threshold = value * the step's update norm) also sets `relative` and `scores`."""

  name: ClassVar[str]
  relative: ClassVar[bool] = False

  @property
  def parameter(self) -> float | None:
    """The swept parameter (None: the policy has none)."""
    return None

  def describe(self) -> str:
    """'max', 'quantile(q=0.99)', 'relative(q=1)'."""
    return self.name if self.parameter is None else f"{self.name}(q={self.parameter:g})"

  def scores(self, distances: np.ndarray, update_l2: np.ndarray) -> np.ndarray:
    """The score of each step; a step is accepted iff its score <= the fitted value.

    Args:
      distances: float64 [...] l2 distances (honest reproduction or approximation errors).
      update_l2: float64, broadcastable to distances: ||theta_{i+k} - theta_i|| of each step's
        logged checkpoints; nan where unknown.

    Returns:
      float64 [...]; nan where the policy cannot score the step (not judged).
    """
    del update_l2  # An absolute threshold does not look at the update.
    return np.asarray(distances, np.float64)

  def fit(self, scores: np.ndarray) -> float:
    """The value fitted to honest scores float64 [N] (N >= 1, no nan)."""
    raise NotImplementedError


def _quantile(scores: np.ndarray, q: float) -> float:
  return float(np.quantile(scores, q, method="higher"))


def _check_quantile(q: float) -> None:
  if not 0 < q <= 1:
    raise ValueError(f"a quantile must lie in (0, 1], got {q}")


@dataclasses.dataclass(frozen=True)
class MaxDistance(Policy):
  """The paper's rule: epsilon = the largest honest distance over the pairs (eps_repr)."""

  name: ClassVar[str] = "max"

  def fit(self, scores: np.ndarray) -> float:
    return float(np.max(scores))


@dataclasses.dataclass(frozen=True)
class QuantileDistance(Policy):
  """epsilon = the q-quantile of the pooled honest per-step distances: the largest few steps
  (outliers such as max-pool near-ties) no longer set it, at the price of rejecting them."""

  q: float
  name: ClassVar[str] = "quantile"

  def __post_init__(self):
    _check_quantile(self.q)

  @property
  def parameter(self) -> float:
    return self.q

  def fit(self, scores: np.ndarray) -> float:
    return _quantile(scores, self.q)


@dataclasses.dataclass(frozen=True)
class RelativeToUpdate(Policy):
  """Step i is accepted iff distance_i <= c * ||theta_{i+k} - theta_i||, c the q-quantile of
  the honest ratios distance_i / ||theta_{i+k} - theta_i|| (q = 1: their largest).

  Rounding differences grow with the size of the update, so a ratio carries over between batch
  sizes and stages of training where an absolute epsilon does not. An update of norm 0 scores
  0 if it was reproduced exactly and inf otherwise (no ratio accepts it).
  """

  q: float = 1.0
  name: ClassVar[str] = "relative"
  relative: ClassVar[bool] = True

  def __post_init__(self):
    _check_quantile(self.q)

  @property
  def parameter(self) -> float:
    return self.q

  def scores(self, distances: np.ndarray, update_l2: np.ndarray) -> np.ndarray:
    distances = np.asarray(distances, np.float64)
    update_l2 = np.broadcast_to(np.asarray(update_l2, np.float64), distances.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
      ratio = distances / update_l2
    still = update_l2 == 0
    ratio[still] = np.where(distances[still] == 0, 0.0, np.inf)
    return ratio

  def fit(self, scores: np.ndarray) -> float:
    return _quantile(scores, self.q)


# Every policy and parameter a calibration evaluates, in the order tables list them.
# QuantileDistance(1.0) would repeat MaxDistance.
SWEEP: tuple[Policy, ...] = (
    (MaxDistance(),)
    + tuple(QuantileDistance(q) for q in QUANTILES if q < 1)
    + tuple(RelativeToUpdate(q) for q in QUANTILES)
)
