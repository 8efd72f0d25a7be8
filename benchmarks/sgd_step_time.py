r"""Time per SGD step on this machine: the one SGD step (sgd_step.SGDStep) against Keras' own
training step (model.train_on_batch with keras.optimizers.SGD, jit_compile=False), the obvious
baseline, on the same batches. LeNet/MNIST at b = 100 and 1000, VGGmini/CIFAR-10 at b = 100.

ratio = Keras seconds / SGDStep seconds at LeNet b = 100 (> 1: ours is faster); every case's
ms per step is in `cases`. Medians over --rounds interleaved rounds.

  python benchmarks/sgd_step_time.py [--steps=100] [--rounds=5] [--data_dir=...]
"""

import os
import statistics
import sys
import time

import keras
import tensorflow as tf
from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from forging_tf import data
from forging_tf import models
from forging_tf import platform as platform_lib
from forging_tf import sgd_step
from forging_tf.train import train_lib

import _results  # pylint: disable=wrong-import-position

_STEPS = flags.DEFINE_integer(
    "steps", 100, "Steps per timed run (VGGmini: a tenth).", lower_bound=10
)
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds.", lower_bound=1)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Local data directory.")


def _time_case(dataset, model_name, b, steps, rounds):
  model = models.build_model(model_name, dataset.x_train.shape[1:], 10)
  step_fn = sgd_step.SGDStep(model, 0.01)
  source = sgd_step.BatchSource(dataset.x_train, dataset.y_train, 10)
  batches = train_lib.batch_schedule(dataset.x_train.shape[0], b, steps, seed=0)
  theta0 = models.initial_parameters(step_fn.layout, seed=0)
  inputs = [source(batch) for batch in batches]
  model.compile(
      optimizer=keras.optimizers.SGD(0.01),
      jit_compile=False,
      loss=keras.losses.CategoricalCrossentropy(from_logits=True),
  )

  def ours():
    theta = tf.constant(theta0)
    began = time.perf_counter()
    for x, y in inputs:
      theta = step_fn(theta, x, y)
    theta.numpy()
    return time.perf_counter() - began

  def keras_baseline():
    began = time.perf_counter()
    for x, y in inputs:
      model.train_on_batch(x, y)
    return time.perf_counter() - began

  ours(), keras_baseline()  # warm-up: tracing
  times = {"ours": [], "keras": []}
  for _ in range(rounds):
    times["ours"].append(ours())
    times["keras"].append(keras_baseline())
  return {name: 1000 * statistics.median(t) / steps for name, t in times.items()}


def main(argv):
  del argv
  platform = platform_lib.Platform()
  platform_lib.apply_platform(platform)
  mnist = data.load_dataset("mnist", _DATA_DIR.value)
  cifar10 = data.load_dataset("cifar10", _DATA_DIR.value)
  steps, rounds = _STEPS.value, _ROUNDS.value
  cases = {
      "lenet_b100": _time_case(mnist, "lenet", 100, steps, rounds),
      "lenet_b1000": _time_case(mnist, "lenet", 1000, steps, rounds),
      "vggmini_b100": _time_case(cifar10, "vggmini", 100, max(10, steps // 10), rounds),
  }
  main_case = cases["lenet_b100"]
  _results.write(
      "sgd_step_time",
      ratio=main_case["keras"] / main_case["ours"],
      fast_s=main_case["ours"] / 1000,
      baseline_s=main_case["keras"] / 1000,
      cases={
          name: {
              "ms_per_step_sgd_step": c["ours"],
              "ms_per_step_keras": c["keras"],
              "ratio": c["keras"] / c["ours"],
          }
          for name, c in cases.items()
      },
      ratio_definition="Keras train_on_batch / SGDStep seconds per step, LeNet b=100; fast_s "
      "and baseline_s are seconds per step",
      settings={
          "steps": steps,
          "vggmini_steps": max(10, steps // 10),
          "rounds": rounds,
          "learning_rate": 0.01,
      },
      platform=platform,
  )


if __name__ == "__main__":
  app.run(main)
