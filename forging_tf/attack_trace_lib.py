"""Greedy forging attacks on the steps of a trace, saved as data (binary: attack_trace.py).

For every requested step i, forging fraction f and run r, the deletion set U (attacks.py) and the
attack's random draws come from PCG64(SeedSequence([seed, i, m, r])) with m = round(f * b), so
Thudi's and Zhang's attacks with the same seed delete the same examples, and any single cell can
be re-run alone. The benign reproduction error of the logged batch at each step is measured on the
attacking platform too, for comparison.

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
  seconds.npy                  float64 [S, F, R]  wall time of each attack

S = len(summary["steps"]), F = len(summary["forging_fractions"]), R = summary["settings"]["runs"];
the replacements of cell (s, f, r) are forged_batches[s, f, r][deleted_mask[s, f, r]] and the
deleted examples U are trace.batch(steps[s])[deleted_mask[s, f, r]].

summary.json holds: "kind" ("forging_tf.attack_results"), "format_version" (1), "created",
"package_version", "command", "attack", "settings" (M, n, runs, seed, engine, memory budget,
neighbours file and metric for zhang, how U is drawn), "trace" (path, manifest_sha256, model
and config, dataset name and fingerprint, batch_size, learning_rate, steps T, k, keep_pairs, the
trace's platform id), "platform" (the attacking platform's fingerprint), "steps",
"forging_fractions" (label as given, num_replaced m, forging_fraction m/b), "files" (the arrays
above), "seconds", and "results": one entry per step and fraction with min/mean/max over runs of
the re-scored approximation error, min/mean of the engine error (null for zhang), and the step's
reproduction_error.
"""

import dataclasses
import datetime
import json
import os
import shutil
import tempfile
import sys
import time

import numpy as np
from absl import logging

import forging_tf
from forging_tf import attack_engine
from forging_tf import attacks
from forging_tf import data
from forging_tf import errors
from forging_tf import platform as platform_lib
from forging_tf import sgd_step
from forging_tf import trace as trace_lib

FORMAT_VERSION = 1
RESULTS_KIND = "forging_tf.attack_results"
SUMMARY = "summary.json"
VECTORISED = "vectorised"
SEQUENTIAL = "sequential"
ENGINES = (VECTORISED, SEQUENTIAL)


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
    return {"label": self.label, "num_replaced": self.num_replaced,
            "forging_fraction": self.forging_fraction}


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
      raise errors.ConfigError(f"forging fraction {text!r} is neither a number in (0, 1] nor "
                               "'1/b' / 'N/b'") from None
    fractions.append(ForgingFraction(text, attacks.num_replaced(value, batch_size), batch_size))
  seen = {}
  for fraction in fractions:
    if fraction.num_replaced in seen:
      raise errors.ConfigError(f"forging fractions {seen[fraction.num_replaced]} and "
                               f"{fraction.label} both replace {fraction.num_replaced} of "
                               f"b={batch_size} examples; drop one")
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
    raise errors.TraceError(f"{trace.path} stores every {trace.k}-th checkpoint and no pair "
                            "(i, i+1); attacks need theta_i and theta_{i+1}: use a trace with "
                            "k=1 or --keep_pairs")
  spec = spec.strip()
  if spec == "middle":
    return [int(available[np.argmin(np.abs(available - trace.steps // 2))])]
  if spec == "all":
    return [int(s) for s in available]
  try:
    steps = [int(s) for s in spec.split(",") if s.strip()]
  except ValueError:
    raise errors.ConfigError(f"--steps={spec!r} is neither 'middle', 'all' nor a comma list of "
                             "steps") from None
  stored_pairs = set(available.tolist())
  missing = [s for s in steps if s not in stored_pairs]
  if missing or not steps:
    raise errors.TraceError(f"{trace.path} has no stored pair (theta_i, theta_i+1) at step(s) "
                            f"{missing or spec!r}; attackable steps are "
                            f"{_describe_steps(available)}")
  if len(set(steps)) != len(steps):
    raise errors.ConfigError(f"--steps={spec!r} names a step twice")
  return steps


def _describe_steps(steps: np.ndarray) -> str:
  if len(steps) > 1 and np.all(np.diff(steps) == 1):
    return f"{steps[0]}..{steps[-1]}"
  return ", ".join(str(s) for s in steps[:20]) + (", ..." if len(steps) > 20 else "")


def is_attack_results(path: str) -> bool:
  try:
    with open(os.path.join(path, SUMMARY), encoding="utf-8") as f:
      return json.load(f).get("kind") == RESULTS_KIND
  except (OSError, ValueError, AttributeError):
    return False


def _check_out(out: str, overwrite: bool) -> None:
  if not os.path.exists(out):
    return
  if os.path.isdir(out) and not os.listdir(out):
    return
  if not is_attack_results(out):
    raise errors.ConfigError(f"{out} exists and does not hold attack results; choose another "
                             "--out")
  if not overwrite:
    raise errors.ConfigError(f"{out} already holds attack results; pass --overwrite to replace "
                             "them or choose another --out")


def _stats(values: np.ndarray) -> dict:
  finite = values[np.isfinite(values)]
  if not finite.size:
    return {"min": None, "mean": None, "max": None}
  return {"min": float(finite.min()), "mean": float(finite.mean()), "max": float(finite.max())}


def run_attacks(trace_path: str, dataset: data.Dataset, attack: str, steps: str,
                forging_fractions, out: str, runs: int = 3, M: int = attacks.DEFAULT_M,
                n: int = attacks.DEFAULT_POOL_SIZE, seed: int = 0, engine: str = VECTORISED,
                neighbours_k: int = attacks.DEFAULT_NEIGHBOURS, neighbours_dir: str | None = None,
                memory_budget_bytes: int = attack_engine.DEFAULT_MEMORY_BUDGET,
                platform: platform_lib.Platform = platform_lib.Platform(),
                overwrite: bool = False, progress_every_s: float = 10.0) -> dict:
  """Runs `attack` ('thudi' or 'zhang') on the trace and writes OUT (module docstring).

  steps: 'middle' | 'all' | 'i,j,...'; forging_fractions: labels ('1/b', '0.1', '1').
  neighbours_dir: where Zhang's neighbour file is cached (default: OUT's parent/neighbours).
  Returns the summary (as written to OUT/summary.json).
  """
  if attack not in attacks.ATTACKS:
    raise errors.ConfigError(f"unknown attack {attack!r}; choose one of {list(attacks.ATTACKS)}")
  if engine not in ENGINES:
    raise errors.ConfigError(f"unknown engine {engine!r}; choose one of {list(ENGINES)}")
  if runs < 1:
    raise errors.ConfigError(f"runs={runs}: at least one run is needed")
  out = os.path.abspath(out)
  _check_out(out, overwrite)
  trace = trace_lib.Trace(trace_path)
  if not trace.complete:
    raise errors.TraceError(f"{trace.path} is unfinished; finish it (run its forging-train "
                            "command again) before attacking it")
  step_list = parse_steps(steps, trace)
  fractions = parse_forging_fractions(forging_fractions, trace.batch_size)
  num_examples = dataset.x_train.shape[0]
  if attack == attacks.THUDI:
    attacks.check_thudi_settings(M, n, max(f.num_replaced for f in fractions),
                                 num_examples - trace.batch_size)
  platform_lib.apply_platform(platform)
  step_fn = sgd_step.step_for_trace(trace, dataset)
  source = sgd_step.BatchSource(dataset.x_train, dataset.y_train, dataset.num_classes)
  search = attack_engine.AttackEngine(step_fn, source, memory_budget_bytes)
  neighbours = neighbours_file = None
  if attack == attacks.ZHANG:
    neighbours_dir = neighbours_dir or os.path.join(os.path.dirname(out), "neighbours")
    began = time.perf_counter()
    neighbours, neighbours_file = attacks.load_or_compute_neighbours(dataset, neighbours_k,
                                                                     neighbours_dir)
    logging.info("nearest neighbours (top %d) of %s: %s (%.1f s)", neighbours_k, dataset.name,
                 neighbours_file, time.perf_counter() - began)
  fingerprint = platform_lib.platform_fingerprint(platform)

  shape = (len(step_list), len(fractions), runs)
  b = trace.batch_size
  approximation = np.full(shape, np.nan)
  engine_errors = np.full(shape, np.nan)
  seconds = np.zeros(shape)
  forged_batches = np.zeros(shape + (b,), np.int32)
  deleted_mask = np.zeros(shape + (b,), bool)
  candidate_errors = np.full(shape + (M,), np.nan) if attack == attacks.THUDI else None
  reproduction = np.zeros(len(step_list))
  logging.info("%s attack on %s (%s, b=%d): %d step(s), fractions %s, %d run(s), engine %s, "
               "platform %s -> %s", attack, trace.path, trace.manifest["model"]["name"], b,
               len(step_list), ",".join(f.label for f in fractions), runs,
               engine if attack == attacks.THUDI else "-", fingerprint["id"], out)
  began = last_report = time.perf_counter()
  done, total = 0, int(np.prod(shape))
  for s, step in enumerate(step_list):
    theta, theta_next, batch = trace.checkpoint(step), trace.checkpoint(step + 1), trace.batch(step)
    reproduction[s] = search.approximation_error(theta, theta_next, batch)
    for f, fraction in enumerate(fractions):
      for r in range(runs):
        cell_began = time.perf_counter()
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [seed, step, fraction.num_replaced, r])))
        positions = attacks.deletion_positions(b, fraction.num_replaced, rng)
        if attack == attacks.THUDI:
          forgery = attacks.thudi_attack(search, step, theta, theta_next, batch, positions, M, n,
                                         rng, sequential=engine == SEQUENTIAL)
          candidate_errors[s, f, r] = forgery.candidate_errors
        else:
          forgery = attacks.zhang_attack(search, step, theta, theta_next, batch, positions,
                                         neighbours)
        approximation[s, f, r] = forgery.approximation_error
        engine_errors[s, f, r] = forgery.engine_error
        forged_batches[s, f, r] = forgery.forged_batch
        deleted_mask[s, f, r, positions] = True
        seconds[s, f, r] = time.perf_counter() - cell_began
        done += 1
        now = time.perf_counter()
        if now - last_report >= progress_every_s or done == total:
          last_report = now
          logging.info("%d/%d  step %d, fraction %s, run %d: approximation error %.6g "
                       "(reproduction %.3g)  %.1f s/attack, ETA %.0f s", done, total, step,
                       fraction.label, r, forgery.approximation_error, reproduction[s],
                       (now - began) / done, (total - done) * (now - began) / done)

  results = []
  for s, step in enumerate(step_list):
    for f, fraction in enumerate(fractions):
      error, engine_stats = _stats(approximation[s, f]), _stats(engine_errors[s, f])
      results.append({
          "step": step, **fraction.as_dict(),
          "min_approximation_error": error["min"], "mean_approximation_error": error["mean"],
          "max_approximation_error": error["max"],
          "min_engine_error": engine_stats["min"], "mean_engine_error": engine_stats["mean"],
          "reproduction_error": float(reproduction[s]),
      })
  manifest = trace.manifest
  summary = {
      "kind": RESULTS_KIND,
      "format_version": FORMAT_VERSION,
      "package_version": forging_tf.__version__,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": " ".join(sys.argv),
      "attack": attack,
      "settings": {
          "runs": runs, "seed": seed,
          "M": M if attack == attacks.THUDI else None,
          "n": n if attack == attacks.THUDI else None,
          "engine": engine if attack == attacks.THUDI else None,
          "memory_budget_bytes": int(memory_budget_bytes),
          "neighbours_k": neighbours_k if attack == attacks.ZHANG else None,
          "neighbours_file": neighbours_file,
          "neighbour_metric": attacks.NEIGHBOUR_METRIC if attack == attacks.ZHANG else None,
          "deletion_set": "m = round(f * b) positions of B_i, uniform without replacement, from "
                          "PCG64(SeedSequence([seed, step, m, run]))",
          "replacements_from": "D \\ B_i",
      },
      "trace": {
          "path": trace.path, "manifest_sha256": manifest["manifest_sha256"],
          "model": manifest["model"]["name"], "model_config": manifest["model"]["config"],
          "dataset": manifest["dataset"]["name"],
          "dataset_fingerprint": manifest["dataset"]["fingerprint"],
          "batch_size": trace.batch_size, "learning_rate": trace.learning_rate,
          "steps": trace.steps, "k": trace.k, "keep_pairs": trace.keep_pairs,
          "platform_id": manifest["platform"].get("id"),
      },
      "platform": fingerprint,
      "steps": step_list,
      "forging_fractions": [f.as_dict() for f in fractions],
      "seconds": time.perf_counter() - began,
      "files": {
          "approximation_error.npy": "float64 [S, F, R] re-scored with SGDStep",
          "engine_error.npy": "float64 [S, F, R] the search's number for the winner (nan: none)",
          "forged_batches.npy": "int32 [S, F, R, b] forged batches, dataset indices",
          "deleted_mask.npy": "bool [S, F, R, b] positions of U in B_i",
          "reproduction_error.npy": "float64 [S] logged batch recomputed on this platform",
          "seconds.npy": "float64 [S, F, R] wall time per attack",
      },
      "results": results,
  }
  arrays = {"approximation_error": approximation, "engine_error": engine_errors,
            "forged_batches": forged_batches, "deleted_mask": deleted_mask,
            "reproduction_error": reproduction, "seconds": seconds}
  if candidate_errors is not None:
    arrays["candidate_errors"] = candidate_errors
    summary["files"]["candidate_errors.npy"] = "float64 [S, F, R, M] every candidate's error"
  _write_results(out, summary, arrays, overwrite)
  return summary


def _write_results(out: str, summary: dict, arrays: dict, overwrite: bool) -> None:
  """Writes OUT whole: into a hidden sibling folder, then renamed into place."""
  _check_out(out, overwrite)  # again: another run may have written OUT meanwhile
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.writing-", dir=parent)
  try:
    os.chmod(staging, 0o755)  # mkdtemp makes it private; results are for everyone to read
    for name, array in arrays.items():
      np.save(os.path.join(staging, f"{name}.npy"), array, allow_pickle=False)
    with open(os.path.join(staging, SUMMARY), "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=1)
      f.write("\n")
    if os.path.exists(out):
      shutil.rmtree(out)
    os.replace(staging, out)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
