"""The verifier's threshold from data: policies fitted to saved reproduction errors, their honest
false-reject rate estimated by leaving one platform pair out, and the forged steps they accept.

Inputs are saved results (forging-recompute and forging-attack folders, found by
report.saved_results), grouped by model = (model, dataset, batch size):

- honest steps: each reproduction-error result is one platform pair (the trace's generating
  platform, the recomputing one); its summary.json gives, per recomputed step, the largest l2
  distance over repeats (`max_l2_per_step`) and, in results of forging_tf 0.2 on,
  ||theta_{i+k} - theta_i|| of the logged checkpoints (`update_l2_per_step`). Results of one
  pair (the same two platform ids) are pooled.
- forged steps: each attack result's re-scored approximation error per (step, fraction, run),
  `approximation_error.npy` [S, F, R]; a result saved without its arrays is judged from its
  summary's min and max over runs, which bounds how many runs were accepted (accepted_low ..
  accepted_high). The update norm at an attacked step comes from the attack's `update_l2.npy`
  [S], else from a reproduction result of the same trace (manifest digest, k = 1) that
  recomputed that step; else a relative policy does not judge that cell.

For each policy of policies.SWEEP and model:
- value: fitted on every pair of the model;
- leave one pair out (LOPO): fitted on the other pairs, the fraction of the held-out pair's
  steps it rejects; mean and max over held-out pairs. One pair alone cannot be held out: LOPO
  is then impossible and nothing is recommended;
- forged accepted: the attack cells whose score is at most the value, per attack and fraction.

The recommendation for a target false-reject rate: among policies whose LOPO max over held-out
pairs is at most the target, the one accepting the fewest forged cells in the worst case (cells
it cannot judge count as accepted), ties to the tighter threshold (the smaller epsilon, for a
relative policy at the model's median honest update norm), then the higher quantile.
forging-verify --epsilon_from uses it, or the paper's max rule when nothing could be recommended
(the record says why).

No TensorFlow: numpy, JSON and matplotlib only.
"""

import dataclasses
import os

import numpy as np

from forging_tf import errors
from forging_tf import results
from forging_tf import storage
from forging_tf.calibrate import plotting
from forging_tf.calibrate import policies as policies_lib
from forging_tf.report import platforms
from forging_tf.report import saved_results
from forging_tf.report import table_builders

KIND = results.ResultKind.CALIBRATION
RECORD = results.RECORDS[KIND].file_name
_NO_PAIR_NORMS = (
    "relative policies skip these reproduction results: no update_l2_per_step (written before "
    "forging-recompute recorded update norms)"
)
_NO_ATTACK_NORMS = (
    "relative policies do not judge some steps of these attack results: no update_l2.npy beside "
    "them and no reproduction result of their trace (k = 1) with update_l2_per_step at the step"
)
_NO_RUNS = (
    "saved without approximation_error.npy: the runs accepted are bounded by the summary's min "
    "and max over runs"
)
# Header fields that differ between two runs of the same calibration.
_RUN_FIELDS = ("created", "command", "package_version")


@dataclasses.dataclass(frozen=True)
class ModelKey:
  """What a threshold is calibrated for: the model, its data and the batch size."""

  model: str
  dataset: str
  batch_size: int

  def label(self) -> str:
    return f"{saved_results.model_label(self.model, self.dataset)}, b = {self.batch_size}"


@dataclasses.dataclass(frozen=True)
class PlatformPair:
  """The honest steps of one platform pair (generating platform id, recomputing platform id).

  distances: float64 [N], per recomputed step the largest l2 over repeats, the pair's results
  one after another; update_l2: float64 [N], ||theta_{i+k} - theta_i||, nan for the steps of a
  result that did not record it; results: the result.json files; without_update_l2: those of
  them that did not record update norms (results of forging_tf before 0.2).
  """

  generator: str
  recomputer: str
  results: tuple[str, ...]
  distances: np.ndarray
  update_l2: np.ndarray
  without_update_l2: tuple[str, ...] = ()
  label: str = ""

  @property
  def same_platform(self) -> bool:
    return self.generator == self.recomputer

  def describe(self) -> str:
    """'cpu t2 onednn -> cpu t2 (cdae4c -> e5e2a7)': platform labels (report.platforms), ids."""
    ids = f"{self.generator[:6]} -> {self.recomputer[:6]}"
    return f"{self.label} ({ids})" if self.label else ids


@dataclasses.dataclass(frozen=True)
class AttackCells:
  """The forged steps of one attack result.

  errors: float64 [S, F, R] approximation errors per run, or None when the result was saved
  without its arrays; then error_min and error_max [S, F] (over runs) bound the runs accepted.
  update_l2: float64 [S], ||theta_{i+1} - theta_i|| at each attacked step (nan: unknown).
  update_l2_from: where the norms came from ("attack", "reproduction", or None).
  attack: the family the cells count under (saved_results.attack_family: the attack, and the
  margin D where it kept one, so that no search against a margin is counted as the paper's).
  """

  path: str
  attack: str
  manifest_sha256: str
  steps: np.ndarray
  fractions: tuple[dict, ...]
  runs: int
  errors: np.ndarray | None
  error_min: np.ndarray
  error_max: np.ndarray
  update_l2: np.ndarray
  update_l2_from: str | None


@dataclasses.dataclass(frozen=True)
class ForgedCount:
  """Attack cells (step, fraction, run): how many, how many a policy could score (judged), and
  how many it accepted (between accepted_low and accepted_high when only min/max are saved)."""

  cells: int = 0
  judged: int = 0
  accepted_low: int = 0
  accepted_high: int = 0

  def __add__(self, other: "ForgedCount") -> "ForgedCount":
    return ForgedCount(
        *(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other)))
    )

  @property
  def worst_case(self) -> float | None:
    """The accepted fraction if every cell not judged was accepted (None: no cells)."""
    if not self.cells:
      return None
    return (self.accepted_high + self.cells - self.judged) / self.cells

  @property
  def best_case(self) -> float | None:
    return self.accepted_low / self.cells if self.cells else None

  def describe(self) -> str:
    """'3/20', '1..4/20', '0/20 (+5 not judged)', 'n/a'."""
    if not self.cells:
      return "n/a"
    accepted = (
        f"{self.accepted_low}"
        if self.accepted_low == self.accepted_high
        else f"{self.accepted_low}..{self.accepted_high}"
    )
    unjudged = self.cells - self.judged
    return f"{accepted}/{self.cells}" + (f" (+{unjudged} not judged)" if unjudged else "")

  def as_dict(self) -> dict:
    return dataclasses.asdict(self) | {
        "worst_case": self.worst_case,
        "best_case": self.best_case,
    }


@dataclasses.dataclass(frozen=True)
class ForgedAcceptance:
  """Forged cells accepted by a fitted policy: by (attack, forging fraction label, fraction)."""

  by_fraction: dict[tuple[str, str, float], ForgedCount]

  @property
  def total(self) -> ForgedCount:
    return sum(self.by_fraction.values(), ForgedCount())

  def by_attack(self) -> dict[str, ForgedCount]:
    totals = {}
    for (attack, _, _), count in self.by_fraction.items():
      totals[attack] = totals.get(attack, ForgedCount()) + count
    return totals


@dataclasses.dataclass(frozen=True)
class HeldOut:
  """One platform pair left out: the threshold fitted without it, the tightest one that keeps
  every honest step of it (its own largest score), and the fraction of its steps rejected."""

  pair: PlatformPair
  steps: int
  threshold: float
  own_max: float
  false_reject: float


@dataclasses.dataclass(frozen=True)
class PolicyEvaluation:
  """A policy on one model. value: fitted on every pair it can score (None: none);
  held_out: LOPO, one per pair (empty when impossible: lopo_note says why)."""

  policy: policies_lib.Policy
  value: float | None
  pairs: int
  steps: int
  held_out: tuple[HeldOut, ...]
  lopo_note: str | None
  forged: ForgedAcceptance | None

  @property
  def false_reject_mean(self) -> float | None:
    return float(np.mean([h.false_reject for h in self.held_out])) if self.held_out else None

  @property
  def false_reject_max(self) -> float | None:
    return max((h.false_reject for h in self.held_out), default=None)

  def typical_epsilon(self, typical_update_l2: float | None) -> float:
    """epsilon, or for a relative policy its ratio times the model's median honest update
    norm: how tight the threshold is, comparable across policies."""
    if not self.policy.relative:
      return self.value
    return self.value * typical_update_l2 if typical_update_l2 is not None else np.inf


@dataclasses.dataclass(frozen=True)
class ModelCalibration:
  """Every policy evaluated on one model, and the threshold recommended for it.

  recommended: None when LOPO is impossible or no policy met the target (note says which).
  typical_update_l2: the median honest update norm (None: no result recorded one).
  notes: reason -> the result files it concerns: what a policy could not use, and how runs
  known only by their min and max were counted.
  """

  key: ModelKey
  pairs: tuple[PlatformPair, ...]
  attacks: tuple[AttackCells, ...]
  evaluations: tuple[PolicyEvaluation, ...]
  recommended: PolicyEvaluation | None
  note: str
  typical_update_l2: float | None
  notes: dict[str, tuple[str, ...]]

  @property
  def paper_max(self) -> PolicyEvaluation:
    return next(e for e in self.evaluations if isinstance(e.policy, policies_lib.MaxDistance))

  @property
  def lopo_possible(self) -> bool:
    return len(self.pairs) >= 2

  @property
  def verifier_threshold(self) -> PolicyEvaluation:
    """What forging-verify --epsilon_from uses: the recommendation, else the paper's max."""
    return self.recommended or self.paper_max


@dataclasses.dataclass(frozen=True)
class Calibration:
  """Thresholds for every model with reproduction-error results under results_dirs.

  unmatched_attacks: attack results of models without any reproduction-error result.
  without_steps: reproduction-error records without the summary.json that holds their per-step
  distances (a copy of the record alone): they cannot be calibrated on and are left out.
  top_q: reproduction-error results of proof-of-learning's verifier (forging-recompute --top_q),
  left out: they recompute a chosen subset of a trace's steps, which would weigh those steps
  twice next to the pair's full recomputation and bias the pooled distances towards large updates.
  """

  results_dirs: tuple[str, ...]
  target_false_reject: float
  sweep: tuple[policies_lib.Policy, ...]
  models: tuple[ModelCalibration, ...]
  unmatched_attacks: tuple[str, ...]
  without_steps: tuple[str, ...] = ()
  top_q: tuple[str, ...] = ()


# Reading saved results ----------------------------------------------------------------------


def _model_key(record: dict) -> ModelKey:
  trace = record["trace"]
  return ModelKey(trace["model"], trace["dataset"], int(trace["batch_size"]))


def _per_step(summary: dict, name: str, steps: int, path: str) -> np.ndarray:
  values = np.asarray(summary[name], np.float64)
  if values.shape != (steps,):
    raise errors.ForgingError(
        f"{path}: {name} has {values.size} values for {steps} steps; the result is damaged, "
        "run forging-recompute again"
    )
  return values


def _reproduction_summary(record: dict) -> dict:
  """The per-step lists of the summary.json a reproduction-error record carries, checked."""
  path = os.path.join(os.path.dirname(record["path"]), "summary.json")
  summary = record["summary"]
  missing = results.missing_field(summary, ("steps", "max_l2_per_step"))
  if missing:
    raise errors.ForgingError(f"{path} has no {missing}: run forging-recompute again")
  steps = len(summary["steps"])
  return {
      "path": path,
      "steps": np.asarray(summary["steps"], np.int64),
      "distances": _per_step(summary, "max_l2_per_step", steps, path),
      "update_l2": (
          _per_step(summary, "update_l2_per_step", steps, path)
          if "update_l2_per_step" in summary
          else None
      ),
  }


def _platform_pairs(records: list[tuple[dict, dict]]) -> tuple[PlatformPair, ...]:
  """The reproduction results of one model, pooled by platform pair (in order of first result)."""
  pooled: dict[tuple[str, str], list] = {}
  for record, summary in records:
    pair = (record["generator_platform"]["id"], record["platform"]["id"])
    pooled.setdefault(pair, []).append((record["path"], summary))
  labels = platforms.platform_labels(
      [r[side] for r, _ in records for side in ("generator_platform", "platform")]
  )
  return tuple(
      PlatformPair(
          generator,
          recomputer,
          tuple(path for path, _ in members),
          np.concatenate([s["distances"] for _, s in members]),
          np.concatenate(
              [
                  s["update_l2"] if s["update_l2"] is not None else np.full(len(s["steps"]), np.nan)
                  for _, s in members
              ]
          ),
          tuple(path for path, s in members if s["update_l2"] is None),
          f"{labels[generator]} -> {labels[recomputer]}",
      )
      for (generator, recomputer), members in pooled.items()
  )


def _update_l2_npy(folder: str, steps: int) -> np.ndarray | None:
  """An attack's update_l2.npy [S] (None: not saved, as by attacks before forging_tf 0.2)."""
  path = os.path.join(folder, "update_l2.npy")
  if not os.path.exists(path):
    return None
  try:
    array = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise errors.ForgingError(f"{path} is damaged ({e}); run forging-attack again") from e
  if array.shape != (steps,):
    raise errors.ForgingError(
        f"{path} has shape {list(array.shape)} for {steps} attacked steps; run forging-attack again"
    )
  return array.astype(np.float64)


def _attack_cells(record: dict, norms_by_trace: dict[str, dict[int, float]]) -> AttackCells:
  """An attack record's cells: its arrays when saved, else its summary's min/max over runs."""
  steps = np.asarray(record["steps"], np.int64)
  fractions = tuple(record["forging_fractions"])
  per_run = saved_results.attack_run_errors(record)
  if per_run is not None:
    per_run = per_run.astype(np.float64)
    runs = per_run.shape[2]
    error_min, error_max = per_run.min(axis=2), per_run.max(axis=2)
  else:
    runs = int(record["settings"]["runs"])
    error_min = np.full((len(steps), len(fractions)), np.nan)
    error_max = np.full((len(steps), len(fractions)), np.nan)
    where = {
        (int(step), int(fraction["num_replaced"])): (i, j)
        for i, step in enumerate(steps)
        for j, fraction in enumerate(fractions)
    }
    for entry in record["results"]:
      cell = where.get((int(entry["step"]), int(entry["num_replaced"])))
      if cell is not None:
        error_min[cell] = entry["min_approximation_error"]
        error_max[cell] = entry["max_approximation_error"]
  manifest = record["trace"].get("manifest_sha256", "")
  update_l2 = _update_l2_npy(os.path.dirname(record["path"]), len(steps))
  source = "attack"
  if update_l2 is None:
    known = norms_by_trace.get(manifest, {})
    update_l2 = np.array([known.get(int(s), np.nan) for s in steps])
    source = "reproduction" if np.isfinite(update_l2).any() else None
  return AttackCells(
      record["path"],
      saved_results.attack_family(record),
      manifest,
      steps,
      fractions,
      runs,
      per_run,
      error_min,
      error_max,
      update_l2,
      source,
  )


def _update_norms_by_trace(records: list[tuple[dict, dict]]) -> dict[str, dict[int, float]]:
  """manifest digest -> {step i: ||theta_{i+1} - theta_i||} from the reproduction results that
  recorded update norms. k = 1 only: for k > 1 a recorded norm spans k steps, an attacked step
  one."""
  norms: dict[str, dict[int, float]] = {}
  for record, summary in records:
    if summary["update_l2"] is not None and int(record["trace"]["k"]) == 1:
      known = norms.setdefault(record["trace"]["manifest_sha256"], {})
      known.update(zip(summary["steps"].tolist(), summary["update_l2"].tolist()))
  return norms


# Evaluating policies ------------------------------------------------------------------------


def _lopo(
    policy: policies_lib.Policy, scored: list[tuple[PlatformPair, np.ndarray]]
) -> tuple[tuple[HeldOut, ...], str | None]:
  if len(scored) < 2:
    which = f" ({scored[0][0].describe()})" if scored else ""
    return (), (
        f"LOPO impossible: {len(scored)} platform pair{'' if len(scored) == 1 else 's'}{which} "
        f"that {policy.describe()} can score; a held-out pair needs another to fit on"
    )
  held_out = []
  for i, (pair, scores) in enumerate(scored):
    others = np.concatenate([s for j, (_, s) in enumerate(scored) if j != i])
    threshold = policy.fit(others)
    held_out.append(
        HeldOut(
            pair, scores.size, threshold, float(scores.max()), float(np.mean(scores > threshold))
        )
    )
  return tuple(held_out), None


def _forged_count(
    policy: policies_lib.Policy, value: float, attack: AttackCells, f: int
) -> ForgedCount:
  """The cells of fraction index f of `attack` that `policy` at `value` accepts; without
  per-run errors, a step whose min over runs is accepted and max is not has between 1 and R - 1
  runs accepted."""
  if attack.errors is not None:
    scores = policy.scores(attack.errors[:, f], attack.update_l2[:, None])
    judged = ~np.isnan(scores)
    accepted = int(np.sum(judged & (scores <= value)))
    return ForgedCount(scores.size, int(judged.sum()), accepted, accepted)
  lowest = policy.scores(attack.error_min[:, f], attack.update_l2)
  highest = policy.scores(attack.error_max[:, f], attack.update_l2)
  judged = ~(np.isnan(lowest) | np.isnan(highest))
  every_run = judged & (highest <= value)
  some_runs = judged & (lowest <= value) & ~every_run
  runs = attack.runs
  return ForgedCount(
      len(attack.steps) * runs,
      int(judged.sum()) * runs,
      int(every_run.sum()) * runs + int(some_runs.sum()),
      int(every_run.sum()) * runs + int(some_runs.sum()) * (runs - 1),
  )


def _forged(
    policy: policies_lib.Policy, value: float, attacks: tuple[AttackCells, ...]
) -> ForgedAcceptance:
  by_fraction: dict[tuple[str, str, float], ForgedCount] = {}
  for attack in attacks:
    for f, fraction in enumerate(attack.fractions):
      key = (attack.attack, fraction["label"], float(fraction["forging_fraction"]))
      by_fraction[key] = by_fraction.get(key, ForgedCount()) + _forged_count(
          policy, value, attack, f
      )
  return ForgedAcceptance(dict(sorted(by_fraction.items(), key=lambda item: item[0][::2])))


def evaluate(
    policy: policies_lib.Policy,
    pairs: tuple[PlatformPair, ...],
    attacks: tuple[AttackCells, ...] = (),
) -> PolicyEvaluation:
  """One policy on one model's platform pairs and attack cells (module docstring).

  Args:
    policy: the threshold policy (policies.py).
    pairs: the model's platform pairs; those the policy cannot score (no update norms for a
      relative policy) are left out.
    attacks: the model's attack results.

  Returns:
    The value fitted on every scored pair, LOPO over them, and the forged cells accepted.
  """
  scored = []
  for pair in pairs:
    scores = policy.scores(pair.distances, pair.update_l2)
    scores = scores[~np.isnan(scores)]
    if scores.size:
      scored.append((pair, scores))
  if not scored:
    return PolicyEvaluation(
        policy,
        None,
        0,
        0,
        (),
        f"{policy.describe()} cannot score any platform pair of this model",
        None,
    )
  value = policy.fit(np.concatenate([s for _, s in scored]))
  held_out, note = _lopo(policy, scored)
  return PolicyEvaluation(
      policy,
      value,
      len(scored),
      sum(s.size for _, s in scored),
      held_out,
      note,
      _forged(policy, value, attacks),
  )


def _recommend(
    evaluations: tuple[PolicyEvaluation, ...],
    target: float,
    typical_update_l2: float | None,
    lopo_possible: bool,
) -> tuple[PolicyEvaluation | None, str]:
  if not lopo_possible:
    return None, (
        "LOPO is impossible with one platform pair, so no threshold's "
        "false-reject rate can be estimated"
    )
  meeting = [
      (i, e)
      for i, e in enumerate(evaluations)
      if e.false_reject_max is not None and e.false_reject_max <= target
  ]
  if not meeting:
    closest = min(
        (e for e in evaluations if e.false_reject_max is not None),
        key=lambda e: e.false_reject_max,
    )
    return None, (
        f"no policy kept the LOPO false-reject rate of every held-out pair <= "
        f"{target:g}; the lowest max was {_percent(closest.false_reject_max)} "
        f"({closest.policy.describe()})"
    )

  def rank(item):
    i, e = item
    total = e.forged.total
    return (
        total.worst_case if total.cells else 0.0,
        total.best_case if total.cells else 0.0,
        e.typical_epsilon(typical_update_l2),
        -(e.policy.parameter or 1.0),  # Equal thresholds: the higher quantile, the plainer rule.
        i,
    )

  _, best = min(meeting, key=rank)
  return best, (
      f"{best.policy.describe()}: of the {len(meeting)} policies and parameters whose LOPO "
      f"false-reject rate stayed <= {target:g} on every held-out pair, the one accepting the "
      "fewest forged cells (then the tightest)"
  )


def calibrate_model(
    key: ModelKey,
    pairs: tuple[PlatformPair, ...],
    attacks: tuple[AttackCells, ...],
    target_false_reject: float,
    sweep: tuple[policies_lib.Policy, ...] = policies_lib.SWEEP,
) -> ModelCalibration:
  """Every policy of `sweep` on one model (evaluate) and the recommendation for the target."""
  evaluations = tuple(evaluate(policy, pairs, attacks) for policy in sweep)
  if not any(isinstance(p, policies_lib.MaxDistance) for p in sweep):
    evaluations += (evaluate(policies_lib.MaxDistance(), pairs, attacks),)
  norms = np.concatenate([p.update_l2 for p in pairs])
  norms = norms[np.isfinite(norms)]
  typical = float(np.median(norms)) if norms.size else None
  lopo_possible = len(pairs) >= 2
  recommended, note = _recommend(
      tuple(e for e in evaluations if e.value is not None),
      target_false_reject,
      typical,
      lopo_possible,
  )
  relative = any(policy.relative for policy in sweep)
  notes = {
      _NO_PAIR_NORMS: tuple(path for p in pairs for path in p.without_update_l2)
      if relative
      else (),
      _NO_ATTACK_NORMS: tuple(a.path for a in attacks if relative and np.isnan(a.update_l2).any()),
      _NO_RUNS: tuple(a.path for a in attacks if a.errors is None),
  }
  return ModelCalibration(
      key,
      pairs,
      attacks,
      evaluations,
      recommended,
      note,
      typical,
      {reason: paths for reason, paths in notes.items() if paths},
  )


def calibrate(
    results_dirs: list[str],
    target_false_reject: float = 0.0,
    sweep: tuple[policies_lib.Policy, ...] = policies_lib.SWEEP,
    paper_attacks_only: bool = False,
) -> Calibration:
  """Thresholds for every model with reproduction-error results under `results_dirs`.

  Args:
    results_dirs: folders whose saved results are read (report.saved_results).
    target_false_reject: the honest false-reject rate allowed, in [0, 1], judged by the LOPO
      max over held-out pairs (0: every held-out honest step accepted).
    sweep: the policies and parameters evaluated (policies.SWEEP).
    paper_attacks_only: judge only the paper's attacks (saved_results.paper_attacks: Thudi's and
      Zhang's with no margin), as REPORT.md's "Choosing epsilon" does beside Table III; else
      every attack, one family per attack and margin.

  Returns:
    The Calibration (write() saves it).

  Raises:
    ConfigError: a folder is missing, there are no results, no reproduction-error results, or
      the target is out of range.
    ForgingError: a result cannot be read or is inconsistent (named).
  """
  if not 0 <= target_false_reject <= 1:
    raise errors.ConfigError(
        f"the target false-reject rate must lie in [0, 1], got {target_false_reject}"
    )
  found = saved_results.find_results(list(results_dirs))
  if not found.reproduction:
    raise errors.ConfigError(
        f"no reproduction-error results under {', '.join(results_dirs)} (found "
        f"{len(found.attacks)} attack results); run forging-recompute --out=DIR on a trace first"
    )
  without_steps = tuple(r["path"] for r in found.reproduction if r["summary"] is None)
  top_q = tuple(r["path"] for r in found.reproduction if r["summary"] and r["summary"].get("top_q"))
  reproductions = [
      (record, _reproduction_summary(record))
      for record in found.reproduction
      if record["summary"] is not None and not record["summary"].get("top_q")
  ]
  if not reproductions:
    raise errors.ConfigError(
        f"no reproduction-error result under {', '.join(results_dirs)} has its summary.json "
        "(the per-step distances); copy the result folders whole"
    )
  norms = _update_norms_by_trace(reproductions)
  by_model: dict[ModelKey, list] = {}
  for record, summary in reproductions:
    by_model.setdefault(_model_key(record), []).append((record, summary))
  attacks: dict[ModelKey, list[AttackCells]] = {}
  unmatched = []
  for record in found.paper_attacks if paper_attacks_only else found.attacks:
    key = _model_key(record)
    if key in by_model:
      attacks.setdefault(key, []).append(_attack_cells(record, norms))
    else:
      unmatched.append(record["path"])
  models = []
  for key in sorted(by_model, key=lambda k: (k.model, k.dataset, k.batch_size)):
    models.append(
        calibrate_model(
            key,
            _platform_pairs(by_model[key]),
            tuple(attacks.get(key, ())),
            target_false_reject,
            sweep,
        )
    )
  return Calibration(
      tuple(results_dirs),
      float(target_false_reject),
      tuple(sweep),
      tuple(models),
      tuple(unmatched),
      without_steps,
      top_q,
  )


# The record, the table and the figure --------------------------------------------------------


def _policy_json(policy: policies_lib.Policy) -> dict:
  return {"policy": policy.name, "parameter": policy.parameter, "relative": policy.relative}


def _estimate_json(e: PolicyEvaluation) -> dict:
  total = e.forged.total if e.forged else ForgedCount()
  return _policy_json(e.policy) | {
      "value": e.value,
      "lopo_false_reject_mean": e.false_reject_mean,
      "lopo_false_reject_max": e.false_reject_max,
      "forged_accepted": total.as_dict(),
  }


def _evaluation_json(e: PolicyEvaluation) -> dict:
  return _policy_json(e.policy) | {
      "value": e.value,
      "pairs": e.pairs,
      "steps": e.steps,
      "lopo": (
          {
              "false_reject_mean": e.false_reject_mean,
              "false_reject_max": e.false_reject_max,
              "held_out": [
                  {
                      "generator": h.pair.generator,
                      "recomputer": h.pair.recomputer,
                      "steps": h.steps,
                      "threshold_without_it": h.threshold,
                      "own_max": h.own_max,
                      "false_reject": h.false_reject,
                  }
                  for h in e.held_out
              ],
          }
          if e.held_out
          else None
      ),
      "lopo_note": e.lopo_note,
      "forged_accepted": (
          None
          if e.forged is None
          else e.forged.total.as_dict()
          | {
              "by_attack": {name: c.as_dict() for name, c in e.forged.by_attack().items()},
              "by_fraction": [
                  {"attack": attack, "label": label, "forging_fraction": fraction} | count.as_dict()
                  for (attack, label, fraction), count in e.forged.by_fraction.items()
              ],
          }
      ),
  }


def _model_json(m: ModelCalibration) -> dict:
  chosen = m.verifier_threshold
  return {
      "model": m.key.model,
      "dataset": m.key.dataset,
      "batch_size": m.key.batch_size,
      "label": m.key.label(),
      "pairs": [
          {
              "generator": p.generator,
              "recomputer": p.recomputer,
              "label": p.label,
              "same_platform": p.same_platform,
              "results": list(p.results),
              "steps": int(p.distances.size),
              "max_distance": float(p.distances.max()),
              "steps_with_update_l2": int(np.isfinite(p.update_l2).sum()),
          }
          for p in m.pairs
      ],
      "attacks": [
          {
              "path": a.path,
              "attack": a.attack,
              "manifest_sha256": a.manifest_sha256,
              "steps": a.steps.tolist(),
              "forging_fractions": [f["label"] for f in a.fractions],
              "runs": a.runs,
              "per_run": a.errors is not None,
              "update_l2_from": a.update_l2_from,
          }
          for a in m.attacks
      ],
      "lopo_possible": m.lopo_possible,
      "typical_update_l2": m.typical_update_l2,
      "notes": [{"reason": reason, "results": list(paths)} for reason, paths in m.notes.items()],
      "policies": [_evaluation_json(e) for e in m.evaluations],
      "recommended": _estimate_json(m.recommended) if m.recommended else None,
      "recommendation": m.note,
      "paper_max": _estimate_json(m.paper_max),
      "verifier_threshold": _policy_json(chosen.policy)
      | {
          "value": chosen.value,
          "basis": (
              "recommended"
              if m.recommended
              else f"the paper's max rule (none recommended: {m.note})"
          ),
      },
  }


def record(calibration: Calibration, command: str | None = None) -> dict:
  """calibration.json: the header (kind forging_tf.calibration, platform null: nothing was
  computed on a platform) and every number of the calibration (docs/CALIBRATION.md)."""
  return results.header(KIND, command, None) | {
      "results": list(calibration.results_dirs),
      "target_false_reject": calibration.target_false_reject,
      "sweep": [_policy_json(p) for p in calibration.sweep],
      "models": [_model_json(m) for m in calibration.models],
      "unmatched_attacks": list(calibration.unmatched_attacks),
      "without_steps": list(calibration.without_steps),
      "top_q": list(calibration.top_q),
  }


def _fmt(value: float | None) -> str:
  return table_builders.format_error(value) if value is None or np.isfinite(value) else "inf"


def _precise(value: float) -> str:
  """Enough digits to tell a held-out pair's own max from the threshold fitted without it."""
  return "0" if value == 0 else f"{value:.8e}"


def _percent(value: float | None) -> str:
  return "n/a" if value is None else f"{100 * value:.2f} %"


def _threshold_text(e: PolicyEvaluation) -> str:
  if e.value is None:
    return "n/a"
  return f"c = {_fmt(e.value)} x update norm" if e.policy.relative else _fmt(e.value)


def _estimate_text(e: PolicyEvaluation) -> str:
  total = e.forged.total
  forged = "no attack results" if not total.cells else f"forged cells accepted {total.describe()}"
  return (
      f"{e.policy.describe()}: {'ratio' if e.policy.relative else 'epsilon'} "
      f"{_threshold_text(e)}; LOPO false reject mean {_percent(e.false_reject_mean)}, max "
      f"{_percent(e.false_reject_max)}; {forged}"
  )


def summary_line(model: ModelCalibration) -> str:
  """One line on a model: its pairs, the recommendation (or why none) and the paper's max."""
  pairs = f"{len(model.pairs)} platform pair{'s' if len(model.pairs) != 1 else ''}"
  chosen = (
      f"recommended {_estimate_text(model.recommended)}"
      if model.recommended
      else f"recommended: none ({model.note}; forging-verify --epsilon_from uses the paper's max)"
  )
  return f"{pairs}; {chosen}; paper's {_estimate_text(model.paper_max)}"


def markdown(calibration: Calibration) -> str:
  """calibration.md: per model, every policy's threshold, LOPO false-reject rates and forged
  cells accepted; the recommendation next to the paper's max rule."""
  lines = [
      "# The verifier's threshold, calibrated",
      "",
      f"From the results under {', '.join(f'`{d}`' for d in calibration.results_dirs)}. Target: "
      f"held-out honest steps rejected <= {calibration.target_false_reject:g} on every held-out "
      "platform pair (LOPO max). Forged cells: (step, forging fraction, run) of the attacks; "
      "`a..b/n`: between a and b of n accepted (only min and max over runs were saved). "
      "See docs/CALIBRATION.md.",
      "",
  ]
  for m in calibration.models:
    families = sorted({a.attack for a in m.attacks})
    same = sum(p.same_platform for p in m.pairs)
    steps = sum(p.distances.size for p in m.pairs)
    lines += [
        f"## {m.key.label()}",
        "",
        f"{len(m.pairs)} platform pair{'s' if len(m.pairs) != 1 else ''} ({same} same-platform), "
        f"{steps} honest steps; {len(m.attacks)} attack results"
        + (f" ({', '.join(families)})" if families else "")
        + ".",
        "",
        "- Recommended: "
        + (
            _estimate_text(m.recommended)
            if m.recommended
            else f"none: {m.note}; forging-verify --epsilon_from uses the paper's max"
        ),
        f"- Paper's max rule: {_estimate_text(m.paper_max)}",
        "",
        "| policy | epsilon / ratio | LOPO false reject mean | LOPO false reject max |"
        + "".join(f" forged accepted: {name} |" for name in families),
        "| --- | --- | --- | --- |" + " --- |" * len(families),
    ]
    for e in m.evaluations:
      if e.value is None:
        continue
      by_attack = e.forged.by_attack()
      lines.append(
          f"| {e.policy.describe()} | {_threshold_text(e)} | {_percent(e.false_reject_mean)} | "
          f"{_percent(e.false_reject_max)} |"
          + "".join(f" {by_attack.get(name, ForgedCount()).describe()} |" for name in families)
      )
    unfitted = sorted({e.policy.name for e in m.evaluations if e.value is None})
    lines += [""] + [
        f"- {name}: not fitted, it cannot score any platform pair of this model"
        for name in unfitted
    ]
    shown = [("recommended", m.recommended)] if m.recommended else []
    shown.append(("paper's max", m.paper_max))
    if m.attacks:
      lines += [
          "",
          "| attack | forging fraction | " + " | ".join(name for name, _ in shown) + " |",
          "| --- | --- |" + " --- |" * len(shown),
      ]
      for attack, label, fraction in m.paper_max.forged.by_fraction:
        lines.append(
            f"| {attack} | {label if label == f'{fraction:g}' else f'{label} ({fraction:g})'} | "
            + " | ".join(
                e.forged.by_fraction[(attack, label, fraction)].describe() for _, e in shown
            )
            + " |"
        )
    if m.paper_max.held_out:
      lines += [
          "",
          "Held-out pairs: the tightest threshold that keeps every honest step of the pair (its "
          "own max, in the policy's units) against the one fitted without it.",
          "",
          "| held-out pair (generator -> recomputer) | steps |"
          + "".join(
              f" {name}: own max | {name}: fitted without it | {name}: rejected |"
              for name, _ in shown
          ),
          "| --- | --- |" + " --- | --- | --- |" * len(shown),
      ]
      by_pair = [{h.pair.describe(): h for h in e.held_out} for _, e in shown]
      for pair in m.pairs:
        cells = []
        for held_out in by_pair:
          own = held_out.get(pair.describe())
          cells += (
              [_precise(own.own_max), _precise(own.threshold), _percent(own.false_reject)]
              if own
              else ["n/a"] * 3
          )
        lines.append(
            f"| {pair.describe()} | {pair.distances.size} |"
            + "".join(f" {cell} |" for cell in cells)
        )
    if m.notes:
      lines += ["", "Notes:", ""] + [
          f"- {reason} ({len(paths)}): "
          + ", ".join(f"`{os.path.basename(os.path.dirname(path))}`" for path in paths)
          for reason, paths in m.notes.items()
      ]
    lines.append("")
  if calibration.without_steps:
    lines += [
        "Reproduction-error records without their summary.json (no per-step distances; left "
        "out): " + ", ".join(f"`{path}`" for path in calibration.without_steps),
        "",
    ]
  if calibration.top_q:
    lines += [
        "Proof-of-learning subsets (forging-recompute --top_q), left out: "
        + ", ".join(f"`{path}`" for path in calibration.top_q),
        "",
    ]
  if calibration.unmatched_attacks:
    lines += [
        "Attack results of models without reproduction-error results (not judged): "
        + ", ".join(f"`{path}`" for path in calibration.unmatched_attacks),
        "",
    ]
  return "\n".join(lines)


def write(
    calibration: Calibration, out: str, command: str | None = None, overwrite: bool = False
) -> list[str]:
  """Writes the folder `out` whole: calibration.json (record), calibration.md (markdown) and
  tradeoff.{png,pdf} (plotting.tradeoff).

  A calibration already at `out` is replaced only if it holds the same numbers or `overwrite`;
  a folder holding anything else is refused (results.write_folder).

  Returns:
    The names of the files written.
  """
  new = record(calibration, command)
  if not overwrite:
    try:
      old = results.read_json(storage.join(out, RECORD), "")
    except errors.ForgingError:
      old = None
    overwrite = old is not None and {k: v for k, v in old.items() if k not in _RUN_FIELDS} == {
        k: v for k, v in results.json_values(new).items() if k not in _RUN_FIELDS
    }
  written = []

  def fill(folder: str) -> None:
    results.write_text(os.path.join(folder, "calibration.md"), markdown(calibration))
    written.extend(
        os.path.basename(path)
        for path in plotting.tradeoff(calibration.models, os.path.join(folder, "tradeoff"))
    )
    results.write_json(os.path.join(folder, RECORD), new)
    written[:0] = [RECORD, "calibration.md"]

  results.write_folder(out, RECORD, KIND, fill, overwrite)
  return written


# What forging-verify reads ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Threshold:
  """A model's threshold in a calibration: epsilon, or for a relative policy the ratio c with
  epsilon = c * ||theta_end - theta_start|| of the recomputed span."""

  policy: str
  parameter: float | None
  relative: bool
  value: float
  basis: str
  source: str

  def epsilon(self, update_l2: float | None = None) -> float:
    if not self.relative:
      return self.value
    if update_l2 is None:
      raise ValueError("a relative threshold needs the update norm of the step")
    return self.value * update_l2

  def describe(self, update_l2: float | None = None) -> str:
    name = self.policy if self.parameter is None else f"{self.policy}(q={self.parameter:g})"
    if not self.relative:
      return f"policy {name}, epsilon {self.value:.6g}"
    return (
        f"policy {name}, epsilon {self.value:.6g} x update norm {update_l2:.6g} = "
        f"{self.epsilon(update_l2):.6g}"
    )


def verifier_threshold(path: str, model: str, dataset: str, batch_size: int) -> Threshold:
  """The threshold a calibration (calibration.json at `path`) gives (model, dataset, b).

  Raises:
    ForgingError: the file is missing or not a calibration.
    ConfigError: it has no entry for the model (the message lists the ones it has).
  """
  calibration = results.read_record(path, KIND)
  for entry in calibration["models"]:
    if (entry["model"], entry["dataset"], entry["batch_size"]) == (model, dataset, batch_size):
      chosen = entry["verifier_threshold"]
      if chosen["value"] is None:
        break
      return Threshold(
          chosen["policy"],
          chosen["parameter"],
          chosen["relative"],
          float(chosen["value"]),
          chosen["basis"],
          path,
      )
  has = ", ".join(f"{e['model']}/{e['dataset']} b={e['batch_size']}" for e in calibration["models"])
  raise errors.ConfigError(
      f"{path} has no threshold for {model}/{dataset} b={batch_size} (it has: {has or 'none'}); "
      "calibrate on reproduction errors of that model or pass --epsilon"
  )
