"""Saved results, found and checked: every record under a results folder, by kind.

A record is a result's JSON (results.RECORDS says which file, and which fields the tables and
REPORT.md read). Records of earlier versions are read as this version writes them
(results.upgrade). A reproduction-error record carries, as "summary", the summary.json beside it
(its per-step distances). Also here: the selections the tables and figures share, among them
which attack records are the paper's (paper_attacks: Thudi's and Zhang's with no distinctness
margin, all that Table III, Figures 2, 3, 6 and R and REPORT.md's calibration read), which true
batches an attack forged (batch_mode: the trace's own, or random batches each kept fixed over
the attacked steps), and the verifier thresholds a reader can justify from the measured
reproduction errors (thresholds).
"""

import dataclasses
import os

import numpy as np

from forging_tf import errors
from forging_tf import results
from forging_tf.attacks import settings as attack_settings
from forging_tf.recompute import distribution
from forging_tf.report import platforms


def _walk_records(results_dir: str, kinds: tuple[results.ResultKind, ...]) -> dict:
  """kind -> [record + {"folder", "path"}] of every record of `kinds` under `results_dir`.

  A record is a JSON file whose (upgraded) kind is one of `kinds` and whose name is its kind's
  record file (results.RECORDS). Hidden files and folders (a result being written) are passed
  over; a record file that cannot be read, or lacks a field the tables read, is an error that
  names it.
  """
  if not os.path.isdir(results_dir):
    raise errors.ConfigError(
        f"no results folder at {results_dir}; run the experiments first or pass --results"
    )
  record_files = {results.RECORDS[kind].file_name for kind in kinds}
  found = {kind: [] for kind in kinds}
  for root, folders, names in os.walk(results_dir):
    folders[:] = sorted(f for f in folders if not f.startswith("."))
    for name in sorted(names):
      if name.startswith(".") or not name.endswith(".json"):
        continue
      path = os.path.join(root, name)
      try:
        record = results.upgrade(results.read_json(path, "result"))
      except errors.ForgingError:
        if name in record_files:
          raise
        continue  # Some other JSON file, and not readable: none of ours.
      kind = record.get("kind")
      if kind not in found or results.RECORDS[kind].file_name not in (None, name):
        continue
      record = results.checked_record(record, path, kind)
      found[kind].append(record | {"folder": os.path.relpath(root, results_dir), "path": path})
  return found


@dataclasses.dataclass(frozen=True)
class FoundResults:
  """Every saved result under some results folders (records carry their folder and path).

  table4 is the newest Table IV record (by the file's time), if any.
  """

  dirs: tuple[str, ...]
  reproduction: list[dict]  # each with "summary": the summary.json beside it, or None
  attacks: list[dict]
  exact: list[dict]
  table4: dict | None
  outliers: list[dict] = ()  # forging-explain-outliers records

  @property
  def paper_attacks(self) -> list[dict]:
    """The attack records of the paper's attacks (paper_attacks)."""
    return paper_attacks(self.attacks)


def find_results(results_dirs: list[str]) -> FoundResults:
  """Reads every result under `results_dirs`; none at all is an error that says what to run."""
  kinds = (
      results.ResultKind.REPRODUCTION_ERROR,
      results.ResultKind.ATTACK,
      results.ResultKind.EXACT_FORGING,
      results.ResultKind.TABLE_IV,
      results.ResultKind.OUTLIER_CAUSES,
  )
  found = {kind: [] for kind in kinds}
  for results_dir in results_dirs:
    for kind, records in _walk_records(results_dir, kinds).items():
      found[kind] += records
  table4 = max(
      found[results.ResultKind.TABLE_IV], key=lambda r: os.path.getmtime(r["path"]), default=None
  )
  if not any(found.values()):
    raise errors.ConfigError(
        f"no results under {', '.join(results_dirs)}; run forging-recompute, "
        "forging-attack, forging-exact or forging-bruteforce first"
    )
  return FoundResults(
      tuple(results_dirs),
      [
          record | {"summary": _summary_beside(record["path"])}
          for record in found[results.ResultKind.REPRODUCTION_ERROR]
      ],
      found[results.ResultKind.ATTACK],
      found[results.ResultKind.EXACT_FORGING],
      table4,
      found[results.ResultKind.OUTLIER_CAUSES],
  )


def _summary_beside(record_path: str) -> dict | None:
  """The summary.json next to a reproduction-error record (None: not there); an unreadable one is
  an error that names it."""
  path = os.path.join(os.path.dirname(record_path), "summary.json")
  return results.read_json(path, "a reproduction-error summary") if os.path.exists(path) else None


def reproduction_distribution(record: dict) -> dict | None:
  """The per-step distribution of a reproduction result (distribution.summary_distribution: steps,
  median, p90, p99, max, above), from the summary it carries; None for a record without one, or
  whose summary holds no per-step distances."""
  summary = record.get("summary")
  if not summary or not (summary.get("distribution") or summary.get("max_l2_per_step")):
    return None
  return distribution.summary_distribution(summary)


def attack_run_errors(record: dict) -> np.ndarray | None:
  """An attack's approximation error of every run, float64 [S, F, R] (steps and forging fractions
  as the record resolved them), from the approximation_error.npy beside it; None where that array
  was not kept (or does not fit the record)."""
  path = os.path.join(os.path.dirname(record.get("path", "")), "approximation_error.npy")
  if "path" not in record or not os.path.exists(path):
    return None
  array = np.load(path, allow_pickle=False)
  shape = (len(record.get("steps", ())), len(record.get("forging_fractions", ())))
  return array if array.ndim == 3 and array.shape[:2] == shape else None


def model_label(model: str, dataset: str | None = None) -> str:
  """How tables, figures and REPORT.md name a model and its data: 'LeNet / MNIST'."""
  known = {"lenet": "LeNet / MNIST", "vggmini": "VGGmini / CIFAR-10"}
  return known.get(model, model if dataset is None else f"{model} / {dataset}")


def reproduction_labels(records: list[dict], with_model: bool) -> list[str]:
  """How tables and figures name reproduction results, in the order given: 'A -> B' (generated on
  A, recomputed on B), after 'LeNet / MNIST b=100: ' with_model, and with the result's folder
  where two results would share a name."""
  labels = platforms.platform_labels(
      [r[side] for r in records for side in ("generator_platform", "platform")]
  )
  names = []
  for r in records:
    trace = r["trace"]
    model = f"{model_label(trace['model'], trace['dataset'])} b={trace['batch_size']}: "
    pair = f"{labels[r['generator_platform']['id']]} -> {labels[r['platform']['id']]}"
    names.append(model + pair if with_model else pair)
  suffixes = {}
  for name in {name for name in names if names.count(name) > 1}:
    alike = [i for i, other in enumerate(names) if other == name]
    for i, part in zip(alike, _told_apart([records[i]["folder"] for i in alike])):
      suffixes[i] = f" ({part})"
  return [name + suffixes.get(i, "") for i, name in enumerate(names)]


def _told_apart(folders: list[str]) -> list[str]:
  """Folders less the leading and trailing path parts they all share: repro/table1/X and
  repro/table2b/X -> table1 and table2b."""
  parts = [folder.split("/") for folder in folders]
  shortest = min(len(p) for p in parts)
  lead = 0
  while lead < shortest - 1 and len({p[lead] for p in parts}) == 1:
    lead += 1
  trail = 0
  while trail < shortest - 1 - lead and len({p[-1 - trail] for p in parts}) == 1:
    trail += 1
  return ["/".join(p[lead : len(p) - trail]) for p in parts]


def largest_reproduction_error(reproduction: list[dict], model: str) -> float | None:
  """The largest eps_repr measured for `model` over every platform pair: the threshold."""
  return max((r["eps_repr"] for r in reproduction if r["trace"]["model"] == model), default=None)


@dataclasses.dataclass(frozen=True)
class Thresholds:
  """The verifier thresholds a reader can justify from the measured reproduction errors (None:
  not measured). same_platform: the largest eps_repr recomputing on the generating platform (Table
  I's cells); cross_platform: the largest eps_repr over every measured platform pair (Table II's
  matrices; Table III's threshold), only where some pair crossed platforms."""

  same_platform: float | None
  cross_platform: float | None


def thresholds(reproduction: list[dict], model: str, batch_size: int | None = None) -> Thresholds:
  """The Thresholds of `model` (of its traces of b = batch_size only, when given)."""
  chosen = [
      r
      for r in reproduction
      if r["trace"]["model"] == model
      and (batch_size is None or r["trace"]["batch_size"] == batch_size)
  ]
  same = [r["eps_repr"] for r in chosen if r["generator_platform"]["id"] == r["platform"]["id"]]
  every = [r["eps_repr"] for r in chosen]
  return Thresholds(max(same, default=None), max(every) if len(every) > len(same) else None)


def min_distance(record: dict) -> float:
  """An attack record's distinctness margin D, grey levels (settings.min_distance; records written
  before it was recorded kept none: 0, the paper's Definition 1)."""
  return float(record["settings"].get("min_distance", 0.0))


def is_paper_attack(record: dict) -> bool:
  """Whether an attack record is one of the paper's attacks: Thudi's or Zhang's (replacements are
  other training images) with no margin (Definition 1)."""
  return record["settings"]["attack"] in attack_settings.PAPER_ATTACKS and not min_distance(record)


def paper_attacks(attack_records: list[dict]) -> list[dict]:
  """The records of the paper's attacks (is_paper_attack), in the order given."""
  return [record for record in attack_records if is_paper_attack(record)]


def attack_family(record: dict) -> str:
  """How an attack record is named where attacks are told apart: 'thudi', or with the margin it
  kept, 'perturb D=64'."""
  margin = min_distance(record)
  return record["settings"]["attack"] + (f" D={margin:g}" if margin else "")


def batch_mode(record: dict) -> attack_settings.BatchMode:
  """Which true batches an attack record forged (settings.batch, attack_settings.BatchMode):
  trace, the trace's own B_i at each attacked step (run r: the r-th deletion set), or random, R
  seeded batches B_r drawn from the training set, each kept fixed over the attacked steps (the
  paper's Figure 3 design). Records written before the setting existed forged the trace's
  batches."""
  return results.choice(
      attack_settings.BatchMode,
      record["settings"].get("batch", attack_settings.BatchMode.TRACE),
      "batch mode",
  )


def attack_entries(
    attack_records: list[dict], model: str, batch_size: int, trace_steps: int | None = None
) -> list[dict]:
  """Per-step, per-fraction entries of every attack on (model, b) (on traces of T = trace_steps
  steps only, when given), each with the attack's name, its batch mode (batch_mode), the record's
  folder, its trace's T, and the record itself (for its arrays: attack_run_errors)."""
  return [
      entry
      | {
          "attack": record["settings"]["attack"],
          "batch": batch_mode(record),
          "folder": record["folder"],
          "trace_steps": record["trace"]["steps"],
          "record": record,
      }
      for record in attack_records
      if record["trace"]["model"] == model
      and record["trace"]["batch_size"] == batch_size
      and trace_steps in (None, record["trace"]["steps"])
      for entry in record["results"]
  ]
