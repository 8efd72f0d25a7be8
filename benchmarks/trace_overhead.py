r"""What writing a trace costs training, and where that cost goes (k = 1: every step is stored).

Runs, in one process and interleaved over --rounds rounds, the same training loop
(train_lib.run_sgd, --model on its dataset, b = --batch_size, --steps steps) several ways:
  untraced      no trace;
  copy          theta copied out of TensorFlow (theta.numpy()) at every step, nothing more;
  async         the real trace writer (TraceWriter: a background thread that hashes each
                checkpoint, writes its chunk and commits digests to the manifest);
  no_hash, no_write, no_commit, no_work
                the writer with one stage removed in turn, or all three (the thread and the
                hand-over only);
  async_blosc-lz4, async_blosc-zstd
                the real writer, compressing chunks (forging-train --compression);
  sync          the obvious baseline: the real writer, waited for after every checkpoint.
ratio = async / untraced (the overhead), and every variant's ratio is in `ratios`, with a 95 %
bootstrap interval over rounds in `ratio_ci95` (a run varies by several per cent from round to
round on a shared 2-core machine, so --rounds sets what the ratios can resolve); fast_s =
async, baseline_s = sync; all are medians over rounds. `writer_ms_per_checkpoint` is the writer's
own account of its time (WriterSeconds: hash, encode, write and commit as wall-clock time, the
writer thread's CPU time, and training's wait), median over the async rounds. The saved LeNet
b = 100 result ran --steps=100 --rounds=20 (its JSON holds the command).

  python benchmarks/trace_overhead.py [--model=lenet] [--batch_size=100] [--steps=200]
      [--rounds=7] [--variants=...] [--data_dir=...]
writes benchmarks/results/trace_overhead.json for LeNet b = 100, else
trace_overhead_MODEL_bB.json.
"""

import dataclasses
import os
import statistics
import tempfile
import time

import numpy as np
from absl import app
from absl import flags

from forging_tf import data
from forging_tf import trace as trace_lib
from forging_tf.train import train_lib

import _results

_FLAGS = _results.define_training_flags(steps=200, batch_size=100, rounds=7)
_MODEL = flags.DEFINE_enum("model", "lenet", ["lenet", "vggmini"], "Model (LeNet: MNIST).")
_REMOVED = {
    "no_hash": {"hash"},
    "no_write": {"write"},
    "no_commit": {"commit"},
    "no_work": {"hash", "write", "commit"},
}
_VARIANTS = [
    "untraced",
    "copy",
    "async",
    *_REMOVED,
    *(f"async_{c}" for c in trace_lib.Compression if c is not trace_lib.Compression.NONE),
    "sync",
]
_CHOSEN = flags.DEFINE_list("variants", _VARIANTS, f"Variants to time, of {_VARIANTS}.")


class _Ablated(trace_lib.TraceWriter):
  """The trace writer with the stages named in `removed` skipped."""

  removed = frozenset()

  def _hash(self, raw):
    return "0" * 64 if "hash" in self.removed else super()._hash(raw)

  def _write(self, array, row, chunk):
    if "write" not in self.removed:
      super()._write(array, row, chunk)

  def _commit(self, written, written_states):
    if "commit" in self.removed:
      self._digests = list(written)  # as if committed: close() then finds the trace complete
    else:
      super()._commit(written, written_states)


def _ratio_ci95(times: list[float], untraced: list[float], draws: int = 2000) -> list[float]:
  """A 95 % bootstrap interval of median(times) / median(untraced), resampling whole rounds (a
  round's runs are paired: they ran one after the other)."""
  rng = np.random.default_rng(0)
  rounds = np.asarray(times), np.asarray(untraced)
  picks = rng.integers(0, len(times), size=(draws, len(times)))
  ratios = np.median(rounds[0][picks], axis=1) / np.median(rounds[1][picks], axis=1)
  return [float(q) for q in np.quantile(ratios, [0.025, 0.975])]


def main(argv):
  del argv
  unknown = set(_CHOSEN.value) - set(_VARIANTS)
  if unknown or not {"untraced", "async"} <= set(_CHOSEN.value):
    raise app.UsageError(f"--variants: {sorted(unknown)} unknown, or untraced or async missing")
  platform = _results.applied_platform()
  model = _MODEL.value
  dataset = data.load_dataset("mnist" if model == "lenet" else "cifar10", _FLAGS.data_dir.value)
  steps, b = _FLAGS.steps.value, _FLAGS.batch_size.value
  run = _results.training(dataset, model, b, steps)
  manifest = _results.trace_manifest(dataset, model, run, platform)
  stored = range(1, steps + 1)
  writer_seconds = []

  def untraced() -> float:
    began = time.perf_counter()
    train_lib.run_sgd(run.step_fn, run.source, run.theta0, run.batches, 0, steps)
    return time.perf_counter() - began

  def copy() -> float:
    began = time.perf_counter()
    train_lib.run_sgd(
        run.step_fn, run.source, run.theta0, run.batches, 0, steps, lambda *_: None, stored
    )
    return time.perf_counter() - began

  def traced(variant: str) -> float:
    """Seconds from creating the trace to closing it complete (deleting it is not timed)."""
    compression = variant.removeprefix("async_") if variant.startswith("async_") else "none"
    with tempfile.TemporaryDirectory() as folder:
      began = time.perf_counter()
      writer = _Ablated.create(os.path.join(folder, "t"), manifest, run.batches, compression)
      writer.removed = frozenset(_REMOVED.get(variant, ()))
      writer.put(0, run.theta0)

      def on_checkpoint(step, theta):
        writer.put(step, theta)
        if variant == "sync":
          writer.flush()

      train_lib.run_sgd(
          run.step_fn, run.source, run.theta0, run.batches, 0, steps, on_checkpoint, stored
      )
      assert writer.close()
      seconds = time.perf_counter() - began
    if variant == "async":
      writer_seconds.append(writer.seconds)
    return seconds

  runs = {"untraced": untraced, "copy": copy}
  runs.update({v: (lambda v=v: traced(v)) for v in _VARIANTS if v not in runs})
  untraced()  # warm-up: tracing of the tf.functions
  times = _results.interleaved(
      {name: runs[name] for name in _VARIANTS if name in _CHOSEN.value},
      _FLAGS.rounds.value,
      self_timed=True,
  )
  median = _results.medians(times)
  ratios = {name: t / median["untraced"] for name, t in median.items()}
  ratio_ci95 = {name: _ratio_ci95(times[name], times["untraced"]) for name in times}
  writer_ms = {
      field: 1000 * statistics.median(getattr(s, field) for s in writer_seconds) / (steps + 1)
      for field in ("hash", "encode", "write", "commit", "cpu", "wait")
  }
  name = "trace_overhead" if (model, b) == ("lenet", 100) else f"trace_overhead_{model}_b{b}"
  _results.write(
      name,
      ratio=ratios.get("async"),
      fast_s=median.get("async"),
      baseline_s=median.get("sync"),
      untraced_s=median["untraced"],
      ratios=ratios,
      ratio_ci95=ratio_ci95,
      ms_per_step={name: 1000 * t / steps for name, t in median.items()},
      writer_ms_per_checkpoint=writer_ms if writer_seconds else None,
      writer_seconds_per_round=[dataclasses.asdict(s) for s in writer_seconds],
      all_times_s=times,
      ratio_definition="async-traced / untraced training time (median over rounds); "
      "fast_s = async-traced, baseline_s = synchronously traced",
      settings={
          "model": model,
          "dataset": dataset.name,
          "batch_size": b,
          "steps": steps,
          "k": 1,
          "rounds": _FLAGS.rounds.value,
          "variants": [v for v in _VARIANTS if v in _CHOSEN.value],
          "trace_bytes_per_step": 4 * run.step_fn.num_parameters,
      },
      platform=platform,
  )


if __name__ == "__main__":
  app.run(main)
