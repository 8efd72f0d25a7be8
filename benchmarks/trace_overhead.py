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
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from forging_tf import data
from forging_tf import models
from forging_tf import platform as platform_lib
from forging_tf import sgd_step
from forging_tf import trace as trace_lib
from forging_tf.train import train_lib

import _results  # pylint: disable=wrong-import-position

_STEPS = flags.DEFINE_integer("steps", 400, "Steps per timed run.", lower_bound=1)
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Mini-batch size.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Local data directory.")


def main(argv):
  del argv
  platform = platform_lib.Platform()
  platform_lib.apply_platform(platform)
  mnist = data.load_dataset("mnist", _DATA_DIR.value)
  steps, b = _STEPS.value, _BATCH_SIZE.value
  model = models.build_model("lenet", mnist.x_train.shape[1:], 10)
  step_fn = sgd_step.SGDStep(model, 0.01)
  source = sgd_step.BatchSource(mnist.x_train, mnist.y_train, 10)
  batches = train_lib.batch_schedule(60_000, b, steps, seed=0)
  theta0 = models.initial_parameters(step_fn.layout, seed=0)
  manifest = train_lib.trace_manifest(
      "lenet", {}, mnist, step_fn, b, steps, k=1, keep_pairs=0, seed=0, platform=platform
  )
  stored = range(1, steps + 1)

  def untraced() -> float:
    began = time.perf_counter()
    train_lib.run_sgd(step_fn, source, theta0, batches, 0, steps)
    return time.perf_counter() - began

  def traced(synchronous: bool) -> float:
    """Seconds from creating the trace to closing it complete (deleting it is not timed)."""
    with tempfile.TemporaryDirectory() as folder:
      began = time.perf_counter()
      writer = trace_lib.TraceWriter.create(os.path.join(folder, "t"), manifest, batches)
      writer.put(0, theta0)

      def on_checkpoint(step, theta):
        writer.put(step, theta)
        if synchronous:
          writer.flush()

      train_lib.run_sgd(step_fn, source, theta0, batches, 0, steps, on_checkpoint, stored)
      assert writer.close()
      return time.perf_counter() - began

  runs = {"untraced": untraced, "async": lambda: traced(False), "sync": lambda: traced(True)}
  untraced()  # warm-up: tracing of the tf.functions
  times = {name: [] for name in runs}
  for _ in range(_ROUNDS.value):
    for name, run in runs.items():
      times[name].append(run())
  median = {name: statistics.median(t) for name, t in times.items()}
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
          "rounds": _ROUNDS.value,
          "trace_bytes_per_step": 4 * step_fn.num_parameters,
      },
      platform=platform,
  )


if __name__ == "__main__":
  app.run(main)
