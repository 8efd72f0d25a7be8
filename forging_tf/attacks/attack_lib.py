"""Forging attacks on the steps of a trace, saved as data (forging-attack: attack.py).

thudi and zhang (greedy.py) replace the deleted examples by other training examples; perturb and
gradmatch (pixel_search.py) by new images on the pixel grid. Every attack keeps the distinctness
margin settings.min_distance (MARGIN_RULE) and scores its winner in float64 too (FLOAT64_ERROR).

For every requested step i, forging fraction f and run r, the deletion set U (greedy.py) and the
attack's random draws come from PCG64(SeedSequence([seed, i, m, r])) with m = round(f * b), so
Thudi's and Zhang's attacks with the same seed delete the same examples, and any single cell can
be re-run alone. The benign reproduction error of the logged batch at each step is measured on the
attacking platform too, for comparison.

settings.batch says which true batch is forged (attack_settings.BatchMode). `trace`: the logged
B_i against the logged theta_{i+1}. `random` (the paper's Figure 3 design): run r forges the true
batch B_r = random_true_batches(...)[r] at every requested step, against the reference update
theta_i - eta * grad L(B_r; theta_i) computed here (AttackEngine.reference_update); its deletion
set is drawn once from PCG64(SeedSequence([seed, RANDOM_TAG, r, m])) and kept across the steps,
so (f, r) over the steps is one line of Figure 3; the attack's draws stay per cell as above.

Results folder (OUT), written to a hidden sibling folder and renamed into place when complete:

  summary.json                 everything in JSON (below)
  approximation_error.npy      float64 [S, F, R]  winner's error re-scored with SGDStep
  engine_error.npy             float64 [S, F, R]  the search's own number for the winner
                                                  (vectorised engine or sequential loop; nan
                                                  for zhang, which does not search)
  forged_batches.npy           int32 [S, F, R, b] the chosen forged batches (dataset indices)
  deleted_mask.npy             bool  [S, F, R, b] the positions of U in B_i (replaced positions)
  candidate_errors.npy         float64 [S, F, R, M] every candidate's search error (thudi only)
  reproduction_error.npy       float64 [S]        logged batch B_i recomputed here (benign)
  true_batches.npy             int32 [R, b]       --batch=random: the true batches B_r
  update_l2.npy                float64 [S]        ||theta_{i+1} - theta_i|| as logged (the
                                                  update's size: relative thresholds use it)
  seconds.npy                  float64 [S, F, R]  wall time of each attack
  margin.npy                   float64 [S, F, R]  smallest replacement-to-deleted distance
                                                  (grey levels)
  approximation_error_float64.npy  float64 [S, F, R]  FLOAT64_ERROR of the winner
  start_error.npy              float64 [S, F, R]  perturb, gradmatch: the starting point's error
  replacement_levels.npy       uint8 [S, F, R, m_max, h, w, c]  perturb, gradmatch: the new images
  replacement_labels.npy       int32 [S, F, R, m_max]  their classes (-1: padding)

S = len(summary["steps"]), F = len(summary["forging_fractions"]), R = summary["settings"]["runs"];
for perturb and gradmatch, forged_batches holds -1 at U's places and the replacements are
replacement_levels[s, f, r, :m] (forged_examples rebuilds the whole batch); otherwise
the replacements of cell (s, f, r) are forged_batches[s, f, r][deleted_mask[s, f, r]] and the
deleted examples U are B[deleted_mask[s, f, r]], B = trace.batch(steps[s]) (trace mode) or
true_batches[r] (random mode).

summary.json is the record: the header (results.header: kind "forging_tf.attack_results",
format_version, created, package_version, command, and "platform", the attacking platform's
fingerprint), "settings" (attack_settings.AttackSettings: attack, steps and forging fractions as
asked, runs, M, n, seed, engine, neighbours_k, memory budget), "method" (how U is drawn, where
replacements come from, Zhang's neighbour metric and file), "trace" (Trace.identity), "steps"
(as resolved), "forging_fractions" (label as given, num_replaced m, forging_fraction m/b),
"files" (the arrays above), "seconds", and "results": one entry per step and fraction with
min/mean/max over runs of the re-scored approximation error, min/mean of the engine error (null
for zhang), and the step's reproduction_error.
"""

import dataclasses
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from forging_tf import data
from forging_tf import domain
from forging_tf import errors
from forging_tf import platform as platform_lib
from forging_tf import results
from forging_tf import sgd_step
from forging_tf import storage
from forging_tf import trace as trace_lib
from forging_tf.attacks import engine as engine_lib
from forging_tf.attacks import greedy
from forging_tf.attacks import pixel_search
from forging_tf.attacks import settings as attack_settings

SUMMARY = results.RECORDS[results.ResultKind.ATTACK].file_name
MARGIN_RULE = (
    "every replacement is at least min_distance grey levels (l2 over the pixels in 0..255 units) "
    "from every deleted example; margin.npy holds the smallest such distance of each cell"
)
# The first word of the seeds of --batch=random's true batches and deletion sets ("RAND"), which
# keeps them apart from the per-cell seeds [seed, step, m, run].
RANDOM_TAG = 0x52414E44
RANDOM_BATCHES = (
    "B_r: b distinct training examples, uniform without replacement, from "
    "PCG64(SeedSequence([seed, RANDOM_TAG, r])); forged at every requested step against "
    "theta_i - eta grad L(B_r; theta_i) computed on the attacking platform; its deletion set from "
    "PCG64(SeedSequence([seed, RANDOM_TAG, r, m])), the same at every step"
)
FLOAT64_ERROR = (
    "||theta_i - eta grad L(B') - (theta_i - eta grad L(B_i))|| with both updates in float64 from "
    "the logged theta_i (sgd_step.Float64Step): how exact the forgery is, free of float32 rounding"
)


@dataclasses.dataclass(frozen=True)
class Cell:
  """One attack of one (step, fraction, run): the forgery, the margin it keeps (grey levels) and,
  for perturb and gradmatch, their search (forgery.forged_batch then holds -1 at U's places)."""

  forgery: greedy.Forgery
  margin: float
  search: pixel_search.SearchResult | None = None


def attack_cell(
    settings: attack_settings.AttackSettings,
    engine: engine_lib.AttackEngine,
    pixels: pixel_search.PixelSearch | None,
    neighbours: np.ndarray | None,
    dataset: data.Dataset,
    step: int,
    checkpoints: tuple,
    batch: np.ndarray,
    positions: np.ndarray,
    rng: np.random.Generator,
) -> Cell:
  """The attack of `settings` on one cell (checkpoints: theta_i, theta_{i+1}, velocity)."""
  theta, theta_next, velocity = checkpoints
  attack, min_distance = settings.attack, settings.min_distance
  deleted = np.asarray(batch)[positions]
  distances = allowed = None
  if min_distance > 0 and attack != attack_settings.Attack.PERTURB:
    distances = greedy.margin_distances(dataset.x_train, batch, positions)
    allowed = distances.min(axis=0) >= min_distance

  def margin_of(replacements: np.ndarray) -> float:
    images = dataset.x_train
    return float(domain.pixel_distances(images[replacements], images[deleted]).min())

  def thudi() -> greedy.Forgery:
    return greedy.thudi_attack(
        engine,
        step,
        theta,
        theta_next,
        batch,
        positions,
        settings.M,
        settings.n,
        rng,
        sequential=settings.engine == attack_settings.Engine.SEQUENTIAL,
        velocity=velocity,
        allowed=allowed if min_distance > 0 else None,
    )

  def zhang() -> greedy.Forgery:
    chosen = None
    if min_distance > 0:
      chosen = greedy.zhang_margin_replacements(
          batch, positions, dataset.y_train, distances, min_distance
      )
    return greedy.zhang_attack(
        engine, step, theta, theta_next, batch, positions, neighbours, velocity, chosen
    )

  if attack == attack_settings.Attack.THUDI:
    forgery = thudi()
    return Cell(forgery, margin_of(forgery.forged_batch[positions]))
  if attack == attack_settings.Attack.ZHANG:
    forgery = zhang()
    return Cell(forgery, margin_of(forgery.forged_batch[positions]))
  if attack == attack_settings.Attack.PERTURB:
    start = pixel_search.perturbation_start(dataset.x_train[deleted], min_distance, rng)
    start = pixel_search.feasible_start(start, dataset.x_train[deleted], min_distance)
    labels = dataset.y_train[deleted]
    step_levels = pixel_search.PERTURB_STEP_LEVELS * max(min_distance, 1.0)
    step_levels /= np.sqrt(np.prod(dataset.x_train.shape[1:]))
  else:  # gradmatch: the better of Thudi's and Zhang's winners for this U
    start_forgery = min((thudi(), zhang()), key=lambda forgery: forgery.approximation_error)
    replacements = start_forgery.forged_batch[positions]
    start, labels = dataset.x_train[replacements], dataset.y_train[replacements]
    step_levels = pixel_search.GRADMATCH_STEP_LEVELS
  found = pixels.search(
      theta,
      theta_next,
      velocity,
      batch,
      positions,
      start,
      labels,
      min_distance,
      settings.search_iterations,
      settings.grid_rounds,
      settings.grid_moves,
      step_levels,
  )
  forged_batch = np.array(batch, np.int32)
  forged_batch[positions] = -1
  forgery = greedy.Forgery(
      step, forged_batch, np.asarray(positions), found.approximation_error, found.engine_error, None
  )
  return Cell(forgery, found.margin, found)


def random_true_batches(num_examples: int, batch_size: int, runs: int, seed: int) -> np.ndarray:
  """The true batches of --batch=random [runs, batch_size] int32 (RANDOM_BATCHES)."""
  if batch_size > num_examples:
    raise errors.ConfigError(f"b={batch_size} is more than the {num_examples} training examples")
  return np.stack(
      [
          _random_generator(seed, r).choice(num_examples, size=batch_size, replace=False)
          for r in range(runs)
      ]
  ).astype(np.int32)


def _random_generator(seed: int, *words: int) -> np.random.Generator:
  return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, RANDOM_TAG, *words])))


def _float64_step(trace: trace_lib.Trace, dataset: data.Dataset) -> sgd_step.Float64Step | None:
  """The float64 update of the trace's model; None for a keras.Model.fit trace (not built)."""
  if trace.manifest["model"]["name"] == trace_lib.KERAS_MODEL:
    return None
  return sgd_step.Float64Step(trace, dataset, trace.learning_rate)


def _float64_error(step64, theta, source, batch, positions, cell: Cell) -> float:
  """FLOAT64_ERROR of one cell's forged batch."""
  true_x, true_y = source(batch)
  if cell.search is None:
    forged_x, forged_y = source(cell.forgery.forged_batch)
  else:
    where = tf.constant(np.asarray(positions, np.int32)[:, None])
    levels = cell.search.levels.astype(np.int64)
    labels = tf.one_hot(cell.search.labels, true_y.shape[-1], dtype=tf.float32)
    forged_x = tf.tensor_scatter_nd_update(true_x, where, domain.PIXEL_VALUES[levels])
    forged_y = tf.tensor_scatter_nd_update(true_y, where, labels)
  # Both updates are float64 here: sgd_step.l2_distance would round them to float32 first.
  return float(tf.norm(step64(theta, forged_x, forged_y) - step64(theta, true_x, true_y)))


@dataclasses.dataclass(frozen=True)
class ForgingFraction:
  """A requested forging fraction: `label` as given ('1/b', '0.1'), m examples replaced of b."""

  label: str
  num_replaced: int
  batch_size: int

  @property
  def forging_fraction(self) -> float:
    return self.num_replaced / self.batch_size

  def as_dict(self) -> dict:
    return {
        "label": self.label,
        "num_replaced": self.num_replaced,
        "forging_fraction": self.forging_fraction,
    }


def parse_forging_fractions(labels, batch_size: int) -> list[ForgingFraction]:
  """'1/b', 'N/b' or a number in (0, 1] each -> ForgingFraction; distinct m required."""
  fractions = []
  for label in labels:
    text = str(label).strip()
    try:
      if text.endswith("/b"):
        value = float(text[:-2] or "nan") / batch_size
      else:
        value = float(text)
    except ValueError:
      raise errors.ConfigError(
          f"forging fraction {text!r} is neither a number in (0, 1] nor '1/b' / 'N/b'"
      ) from None
    fractions.append(ForgingFraction(text, greedy.num_replaced(value, batch_size), batch_size))
  seen = {}
  for fraction in fractions:
    if fraction.num_replaced in seen:
      raise errors.ConfigError(
          f"forging fractions {seen[fraction.num_replaced]} and "
          f"{fraction.label} both replace {fraction.num_replaced} of "
          f"b={batch_size} examples; drop one"
      )
    seen[fraction.num_replaced] = fraction.label
  if not fractions:
    raise errors.ConfigError("no forging fraction given; e.g. --forging_fraction=1/b,1")
  return fractions


def attackable_steps(trace: trace_lib.Trace) -> np.ndarray:
  """Steps i [S] int64 whose theta_i and theta_{i+1} are both stored (all i for k = 1)."""
  stored = trace.checkpoint_steps
  return stored[:-1][np.diff(stored) == 1]


def parse_steps(spec: str, trace: trace_lib.Trace) -> list[int]:
  """'middle' (the attackable step nearest T/2), 'all', or a comma list of steps."""
  available = attackable_steps(trace)
  if not available.size:
    raise errors.TraceError(
        f"{trace.path} stores every {trace.k}-th checkpoint and no pair "
        "(i, i+1); attacks need theta_i and theta_{i+1}: use a trace with "
        "k=1 or --keep_pairs"
    )
  spec = spec.strip()
  if spec == "middle":
    return [int(available[np.argmin(np.abs(available - trace.steps // 2))])]
  if spec == "all":
    return [int(s) for s in available]
  try:
    steps = [int(s) for s in spec.split(",") if s.strip()]
  except ValueError:
    raise errors.ConfigError(
        f"--steps={spec!r} is neither 'middle', 'all' nor a comma list of steps"
    ) from None
  stored_pairs = set(available.tolist())
  missing = [s for s in steps if s not in stored_pairs]
  if missing or not steps:
    raise errors.TraceError(
        f"{trace.path} has no stored pair (theta_i, theta_i+1) at step(s) "
        f"{missing or spec!r}; attackable steps are "
        f"{_describe_steps(available)}"
    )
  if len(set(steps)) != len(steps):
    raise errors.ConfigError(f"--steps={spec!r} names a step twice")
  return steps


def _describe_steps(steps: np.ndarray) -> str:
  if len(steps) > 1 and np.all(np.diff(steps) == 1):
    return f"{steps[0]}..{steps[-1]}"
  return ", ".join(str(s) for s in steps[:20]) + (", ..." if len(steps) > 20 else "")


def _stats(values: np.ndarray) -> dict:
  finite = values[np.isfinite(values)]
  if not finite.size:
    return {"min": None, "mean": None, "max": None}
  return {"min": float(finite.min()), "mean": float(finite.mean()), "max": float(finite.max())}


def run_attacks(
    trace_path: str,
    dataset: data.Dataset,
    settings: attack_settings.AttackSettings,
    out: str,
    neighbours_dir: str | None = None,
    platform: platform_lib.Platform = platform_lib.Platform(),
    overwrite: bool = False,
    command: str | None = None,
    progress_every_s: float = 10.0,
    model_fn: str | None = None,
) -> dict:
  """Runs an attack on the steps of a trace and writes its results to OUT (module docstring).

  Args:
    trace_path: the trace to attack; it must be complete and store pairs (i, i + 1).
    dataset: the trace's dataset (its fingerprint is checked).
    settings: the attack, the steps and forging fractions, runs, seeds and search sizes.
    out: the results folder, or a URL (storage.py); written whole or not at all.
    neighbours_dir: where Zhang's neighbour file is cached (default: OUT's parent/neighbours;
      a local folder, which an OUT at a URL has to name).
    platform: the attacking platform, applied to this process.
    overwrite: replace attack results already at OUT.
    command: the command line to record (None: called from Python).
    progress_every_s: seconds between progress lines in the log.
    model_fn: for a trace written by keras.Model.fit, "module:function" that builds its model.

  Returns:
    The record, as written to OUT/summary.json.

  Raises:
    ConfigError: bad settings, or OUT holds other data (or results, without overwrite).
    TraceError: the trace is unfinished, damaged or has no pair (i, i + 1) to attack.
    DatasetError: the dataset is not the trace's.
  """
  out = storage.absolute(out)
  results.check_out(out, SUMMARY, results.ResultKind.ATTACK, overwrite)
  trace = trace_lib.Trace(trace_path)
  if not trace.complete:
    raise errors.TraceError(
        f"{trace.path} is unfinished; finish it (run its forging-train "
        "command again) before attacking it"
    )
  step_list = parse_steps(settings.steps, trace)
  fractions = parse_forging_fractions(settings.forging_fractions, trace.batch_size)
  attack = settings.attack
  thudi = attack == attack_settings.Attack.THUDI
  uses_thudi = attack in (attack_settings.Attack.THUDI, attack_settings.Attack.GRADMATCH)
  uses_zhang = attack in (attack_settings.Attack.ZHANG, attack_settings.Attack.GRADMATCH)
  M, n, runs = settings.M, settings.n, settings.runs
  num_examples = dataset.x_train.shape[0]
  if uses_thudi:
    greedy.check_thudi_settings(
        M, n, max(f.num_replaced for f in fractions), num_examples - trace.batch_size
    )
  platform_lib.apply_platform(platform)
  step_fn = sgd_step.step_for_trace(trace, dataset, model_fn)
  source = sgd_step.BatchSource(dataset.x_train, dataset.y_train, dataset.num_classes)
  search = engine_lib.AttackEngine(step_fn, source, settings.memory_budget_bytes)
  pixels = pixel_search.PixelSearch(search) if attack.searches_pixels else None
  step64 = _float64_step(trace, dataset)
  neighbours = neighbours_file = None
  if uses_zhang and not settings.min_distance:
    if not neighbours_dir and storage.is_url(out):
      raise errors.ConfigError(
          "Zhang's attack caches its neighbours in a local folder: with --out at a URL, pass "
          "--neighbours_dir"
      )
    neighbours_dir = neighbours_dir or os.path.join(os.path.dirname(out), "neighbours")
    began = time.perf_counter()
    neighbours, neighbours_file = greedy.load_or_compute_neighbours(
        dataset, settings.neighbours_k, neighbours_dir
    )
    logging.info(
        "nearest neighbours (top %d) of %s: %s (%.1f s)",
        settings.neighbours_k,
        dataset.name,
        neighbours_file,
        time.perf_counter() - began,
    )
  fingerprint = platform_lib.platform_fingerprint(platform)

  shape = (len(step_list), len(fractions), runs)
  b = trace.batch_size
  approximation = np.full(shape, np.nan)
  engine_errors = np.full(shape, np.nan)
  seconds = np.zeros(shape)
  forged_batches = np.zeros(shape + (b,), np.int32)
  deleted_mask = np.zeros(shape + (b,), bool)
  candidate_errors = np.full(shape + (M,), np.nan) if thudi else None
  reproduction, update_l2 = np.zeros(len(step_list)), np.zeros(len(step_list))
  error64, margin, start_errors = np.full(shape, np.nan), np.full(shape, np.nan), None
  replacement_levels = replacement_labels = None
  if attack.searches_pixels:
    m_max = max(f.num_replaced for f in fractions)
    start_errors = np.full(shape, np.nan)
    replacement_levels = np.zeros(shape + (m_max, *dataset.x_train.shape[1:]), np.uint8)
    replacement_labels = np.full(shape + (m_max,), -1, np.int32)
  true_batches = None
  if settings.batch == attack_settings.BatchMode.RANDOM:
    true_batches = random_true_batches(num_examples, b, runs, settings.seed)
  logging.info(
      "%s attack on %s batches of %s (%s, b=%d): %d step(s), fractions %s, %d run(s), engine %s, "
      "platform %s -> %s",
      settings.attack,
      settings.batch,
      trace.path,
      trace.manifest["model"]["name"],
      b,
      len(step_list),
      ",".join(f.label for f in fractions),
      runs,
      settings.engine if uses_thudi else "-",
      fingerprint["id"],
      out,
  )
  began = last_report = time.perf_counter()
  done, total = 0, int(np.prod(shape))
  for s, step in enumerate(step_list):
    theta, theta_next, batch = trace.checkpoint(step), trace.checkpoint(step + 1), trace.batch(step)
    velocity = trace.optimizer_state(step)
    reproduction[s] = search.approximation_error(theta, theta_next, batch, velocity)
    update_l2[s] = sgd_step.l2_distance(theta_next, theta)
    if true_batches is not None:
      references = [search.reference_update(theta, true, velocity) for true in true_batches]
    for f, fraction in enumerate(fractions):
      for r in range(runs):
        cell_began = time.perf_counter()
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([settings.seed, step, fraction.num_replaced, r]))
        )
        if true_batches is None:
          true_batch, target = batch, theta_next
          positions = greedy.deletion_positions(b, fraction.num_replaced, rng)
        else:
          true_batch, target = true_batches[r], references[r]
          fixed = _random_generator(settings.seed, r, fraction.num_replaced)
          positions = greedy.deletion_positions(b, fraction.num_replaced, fixed)
        cell = attack_cell(
            settings,
            search,
            pixels,
            neighbours,
            dataset,
            step,
            (theta, target, velocity),
            true_batch,
            positions,
            rng,
        )
        forgery = cell.forgery
        if thudi:
          candidate_errors[s, f, r] = forgery.candidate_errors
        approximation[s, f, r] = forgery.approximation_error
        engine_errors[s, f, r] = forgery.engine_error
        forged_batches[s, f, r] = forgery.forged_batch
        deleted_mask[s, f, r, positions] = True
        margin[s, f, r] = cell.margin
        if step64 is not None:
          error64[s, f, r] = _float64_error(step64, theta, source, true_batch, positions, cell)
        if cell.search is not None:
          m = len(positions)
          start_errors[s, f, r] = cell.search.start_error
          replacement_levels[s, f, r, :m] = cell.search.levels
          replacement_labels[s, f, r, :m] = cell.search.labels
        seconds[s, f, r] = time.perf_counter() - cell_began
        done += 1
        now = time.perf_counter()
        if now - last_report >= progress_every_s or done == total:
          last_report = now
          logging.info(
              "%d/%d  step %d, fraction %s, run %d: approximation error %.6g "
              "(reproduction %.3g)  %.1f s/attack, ETA %.0f s",
              done,
              total,
              step,
              fraction.label,
              r,
              forgery.approximation_error,
              reproduction[s],
              (now - began) / done,
              (total - done) * (now - began) / done,
          )

  cells = []
  for s, step in enumerate(step_list):
    for f, fraction in enumerate(fractions):
      error, engine_stats = _stats(approximation[s, f]), _stats(engine_errors[s, f])
      cells.append(
          {
              "step": step,
              **fraction.as_dict(),
              "min_approximation_error": error["min"],
              "mean_approximation_error": error["mean"],
              "max_approximation_error": error["max"],
              "min_engine_error": engine_stats["min"],
              "mean_engine_error": engine_stats["mean"],
              "min_approximation_error_float64": _stats(error64[s, f])["min"],
              "min_margin": _stats(margin[s, f])["min"],
              "reproduction_error": float(reproduction[s]),
          }
      )
      if start_errors is not None:
        cells[-1]["min_start_error"] = _stats(start_errors[s, f])["min"]
  summary = results.header(results.ResultKind.ATTACK, command, fingerprint) | {
      "settings": settings.as_dict(),
      "method": {
          "deletion_set": (
              "m = round(f * b) positions of B_r, uniform without replacement, from "
              "PCG64(SeedSequence([seed, RANDOM_TAG, run, m])), the same at every step"
              if true_batches is not None
              else "m = round(f * b) positions of B_i, uniform without replacement, from "
              "PCG64(SeedSequence([seed, step, m, run]))"
          ),
          "true_batch": (
              RANDOM_BATCHES
              if true_batches is not None
              else "B_i, the trace's batch at step i, against the logged theta_{i+1}"
          ),
          "replacements_from": (
              "new images on the pixel grid, searched (attacks/pixel_search.py)"
              if attack.searches_pixels
              else "D \\ B_i"
          ),
          "margin": MARGIN_RULE,
          "float64_error": FLOAT64_ERROR if step64 is not None else None,
          "neighbour_metric": greedy.NEIGHBOUR_METRIC if uses_zhang else None,
          "neighbours_file": neighbours_file,
      },
      "trace": trace.identity(),
      "model_fn": model_fn,
      "steps": step_list,
      "forging_fractions": [f.as_dict() for f in fractions],
      "seconds": time.perf_counter() - began,
      "files": {
          "approximation_error.npy": "float64 [S, F, R] re-scored with SGDStep",
          "engine_error.npy": "float64 [S, F, R] the search's number for the winner (nan: none)",
          "forged_batches.npy": "int32 [S, F, R, b] forged batches, dataset indices",
          "deleted_mask.npy": "bool [S, F, R, b] positions of U in B_i",
          "reproduction_error.npy": "float64 [S] logged batch recomputed on this platform",
          "update_l2.npy": "float64 [S] ||theta_{i+1} - theta_i|| as logged",
          "seconds.npy": "float64 [S, F, R] wall time per attack",
          "margin.npy": "float64 [S, F, R] smallest replacement-to-deleted distance, grey levels",
          "approximation_error_float64.npy": "float64 [S, F, R] ||theta64(B') - theta64(B_i)||",
      },
      "results": cells,
  }
  arrays = {
      "approximation_error": approximation,
      "engine_error": engine_errors,
      "forged_batches": forged_batches,
      "deleted_mask": deleted_mask,
      "reproduction_error": reproduction,
      "update_l2": update_l2,
      "seconds": seconds,
  }
  arrays["margin"] = margin
  arrays["approximation_error_float64"] = error64
  if true_batches is not None:
    arrays["true_batches"] = true_batches
    summary["files"]["true_batches.npy"] = "int32 [R, b] the true batches B_r of --batch=random"
  if candidate_errors is not None:
    arrays["candidate_errors"] = candidate_errors
    summary["files"]["candidate_errors.npy"] = "float64 [S, F, R, M] every candidate's error"
  if start_errors is not None:
    arrays |= {
        "start_error": start_errors,
        "replacement_levels": replacement_levels,
        "replacement_labels": replacement_labels,
    }
    summary["files"] |= {
        "start_error.npy": "float64 [S, F, R] the search's starting point, re-scored",
        "replacement_levels.npy": "uint8 [S, F, R, m_max, h, w, c] the replacements' pixels",
        "replacement_labels.npy": "int32 [S, F, R, m_max] their classes (-1: padding)",
    }

  def fill(folder: str) -> None:
    for name, array in arrays.items():
      np.save(os.path.join(folder, f"{name}.npy"), array, allow_pickle=False)
    results.write_json(os.path.join(folder, SUMMARY), summary)

  results.write_folder(out, SUMMARY, results.ResultKind.ATTACK, fill, overwrite)
  return summary


def forged_examples(
    out: str, dataset: data.Dataset, s: int, f: int, r: int
) -> tuple[np.ndarray, np.ndarray]:
  """The forged batch of cell (s, f, r) of the attack results at OUT, as explicit examples:
  (images [b, h, w, c] uint8, labels [b] int) for forging-verify --forged_npz (x, y) or
  forging_game.examples_from_arrays. Training examples come from `dataset` (the trace's);
  perturb's and gradmatch's replacements from replacement_levels.npy / replacement_labels.npy."""
  arrays = {
      name: np.load(os.path.join(out, f"{name}.npy"), allow_pickle=False)
      for name in ("forged_batches", "deleted_mask")
  }
  forged, mask = arrays["forged_batches"][s, f, r], arrays["deleted_mask"][s, f, r]
  images = np.zeros((len(forged), *dataset.x_train.shape[1:]), np.uint8)
  labels = np.zeros(len(forged), np.int64)
  from_data = forged >= 0
  images[from_data], labels[from_data] = (
      dataset.x_train[forged[from_data]],
      dataset.y_train[forged[from_data]],
  )
  if not from_data.all():
    levels = np.load(os.path.join(out, "replacement_levels.npy"), allow_pickle=False)[s, f, r]
    classes = np.load(os.path.join(out, "replacement_labels.npy"), allow_pickle=False)[s, f, r]
    m = int(mask.sum())
    images[mask], labels[mask] = levels[:m], classes[:m]
  return images, labels
