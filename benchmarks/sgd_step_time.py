r"""Time per SGD step on this machine: the one SGD step (sgd_step.SGDStep) against Keras' own
training step (model.train_on_batch with keras.optimizers.SGD, jit_compile=False), the obvious
baseline, on the same batches. LeNet/MNIST at b = 100 and 1000, VGGmini/CIFAR-10 at b = 100.

ratio = Keras seconds / SGDStep seconds at LeNet b = 100 (> 1: ours is faster); every case's
ms per step is in `cases`. Medians over --rounds interleaved rounds.

  python benchmarks/sgd_step_time.py [--steps=100] [--rounds=5] [--data_dir=...]
"""

import time

import keras
import tensorflow as tf
from absl import app
from absl import flags

from forging_tf import data

import _results

_STEPS = flags.DEFINE_integer(
    "steps", 100, "Steps per timed run (VGGmini: a tenth).", lower_bound=10
)
_ROUNDS = _results.define_rounds(5)
_DATA_DIR = _results.define_data_dir()


def _time_case(dataset, model_name, b, steps, rounds):
  run = _results.training(dataset, model_name, b, steps)
  model = run.step_fn.model
  inputs = [run.source(batch) for batch in run.batches]
  model.compile(
      optimizer=keras.optimizers.SGD(0.01),
      jit_compile=False,
      loss=keras.losses.CategoricalCrossentropy(from_logits=True),
  )

  def ours():
    theta = tf.constant(run.theta0)
    began = time.perf_counter()
    for x, y in inputs:
      theta = run.step_fn(theta, x, y)
    theta.numpy()
    return time.perf_counter() - began

  def keras_baseline():
    began = time.perf_counter()
    for x, y in inputs:
      model.train_on_batch(x, y)
    return time.perf_counter() - began

  ours(), keras_baseline()  # warm-up: tracing
  times = _results.interleaved({"ours": ours, "keras": keras_baseline}, rounds, self_timed=True)
  return {name: 1000 * seconds / steps for name, seconds in _results.medians(times).items()}


def main(argv):
  del argv
  platform = _results.applied_platform()
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
