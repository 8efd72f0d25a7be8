"""What the benchmarks share: their common flags, the platform and training set-up, interleaved
timing, and the JSON every result carries under benchmarks/results/.

A benchmark runs as `python benchmarks/NAME.py`, so this folder is on sys.path and `import
_results` finds this module.
"""

import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
from absl import flags

from forging_tf import data
from forging_tf import models
from forging_tf import platform as platform_lib
from forging_tf import sgd_step
from forging_tf.train import train_lib

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def define_rounds(default: int, help_text: str = "Interleaved timed rounds."):
  """--rounds: how many times each path is timed (medians are reported)."""
  return flags.DEFINE_integer("rounds", default, help_text, lower_bound=1)


def define_data_dir():
  """--data_dir: the local data directory (default: $FORGING_TF_DATA, then tensorflow-datasets)."""
  return flags.DEFINE_string("data_dir", None, "Local data directory.")


@dataclasses.dataclass(frozen=True)
class TrainingFlags:
  """The flags of a benchmark that times LeNet/MNIST training: --steps, --batch_size, --rounds,
  --data_dir (their holders)."""

  steps: flags.FlagHolder
  batch_size: flags.FlagHolder
  rounds: flags.FlagHolder
  data_dir: flags.FlagHolder


def define_training_flags(steps: int, batch_size: int, rounds: int) -> TrainingFlags:
  """TrainingFlags with these defaults."""
  return TrainingFlags(
      flags.DEFINE_integer("steps", steps, "SGD steps per timed run.", lower_bound=1),
      flags.DEFINE_integer("batch_size", batch_size, "Mini-batch size.", lower_bound=1),
      define_rounds(rounds),
      define_data_dir(),
  )


def applied_platform() -> platform_lib.Platform:
  """The default platform (this CPU, op determinism on), applied to this process."""
  platform = platform_lib.Platform()
  platform_lib.apply_platform(platform)
  return platform


@dataclasses.dataclass(frozen=True)
class Training:
  """A training run's parts, as forging-train makes them: the SGD step of `model` on `dataset`
  (eta = 0.01), its batch source, the seeded batch schedule [steps, b] and theta_0 [P]."""

  step_fn: sgd_step.SGDStep
  source: sgd_step.BatchSource
  batches: np.ndarray
  theta0: np.ndarray


def training(dataset: data.Dataset, model: str, batch_size: int, steps: int) -> Training:
  """The parts of a training run of `steps` steps with seed 0 (Training)."""
  step_fn = sgd_step.SGDStep(
      models.build_model(model, dataset.x_train.shape[1:], dataset.num_classes), 0.01
  )
  source = sgd_step.BatchSource(dataset.x_train, dataset.y_train, dataset.num_classes)
  batches = train_lib.batch_schedule(dataset.x_train.shape[0], batch_size, steps, seed=0)
  return Training(step_fn, source, batches, models.initial_parameters(step_fn.layout, seed=0))


def trace_manifest(
    dataset: data.Dataset, model: str, run: Training, platform: platform_lib.Platform
) -> dict:
  """The manifest forging-train writes for `run` (a k = 1 trace of every step, seed 0)."""
  steps, batch_size = run.batches.shape
  return train_lib.trace_manifest(
      model,
      {},
      dataset,
      run.step_fn.learning_rate,
      run.step_fn.layout,
      batch_size,
      steps,
      1,
      0,
      0,
      platform,
  )


def interleaved(runs: dict[str, Callable], rounds: int, self_timed: bool = False) -> dict:
  """name -> the seconds of each of `rounds` calls of runs[name], the runs alternating within a
  round, so that a slower phase of the machine falls on all of them alike.

  A call is timed whole, or, with self_timed, returns the seconds it measured itself (a run that
  leaves set-up or clean-up out of its time).
  """
  times = {name: [] for name in runs}
  for _ in range(rounds):
    for name, run in runs.items():
      began = time.perf_counter()
      seconds = run()
      times[name].append(seconds if self_timed else time.perf_counter() - began)
  return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
  return {name: statistics.median(values) for name, values in times.items()}


def write(
    name: str,
    ratio: float,
    fast_s: float,
    baseline_s: float,
    settings: dict,
    platform: platform_lib.Platform,
    **measurements,
) -> str:
  """Writes benchmarks/results/NAME.json: name, ratio, fast_s, baseline_s, the measurements, the
  settings, the platform's fingerprint and the command; prints it without the fingerprint."""
  result = {
      "name": name,
      "ratio": ratio,
      "fast_s": fast_s,
      "baseline_s": baseline_s,
      **measurements,
      "settings": settings,
      "platform": platform_lib.platform_fingerprint(platform),
      "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
  }
  os.makedirs(RESULTS, exist_ok=True)
  path = os.path.join(RESULTS, f"{name}.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
  print(json.dumps({k: v for k, v in result.items() if k != "platform"}, indent=2))
  return path
