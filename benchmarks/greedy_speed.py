r"""Thudi et al.'s greedy search: the vectorised attack engine against the sequential loop.

One LeNet/MNIST step at b = 1000 (theta after --train_steps SGD steps from theta_0, trained here),
M = 300 candidates drawn once from a pool of n = 3,000 examples, at forging fractions 1/b and 1;
both paths score the very same candidates. The sequential loop is what public implementations do
(one SGDStep per candidate batch); the engine is engine_lib.AttackEngine.candidate_errors.

ratio = sequential seconds / vectorised seconds at fraction 1/b (target >= 20); ratio_fraction_1
the same at fraction 1; `same_winner*` says whether both picked the same candidate. One VGGmini/
CIFAR-10 step (b = --vggmini_batch_size, theta_0, fraction 1/b, M candidates) is timed the same
way, once. Medians over --rounds interleaved rounds for LeNet.

  python benchmarks/greedy_speed.py [--rounds=3] [--train_steps=100] [--data_dir=...]
"""

import time

import numpy as np
from absl import app
from absl import flags

from forging_tf import data
from forging_tf.attacks import engine as engine_lib
from forging_tf.attacks import greedy
from forging_tf.attacks import settings as attack_settings
from forging_tf.train import train_lib

import _results

_ROUNDS = _results.define_rounds(3, "Interleaved timing rounds (LeNet).")
_TRAIN_STEPS = flags.DEFINE_integer(
    "train_steps", 100, "SGD steps before the attacked step.", lower_bound=0
)
_M = flags.DEFINE_integer("M", attack_settings.DEFAULT_M, "Candidates per attack.", lower_bound=1)
_N = flags.DEFINE_integer("n", attack_settings.DEFAULT_POOL_SIZE, "Pool size.", lower_bound=1)
_VGG_B = flags.DEFINE_integer(
    "vggmini_batch_size", 100, "Batch size of the VGGmini step.", lower_bound=1
)
_DATA_DIR = _results.define_data_dir()

_B = 1000


class _Step:
  """theta_i, theta_{i+1}, B_i of one SGD step, and an engine for its model."""

  def __init__(self, dataset: data.Dataset, model: str, batch_size: int, train_steps: int):
    run = _results.training(dataset, model, batch_size, train_steps + 1)
    theta = train_lib.run_sgd(run.step_fn, run.source, run.theta0, run.batches, 0, train_steps)
    self.theta = theta.numpy()
    self.batch = run.batches[train_steps]
    self.theta_next = run.step_fn(theta, *run.source(self.batch)).numpy()
    self.engine = engine_lib.AttackEngine(run.step_fn, run.source)

  def candidates(self, m: int, M: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    positions = greedy.deletion_positions(len(self.batch), m, rng)
    return positions, greedy.thudi_candidates(
        self.batch, positions, self.engine.source.num_examples, M, n, rng
    )

  def timed(self, path: str, positions, candidates):
    score = self.engine.candidate_errors if path == "vectorised" else self.engine.sequential_errors
    began = time.perf_counter()
    errors = score(self.theta, self.theta_next, self.batch, positions, candidates)
    return time.perf_counter() - began, errors


def _compare(step: _Step, positions, candidates, rounds: int) -> dict:
  step.timed("vectorised", positions, candidates[:2])  # warm-up: tracing of both paths
  step.timed("sequential", positions, candidates[:2])
  scores = {}

  def timed(path: str) -> float:
    seconds, scores[path] = step.timed(path, positions, candidates)
    return seconds

  times = _results.interleaved(
      {path: (lambda path=path: timed(path)) for path in ("vectorised", "sequential")},
      rounds,
      self_timed=True,
  )
  fast_errors, reference = scores["vectorised"], scores["sequential"]
  winner = int(np.argmin(reference))
  forged = engine_lib.replace(step.batch, positions, candidates[int(np.argmin(fast_errors))])
  fast_s, sequential_s = _results.medians(times).values()
  return {
      "vectorised_s": fast_s,
      "sequential_s": sequential_s,
      "ratio": sequential_s / fast_s,
      "same_winner": bool(np.argmin(fast_errors) == winner),
      "winner_error_rescored": step.engine.approximation_error(step.theta, step.theta_next, forged),
      "winner_error_sequential": float(reference[winner]),
      "max_relative_difference": float(np.max(np.abs(fast_errors - reference) / reference)),
      "all_vectorised_s": times["vectorised"],
      "all_sequential_s": times["sequential"],
  }


def main(argv):
  del argv
  platform = _results.applied_platform()
  M, n = _M.value, _N.value
  lenet = _Step(data.load_dataset("mnist", _DATA_DIR.value), "lenet", _B, _TRAIN_STEPS.value)
  cases = {}
  for label, m in (("1/b", 1), ("1", _B)):
    positions, candidates = lenet.candidates(m, M, n, seed=m)
    cases[label] = _compare(lenet, positions, candidates, _ROUNDS.value)
    print(f"lenet b={_B} fraction {label}: {cases[label]}", flush=True)
  vgg = _Step(data.load_dataset("cifar10", _DATA_DIR.value), "vggmini", _VGG_B.value, 0)
  positions, candidates = vgg.candidates(1, M, n, seed=1)
  vggmini = _compare(vgg, positions, candidates, rounds=1)
  main_case, full = cases["1/b"], cases["1"]
  _results.write(
      "greedy_speed",
      ratio=main_case["ratio"],
      fast_s=main_case["vectorised_s"],
      baseline_s=main_case["sequential_s"],
      ratio_fraction_1=full["ratio"],
      same_winner=main_case["same_winner"],
      same_winner_fraction_1=full["same_winner"],
      lenet={f"fraction {label}": case for label, case in cases.items()},
      vggmini={"batch_size": _VGG_B.value, "fraction": "1/b", **vggmini},
      ratio_definition="sequential SGDStep loop seconds / vectorised engine seconds for the same "
      "M candidates of one LeNet/MNIST step at b=1000, fraction 1/b; fast_s and "
      "baseline_s are seconds per attack step",
      settings={
          "M": M,
          "n": n,
          "batch_size": _B,
          "train_steps": _TRAIN_STEPS.value,
          "rounds": _ROUNDS.value,
          "vggmini_rounds": 1,
          "memory_budget_bytes": attack_settings.DEFAULT_MEMORY_BUDGET,
          "learning_rate": 0.01,
      },
      platform=platform,
  )


if __name__ == "__main__":
  app.run(main)
