"""How good a forged batch is (SPEC section 4): approximation errors and distance to the domain.

Every forgery is scored twice: with the one SGD step (sgd_step.SGDStep, float32, the number a
verifier sees) and with a float64 numpy gradient (dense.py: the check that the two batches have
the same gradient up to float64 rounding). How far a forgery lies from the domain of the forging
game comes from domain.distance_to_domain, whether it is distinct from domain.same_examples.
"""

import dataclasses

import keras
import numpy as np

from forging_tf import domain
from forging_tf import sgd_step
from forging_tf.exact import dense


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
    self.layers = dense.dense_layers(model, self.theta)
    self.learning_rate = float(learning_rate)
    self.input_shape = self.step.input_shape

  def _step(self, x, y) -> np.ndarray:
    x32 = np.asarray(x, np.float32).reshape((len(x),) + self.input_shape)
    return self.step(self.theta, x32, np.asarray(y, np.float32)).numpy()

  def score(
      self, x: np.ndarray, y: np.ndarray, forged_x: np.ndarray, forged_y: np.ndarray
  ) -> ForgeryScore:
    """x, forged_x: [b, d] (or [b, h, w, c]); y, forged_y: [b, n].

    The float32 error feeds SGDStep the float32 rounding of both batches, exactly what a verifier
    recomputes. The float64 error takes the batches as given (a float64 forgery is not rounded),
    so it checks the construction itself: zero up to float64 rounding for an exact forgery.
    """

    def flat(a) -> np.ndarray:
      return np.asarray(a, np.float64).reshape(len(a), -1)

    x64, fx64 = flat(x), flat(forged_x)
    y64, fy64 = np.asarray(y, np.float64), np.asarray(forged_y, np.float64)
    float64_error = self.learning_rate * np.linalg.norm(
        dense.batch_gradient(self.layers, x64, y64) - dense.batch_gradient(self.layers, fx64, fy64)
    )
    distance = domain.distance_to_domain(np.asarray(forged_x, np.float32), fy64)
    return ForgeryScore(
        approximation_error=sgd_step.l2_distance(self._step(x, y), self._step(forged_x, forged_y)),
        approximation_error_float64=float(float64_error),
        distinct=not domain.same_examples(x, y, forged_x, forged_y),
        domain_box=distance.box,
        domain_grid=distance.grid,
        domain_label=distance.label,
        in_domain=distance.in_domain,
        max_pixel_change=float(np.abs(fx64 - x64).max()),
    )
