"""TraceCallback: model.fit writes a forging_tf trace as it trains.

  batches = forging_tf.keras.indexed_batches(dataset, batch_size=100, steps=300, seed=0)
  trace = forging_tf.keras.TraceCallback("traces/mine", batches, model_fn="mymodels:build")
  model.fit(trace.dataset(), epochs=1, callbacks=[trace])

The trace is the format forging-train writes (docs/TRACE_FORMAT.md): the batch indices up front,
theta_0 at the start and theta_i after every stored step i, digests, the platform's fingerprint,
crash safety through the same asynchronous TraceWriter. Its manifest names the model "keras" and
records how the update was made (`keras`: optimizer, momentum, nesterov, loss); with momentum,
every checkpoint comes with the optimizer's velocity (the `optimizer_state` array). The verifier
recomputes it with Keras' own update (forging_tf.keras.step) and its own --model_fn.

Running the same script again on an unfinished trace resumes it: `dataset()` then starts at the
last recorded checkpoint, and on_train_begin restores the weights and velocity logged there; on a
deterministic platform the finished trace is bitwise the one an uninterrupted run writes.
"""

import shutil

import keras
from absl import logging

from forging_tf import errors
from forging_tf import models
from forging_tf import platform as platform_lib
from forging_tf import trace as trace_lib
from forging_tf.keras import batches as batches_lib
from forging_tf.keras import step as keras_step
from forging_tf.train import train_lib


class TraceCallback(keras.callbacks.Callback):
  """Writes the trace of the model.fit run it is passed to.

  Args:
    out: the trace folder (as forging-train --out): a new trace is created; an unfinished trace
      of the same run is resumed; a finished one is replaced only with overwrite; a folder that
      is not a trace is refused.
    batches: the run's mini-batches (indexed_batches); model.fit must consume `dataset()`.
    k: store every k-th checkpoint (steps must be a multiple of k).
    keep_pairs: n > 0 writes a sparse trace (k = 1), as forging-train --keep_pairs.
    model_fn: "module:function" that builds the model, recorded for the verifier's information
      (forging-recompute takes its own --model_fn; a trace never chooses the code that runs).
    compression: how chunks are stored (trace.Compression).
    overwrite: replace a finished trace at `out`.
    platform: the platform, applied to this process here (op determinism on by default).
  """

  def __init__(
      self,
      out: str,
      batches: batches_lib.IndexedBatches,
      k: int = 1,
      keep_pairs: int = 0,
      model_fn: str | None = None,
      compression: trace_lib.Compression = trace_lib.Compression.NONE,
      overwrite: bool = False,
      platform: platform_lib.Platform = platform_lib.Platform(),
  ):
    super().__init__()
    if k <= 0 or keep_pairs < 0:
      raise errors.ConfigError(f"k must be >= 1 and keep_pairs >= 0, got k={k}, {keep_pairs=}")
    if model_fn is not None:
      keras_step.check_model_fn(model_fn)
    self.out = out
    self.batches = batches
    self.k, self.keep_pairs, self.model_fn = k, keep_pairs, model_fn
    self.compression = trace_lib.Compression(compression)
    self.overwrite = overwrite
    self.platform = platform
    self._stored = trace_lib.checkpoint_steps(batches.steps, k, keep_pairs)
    platform_lib.apply_platform(platform)
    self.start_step = self._resumable_step()
    self._writer = None
    self._state = None  # the model's weights and velocity, flat (on_train_begin)
    self._step = self.start_step

  def dataset(self):
    """The batches model.fit has to take: from the step the trace resumes at to the last."""
    return self.batches.tf_dataset(self.start_step)

  def _resumable_step(self) -> int:
    """The step an unfinished trace at `out` resumes from (0 for a new trace). The run's
    settings are checked against it once the model is known (on_train_begin)."""
    if not trace_lib.is_trace(self.out) or self.overwrite:
      return 0
    existing = trace_lib.Trace(self.out)
    if existing.complete:
      raise errors.ConfigError(
          f"{self.out} holds a finished trace; pass overwrite=True to replace it or choose "
          "another folder"
      )
    if existing.num_written == 0:
      return 0
    return int(existing.checkpoint_steps[existing.num_written - 1])

  def on_train_begin(self, logs=None):
    model = self.model
    keras_step.check_model(model, self.batches.dataset)
    entry = keras_step.keras_entry(model)
    sparse = entry["loss"]["name"] == "sparse_categorical_crossentropy"
    if sparse != self.batches.sparse_labels:
      raise errors.ConfigError(
          f"the loss is {entry['loss']['name']} but the batches give "
          f"{'class ids' if self.batches.sparse_labels else 'one-hot rows'}: make them with "
          f"indexed_batches(..., sparse_labels={sparse})"
      )
    self._state = keras_step.FlatState(model)
    manifest = train_lib.trace_manifest(
        trace_lib.KERAS_MODEL,
        {"keras_name": model.name, "model_fn": self.model_fn},
        self.batches.dataset,
        keras_step.optimizer_learning_rate(model),
        models.parameter_layout(model),
        self.batches.batch_size,
        self.batches.steps,
        self.k,
        self.keep_pairs,
        self.batches.seed,
        self.platform,
    )
    manifest["keras"] = entry
    if self.overwrite and trace_lib.is_trace(self.out):
      shutil.rmtree(self.out)
    writer, theta, velocity, resumed_from = train_lib.open_writer(
        self.out,
        manifest,
        self.batches.indices,
        False,
        self.compression,
        optimizer_state=self._state.has_velocity,
    )
    self._writer = writer
    if (resumed_from or 0) != self.start_step:
      writer.close()
      raise errors.ConfigError(
          f"{self.out} changed while this run started (it resumes at step {resumed_from}, "
          f"dataset() was made for step {self.start_step}); make the callback again"
      )
    if resumed_from is None:
      self._put(0)
    else:
      self._state.assign(theta, velocity)
    logging.info(
        "model.fit writes a trace: %s, b=%d, T=%d, k=%d, %d parameters, %s%s -> %s",
        model.name,
        self.batches.batch_size,
        self.batches.steps,
        self.k,
        manifest["num_parameters"],
        f"SGD momentum {entry['optimizer']['momentum']}",
        "" if resumed_from is None else f", resuming at step {resumed_from}",
        self.out,
    )

  def on_train_batch_end(self, batch, logs=None):
    self._step += 1
    if self._step > self.batches.steps:
      raise errors.ConfigError(
          f"model.fit took more than the {self.batches.steps} steps of the trace's batches: fit "
          "on callback.dataset() with epochs=1"
      )
    if self._step in self._stored:
      self._put(self._step)

  def on_train_end(self, logs=None):
    if self._writer is None:
      return
    complete = self._writer.close()
    logging.info("%s", self._writer.seconds.describe())
    if not complete:
      logging.warning(
          "%s is unfinished: model.fit stopped at step %d of %d; run the same training again to "
          "resume it",
          self.out,
          self._step,
          self.batches.steps,
      )

  def _put(self, step: int) -> None:
    theta, velocity = self._state.read()
    self._writer.put(step, theta.numpy(), None if velocity is None else velocity.numpy())
