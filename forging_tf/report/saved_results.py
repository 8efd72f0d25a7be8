"""Saved results, found and checked: every record under a results folder, by kind.

A record is a result's JSON (results.RECORDS says which file, and which fields the tables and
REPORT.md read). Records of earlier versions are read as this version writes them
(results.upgrade). Also here: the selections the tables and figures share.
"""

import dataclasses
import os

from forging_tf import errors
from forging_tf import results


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
  reproduction: list[dict]
  attacks: list[dict]
  exact: list[dict]
  table4: dict | None


def find_results(results_dirs: list[str]) -> FoundResults:
  """Reads every result under `results_dirs`; none at all is an error that says what to run."""
  kinds = (
      results.ResultKind.REPRODUCTION_ERROR,
      results.ResultKind.ATTACK,
      results.ResultKind.EXACT_FORGING,
      results.ResultKind.TABLE_IV,
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
      found[results.ResultKind.REPRODUCTION_ERROR],
      found[results.ResultKind.ATTACK],
      found[results.ResultKind.EXACT_FORGING],
      table4,
  )


def model_label(model: str, dataset: str | None = None) -> str:
  """How tables, figures and REPORT.md name a model and its data: 'LeNet / MNIST'."""
  known = {"lenet": "LeNet / MNIST", "vggmini": "VGGmini / CIFAR-10"}
  return known.get(model, model if dataset is None else f"{model} / {dataset}")


def largest_reproduction_error(reproduction: list[dict], model: str) -> float | None:
  """The largest eps_repr measured for `model` over every platform pair: the threshold."""
  return max((r["eps_repr"] for r in reproduction if r["trace"]["model"] == model), default=None)


def attack_entries(attack_records: list[dict], model: str, batch_size: int) -> list[dict]:
  """Per-step, per-fraction entries of every attack on (model, b), with the attack's name."""
  return [
      entry
      | {
          "attack": record["settings"]["attack"],
          "folder": record["folder"],
          "trace_steps": record["trace"]["steps"],
      }
      for record in attack_records
      if record["trace"]["model"] == model and record["trace"]["batch_size"] == batch_size
      for entry in record["results"]
  ]
