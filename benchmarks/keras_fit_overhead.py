r"""What tracing costs a user's model.fit (forging_tf.keras.TraceCallback), and what recomputing
such a trace costs a verifier.

Trains LeNet (forging_tf.models.lenet, as a user's Keras model) on MNIST with model.fit,
keras.optimizers.SGD(0.01, momentum=0.9) and the sparse crossentropy from logits, b =
--batch_size, --steps steps, in one process, interleaved over --rounds rounds:
  untraced  model.fit on the same indexed batches, no callback (the baseline);
  traced    model.fit with TraceCallback, k = 1: every step's weights and velocity written.
A round times the steps after the first (the first traces and compiles fit's function) up to the
end of training, the trace writer's close included. ratio = traced / untraced, medians over
rounds; `writer_ms_per_checkpoint` is the writer's own account (WriterSeconds; a checkpoint here
is the weights and the velocity). `recompute_ms_per_step` is Keras' own update from the logged
weights and velocity (KerasStep.update, what forging-recompute runs for such a trace), median
per step over the last traced run's steps, against `fit_ms_per_step` of the untraced runs.
`read_ms` times what the callback does on training's thread at every step, reading the weights
and the velocity out of Keras as two flat vectors: compiled (keras.step.FlatState) and with one
eager op per variable (the obvious way), median of 200 reads each.

  python benchmarks/keras_fit_overhead.py [--batch_size=100] [--steps=200] [--rounds=5] \
      [--data_dir=...]
writes benchmarks/results/keras_fit_overhead.json.
"""

import os
import shutil
import statistics
import tempfile
import time

import keras
import tensorflow as tf
from absl import app

from forging_tf import data
from forging_tf import keras as forging_keras
from forging_tf import models
from forging_tf import sgd_step
from forging_tf import trace as trace_lib
from forging_tf.keras import step as keras_step

import _results

_FLAGS = _results.define_training_flags(steps=200, batch_size=100, rounds=5)


class _Timer(keras.callbacks.Callback):
  """Seconds from the end of the first step to the end of training (after the callbacks before
  it in the list, the trace writer's close included)."""

  def on_train_batch_end(self, batch, logs=None):
    if batch == 0:
      self.began = time.perf_counter()

  def on_train_end(self, logs=None):
    self.seconds = time.perf_counter() - self.began


def _fit(batches, callbacks) -> float:
  model = models.lenet()
  model.compile(
      optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      jit_compile=False,
  )
  timer = _Timer()
  trace = next((c for c in callbacks if isinstance(c, forging_keras.TraceCallback)), None)
  dataset = trace.dataset() if trace else batches.tf_dataset()
  model.fit(dataset, epochs=1, shuffle=False, callbacks=[*callbacks, timer], verbose=0)
  return timer.seconds


def _read_ms(reads: int = 200) -> dict:
  model = models.lenet()
  model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse")
  weights, velocities = model.trainable_variables, keras_step.velocities(model)
  state = keras_step.FlatState(model)

  def eager():
    return [tf.concat([tf.reshape(v, [-1]) for v in vs], 0).numpy() for vs in (weights, velocities)]

  def compiled():
    return [vector.numpy() for vector in state.read()]

  times = {"compiled": [], "eager": []}
  for name, read in (("compiled", compiled), ("eager", eager)):
    read()
    for _ in range(reads):
      began = time.perf_counter()
      read()
      times[name].append(1000 * (time.perf_counter() - began))
  return {name: statistics.median(values) for name, values in times.items()}


def main(argv):
  del argv
  platform = _results.applied_platform()
  mnist = data.load_dataset("mnist", _FLAGS.data_dir.value)
  steps, batch_size = _FLAGS.steps.value, _FLAGS.batch_size.value
  batches = forging_keras.indexed_batches(mnist, batch_size, steps, seed=0, sparse_labels=True)
  scratch = tempfile.mkdtemp(prefix="keras_fit_overhead.")
  writer_ms, last_trace = [], None
  try:

    def traced() -> float:
      nonlocal last_trace
      if last_trace:
        shutil.rmtree(last_trace)
      last_trace = os.path.join(scratch, f"trace{len(writer_ms)}")
      callback = forging_keras.TraceCallback(last_trace, batches, platform=platform)
      seconds = _fit(batches, [callback])
      spent = callback._writer.seconds  # pylint: disable=protected-access
      writer_ms.append(1000 * spent.cpu / spent.checkpoints)
      return seconds

    times = _results.interleaved(
        {"untraced": lambda: _fit(batches, []), "traced": traced},
        _FLAGS.rounds.value,
        self_timed=True,
    )
    trace = trace_lib.Trace(last_trace)
    step_fn = sgd_step.step_for_trace(trace, mnist, "forging_tf.models:lenet")
    source = sgd_step.BatchSource(mnist.x_train, mnist.y_train, mnist.num_classes)
    recompute_ms, exact = [], 0
    for i in range(steps):
      theta, velocity, inputs = (
          trace.checkpoint(i),
          trace.optimizer_state(i),
          source(trace.batch(i)),
      )
      began = time.perf_counter()
      recomputed, _ = step_fn.update(theta, velocity, *inputs)
      recompute_ms.append(1000 * (time.perf_counter() - began))
      exact += sgd_step.l2_distance(recomputed.numpy(), trace.checkpoint(i + 1)) == 0.0
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  median = _results.medians(times)
  timed_steps = steps - 1
  _results.write(
      "keras_fit_overhead",
      median["traced"] / median["untraced"],
      median["traced"],
      median["untraced"],
      {
          "model": "lenet",
          "dataset": "mnist",
          "batch_size": batch_size,
          "steps": steps,
          "k": 1,
          "optimizer": "SGD(0.01, momentum=0.9)",
          "rounds": _FLAGS.rounds.value,
      },
      platform,
      fit_ms_per_step={n: 1000 * s / timed_steps for n, s in median.items()},
      writer_cpu_ms_per_checkpoint=statistics.median(writer_ms),
      recompute_ms_per_step=statistics.median(recompute_ms),
      steps_recomputed_bitwise=f"{exact} of {steps}",
      read_ms=_read_ms(),
      times=times,
  )


if __name__ == "__main__":
  app.run(main)
