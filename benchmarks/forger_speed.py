r"""perturb's and gradmatch's pixel search (attacks/pixel_search.py): batched scoring of grid moves
against one SGD step per move, and the error each attack reaches against wall time.

One step of a LeNet/MNIST run: the middle step of --trace (k = 1), or, without it, theta after
--train_steps SGD steps from theta_0 at b = --batch_size, trained here as greedy_speed.py does.
Deletion sets are those of forging-attack's run 0 with seed 0 (attack_lib: PCG64(SeedSequence(
[0, step, m, 0]))), at the forging fractions --forging_fraction, with the margin --min_distance.

1. Scoring. A round of PixelSearch.grid_search scores K single-pixel moves of the replacements at
   once: the moved images' per-example gradients in one vectorised call
   (AttackEngine.example_gradients) and every move's float32 update and distance in one call
   (AttackEngine.errors_of_sums). The obvious loop builds each move's forged batch and runs the
   SGD step once per move (AttackEngine.replaced_inputs + inputs_error, the verifier's number).
   Both score the same K moves (--moves; pixel_search's own proposals along -dF/dz, 1 level, from
   perturb's start) at each fraction; medians of --rounds interleaved rounds, after a warm-up
   that traces both paths. ratio = loop seconds / batched seconds at the first fraction and the
   first K (by default 1/b and K = DEFAULT_GRID_MOVES, the attack's round); `same_best` and
   `max_relative_difference` compare the two paths' errors over every case (they differ by
   float32 summation order); the run fails, after writing its JSON, past --tolerance.
2. Anytime curve. perturb and gradmatch at each fraction, the whole forged step as forging-attack
   runs it (attack_lib's cell: the start, then PixelSearch.search) with search_iterations =
   each of --budgets and grid_rounds in proportion (DEFAULT_GRID_ROUNDS per
   DEFAULT_SEARCH_ITERATIONS), every budget from the same start; each point records the wall
   seconds (of the cell, of the search and of its phases) and the error re-scored with the SGD
   step. `seconds_per_forged_step` is the cell's time at the default settings (the budget
   DEFAULT_SEARCH_ITERATIONS; null when --budgets leaves it out).

  python benchmarks/forger_speed.py [--trace=runs/traces/lenet_mnist_b100] [--moves=64,256] \
      [--budgets=0,10,30,100,300] [--forging_fraction=1/b,0.1] [--min_distance=64] [--rounds=3] \
      [--train_steps=600 --batch_size=100] [--out=benchmarks/results] [--data_dir=...]
"""

import dataclasses
import time

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

from forging_tf import cli
from forging_tf import data
from forging_tf import domain
from forging_tf import sgd_step
from forging_tf.attacks import attack_lib
from forging_tf.attacks import engine as engine_lib
from forging_tf.attacks import greedy
from forging_tf.attacks import pixel_search
from forging_tf.attacks import settings as attack_settings
from forging_tf.train import train_lib

import _results

_TRACE = flags.DEFINE_string(
    "trace", None, "A k = 1 LeNet/MNIST trace to attack at its middle step (default: train here)."
)
_TRAIN_STEPS = flags.DEFINE_integer(
    "train_steps", 600, "Without --trace: SGD steps before the attacked step.", lower_bound=0
)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 100, "Without --trace: the batch size b.", lower_bound=1
)
_FRACTIONS = flags.DEFINE_list(
    "forging_fraction", ["1/b", "0.1"], "Forging fractions: 1/b, N/b, f."
)
_MIN_DISTANCE = flags.DEFINE_float(
    "min_distance", 64.0, "Margin D in grey levels (l2 over the pixels in 0..255).", lower_bound=0
)
_MOVES = flags.DEFINE_list(
    "moves", [str(attack_settings.DEFAULT_GRID_MOVES), "256"], "Grid moves K scored per timing."
)
_BUDGETS = flags.DEFINE_list(
    "budgets", ["0", "10", "30", "100", "300"], "search_iterations of the anytime curve's points."
)
_TOLERANCE = flags.DEFINE_float(
    "tolerance", 1e-3, "Largest relative difference allowed between the two paths' errors."
)
_ROUNDS = _results.define_rounds(3, "Interleaved timing rounds of the scoring.")
_DATA_DIR = _results.define_data_dir()

_ATTACKS = (attack_settings.Attack.PERTURB, attack_settings.Attack.GRADMATCH)
_SEED, _RUN = 0, 0


@dataclasses.dataclass(frozen=True)
class _Step:
  """The attacked step i: theta_i, theta_{i+1} [P] float32, the optimizer's velocity [P] or None,
  B_i [b] dataset indices, the dataset and an attack engine for the model; `source` says where
  it comes from (the trace's path, or 'trained here')."""

  index: int
  theta: np.ndarray
  theta_next: np.ndarray
  velocity: np.ndarray | None
  batch: np.ndarray
  dataset: data.Dataset
  engine: engine_lib.AttackEngine
  source: str

  @property
  def checkpoints(self) -> tuple:
    return self.theta, self.theta_next, self.velocity

  def cell_rng(self, m: int) -> tuple[np.ndarray, np.random.Generator]:
    """(U's positions [m], the generator after drawing them), as forging-attack draws run 0."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([_SEED, self.index, m, _RUN])))
    return greedy.deletion_positions(len(self.batch), m, rng), rng

  def description(self) -> dict:
    return {
        "source": self.source,
        "step": self.index,
        "batch_size": len(self.batch),
        "reproduction_error": self.engine.approximation_error(
            self.theta, self.theta_next, self.batch, self.velocity
        ),
        "update_l2": sgd_step.l2_distance(self.theta_next, self.theta),
    }


def _attacked_step(trace_path: str | None, data_dir: str | None) -> _Step:
  """The middle step of the trace, or a step of a LeNet/MNIST run trained here."""
  if trace_path:
    trace, dataset = cli.trace_and_dataset(trace_path, data_dir, download=False)
    step_fn = sgd_step.step_for_trace(trace, dataset)
    source = sgd_step.BatchSource(dataset.x_train, dataset.y_train, dataset.num_classes)
    index = attack_lib.parse_steps("middle", trace)[0]
    return _Step(
        index,
        trace.checkpoint(index),
        trace.checkpoint(index + 1),
        trace.optimizer_state(index),
        trace.batch(index),
        dataset,
        engine_lib.AttackEngine(step_fn, source),
        trace.path,
    )
  dataset = data.load_dataset("mnist", data_dir)
  index = _TRAIN_STEPS.value
  run = _results.training(dataset, "lenet", _BATCH_SIZE.value, index + 1)
  theta = train_lib.run_sgd(run.step_fn, run.source, run.theta0, run.batches, 0, index)
  batch = run.batches[index]
  return _Step(
      index,
      theta.numpy(),
      run.step_fn(theta, *run.source(batch)).numpy(),
      None,
      batch,
      dataset,
      engine_lib.AttackEngine(run.step_fn, run.source),
      "trained here",
  )


# 1. Scoring K grid moves ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _GridState:
  """A grid-search state at one fraction (perturb's start): U's positions [m], the replacements'
  levels [m, h, w, c] int64 and one-hot labels [m, n] float32, the kept examples' and the
  replacements' gradient sums [P], and K moves (rows [K] into the replacements, the moved images
  [K, h, w, c] int64), and the search that proposed and scores them."""

  positions: np.ndarray
  levels: np.ndarray
  labels: np.ndarray
  kept_sum: tf.Tensor
  current_sum: tf.Tensor
  rows: np.ndarray
  moved: np.ndarray
  search: pixel_search.PixelSearch


def _grid_state(step: _Step, pixels: pixel_search.PixelSearch, m: int, K: int) -> _GridState:
  """perturb's start at the fraction's deletion set and pixel_search's first K proposals from it,
  as a grid-search round makes them (moves of 1 level along -dF/dz that keep the margin)."""
  engine, D = step.engine, _MIN_DISTANCE.value
  positions, rng = step.cell_rng(m)
  deleted = np.asarray(step.batch)[positions]
  removed = step.dataset.x_train[deleted]
  levels = pixel_search.perturbation_start(removed, D, rng)
  levels = pixel_search.feasible_start(levels, removed, D).astype(np.int64)
  labels = np.eye(step.dataset.num_classes, dtype=np.float32)[step.dataset.y_train[deleted]]
  theta = tf.convert_to_tensor(step.theta, tf.float32)
  kept_sum = engine.summed_gradient(theta, *engine.source(np.delete(step.batch, positions)))
  target = engine.summed_gradient(theta, *engine.source(deleted))
  _, gradient = pixels.objective(step.theta, domain.PIXEL_VALUES[levels], labels, target)
  flat_removed = removed.reshape(m, -1).astype(np.float64)
  proposals = pixel_search.propose_moves(levels, gradient, flat_removed, D, K, 1)
  if proposals is None or len(proposals[0]) < K:
    raise ValueError(f"fewer than K={K} grid moves keep the margin at m={m}; lower --moves")
  rows, pixels_moved, values = proposals
  moved = levels[rows].reshape(K, -1).copy()
  moved[np.arange(K), pixels_moved] = values
  return _GridState(
      positions,
      levels,
      labels,
      kept_sum,
      engine.summed_gradient(theta, domain.PIXEL_VALUES[levels], labels),
      rows,
      moved.reshape((K, *levels.shape[1:])),
      pixels,
  )


def _batched_errors(step: _Step, state: _GridState, K: int) -> np.ndarray:
  """Engine errors [K] of the first K moves, scored as a grid-search round scores them."""
  return state.search.move_errors(
      step.checkpoints,
      state.kept_sum,
      state.current_sum,
      state.levels,
      state.labels,
      state.rows[:K],
      state.moved[:K],
      len(step.batch),
  )[0]


def _looped_errors(step: _Step, state: _GridState, K: int) -> np.ndarray:
  """The verifier's errors [K] of the first K moves: each move's whole forged batch through the
  SGD step (what PixelSearch.search re-scores its result with)."""
  engine, errors = step.engine, []
  for row, image in zip(state.rows[:K], state.moved[:K]):
    levels = state.levels.copy()
    levels[row] = image
    x, y = engine.replaced_inputs(
        step.batch, state.positions, domain.PIXEL_VALUES[levels], state.labels
    )
    errors.append(engine.inputs_error(step.theta, step.theta_next, x, y, step.velocity))
  return np.array(errors, np.float64)


def _ranks(values: np.ndarray) -> np.ndarray:
  return np.argsort(np.argsort(values, kind="stable"), kind="stable").astype(np.float64)


def _compare_scoring(step: _Step, state: _GridState, K: int, rounds: int) -> dict:
  """Both paths on the same K moves: median seconds, ratio, and how far their numbers agree."""
  _batched_errors(step, state, 2)  # warm-up: tracing of both paths
  _looped_errors(step, state, 2)
  scores = {}

  def timed(path: str, score) -> float:
    began = time.perf_counter()
    scores[path] = score(step, state, K)
    return time.perf_counter() - began

  times = _results.interleaved(
      {
          "batched": lambda: timed("batched", _batched_errors),
          "loop": lambda: timed("loop", _looped_errors),
      },
      rounds,
      self_timed=True,
  )
  batched, loop = scores["batched"], scores["loop"]
  batched_s, loop_s = _results.medians(times).values()
  return {
      "moves": K,
      "batched_s": batched_s,
      "loop_s": loop_s,
      "ratio": loop_s / batched_s,
      "same_best": bool(np.argmin(batched) == np.argmin(loop)),
      "rank_correlation": float(np.corrcoef(_ranks(batched), _ranks(loop))[0, 1]),
      "max_relative_difference": float(np.max(np.abs(batched - loop) / loop)),
      "best_error_loop": float(loop.min()),
      "error_spread_loop": float(loop.max() - loop.min()),
      "all_batched_s": times["batched"],
      "all_loop_s": times["loop"],
  }


# 2. The anytime curve ---------------------------------------------------------------------


class _TimedSearch(pixel_search.PixelSearch):
  """PixelSearch that keeps the wall seconds of its last search and of that search's phases,
  and how many grid rounds it ran (grid_search computes dF/dz once per round it starts)."""

  def __init__(self, engine: engine_lib.AttackEngine):
    super().__init__(engine)
    self.seconds, self.grid_rounds_run, self._in_grid = {}, 0, False

  def _timed(self, phase: str, method, *args, **kwargs):
    began = time.perf_counter()
    result = method(*args, **kwargs)
    self.seconds[phase] = time.perf_counter() - began
    return result

  def search(self, *args, **kwargs):
    self.seconds, self.grid_rounds_run = {}, 0
    return self._timed("search", super().search, *args, **kwargs)

  def continuous(self, *args, **kwargs):
    return self._timed("continuous", super().continuous, *args, **kwargs)

  def grid_search(self, *args, **kwargs):
    self._in_grid = True
    try:
      return self._timed("grid", super().grid_search, *args, **kwargs)
    finally:
      self._in_grid = False

  def objective(self, *args, **kwargs):
    self.grid_rounds_run += self._in_grid
    return super().objective(*args, **kwargs)


def _grid_rounds(iterations: int) -> int:
  return round(
      iterations * attack_settings.DEFAULT_GRID_ROUNDS / attack_settings.DEFAULT_SEARCH_ITERATIONS
  )


def _forged_step(
    step: _Step,
    pixels: _TimedSearch,
    attack: attack_settings.Attack,
    fraction: attack_lib.ForgingFraction,
    iterations: int,
) -> dict:
  """One point of the curve: the attack's cell at this budget, timed."""
  settings = attack_settings.AttackSettings(
      attack=attack,
      min_distance=_MIN_DISTANCE.value,
      search_iterations=iterations,
      grid_rounds=_grid_rounds(iterations),
  )
  positions, rng = step.cell_rng(fraction.num_replaced)
  began = time.perf_counter()
  # forging-attack's own cell (private to attack_lib), so that the start is the attack's too.
  cell = attack_lib.attack_cell(
      settings,
      step.engine,
      pixels,
      None,  # Zhang's neighbours: with a margin D > 0 it draws from the distances instead
      step.dataset,
      step.index,
      step.checkpoints,
      step.batch,
      positions,
      rng,
  )
  seconds = time.perf_counter() - began
  found = cell.search
  return {
      "attack": str(attack),
      "fraction": fraction.label,
      "num_replaced": fraction.num_replaced,
      "iterations": iterations,
      "grid_rounds": settings.grid_rounds,
      "grid_rounds_run": pixels.grid_rounds_run,
      "seconds": seconds,
      "start_seconds": seconds - pixels.seconds["search"],
      "search_seconds": pixels.seconds["search"],
      "continuous_seconds": pixels.seconds.get("continuous", 0.0),
      "grid_seconds": pixels.seconds["grid"],
      "approximation_error": found.approximation_error,
      "start_error": found.start_error,
      "engine_error": found.engine_error,
      "margin": found.margin,
  }


def _numbers(values: list[str], name: str) -> list[int]:
  try:
    numbers = [int(value) for value in values]
  except ValueError:
    raise app.UsageError(f"--{name}: whole numbers, comma-separated") from None
  if not numbers or min(numbers) < 0:
    raise app.UsageError(f"--{name}: at least one number, none negative")
  return numbers


def main(argv):
  del argv
  if _MIN_DISTANCE.value <= 0:
    raise app.UsageError("--min_distance: perturb needs a margin D > 0")
  moves, budgets = _numbers(_MOVES.value, "moves"), _numbers(_BUDGETS.value, "budgets")
  platform = _results.applied_platform()
  step = _attacked_step(_TRACE.value, _DATA_DIR.value)
  fractions = attack_lib.parse_forging_fractions(_FRACTIONS.value, len(step.batch))
  pixels = _TimedSearch(step.engine)

  scoring = {}
  for fraction in fractions:
    state = _grid_state(step, pixels, fraction.num_replaced, max(moves))
    for K in moves:
      case = _compare_scoring(step, state, K, _ROUNDS.value)
      scoring.setdefault(f"fraction {fraction.label}", {})[f"K={K}"] = case
      print(f"scoring, fraction {fraction.label}, K={K}: {case}", flush=True)
  cases = [case for by_moves in scoring.values() for case in by_moves.values()]
  main_case = scoring[f"fraction {fractions[0].label}"][f"K={moves[0]}"]

  for attack in _ATTACKS:  # warm-up: tracing of the search, and of Thudi's engine for gradmatch
    _forged_step(step, pixels, attack, fractions[0], min(1, max(budgets)))
  curve = []
  for attack in _ATTACKS:
    for fraction in fractions:
      for iterations in sorted(budgets):
        curve.append(_forged_step(step, pixels, attack, fraction, iterations))
        print(f"anytime: {curve[-1]}", flush=True)
  per_step = {
      str(attack): {
          point["fraction"]: point["seconds"]
          for point in curve
          if point["attack"] == attack
          and point["iterations"] == attack_settings.DEFAULT_SEARCH_ITERATIONS
      }
      or None
      for attack in _ATTACKS
  }

  max_relative_difference = max(case["max_relative_difference"] for case in cases)
  path = _results.write(
      "forger_speed",
      ratio=main_case["ratio"],
      fast_s=main_case["batched_s"],
      baseline_s=main_case["loop_s"],
      ratio_definition=f"one-SGD-step-per-move loop seconds / batched seconds (per-example "
      f"gradients + errors_of_sums) for the same K={moves[0]} grid moves of fraction "
      f"{fractions[0].label} at one LeNet/MNIST step; fast_s and baseline_s are seconds per "
      "grid round",
      same_best=all(case["same_best"] for case in cases),
      max_relative_difference=max_relative_difference,
      scoring=scoring,
      anytime_curve=curve,
      seconds_per_forged_step=per_step,
      step=step.description(),
      settings={
          "trace": _TRACE.value,
          "train_steps": None if _TRACE.value else _TRAIN_STEPS.value,
          "forging_fractions": [fraction.as_dict() for fraction in fractions],
          "min_distance": _MIN_DISTANCE.value,
          "moves": moves,
          "budgets": sorted(budgets),
          "grid_rounds_per_iteration": attack_settings.DEFAULT_GRID_ROUNDS
          / attack_settings.DEFAULT_SEARCH_ITERATIONS,
          "grid_moves": attack_settings.DEFAULT_GRID_MOVES,
          "M": attack_settings.DEFAULT_M,
          "n": attack_settings.DEFAULT_POOL_SIZE,
          "seed": _SEED,
          "run": _RUN,
          "rounds": _ROUNDS.value,
          "tolerance": _TOLERANCE.value,
          "memory_budget_bytes": attack_settings.DEFAULT_MEMORY_BUDGET,
      },
      platform=platform,
  )
  if not max_relative_difference <= _TOLERANCE.value:
    raise SystemExit(
        f"the batched and looped errors differ by {max_relative_difference:.3g} relative, more "
        f"than --tolerance={_TOLERANCE.value:g} (recorded in {path})"
    )


if __name__ == "__main__":
  app.run(main)
