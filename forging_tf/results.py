"""Results as data: atomic files and folders, one record header, records read back by kind.

Every experiment writes its results as data (JSON, npz) first; tables, figures and REPORT.md are
rendered from them later (forging_tf.report), so a figure can be redrawn without re-running
anything. A file is written to a temporary sibling and renamed into place; a result folder
(`write_folder`) is filled as a hidden sibling folder and renamed into place whole. A killed run
leaves whole files and folders, or none. A result folder may also be an object-store URL
(storage.py): it is filled in a local temporary folder and uploaded file by file (one PUT each,
atomic per object), its record last (`write_folder`, `ResultFolder`).

Every result has a record, a JSON object that starts with the same header (`header`): `kind` (a
ResultKind), `format_version`, `created`, `package_version`, `command` and `platform`. RECORDS
says, for each kind, which file holds its record and which fields the tables and REPORT.md read,
and `read_record` checks them, so that a record edited or written by another version is refused
by name instead of failing inside a table. Records written by earlier versions are read as this
version writes them (`upgrade`).

numpy only: tables and the report are rendered without loading TensorFlow.
"""

import dataclasses
import datetime
import enum
import json
import os
import shutil
import tempfile
from collections.abc import Callable

import numpy as np

import forging_tf
from forging_tf import errors
from forging_tf import storage

# Version 2: the common header; the reproduction error's `platform` (was recomputer_platform) and
# the attack's settings.attack (was a top-level `attack`); Table IV's kind. Version 1 records
# (and the unversioned exact-forging and Table IV ones) are upgraded when read.
FORMAT_VERSION = 2


class ResultKind(enum.StrEnum):
  """What a record holds. The values are data, stored in every record: they never change."""

  REPRODUCTION_ERROR = "forging_tf.reproduction_error"
  ATTACK = "forging_tf.attack_results"
  EXACT_FORGING = "forging_tf.exact_forging"
  TABLE_IV = "forging_tf.table4"
  REPRODUCE_RUN = "forging_tf.reproduce"
  CALIBRATION = "forging_tf.calibration"
  NEAR_TIES = "forging_tf.near_ties"
  OUTLIER_CAUSES = "forging_tf.outlier_causes"


@dataclasses.dataclass(frozen=True)
class RecordSpec:
  """Where the record of a kind lives and what its readers rely on.

  file_name: the record's file in its result folder (None: a file of any name, as
  `forging-bruteforce --out` names it); what: how messages name such a result; fields: the
  dotted paths the tables and REPORT.md read.
  """

  file_name: str | None
  what: str
  fields: tuple[str, ...]


RECORDS = {
    ResultKind.REPRODUCTION_ERROR: RecordSpec(
        "result.json",
        "a reproduction-error result",
        (
            "eps_repr",
            "updates",
            "repeats",
            "trace.model",
            "trace.dataset",
            "trace.batch_size",
            "trace.steps",
            "trace.k",
            "generator_platform.id",
            "generator_platform.in_force",
            "platform.id",
            "platform.in_force",
        ),
    ),
    ResultKind.ATTACK: RecordSpec(
        "summary.json",
        "attack results",
        (
            "settings.attack",
            "settings.runs",
            "settings.M",
            "settings.n",
            "results",
            "trace.model",
            "trace.dataset",
            "trace.batch_size",
            "trace.steps",
            "platform.id",
        ),
    ),
    ResultKind.EXACT_FORGING: RecordSpec(
        "summary.json", "an exact-forging result", ("experiment",)
    ),
    ResultKind.TABLE_IV: RecordSpec(None, "a Table IV result", ("cells", "settings")),
    ResultKind.REPRODUCE_RUN: RecordSpec("reproduce.json", "a forging-reproduce run", ("preset",)),
    ResultKind.NEAR_TIES: RecordSpec(
        "summary.json", "a near-ties result", ("steps", "layers", "tolerances", "trace.model")
    ),
    ResultKind.OUTLIER_CAUSES: RecordSpec(
        "summary.json", "an outlier-causes result", ("reproduction", "steps", "table")
    ),
    ResultKind.CALIBRATION: RecordSpec(
        "calibration.json", "a calibration", ("target_false_reject", "models")
    ),
}


def header(kind: ResultKind, command: str | None, platform: dict | None) -> dict:
  """The fields every record starts with.

  Args:
    kind: what the record holds.
    command: the command line as the user typed it (cli.command_line()); None when the result
      was computed by a Python caller.
    platform: the fingerprint (platform.platform_fingerprint) of the platform that computed the
      result; None for a forging-reproduce run, whose stages each record their own.

  Returns:
    {kind, format_version, created, package_version, command, platform}.
  """
  return {
      "kind": ResultKind(kind).value,
      "format_version": FORMAT_VERSION,
      "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
      "package_version": forging_tf.__version__,
      "command": command,
      "platform": platform,
  }


def upgrade(record: dict) -> dict:
  """The record as this version writes it, from one an earlier version wrote (in memory only)."""
  if "kind" not in record and record.get("table") == "IV":
    record = record | {"kind": ResultKind.TABLE_IV.value}
  kind = record.get("kind")
  if (
      kind == ResultKind.REPRODUCTION_ERROR
      and "platform" not in record
      and "recomputer_platform" in record
  ):
    record = record | {"platform": record["recomputer_platform"]}
  settings = record.get("settings")
  if (
      kind == ResultKind.ATTACK
      and isinstance(settings, dict)
      and "attack" not in settings
      and "attack" in record
  ):
    record = record | {"settings": settings | {"attack": record["attack"]}}
  return record


def choice(kind: type[enum.Enum], value, what: str):
  """`value` as a member of the closed choice `kind`; a ConfigError naming the choices if none."""
  try:
    return kind(value)
  except ValueError:
    raise errors.ConfigError(
        f"unknown {what} {value!r}; choose one of {[member.value for member in kind]}"
    ) from None


def json_values(value):
  """`value` as JSON reads it back: enum members as their values, tuples as lists."""
  if isinstance(value, dict):
    return {key: json_values(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_values(item) for item in value]
  if isinstance(value, enum.Enum):
    return value.value
  return value


def missing_field(record: dict, fields: tuple[str, ...]) -> str | None:
  """The first of the dotted paths `fields` that `record` lacks, or None."""
  for field in fields:
    node = record
    for key in field.split("."):
      if not isinstance(node, dict) or key not in node:
        return field
      node = node[key]
  return None


def checked_record(record: dict, path: str, kind: ResultKind) -> dict:
  """`record` (read from `path`), upgraded, if it is a `kind` record with every field its
  readers need; ForgingError otherwise, naming the file and the field."""
  record = upgrade(record)
  if record.get("kind") != kind:
    raise errors.ForgingError(f"{path} does not hold {RECORDS[kind].what}")
  missing = missing_field(record, RECORDS[kind].fields)
  if missing:
    raise errors.ForgingError(
        f"{path} has no {missing}: it was edited or written by another "
        "version of forging_tf; run its experiment again or move it out "
        "of the way"
    )
  return record


def read_record(path: str, kind: ResultKind) -> dict:
  """The `kind` record at `path`, upgraded and checked (checked_record)."""
  return checked_record(read_json(path, RECORDS[kind].what), path, kind)


def _replace_atomically(path: str, write) -> None:
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    raise errors.ForgingError(f"cannot write {path}: it is a folder")
  try:
    os.makedirs(folder, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.")
  except OSError as e:
    raise errors.ForgingError(f"cannot write {path}: {e}") from e
  try:
    with os.fdopen(handle, "wb") as f:
      write(f)
    os.chmod(staging, 0o644)  # mkstemp makes 0600; results are meant to be shared.
    os.replace(staging, path)
  except BaseException:
    os.unlink(staging)
    raise


def write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically."""
  _replace_atomically(path, lambda f: f.write(text.encode()))


def write_json(path: str, value) -> None:
  """Writes `value` as indented JSON to `path` atomically."""
  write_text(path, json.dumps(value, indent=2, allow_nan=True) + "\n")


def write_npz(path: str, **arrays: np.ndarray) -> None:
  """Writes arrays to the .npz file `path` atomically (no pickled objects)."""
  _replace_atomically(path, lambda f: np.savez(f, **arrays))


def claimed_folder(out: str, marker: str, kind: ResultKind) -> bool:
  """Whether the folder (or URL) `out` already holds a result of `kind`: its JSON file `marker`
  names that kind. A file at `out`, or a non-empty folder without such a marker (someone else's
  data), is refused with a ConfigError, so that it is never written into."""
  if storage.is_url(out):
    holds_anything = storage.at(out).exists()
  elif os.path.exists(out) and not os.path.isdir(out):
    raise errors.ConfigError(f"{out} is a file; choose another --out")
  else:
    holds_anything = os.path.isdir(out) and bool(os.listdir(out))
  if holds_anything:
    try:
      ours = upgrade(read_json(storage.join(out, marker), "")).get("kind") == kind
    except errors.ForgingError:
      ours = False
    if not ours:
      raise errors.ConfigError(
          f"{out} exists and does not hold {RECORDS[kind].what}; choose another --out"
      )
    return True
  return False


def check_out(out: str, marker: str, kind: ResultKind, overwrite: bool) -> None:
  """Refuses (ConfigError) unless `out` is absent or an empty folder, or holds a result of
  `kind` (claimed_folder) and `overwrite` asks to replace it."""
  if claimed_folder(out, marker, kind) and not overwrite:
    raise errors.ConfigError(
        f"{out} already holds {RECORDS[kind].what}; pass --overwrite to "
        "replace it or choose another --out"
    )


def write_folder(
    out: str, marker: str, kind: ResultKind, fill: Callable[[str], None], overwrite: bool
) -> None:
  """Writes the result folder `out` whole, or not at all.

  Args:
    out: the folder to write; see check_out for what may already be there.
    marker: the record's file, which `fill` writes (claimed_folder).
    kind: the kind of result.
    fill: fill(folder) writes every file of the result into `folder`, a hidden sibling of `out`
      that then takes `out`'s place by one rename.
    overwrite: whether a result of `kind` already at `out` may be replaced.

  Raises:
    ConfigError: `out` holds something else, or a result and overwrite is off; checked before
      and again after `fill`, since another run may have written `out` meanwhile.
  """
  if storage.is_url(out):
    _write_objects(out, marker, kind, fill, overwrite)
    return
  out = os.path.abspath(out)
  check_out(out, marker, kind, overwrite)
  parent, name = os.path.dirname(out), os.path.basename(out)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{name}.writing-", dir=parent)
  try:
    os.chmod(staging, 0o755)  # mkdtemp makes it private; results are for everyone to read.
    fill(staging)
    check_out(out, marker, kind, overwrite)
    retired = None
    if os.path.isdir(out) and os.listdir(out):
      # The result being replaced steps aside first: a rename cannot replace a full folder.
      retired = tempfile.mkdtemp(prefix=f".{name}.replaced-", dir=parent)
      os.replace(out, retired)
    os.replace(staging, out)
    if retired:
      shutil.rmtree(retired)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


def _write_objects(
    out: str, marker: str, kind: ResultKind, fill: Callable[[str], None], overwrite: bool
) -> None:
  """write_folder for a URL: `fill` writes a local temporary folder, whose files are uploaded
  with the marker last (a result it replaces loses its marker first)."""
  check_out(out, marker, kind, overwrite)
  with ResultFolder(out) as folder:
    fill(folder.path)
    replacing = claimed_folder(out, marker, kind)
    check_out(out, marker, kind, overwrite)
    if replacing:
      remove(out, marker)
    names = sorted(
        os.path.relpath(os.path.join(root, name), folder.path).replace(os.sep, "/")
        for root, _, names in os.walk(folder.path)
        for name in names
    )
    folder.upload(*[name for name in names if name != marker], marker)


def remove(out: str, record: str) -> None:
  """Deletes the result folder (or URL) `out`; at a URL its `record` first, so that a removal cut
  short never leaves what reads as a whole result."""
  storage.at(out).remove_all(first=(record,))


class ResultFolder:
  """The local folder a result is written in: `out` itself, or, when `out` is a URL
  (storage.py), a temporary folder whose files `download` and `upload` copy from and to it.

  A context manager: the temporary folder is removed at the end.
  """

  def __init__(self, out: str):
    self.out = out
    self._remote = storage.at(out) if storage.is_url(out) else None
    self.path = tempfile.mkdtemp(prefix="forging_tf-result-") if self._remote else out

  def __enter__(self) -> "ResultFolder":
    return self

  def __exit__(self, *exc_info) -> None:
    if self._remote:
      shutil.rmtree(self.path, ignore_errors=True)

  def download(self, prefix: str) -> None:
    """Copies the URL's file `prefix`, or every file under the folder `prefix`, here."""
    if not self._remote:
      return
    for key in self._remote.sizes():
      if key == prefix or key.startswith(prefix + "/"):
        local = os.path.join(self.path, *key.split("/"))
        os.makedirs(os.path.dirname(local), exist_ok=True)
        self._remote.download(key, local)

  def upload(self, *names: str) -> None:
    """Copies the files `names` (relative, `/`-separated) to the URL, one PUT each, in order."""
    if not self._remote:
      return
    for name in names:
      self._remote.upload(os.path.join(self.path, *name.split("/")), name)


def read_json(path: str, what: str) -> dict:
  """Reads a result JSON object (from a file or a URL); a missing or corrupt file is a
  ForgingError naming `what`."""
  try:
    if storage.is_url(path):
      value = json.loads(storage.read_object(path))
    else:
      with open(path, encoding="utf-8") as f:
        value = json.load(f)
  except FileNotFoundError as e:
    raise errors.ForgingError(f"{what}: {path} does not exist") from e
  except (OSError, ValueError) as e:
    raise errors.ForgingError(f"{what}: {path} is not readable JSON ({e})") from e
  if not isinstance(value, dict):
    raise errors.ForgingError(f"{what}: {path} does not hold a JSON object")
  return value


def read_npz(path: str, what: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
  """Reads the arrays `names` from an .npz without unpickling anything."""
  try:
    with np.load(path, allow_pickle=False) as f:
      return {name: f[name] for name in names}
  except FileNotFoundError as e:
    raise errors.ForgingError(f"{what}: {path} does not exist") from e
  except (OSError, ValueError, KeyError) as e:
    raise errors.ForgingError(f"{what}: {path} is damaged or incomplete ({e})") from e
