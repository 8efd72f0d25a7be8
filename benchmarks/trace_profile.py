r"""Where the traced training loop's time goes, by sampling: py-spy (`pip install py-spy`)
records LeNet/MNIST training with the trace writer (b = --batch_size, --steps steps, k = 1,
uncompressed) twice, in a child process of this script:
  idle   every thread, running or waiting (py-spy --idle): what each thread spends its time on;
  gil    only the thread holding the GIL (py-spy --gil): who keeps the others from Python.
Samples are summed by thread role (training: run_sgd; writer: TraceWriter._write_loop; zarr:
zarr-python's event loop and thread pool; start-up: imports and set-up before training) and,
for training and the writer, by stage (the SGD step in TensorFlow, the copy out of TensorFlow,
put(); the writer's hash, encode, write, commit and its wait for work).

py-spy samples with --nonblocking (the process is not paused to read its stacks: with
TensorFlow's dozens of threads, pausing it 250 times a second starved it, py-spy at 100 % CPU for
minutes on a 10-second run). --native (C++ frames) is not used: on TensorFlow's libraries it
stalled the process at 100 % CPU for over 10 minutes on a 7-second run on this machine; the
writer's own per-stage timers (WriterSeconds, in trace_overhead.json) cover what happens below
Python.

Also measured: how long one manifest commit takes once N digests are recorded
(`commit_ms_by_digests_recorded`), which is why the writer spaces its commits by 50 times the
last one's duration (TraceWriter).

ratio = the writer thread's busy seconds / the training thread's busy seconds (idle profile);
fast_s = writer busy, baseline_s = training busy.

  python benchmarks/trace_profile.py [--steps=300] [--batch_size=100] [--rate=100]
"""

import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from forging_tf import data
from forging_tf import trace as trace_lib
from forging_tf.train import train_lib

import _results

_FLAGS = _results.define_training_flags(steps=300, batch_size=100, rounds=1)
_RATE = flags.DEFINE_integer("rate", 100, "py-spy samples per second.", lower_bound=1)
_CHILD = flags.DEFINE_boolean("child", False, "Run the traced loop (what py-spy records).")

# (role, stage): the first rule whose frame names all occur in a sample's stack.
_RULES = (
    ("writer", "hash", ("_write_loop", "_hash")),
    ("writer", "encode", ("_write_loop", "_encode")),
    ("writer", "write", ("_write_loop", "_write ")),
    ("writer", "commit", ("_write_loop", "_commit")),
    ("writer", "waiting for work", ("_write_loop", "Queue.get")),
    ("writer", "other", ("_write_loop",)),
    ("training", "SGD step (TensorFlow)", ("run_sgd", "SGDStep.__call__")),
    ("training", "batch gathering", ("run_sgd", "BatchSource.__call__")),
    ("training", "copy out of TensorFlow (numpy)", ("run_sgd", "_EagerTensorBase.numpy")),
    ("training", "put", ("run_sgd", "TraceWriter.put")),
    ("training", "other", ("run_sgd",)),
    ("zarr", "event loop and thread pool", ("run_forever",)),
    ("zarr", "event loop and thread pool", ("_worker (",)),
)
# Leaf frames of a thread that is blocked, not working.
_WAITING = (".select (", "Condition.wait (", "Event.wait (", "_worker (", "Queue.get (")


def _traced_loop():
  platform = _results.applied_platform()
  mnist = data.load_dataset("mnist", _FLAGS.data_dir.value)
  steps, b = _FLAGS.steps.value, _FLAGS.batch_size.value
  run = _results.training(mnist, "lenet", b, steps)
  manifest = _results.trace_manifest(mnist, "lenet", run, platform)
  with tempfile.TemporaryDirectory() as folder:
    writer = trace_lib.TraceWriter.create(os.path.join(folder, "t"), manifest, run.batches)
    writer.put(0, run.theta0)
    train_lib.run_sgd(
        run.step_fn, run.source, run.theta0, run.batches, 0, steps, writer.put, range(1, steps + 1)
    )
    assert writer.close()


def _commit_ms(run, manifest: dict, digests: int, repeats: int = 10) -> float:
  """Milliseconds one manifest commit takes once `digests` checkpoints are recorded: the
  writer's own commit, on the manifest of `run`'s trace."""
  with tempfile.TemporaryDirectory() as folder:
    writer = trace_lib.TraceWriter.create(os.path.join(folder, "t"), manifest, run.batches)
    written = [trace_lib.sha256_hex(run.theta0)] * digests
    times = []
    for _ in range(repeats):
      began = time.perf_counter()
      writer._commit(written)  # noqa: SLF001 (the stage itself, timed alone)
      times.append(time.perf_counter() - began)
    writer.close()
  return 1000 * statistics.median(times)


def _classify(stack: str) -> tuple[str, str]:
  for role, stage, names in _RULES:
    if all(name in stack for name in names):
      return role, stage
  return "start-up and other", ""


def _record(mode: str, folder: str) -> dict:
  """Runs the child under py-spy; {role: {stage: seconds}} and the top leaf frames per role."""
  out = os.path.join(folder, f"{mode}.txt")
  child = [sys.executable, os.path.abspath(__file__), "--child"]
  child += [f"--steps={_FLAGS.steps.value}", f"--batch_size={_FLAGS.batch_size.value}"]
  if _FLAGS.data_dir.value:
    child.append(f"--data_dir={_FLAGS.data_dir.value}")
  command = ["py-spy", "record", f"--{mode}", "--nonblocking", "-r", str(_RATE.value)]
  command += ["-f", "raw", "-o", out]
  subprocess.run(command + ["--", *child], check=True, capture_output=True)
  seconds = collections.defaultdict(lambda: collections.defaultdict(float))
  leaves = collections.defaultdict(collections.Counter)
  unparsed = 0
  with open(out, encoding="utf-8", errors="replace") as f:
    for line in f:
      stack, _, count = line.rstrip("\n").rpartition(" ")
      if not (stack and count.isdigit()):
        # Sampling without pausing the process can read a frame name mid-update, one holding
        # a newline: py-spy then writes a broken line. Counted, not guessed at.
        unparsed += 1
        continue
      role, stage = _classify(stack)
      if role == "zarr":
        leaf = stack.split(";")[-1]
        stage += " (waiting)" if any(w in leaf for w in _WAITING) else " (working)"
      seconds[role][stage] += int(count) / _RATE.value
      leaves[role][stack.split(";")[-1]] += int(count)
  return {
      "unparsed_lines": unparsed,
      "seconds": {role: dict(stages) for role, stages in seconds.items()},
      "top_leaf_frames": {
          role: [{"frame": frame, "seconds": n / _RATE.value} for frame, n in counts.most_common(8)]
          for role, counts in leaves.items()
      },
  }


def main(argv):
  del argv
  if _CHILD.value:
    _traced_loop()
    return
  platform = _results.applied_platform()
  mnist = data.load_dataset("mnist", _FLAGS.data_dir.value)
  run = _results.training(mnist, "lenet", 100, 1)
  manifest = _results.trace_manifest(mnist, "lenet", run, platform)
  commit_ms = {n: _commit_ms(run, manifest, n) for n in (0, 1_000, 2_500, 10_000, 25_000)}
  with tempfile.TemporaryDirectory() as folder:
    profiles = {mode: _record(mode, folder) for mode in ("idle", "gil")}
  idle = profiles["idle"]["seconds"]
  writer_busy = sum(s for stage, s in idle["writer"].items() if stage != "waiting for work")
  training_busy = sum(idle["training"].values())
  _results.write(
      "trace_profile",
      ratio=writer_busy / training_busy,
      fast_s=writer_busy,
      baseline_s=training_busy,
      ratio_definition="writer thread's busy seconds / training thread's seconds (py-spy --idle)",
      profiles=profiles,
      commit_ms_by_digests_recorded=commit_ms,
      settings={
          "model": "lenet",
          "batch_size": _FLAGS.batch_size.value,
          "steps": _FLAGS.steps.value,
          "k": 1,
          "compression": "none",
          "rate_hz": _RATE.value,
          "py-spy": subprocess.run(
              ["py-spy", "--version"], capture_output=True, text=True, check=True
          ).stdout.strip(),
      },
      platform=platform,
  )


if __name__ == "__main__":
  app.run(main)
