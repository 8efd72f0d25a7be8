"""Result files: written atomically, so a killed run never leaves half a file behind.

Every experiment writes its results as data (JSON, npz) first; tables and figures are rendered
from them later (tables_lib). A file is written to a temporary sibling and renamed into place.
"""

import json
import os
import tempfile

import numpy as np

from forging_tf import errors


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


def claimed_folder(out: str, marker: str, what: str) -> bool:
  """Whether `out` already holds `what` (its file `marker` exists). A file at `out`, or a
  non-empty folder without `marker` (someone else's data), is refused, so that it is never
  written into."""
  if os.path.exists(out) and not os.path.isdir(out):
    raise errors.ConfigError(f"{out} is a file; choose another --out")
  if os.path.isdir(out) and os.listdir(out):
    if not os.path.exists(os.path.join(out, marker)):
      raise errors.ConfigError(f"{out} exists and does not hold {what}; choose another --out")
    return True
  return False


def read_json(path: str, what: str) -> dict:
  """Reads a result JSON object; a missing or corrupt file is a ForgingError naming `what`."""
  try:
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
