"""Training with plain SGD that writes an execution trace (binary: train.py, forging-train).

Mini-batches come from seeded epoch shuffles (`batch_schedule`) and are written into the trace
before the first step, so nothing has to be re-derived later. Running the same training again on an
unfinished trace resumes from its last recorded checkpoint; on a deterministic platform the result
is bitwise the trace an uninterrupted run writes.
"""

import dataclasses
import datetime
import math
import time

import numpy as np
import tensorflow as tf
from absl import logging

from forging_tf import data
from forging_tf import errors
from forging_tf import models
from forging_tf import platform as platform_lib
from forging_tf import sgd_step
from forging_tf import storage
from forging_tf import trace as trace_lib

# Manifest fields that must agree before an unfinished trace may be resumed.
_RESUME_FIELDS = (
    "model",
    "batch_size",
    "learning_rate",
    "seed",
    "steps",
    "k",
    "keep_pairs",
    "num_parameters",
    "parameter_layout",
)


@dataclasses.dataclass(frozen=True)
class TraceSummary:
  path: str
  model: str
  dataset: str
  batch_size: int
  steps: int
  k: int
  keep_pairs: int
  num_parameters: int
  checkpoints: int
  resumed_from_step: int | None
  steps_trained: int
  seconds: float
  bytes_on_disk: int
  platform_id: str
  compression: str
  writer: trace_lib.WriterSeconds

  def describe(self) -> str:
    resumed = (
        "" if self.resumed_from_step is None else f" (resumed from step {self.resumed_from_step})"
    )
    rate = self.steps_trained / self.seconds if self.seconds > 0 else float("nan")
    return (
        f"trace {self.path}: {self.model} on {self.dataset}, b={self.batch_size}, "
        f"T={self.steps}, k={self.k}, keep_pairs={self.keep_pairs}; {self.checkpoints} "
        f"checkpoints of {self.num_parameters:,} float32 parameters, "
        f"{self.bytes_on_disk / 2**20:.1f} MiB on disk; trained {self.steps_trained} steps"
        f"{resumed} in {self.seconds:.1f} s ({rate:.1f} steps/s) on platform "
        f"{self.platform_id}\n{self.writer.describe()}, chunks {self.compression}"
    )


def batch_schedule(num_examples: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
  """Example indices of every mini-batch: int32 [steps, batch_size].

  Epoch e is a permutation of 0..n-1 drawn from PCG64(seed) (one draw per epoch, in order) and cut
  into floor(n / b) consecutive batches; the last n mod b examples of each epoch are dropped, so
  examples within a batch are distinct.
  """
  if not 0 < batch_size <= num_examples:
    raise errors.ConfigError(f"batch_size must be in 1..{num_examples}, got {batch_size}")
  per_epoch = num_examples // batch_size
  rng = np.random.Generator(np.random.PCG64(seed))
  epochs = [
      rng.permutation(num_examples)[: per_epoch * batch_size].reshape(per_epoch, batch_size)
      for _ in range(-(-steps // per_epoch))
  ]
  return np.concatenate(epochs)[:steps].astype(np.int32)


def run_sgd(
    step_fn: sgd_step.SGDStep,
    source: sgd_step.BatchSource,
    theta,
    batches: np.ndarray,
    start: int,
    stop: int,
    on_checkpoint=None,
    checkpoint_at=(),
    progress_every_s: float = 10.0,
    velocity=None,
) -> tf.Tensor:
  """Takes steps start..stop-1 from theta_start (and, for momentum SGD, its velocity); hands
  theta_{i+1} to on_checkpoint(i+1, theta) for every i + 1 in checkpoint_at. Returns
  theta_stop."""
  checkpoint_at = frozenset(int(s) for s in checkpoint_at)
  theta = tf.convert_to_tensor(theta, tf.float32)
  began = last_report = time.perf_counter()
  for i in range(start, stop):
    x, y = source(batches[i])
    if velocity is None:
      theta = step_fn(theta, x, y)
    else:
      theta, velocity = step_fn.update(theta, velocity, x, y)
    if i + 1 in checkpoint_at:
      on_checkpoint(i + 1, theta.numpy())
    now = time.perf_counter()
    if now - last_report >= progress_every_s:
      last_report, done = now, i + 1 - start
      rate = done / (now - began)
      logging.info("step %d/%d  %.1f steps/s  ETA %.0f s", i + 1, stop, rate, (stop - i - 1) / rate)
  return theta


def trace_manifest(
    model: str,
    model_config: dict | None,
    dataset: data.Dataset,
    learning_rate: float,
    layout,
    batch_size: int,
    steps: int,
    k: int,
    keep_pairs: int,
    seed: int,
    platform: platform_lib.Platform,
) -> dict:
  """What a trace says about the training that wrote it (TraceWriter.create adds the rest)."""
  return {
      "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
      "model": {"name": model, "config": dict(model_config or {})},
      "dataset": dataset.as_dict(),
      "batch_size": batch_size,
      "learning_rate": learning_rate,
      "seed": seed,
      "steps": steps,
      "k": k,
      "keep_pairs": keep_pairs,
      "num_parameters": models.num_parameters(layout),
      "parameter_layout": [spec.as_dict() for spec in layout],
      "platform": platform_lib.platform_fingerprint(platform),
  }


def train_trace(
    out: str,
    model: str,
    dataset: data.Dataset,
    batch_size: int,
    steps: int,
    k: int = 1,
    learning_rate: float = 0.01,
    seed: int = 0,
    platform: platform_lib.Platform = platform_lib.Platform(),
    keep_pairs: int = 0,
    overwrite: bool = False,
    model_config: dict | None = None,
    progress_every_s: float = 10.0,
    compression: trace_lib.Compression = trace_lib.Compression.NONE,
) -> TraceSummary:
  """Trains `model` on `dataset` with plain SGD and writes its trace to `out`.

  Args:
    out: the trace folder, or an object-store URL (storage.py). An unfinished trace of the same
      run there is resumed from its last recorded checkpoint; a finished one is replaced only
      with overwrite, and a folder that is not a trace is refused.
    model: a name in models.MODELS.
    dataset: the training data (its fingerprint goes into the trace).
    batch_size: b.
    steps: T, the number of SGD steps.
    k: store every k-th checkpoint (T must be a multiple of k).
    learning_rate: eta.
    seed: of theta_0 and of the batch order.
    platform: the platform to train on, applied to this process.
    keep_pairs: n > 0 writes a sparse trace: theta_0, theta_T and n pairs (i, i + 1); k = 1.
    overwrite: replace a finished trace at `out`.
    model_config: the model's options (fcn: {"hidden": [widths]}).
    progress_every_s: seconds between progress lines in the log.
    compression: how checkpoint chunks are stored (a resumed trace keeps its own).

  Returns:
    What was written, and how long the steps took (TraceSummary).

  Raises:
    ConfigError: bad settings, or `out` holds something else.
    TraceError: the trace could not be written, or an unfinished one is damaged.
    PlatformError: the platform cannot be applied in this process.
  """
  if steps <= 0 or k <= 0 or keep_pairs < 0 or not 0 < learning_rate < math.inf:
    raise errors.ConfigError(
        "steps, k and learning_rate must be positive (and finite), keep_pairs >= 0"
    )
  if compression not in set(trace_lib.Compression):
    raise errors.ConfigError(
        f"compression {compression!r} is none of {[c.value for c in trace_lib.Compression]}"
    )
  compression = trace_lib.Compression(compression)
  stored = trace_lib.checkpoint_steps(steps, k, keep_pairs)
  platform_lib.apply_platform(platform)
  keras_model = models.build_model(
      model, dataset.x_train.shape[1:], dataset.num_classes, **(model_config or {})
  )
  step_fn = sgd_step.SGDStep(keras_model, learning_rate)
  manifest = trace_manifest(
      model,
      model_config,
      dataset,
      step_fn.learning_rate,
      step_fn.layout,
      batch_size,
      steps,
      k,
      keep_pairs,
      seed,
      platform,
  )
  batches = batch_schedule(dataset.x_train.shape[0], batch_size, steps, seed)
  writer, theta, _, resumed_from = open_writer(out, manifest, batches, overwrite, compression)
  start = resumed_from or 0
  if resumed_from is None:
    theta = models.initial_parameters(step_fn.layout, seed)
    writer.put(0, theta)
  logging.info(
      "%s %s on %s: b=%d, T=%d, k=%d, %d parameters, platform %s -> %s",
      "training" if resumed_from is None else f"resuming at step {start}:",
      model,
      dataset.name,
      batch_size,
      steps,
      k,
      step_fn.num_parameters,
      manifest["platform"]["id"],
      out,
  )
  source = sgd_step.BatchSource(dataset.x_train, dataset.y_train, dataset.num_classes)
  began = time.perf_counter()
  try:
    run_sgd(
        step_fn,
        source,
        theta,
        batches,
        start,
        steps,
        writer.put,
        stored[stored > start],
        progress_every_s,
    )
  finally:
    # Also on Ctrl-C: what was handed over is written, so the next run resumes from it.
    complete = writer.close()
  seconds = time.perf_counter() - began
  if not complete:
    raise errors.TraceError(f"{out}: training ended but the trace is incomplete")
  return TraceSummary(
      path=storage.absolute(out),
      model=model,
      dataset=dataset.name,
      batch_size=batch_size,
      steps=steps,
      k=k,
      keep_pairs=keep_pairs,
      num_parameters=step_fn.num_parameters,
      checkpoints=len(stored),
      resumed_from_step=resumed_from,
      steps_trained=steps - start,
      seconds=seconds,
      bytes_on_disk=sum(storage.at(out).sizes().values()),
      platform_id=manifest["platform"]["id"],
      compression=writer.compression.value,
      writer=writer.seconds,
  )


def open_writer(
    out: str,
    manifest: dict,
    batches: np.ndarray,
    overwrite: bool,
    compression: trace_lib.Compression,
    optimizer_state: bool = False,
):
  """Creates the trace at `out`, or reopens an unfinished trace of the same run there.

  Returns (writer, theta to resume from, its velocity (optimizer_state), step resumed from);
  None for each but the writer when the trace is new.
  """
  if trace_lib.is_trace(out):  # Anything else at `out` is refused by TraceWriter.create.
    if overwrite:
      trace_lib.remove(out)
    else:
      existing = trace_lib.Trace(out)
      if existing.complete:
        raise errors.ConfigError(
            f"{out} holds a finished trace; pass --overwrite to replace it "
            "or choose another --out"
        )
      _check_resumable(existing, manifest, compression, out)
      if existing.num_written:
        last = int(existing.checkpoint_steps[existing.num_written - 1])
        theta, velocity = existing.checkpoint(last), existing.optimizer_state(last)
        return trace_lib.TraceWriter.reopen(out), theta, velocity, last
      trace_lib.remove(out)  # Created but no checkpoint written yet: nothing to keep.
  writer = trace_lib.TraceWriter.create(out, manifest, batches, compression, optimizer_state)
  return writer, None, None, None


def _check_resumable(
    trace: trace_lib.Trace, requested: dict, compression: trace_lib.Compression, out: str
) -> None:
  existing = trace.manifest
  differ = [key for key in _RESUME_FIELDS if existing[key] != requested[key]]
  if existing.get("keras") != requested.get("keras"):
    differ.append("keras (trainer, optimizer or loss)")
  if trace.compression != compression:
    differ.append(f"compression ({trace.compression.value}, now {compression.value})")
  if existing["dataset"]["fingerprint"] != requested["dataset"]["fingerprint"]:
    differ.append("dataset (fingerprint)")
  if existing["platform"].get("id") != requested["platform"]["id"]:
    differ.append(
        f"platform (id {existing['platform'].get('id')}, now {requested['platform']['id']})"
    )
  if differ:
    raise errors.ConfigError(
        f"{out} holds an unfinished trace of another run (differs in: "
        f"{', '.join(differ)}); resume it with its own settings, pass "
        "--overwrite to replace it, or choose another --out"
    )
