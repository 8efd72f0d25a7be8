r"""Recomputation vs training throughput on the same LeNet/MNIST trace, on this machine.

In one process and interleaved over --rounds rounds:
  train      train_lib.train_trace writing a fresh trace (the baseline: what the prover did);
  recompute  recompute_lib.recompute_repeat of every update of that trace (what a verifier does:
             read and check each checkpoint, take the step, measure both distances).
Both time only their step loops (model building and dataset loading are not timed).
ratio = recompute / train, medians over rounds (target <= 1.1). Every recomputation must give
eps_repr = 0 (same deterministic platform), which is checked.

  python benchmarks/recompute_throughput.py [--steps=400] [--batch_size=100] [--rounds=5]
"""

import os
import statistics
import sys
import tempfile

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from forging_tf import data
from forging_tf import platform as platform_lib
from forging_tf import trace as trace_lib
from forging_tf.recompute import recompute_lib
from forging_tf.train import train_lib

import _results  # pylint: disable=wrong-import-position

_STEPS = flags.DEFINE_integer("steps", 400, "Steps of the trace.", lower_bound=1)
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Mini-batch size.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Local data directory.")


def main(argv):
  del argv
  platform = platform_lib.Platform()
  mnist = data.load_dataset("mnist", _DATA_DIR.value)
  steps, b = _STEPS.value, _BATCH_SIZE.value
  train_s, recompute_s = [], []
  with tempfile.TemporaryDirectory(dir=os.getcwd(), prefix=".bench_recompute.") as work:
    path = os.path.join(work, "trace")
    for _ in range(_ROUNDS.value):
      summary = train_lib.train_trace(
          path, "lenet", mnist, b, steps, platform=platform, overwrite=True, progress_every_s=1e9
      )
      train_s.append(summary.seconds)
      updates = recompute_lib.recomputed_steps(trace_lib.Trace(path))
      repeat = recompute_lib.recompute_repeat(
          path, platform, updates, _DATA_DIR.value, progress_every_s=1e9
      )
      if repeat.l2.max() != 0:
        raise AssertionError(f"same-platform recomputation is not exact: {repeat.l2.max()}")
      recompute_s.append(repeat.seconds)
  train, recompute = statistics.median(train_s), statistics.median(recompute_s)
  _results.write(
      "recompute_throughput",
      ratio=recompute / train,
      fast_s=recompute,
      baseline_s=train,
      settings={
          "model": "lenet",
          "dataset": "mnist",
          "batch_size": b,
          "steps": steps,
          "rounds": _ROUNDS.value,
      },
      platform=platform,
      train_steps_per_s=steps / train,
      recompute_steps_per_s=steps / recompute,
      train_s_rounds=train_s,
      recompute_s_rounds=recompute_s,
  )


if __name__ == "__main__":
  app.run(main)
