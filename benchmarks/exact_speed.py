r"""Prop. 2's projector, factored against the Kronecker pseudo-inverse (SPEC section 6).

Setting of Fig. 4: MNIST, b = 32, an L = 2 ReLU network with d1 = 8 hidden units (theta_0 of
seed 0). Both compute P for the same F from the same W1 and D1:
  factored:  P = (I - W1 W1^+) F (I - D1 D1^+)  (propositions.solution_space + project,
             including the two thin SVDs);
  Kronecker: vec(P) = (I - K^+ K) vec(F), K = [D1^T kron I_d ; I_b kron W1^T], a dense
             (d1 d + d1 b) x (d b) = 6,528 x 25,088 matrix, pseudo-inverted by numpy (SVD).
ratio = Kronecker seconds / factored seconds (target >= 100); max_abs_difference is between the
two P. Factored: median of --rounds runs; Kronecker: one run (minutes, ~6 GB).

  python benchmarks/exact_speed.py [--rounds=20] [--data_dir=...]
"""

import statistics
import time

import numpy as np
from absl import app

from forging_tf import data
from forging_tf import domain
from forging_tf import models
from forging_tf import platform as platform_lib
from forging_tf.exact import dense
from forging_tf.exact import exact_lib
from forging_tf.exact import propositions

import _results

_ROUNDS = _results.define_rounds(20, "Timed runs of the factored projector.")
_DATA_DIR = _results.define_data_dir()

_BATCH_SIZE, _HIDDEN, _SEED = 32, 8, 0


def main(argv):
  del argv
  platform = platform_lib.Platform()
  mnist = data.load_dataset("mnist", _DATA_DIR.value)
  model = models.build_model("fcn", mnist.x_train.shape[1:], 10, hidden=[_HIDDEN])
  theta = models.initial_parameters(models.parameter_layout(model), _SEED)
  layers = dense.dense_layers(model, theta)
  images, labels, _ = exact_lib.sample_batch(mnist, _BATCH_SIZE, _SEED)
  x = domain.PIXEL_VALUES[images].reshape(_BATCH_SIZE, -1).astype(np.float64)
  y = np.eye(10)[labels]
  f = np.random.default_rng(_SEED).standard_normal(x.shape)
  w1, d1 = layers[0].kernel, dense.first_layer_errors(layers, x, y)

  def factored() -> np.ndarray:
    return propositions.project(propositions.solution_space(layers, x, y), f)

  times = _results.interleaved({"factored": factored}, _ROUNDS.value)["factored"]
  fast_s = statistics.median(times)
  p_factored = factored()
  began = time.perf_counter()
  p_kronecker = propositions.kronecker_perturbation(w1, d1, f)
  baseline_s = time.perf_counter() - began
  difference = float(np.abs(p_factored - p_kronecker).max())
  d, b = x.shape[1], _BATCH_SIZE
  _results.write(
      "exact_speed",
      ratio=baseline_s / fast_s,
      fast_s=fast_s,
      baseline_s=baseline_s,
      ratio_definition="Kronecker pinv seconds / factored projector seconds, same W1, D1, F",
      max_abs_difference=difference,
      max_abs_p=float(np.abs(p_factored).max()),
      same_p=difference <= 1e-9 * float(np.abs(f).max()),
      kronecker_shape=[_HIDDEN * d + _HIDDEN * b, d * b],
      solution_space=propositions.solution_space(layers, x, y).as_dict(),
      factored_times_s=times,
      settings={
          "dataset": "mnist",
          "batch_size": b,
          "hidden": _HIDDEN,
          "seed": _SEED,
          "rounds": _ROUNDS.value,
          "dtype": "float64",
      },
      platform=platform,
  )


if __name__ == "__main__":
  app.run(main)
