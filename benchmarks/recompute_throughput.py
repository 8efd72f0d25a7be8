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
import tempfile

from absl import app

from forging_tf import data
from forging_tf import trace as trace_lib
from forging_tf.recompute import recompute_lib
from forging_tf.train import train_lib

import _results

_FLAGS = _results.define_training_flags(steps=400, batch_size=100, rounds=5)


def main(argv):
  del argv
  platform = _results.applied_platform()
  mnist = data.load_dataset("mnist", _FLAGS.data_dir.value)
  steps, b = _FLAGS.steps.value, _FLAGS.batch_size.value
  with tempfile.TemporaryDirectory(dir=os.getcwd(), prefix=".bench_recompute.") as work:
    path = os.path.join(work, "trace")

    def train() -> float:
      return train_lib.train_trace(
          path, "lenet", mnist, b, steps, platform=platform, overwrite=True, progress_every_s=1e9
      ).seconds

    def recompute() -> float:
      updates = recompute_lib.recomputed_steps(trace_lib.Trace(path))
      repeat = recompute_lib.recompute_repeat(
          path, platform, updates, _FLAGS.data_dir.value, progress_every_s=1e9
      )
      if repeat.l2.max() != 0:
        raise AssertionError(f"same-platform recomputation is not exact: {repeat.l2.max()}")
      return repeat.seconds

    times = _results.interleaved(
        {"train": train, "recompute": recompute}, _FLAGS.rounds.value, self_timed=True
    )
  train_s, recompute_s = times["train"], times["recompute"]
  train, recompute = _results.medians(times).values()
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
          "rounds": _FLAGS.rounds.value,
      },
      platform=platform,
      train_steps_per_s=steps / train,
      recompute_steps_per_s=steps / recompute,
      train_s_rounds=train_s,
      recompute_s_rounds=recompute_s,
  )


if __name__ == "__main__":
  app.run(main)
