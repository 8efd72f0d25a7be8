r"""What writing a trace costs training: LeNet/MNIST, b = 100, on this machine.

Runs, in one process and interleaved over --rounds rounds, the same training loop
(train_lib.run_sgd) three ways:
  untraced  no trace;
  async     the real trace writer (TraceWriter: a background thread);
  sync      the obvious baseline: the same writer, waited for after every checkpoint.
ratio = async / untraced (the overhead; target <= 1.15), sync_ratio = sync / untraced.
fast_s = async, baseline_s = sync; all are medians over rounds.

  python benchmarks/trace_overhead.py [--steps=400] [--rounds=5] [--data_dir=...]
"""

import os
import tempfile
import time

from absl import app

from forging_tf import data
from forging_tf import trace as trace_lib
from forging_tf.train import train_lib

import _results

_FLAGS = _results.define_training_flags(steps=400, batch_size=100, rounds=5)


def main(argv):
  del argv
  platform = _results.applied_platform()
  mnist = data.load_dataset("mnist", _FLAGS.data_dir.value)
  steps, b = _FLAGS.steps.value, _FLAGS.batch_size.value
  run = _results.training(mnist, "lenet", b, steps)
  manifest = train_lib.trace_manifest(
      "lenet", {}, mnist, run.step_fn, b, steps, k=1, keep_pairs=0, seed=0, platform=platform
  )
  stored = range(1, steps + 1)

  def untraced() -> float:
    began = time.perf_counter()
    train_lib.run_sgd(run.step_fn, run.source, run.theta0, run.batches, 0, steps)
    return time.perf_counter() - began

  def traced(synchronous: bool) -> float:
    """Seconds from creating the trace to closing it complete (deleting it is not timed)."""
    with tempfile.TemporaryDirectory() as folder:
      began = time.perf_counter()
      writer = trace_lib.TraceWriter.create(os.path.join(folder, "t"), manifest, run.batches)
      writer.put(0, run.theta0)

      def on_checkpoint(step, theta):
        writer.put(step, theta)
        if synchronous:
          writer.flush()

      train_lib.run_sgd(
          run.step_fn, run.source, run.theta0, run.batches, 0, steps, on_checkpoint, stored
      )
      assert writer.close()
      return time.perf_counter() - began

  untraced()  # warm-up: tracing of the tf.functions
  times = _results.interleaved(
      {"untraced": untraced, "async": lambda: traced(False), "sync": lambda: traced(True)},
      _FLAGS.rounds.value,
      self_timed=True,
  )
  median = _results.medians(times)
  _results.write(
      "trace_overhead",
      ratio=median["async"] / median["untraced"],
      fast_s=median["async"],
      baseline_s=median["sync"],
      untraced_s=median["untraced"],
      sync_ratio=median["sync"] / median["untraced"],
      ms_per_step={name: 1000 * t / steps for name, t in median.items()},
      all_times_s=times,
      ratio_definition="async-traced / untraced training time (median over rounds); "
      "fast_s = async-traced, baseline_s = synchronously traced",
      settings={
          "model": "lenet",
          "dataset": "mnist",
          "batch_size": b,
          "steps": steps,
          "k": 1,
          "rounds": _FLAGS.rounds.value,
          "trace_bytes_per_step": 4 * run.step_fn.num_parameters,
      },
      platform=platform,
  )


if __name__ == "__main__":
  app.run(main)
