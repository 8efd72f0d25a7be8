"""Execution traces: a zarr v3 group in a folder or under an object-store URL (layout in
docs/TRACE_FORMAT.md; storage.py says where).

  checkpoints       float32 [N, P]  one chunk per checkpoint, uncompressed or blosc (Compression)
  checkpoint_steps  int64   [N]     the step of each stored checkpoint
  optimizer_state   float32 [N, P]  momentum SGD only (traces of model.fit): the velocity at
                                    each stored checkpoint, chunked and stored as checkpoints
  batches           int32   [T, b]  the example indices of every mini-batch, in order
  attributes["forging_tf_trace"]    the JSON manifest

Traces come from the adversary of the threat model. Reading one runs nothing from it (no pickle,
no Keras deserialisation), checks every manifest field's type and range, checks the arrays against
the manifest, and checks each checkpoint's sha256 when it is read. Anything wrong is a TraceError
that names the field or the step.

Writing is crash-safe: a trace is created in a temporary sibling folder and renamed into place, so
its folder either holds a whole new trace or does not exist (in an object store: every other
object first, the group's zarr.json with the manifest last); afterwards a checkpoint counts as
written only once its sha256 is in the manifest, and the manifest is rewritten atomically after the
checkpoint's chunk. A killed writer leaves a trace that resumes from its last recorded checkpoint.
Process crashes are covered; power loss is not (no fsync).
"""

import dataclasses
import enum
import hashlib
import json
import math
import os
import queue
import shutil
import struct
import tempfile
import threading
import time

import numpy as np
import zarr
from numcodecs import blosc

import forging_tf
from forging_tf import errors
from forging_tf import models
from forging_tf import storage

FORMAT_VERSION = 1
MANIFEST_KEY = "forging_tf_trace"
# Fields that say what the trace is; their digest (manifest_sha256) catches edits to any of them.
_IDENTITY_FIELDS = (
    "format_version",
    "package_version",
    "created",
    "model",
    "dataset",
    "batch_size",
    "learning_rate",
    "seed",
    "steps",
    "k",
    "keep_pairs",
    "num_parameters",
    "parameter_layout",
    "platform",
    "batches_sha256",
)
# Identity fields that only some traces have (a trace of keras.Model.fit, forging_tf.keras): in
# the digest when present, so that traces without them keep their digests.
_OPTIONAL_IDENTITY_FIELDS = ("keras",)
# The model name of a trace written by model.fit: its code is the verifier's to name
# (--model_fn), never the trace's.
KERAS_MODEL = "keras"
KERAS_LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy")
# checkpoint_steps and batches are read whole on open: uncompressed, so that what is read is no
# larger than what the files hold.
_UNCOMPRESSED_CODECS = {"bytes", "crc32c", "transpose"}
_LITTLE_ENDIAN = {"name": "bytes", "configuration": {"endian": "little"}}
_CHUNK_KEYS = {"name": "default", "configuration": {"separator": "/"}}
_MAX_PARAMETERS = 10**9
_MAX_STEPS = 10**8
_MAX_BATCH = 10**6
_MAX_EXAMPLES = 10**9
# The arrays of a trace: any object of an object store under one of them (and no root zarr.json)
# is what a creation or a deletion cut short leaves, which the next creation may replace.
_ARRAYS = ("checkpoints", "checkpoint_steps", "batches", "optimizer_state")


class Compression(enum.StrEnum):
  """How checkpoint chunks are stored (forging-train --compression).

  Measured on real LeNet and VGGmini checkpoints (benchmarks/results/trace_codecs.json, table
  in docs/TRACE_FORMAT.md): float32 weights compress little (zarr's lossless codecs store them in
  85-93 % of the bytes), and compressing costs the writer more time than the smaller writes
  save (benchmarks/results/trace_overhead*.json); uncompressed stays the default.
  """

  NONE = "none"  # the row's raw little-endian bytes
  BLOSC_LZ4 = "blosc-lz4"  # byte shuffle + LZ4 level 5: 1.08-1.10 times smaller, ~1 GB/s
  BLOSC_ZSTD = "blosc-zstd"  # bit shuffle + Zstandard level 1: 1.13 times smaller, 0.3-0.55 GB/s

  def blosc_configuration(self) -> dict | None:
    """The zarr v3 blosc codec's configuration (None: uncompressed)."""
    return _BLOSC.get(self)


_BLOSC = {
    Compression.BLOSC_LZ4: {
        "typesize": 4,
        "cname": "lz4",
        "clevel": 5,
        "shuffle": "shuffle",
        "blocksize": 0,
    },
    Compression.BLOSC_ZSTD: {
        "typesize": 4,
        "cname": "zstd",
        "clevel": 1,
        "shuffle": "bitshuffle",
        "blocksize": 0,
    },
}
_BLOSC_SHUFFLE = {
    "noshuffle": blosc.NOSHUFFLE,
    "shuffle": blosc.SHUFFLE,
    "bitshuffle": blosc.BITSHUFFLE,
}


def checkpoint_steps(steps: int, k: int, keep_pairs: int = 0) -> np.ndarray:
  """Steps whose checkpoints a trace stores: int64 [N], increasing.

  keep_pairs = 0: a k-interval trace, 0, k, 2k, ..., T (T a multiple of k).
  keep_pairs = n > 0: a sparse trace (k = 1): theta_0, theta_T and the pairs (i, i + 1) at n steps
  i spread evenly over 0..T-1, first and last included.
  """
  if keep_pairs == 0:
    if steps % k:
      raise errors.ConfigError(f"steps={steps} is not a multiple of k={k}")
    return np.arange(0, steps + 1, k, dtype=np.int64)
  if k != 1:
    raise errors.ConfigError("a sparse trace (keep_pairs > 0) stores pairs (i, i+1): use k=1")
  if keep_pairs > steps:
    raise errors.ConfigError(f"keep_pairs={keep_pairs} is more than steps={steps}")
  starts = np.unique(np.round(np.linspace(0, steps - 1, keep_pairs)).astype(np.int64))
  return np.unique(np.concatenate([[0, steps], starts, starts + 1]))


def sha256_hex(array: np.ndarray) -> str:
  return hashlib.sha256(memoryview(np.ascontiguousarray(array)).cast("B")).hexdigest()


def manifest_digest(manifest: dict) -> str:
  identity = {key: manifest.get(key) for key in _IDENTITY_FIELDS}
  identity |= {key: manifest[key] for key in _OPTIONAL_IDENTITY_FIELDS if key in manifest}
  return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def is_trace(path: str) -> bool:
  """Whether `path` (a folder or a URL) holds a forging_tf trace (possibly unfinished or
  damaged)."""
  return _holds_manifest(storage.at(path))


def _holds_manifest(store) -> bool:
  try:
    return MANIFEST_KEY in json.loads(store.read("zarr.json")).get("attributes", {})
  except (OSError, ValueError, TypeError, AttributeError, RecursionError):
    return False  # Unreadable, not JSON, nested too deep, or JSON of another shape.


def remove(path: str) -> None:
  """Deletes the trace at `path`; in an object store its zarr.json first, so that a deletion cut
  short leaves no trace, only objects the next creation replaces."""
  storage.at(path).remove_all(first=("zarr.json",))


# Reading -------------------------------------------------------------------------------------


class Trace:
  """Random access to (theta_i, B_i) of a trace; validates everything on open."""

  def __init__(self, path: str):
    """Opens the trace at `path`: a local folder, or a URL (storage.py) kept as it is."""
    self.path = storage.absolute(path)
    self._storage = storage.at(self.path)
    group = _open_group(self._storage, self.path)
    self.manifest = _validate_manifest(group.attrs.get(MANIFEST_KEY), self.path)
    m = self.manifest
    self.steps, self.k, self.keep_pairs = m["steps"], m["k"], m["keep_pairs"]
    self.batch_size, self.learning_rate, self.seed = m["batch_size"], m["learning_rate"], m["seed"]
    self.num_parameters = m["num_parameters"]
    self.layout = tuple(
        models.ParameterSpec(p["name"], tuple(p["shape"]), p["offset"], p["size"])
        for p in m["parameter_layout"]
    )
    self.complete = m["complete"]
    # Nothing in proportion to the manifest's sizes is allocated before the files are known to
    # hold that much: a few bytes of manifest must not buy gigabytes of memory.
    stored_bytes = _stored_bytes(self._storage, self.path)
    batches = _array(
        group, "batches", np.int32, (self.steps, self.batch_size), self.path, _UNCOMPRESSED_CODECS
    )
    _check_stored(stored_bytes, "batches", 4 * self.steps * self.batch_size, self.path)
    self.checkpoint_steps = _checkpoint_steps_of(m, self.path)
    self._digests = m["checkpoint_sha256"]
    self.compression = self._row_storage(group, "checkpoints")
    # Momentum SGD's velocity, stored as the checkpoints are (forging_tf.keras).
    self.has_optimizer_state = "optimizer_state_sha256" in m
    self._state_digests = m.get("optimizer_state_sha256", [])
    if self.has_optimizer_state:
      state_storage = self._row_storage(group, "optimizer_state")
      if state_storage != self.compression:
        raise errors.TraceError(
            f"{self.path}: optimizer_state is stored {state_storage.value}, the checkpoints "
            f"{self.compression.value}; a writer stores both alike"
        )
    stored = _array(
        group,
        "checkpoint_steps",
        np.int64,
        (len(self.checkpoint_steps),),
        self.path,
        _UNCOMPRESSED_CODECS,
    )
    _check_stored(stored_bytes, "checkpoint_steps", 8 * len(self.checkpoint_steps), self.path)
    if not np.array_equal(
        _read(stored, slice(None), self.path, "checkpoint_steps"), self.checkpoint_steps
    ):
      raise errors.TraceError(
          f"{self.path}: checkpoint_steps do not match steps={self.steps}, "
          f"k={self.k}, keep_pairs={self.keep_pairs} of the manifest"
      )
    self.batches = _read(batches, slice(None), self.path, "batches")
    if sha256_hex(self.batches) != m["batches_sha256"]:
      raise errors.TraceError(
          f"{self.path}: the batches array fails its sha256: it was truncated or altered"
      )
    if self.batches.min() < 0 or self.batches.max() >= m["dataset"]["num_examples"]:
      raise errors.TraceError(f"{self.path}: batches index examples outside the dataset")

  def _row_storage(self, group, name: str) -> "Compression":
    """How array `name` (one float32 row of P values per stored checkpoint) is stored."""
    array = _array(
        group,
        name,
        np.float32,
        (len(self.checkpoint_steps), self.num_parameters),
        self.path,
        {"bytes", "blosc"},
    )
    return _checkpoint_storage(array, self.num_parameters, self.path, name)

  def identity(self) -> dict:
    """What every result computed on this trace records of it: where it is, its manifest digest
    (which pins every field below), the model, the data, the training settings and the id of
    the platform that wrote it."""
    m = self.manifest
    return {
        "path": self.path,
        "manifest_sha256": m["manifest_sha256"],
        "model": m["model"]["name"],
        "model_config": m["model"]["config"],
        "dataset": m["dataset"]["name"],
        "dataset_fingerprint": m["dataset"]["fingerprint"],
        "batch_size": self.batch_size,
        "learning_rate": self.learning_rate,
        "seed": self.seed,
        "steps": self.steps,
        "k": self.k,
        "keep_pairs": self.keep_pairs,
        "platform_id": m["platform"]["id"],
    } | ({"keras": m["keras"]} if "keras" in m else {})

  @property
  def num_written(self) -> int:
    """Checkpoints written so far (all of them once the trace is complete)."""
    return len(self._digests)

  def checkpoint(self, step: int) -> np.ndarray:
    """theta_step [P] float32, checked against its sha256."""
    row = self._row(step)
    if row >= len(self._digests):
      raise errors.TraceError(
          f"{self.path}: checkpoint of step {step} has not been written "
          f"(the trace is unfinished: {len(self._digests)} of "
          f"{len(self.checkpoint_steps)} checkpoints)"
      )
    theta = self._read_chunk("checkpoints", row)
    if theta is None or sha256_hex(theta) != self._digests[row]:
      raise errors.TraceError(
          f"{self.path}: checkpoint of step {step} fails its sha256: its "
          "chunk is missing, truncated or altered"
      )
    return theta

  def optimizer_state(self, step: int) -> np.ndarray | None:
    """The optimizer's velocity v_step [P] float32 (momentum SGD, in parameter_layout order),
    checked against its sha256; None for a trace of plain SGD, which has no optimizer state."""
    if not self.has_optimizer_state:
      return None
    row = self._row(step)
    if row >= len(self._state_digests):
      raise errors.TraceError(
          f"{self.path}: optimizer state of step {step} has not been written (the trace is "
          "unfinished)"
      )
    velocity = self._read_chunk("optimizer_state", row)
    if velocity is None or sha256_hex(velocity) != self._state_digests[row]:
      raise errors.TraceError(
          f"{self.path}: optimizer state of step {step} fails its sha256: its chunk is "
          "missing, truncated or altered"
      )
    return velocity

  def batch(self, step: int) -> np.ndarray:
    """B_step: the example indices [b] int32 of the mini-batch taken at step `step`."""
    if not 0 <= step < self.steps:
      raise errors.TraceError(f"step {step} is outside the trace's steps 0..{self.steps - 1}")
    return self.batches[step]

  def _read_chunk(self, array: str, row: int) -> np.ndarray | None:
    """The row's chunk of `array` (checkpoints or optimizer_state), decoded; None if it is
    missing, has the wrong size or does not decode to num_parameters float32 values.

    Chunks are read without zarr (a third of the time, and no I/O thread competing with
    TensorFlow's for the cores), and no more than the manifest implies is read or allocated: an
    uncompressed chunk must hold 4 P bytes, a blosc chunk at most 4 P + 16 and its header must
    say it decompresses to exactly 4 P bytes. The size is asked first, and the read (a ranged
    one in an object store) asks for no more than that.
    """
    chunk = f"{array}/c/{row}/0"
    raw_bytes = 4 * self.num_parameters
    try:
      size = self._storage.size(chunk)
      if self.compression is Compression.NONE:
        if size != raw_bytes:
          return None
        stored = self._storage.read(chunk, raw_bytes)
        return np.frombuffer(stored, "<f4") if len(stored) == raw_bytes else None
      if not 16 <= size <= raw_bytes + blosc.MAX_OVERHEAD:
        return None
      stored = self._storage.read(chunk, size)
    except OSError:
      return None
    if len(stored) < 16:
      return None
    decompressed_bytes, _, stored_bytes = struct.unpack_from("<III", stored, 4)
    if decompressed_bytes != raw_bytes or stored_bytes != len(stored):
      return None
    theta = np.empty(self.num_parameters, "<f4")
    try:
      blosc.decompress(stored, theta)
    except (RuntimeError, ValueError):
      return None
    return theta

  def _row(self, step: int) -> int:
    row = int(np.searchsorted(self.checkpoint_steps, step))
    if row >= len(self.checkpoint_steps) or self.checkpoint_steps[row] != step:
      raise errors.TraceError(
          f"{self.path}: no checkpoint is stored for step {step} (k={self.k}"
          f", keep_pairs={self.keep_pairs})"
      )
    return row


def _open_group(store, path: str):
  if not _holds_manifest(store):
    if not store.exists():
      where = "nothing is stored under it" if storage.is_url(path) else "the folder does not exist"
      raise errors.TraceError(f"no trace at {path}: {where}")
    raise errors.TraceError(
        f"{path} is not a forging_tf trace (no readable zarr.json with a "
        f"'{MANIFEST_KEY}' manifest)"
    )
  try:
    return zarr.open_group(store=store.zarr_store(read_only=True), mode="r", zarr_format=3)
  except Exception as e:  # zarr raises many types on malformed metadata; all mean "unreadable".
    raise errors.TraceError(f"{path}: unreadable zarr group ({_why(e)})") from e


def _stored_bytes(store, path: str) -> dict[str, int]:
  """Bytes held by each array of the trace at `path` (its chunks, not its zarr.json), from one
  listing of the store (in a folder, links and special files are refused: storage.py)."""
  totals = {}
  try:
    sizes = store.sizes()
  except OSError as e:
    raise errors.TraceError(f"{path}: cannot list the trace's files ({e})") from e
  for key, size in sizes.items():
    top, _, rest = key.partition("/")
    if rest and rest != "zarr.json":
      totals[top] = totals.get(top, 0) + size
  return totals


def _check_stored(stored_bytes: dict[str, int], name: str, needed: int, path: str) -> None:
  if stored_bytes.get(name, 0) < needed:
    raise errors.TraceError(
        f"{path}: array '{name}' holds {stored_bytes.get(name, 0)} bytes, the "
        f"manifest implies {needed}: chunks are missing or truncated"
    )


def _array(group, name: str, dtype, shape: tuple, path: str, codecs_allowed: set[str]):
  try:
    array = group[name]
    codecs = [codec.to_dict()["name"] for codec in array.metadata.codecs]
    actual_dtype, actual_shape = array.dtype, tuple(array.shape)
  except Exception as e:  # A missing or malformed array, whatever zarr raises for it.
    raise errors.TraceError(f"{path}: array '{name}' is missing or unreadable ({_why(e)})") from e
  if not isinstance(array, zarr.Array):
    raise errors.TraceError(f"{path}: '{name}' is not an array")
  if actual_dtype != np.dtype(dtype) or actual_shape != shape:
    raise errors.TraceError(
        f"{path}: array '{name}' is {actual_dtype} {list(actual_shape)}, the "
        f"manifest implies {np.dtype(dtype)} {list(shape)}"
    )
  if not set(codecs) <= codecs_allowed:
    raise errors.TraceError(
        f"{path}: array '{name}' uses codecs {_show(codecs)}; only "
        f"{sorted(codecs_allowed)} are read"
    )
  return array


def _checkpoint_storage(
    array, num_parameters: int, path: str, name: str = "checkpoints"
) -> Compression:
  """How the checkpoints are stored, if it is one way TraceWriter stores them: one file per
  checkpoint at checkpoints/c/<row>/0, holding the row's little-endian bytes, raw or through one
  of Compression's blosc configurations. Any other layout or codec is refused: a reader that
  decoded whatever a trace names could be made to allocate without bound."""
  metadata = array.metadata
  codecs = [codec.to_dict() for codec in metadata.codecs]
  layout_ok = (
      metadata.chunk_key_encoding.to_dict() == _CHUNK_KEYS
      and tuple(array.chunks) == (1, num_parameters)
      and codecs[:1] == [_LITTLE_ENDIAN]
  )
  for compression in Compression:
    configuration = compression.blosc_configuration()
    blosc_codecs = (
        [] if configuration is None else [{"name": "blosc", "configuration": configuration}]
    )
    if layout_ok and codecs[1:] == blosc_codecs:
      return compression
  raise errors.TraceError(
      f"{path}: {name} are stored as chunks {_show(list(array.chunks))} with codecs "
      f"{_show(codecs)}; this reader reads one little-endian chunk per checkpoint, "
      f"uncompressed or {_show([c.value for c in Compression][1:])}"
  )


def _read(array, selection, path: str, what: str) -> np.ndarray:
  try:
    return np.asarray(array[selection])
  except Exception as e:  # A truncated or garbled chunk, whatever zarr's codecs raise for it.
    raise errors.TraceError(
        f"{path}: {what} cannot be read ({_why(e)}); the trace is damaged"
    ) from e


def _check(condition: bool, path: str, message: str) -> None:
  if not condition:
    raise errors.TraceError(f"{path}: manifest {message}")


def _show(value) -> str:
  """repr(value), cut short: error messages quote hostile values and stay one short line."""
  text = repr(value)
  return text if len(text) <= 60 else text[:57] + "..."


def _why(e: Exception) -> str:
  """An exception raised on hostile metadata, as a short single line (its text may quote the
  hostile value, newlines included)."""
  text = " ".join(str(e).split())
  return f"{type(e).__name__}: {text if len(text) <= 200 else text[:197] + '...'}"


def _is_int(value, low: int, high: int) -> bool:
  return type(value) is int and low <= value <= high


def _is_hex64(value) -> bool:
  return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _validate_manifest(m, path: str) -> dict:
  """Checks every field a reader relies on; returns the manifest unchanged."""
  _check(isinstance(m, dict), path, "is missing or not a JSON object")
  _check(
      m.get("format_version") == FORMAT_VERSION and type(m.get("format_version")) is int,
      path,
      f"format_version is {_show(m.get('format_version'))}; this reader reads {FORMAT_VERSION}",
  )
  _check(
      manifest_digest(m) == m.get("manifest_sha256"),
      path,
      "fails its manifest_sha256: a field was edited after the trace was created",
  )
  for key in ("package_version", "created"):
    _check(isinstance(m.get(key), str), path, f"{key} is not a string")
  dataset = m.get("dataset")
  _check(isinstance(dataset, dict), path, "dataset is not an object")
  _check(
      isinstance(dataset.get("name"), str) and _is_hex64(dataset.get("fingerprint")),
      path,
      "dataset has no name or no sha256 fingerprint",
  )
  _check(
      _is_int(dataset.get("num_examples"), 1, _MAX_EXAMPLES),
      path,
      f"dataset.num_examples is {_show(dataset.get('num_examples'))}",
  )
  image_shape = dataset.get("image_shape")
  _check(
      isinstance(image_shape, list)
      and 1 <= len(image_shape) <= 3
      and all(_is_int(d, 1, 2**16) for d in image_shape),
      path,
      f"dataset.image_shape is {_show(image_shape)}",
  )
  _check(
      _is_int(dataset.get("num_classes"), 1, 2**16),
      path,
      f"dataset.num_classes is {_show(dataset.get('num_classes'))}",
  )
  _check(_is_int(m.get("steps"), 1, _MAX_STEPS), path, f"steps is {_show(m.get('steps'))}")
  _check(
      _is_int(m.get("batch_size"), 1, min(_MAX_BATCH, dataset["num_examples"])),
      path,
      f"batch_size is {_show(m.get('batch_size'))}",
  )
  _check(_is_int(m.get("k"), 1, m["steps"]), path, f"k is {_show(m.get('k'))}")
  _check(
      _is_int(m.get("keep_pairs"), 0, m["steps"]),
      path,
      f"keep_pairs is {_show(m.get('keep_pairs'))}",
  )
  _check(_is_int(m.get("seed"), 0, 2**63 - 1), path, f"seed is {_show(m.get('seed'))}")
  lr = m.get("learning_rate")
  _check(type(lr) is float and math.isfinite(lr) and lr > 0, path, f"learning_rate is {_show(lr)}")
  _check(
      _is_int(m.get("num_parameters"), 1, _MAX_PARAMETERS),
      path,
      f"num_parameters is {_show(m.get('num_parameters'))}",
  )
  _validate_layout(m.get("parameter_layout"), m["num_parameters"], path)
  model = m.get("model")
  _check(
      isinstance(model, dict)
      and isinstance(model.get("name"), str)
      and isinstance(model.get("config"), dict),
      path,
      "model is not {name, config}",
  )
  if model["name"] == KERAS_MODEL:
    _validate_keras(m, path)
  else:
    _check(model["name"] in models.MODELS, path, f"names unknown model {_show(model['name'])}")
    problem = models.config_problem(
        model["name"], model["config"], image_shape, dataset["num_classes"], m["num_parameters"]
    )
    _check(problem is None, path, f"model {model['name']}: {problem}")
    _check(
        "keras" not in m and "optimizer_state_sha256" not in m,
        path,
        f"has keras.Model.fit fields but names model {_show(model['name'])}",
    )
  platform = m.get("platform")
  _check(
      isinstance(platform, dict) and isinstance(platform.get("id"), str),
      path,
      "platform is not an object with an id",
  )
  _check(_is_hex64(m.get("batches_sha256")), path, "batches_sha256 is not a sha256")
  digests = m.get("checkpoint_sha256")
  _check(
      isinstance(digests, list) and all(_is_hex64(d) for d in digests),
      path,
      "checkpoint_sha256 is not a list of sha256 digests",
  )
  _check(isinstance(m.get("complete"), bool), path, "complete is not true/false")
  if "optimizer_state_sha256" in m:
    states = m["optimizer_state_sha256"]
    _check(
        isinstance(states, list)
        and len(states) == len(digests)
        and all(_is_hex64(d) for d in states),
        path,
        "optimizer_state_sha256 is not a list of sha256 digests, one per written checkpoint",
    )
  return m


def _is_short_string(value) -> bool:
  return isinstance(value, str) and len(value) <= 200


def _validate_keras(m: dict, path: str) -> None:
  """The fields of a trace written by keras.Model.fit (forging_tf.keras.TraceCallback)."""
  config = m["model"]["config"]
  _check(
      set(config) == {"keras_name", "model_fn"}
      and _is_short_string(config["keras_name"])
      and (config["model_fn"] is None or _is_short_string(config["model_fn"])),
      path,
      "model.config of a keras.Model.fit trace is not {keras_name, model_fn}",
  )
  entry = m.get("keras")
  _check(
      isinstance(entry, dict)
      and set(entry) == {"trainer", "keras_version", "optimizer", "loss"}
      and entry["trainer"] == "keras.Model.fit"
      and _is_short_string(entry["keras_version"]),
      path,
      "keras is not {trainer: keras.Model.fit, keras_version, optimizer, loss}",
  )
  optimizer, loss = entry["optimizer"], entry["loss"]
  _check(
      isinstance(optimizer, dict)
      and set(optimizer) == {"name", "momentum", "nesterov"}
      and optimizer["name"] == "SGD"
      and type(optimizer["momentum"]) is float
      and 0.0 <= optimizer["momentum"] < 1.0
      and type(optimizer["nesterov"]) is bool,
      path,
      f"keras.optimizer is {_show(optimizer)}, not SGD with momentum in [0, 1)",
  )
  _check(
      isinstance(loss, dict)
      and set(loss) == {"name", "from_logits"}
      and loss["name"] in KERAS_LOSSES
      and type(loss["from_logits"]) is bool,
      path,
      f"keras.loss is {_show(loss)}, not one of {list(KERAS_LOSSES)} with from_logits",
  )
  _check(
      ("optimizer_state_sha256" in m) == (optimizer["momentum"] != 0.0),
      path,
      "optimizer_state_sha256 must be present exactly when momentum is nonzero",
  )


def _checkpoint_steps_of(m: dict, path: str) -> np.ndarray:
  """The stored steps a valid manifest implies, checked against its checkpoint digests. Called
  once the batches array is known to hold T * b entries, so that T is no bluff."""
  try:
    steps = checkpoint_steps(m["steps"], m["k"], m["keep_pairs"])
  except errors.ConfigError as e:
    raise errors.TraceError(
        f"{path}: manifest steps/k/keep_pairs contradict each other: {e}"
    ) from e
  written = len(m["checkpoint_sha256"])
  _check(
      written <= len(steps),
      path,
      f"checkpoint_sha256 records {written} digests for {len(steps)} checkpoints",
  )
  _check(
      not m["complete"] or written == len(steps),
      path,
      f"says complete but records {written} of {len(steps)} checkpoints",
  )
  return steps


def _validate_layout(layout, num_parameters: int, path: str) -> None:
  _check(
      isinstance(layout, list) and 0 < len(layout) <= 10_000,
      path,
      "parameter_layout is not a non-empty list",
  )
  offset = 0
  for i, spec in enumerate(layout):
    _check(
        isinstance(spec, dict) and isinstance(spec.get("name"), str),
        path,
        f"parameter_layout[{i}] has no name",
    )
    shape = spec.get("shape")
    _check(
        isinstance(shape, list)
        and len(shape) <= 8
        and all(_is_int(d, 1, _MAX_PARAMETERS) for d in shape),
        path,
        f"parameter_layout[{i}].shape is {_show(shape)}",
    )
    size = math.prod(shape)
    _check(
        _is_int(spec.get("size"), size, size) and _is_int(spec.get("offset"), offset, offset),
        path,
        f"parameter_layout[{i}] ({_show(spec['name'])}) has offset/size "
        f"{_show(spec.get('offset'))}/{_show(spec.get('size'))}, expected {offset}/{size}",
    )
    offset += size
  _check(
      offset == num_parameters,
      path,
      f"parameter_layout covers {offset} parameters, num_parameters is {num_parameters}",
  )


# Writing -------------------------------------------------------------------------------------


@dataclasses.dataclass
class WriterSeconds:
  """Where a TraceWriter's time went, summed over the checkpoints it wrote (seconds).

  `wait` is on training's thread (put() blocked because the writer fell behind); the rest is on
  the writer's thread: the sha256 of the checkpoint's bytes, compressing them (zero when
  uncompressed), writing the chunk file, and committing digests to the manifest, as wall-clock
  time (which includes waiting for a core while training keeps them busy), and `cpu`, the CPU
  time the writer's thread used in all (what it takes from training when the cores are full).
  """

  checkpoints: int = 0
  commits: int = 0
  wait: float = 0.0
  hash: float = 0.0
  encode: float = 0.0
  write: float = 0.0
  commit: float = 0.0
  cpu: float = 0.0

  def describe(self) -> str:
    per = 1000 / max(self.checkpoints, 1)
    return (
        f"trace writer: {self.checkpoints} checkpoints, per checkpoint {per * self.hash:.2f} ms "
        f"hashing, {per * self.encode:.2f} ms compressing, {per * self.write:.2f} ms writing; "
        f"{self.commits} manifest commits, {self.commit:.2f} s; {self.cpu:.2f} s of CPU in all; "
        f"training waited {self.wait:.2f} s"
    )


class TraceWriter:
  """Writes checkpoints in a background thread so that training does not wait for the disk.

  `put(step, theta)` hands over a checkpoint (blocking only while `max_pending` are queued);
  `close()` waits for the writes and, if every checkpoint is there, marks the trace complete;
  `seconds` says where the writer's time went (WriterSeconds).

  Checkpoint chunks are written as files in zarr's layout rather than through zarr-python: a
  chunk is the row's little-endian bytes, raw or blosc-compressed, and zarr-python 3.1 took about
  3 ms per single-chunk write on a 2-core CPU. Digests reach the manifest at most every
  `commit_every_s` seconds, and no more often than every 50 times the last commit took: a commit
  rewrites zarr.json with every digest so far (0.74 ms with none, 19 ms with 25,000 on a 2-core
  EPYC: benchmarks/results/trace_profile.json), so this
  keeps commits to at most 2 % of the time however long the trace. A crash loses at most the
  uncommitted checkpoints, which a resumed run recomputes.
  """

  def __init__(self, path: str, max_pending: int, commit_every_s: float = 0.5):
    self.path = path
    self._storage = storage.at(path)
    # The group's metadata document, whose attributes hold the manifest: commits rewrite it
    # directly, as zarr would, without a round trip through zarr-python's event loop and thread
    # pool (a quarter of the time, and two threads fewer to wake while training runs).
    self._metadata = json.loads(self._storage.read("zarr.json"))
    self._manifest = dict(self._metadata["attributes"][MANIFEST_KEY])
    group = zarr.open_group(store=self._storage.zarr_store(read_only=True), mode="r", zarr_format=3)
    self.compression = _checkpoint_storage(
        group["checkpoints"], self._manifest["num_parameters"], path
    )
    configuration = self.compression.blosc_configuration()
    self._blosc = (
        None
        if configuration is None
        else (
            configuration["cname"],
            configuration["clevel"],
            _BLOSC_SHUFFLE[configuration["shuffle"]],
        )
    )
    self._commit_every_s = commit_every_s
    self.checkpoint_steps = checkpoint_steps(
        self._manifest["steps"], self._manifest["k"], self._manifest["keep_pairs"]
    )
    self._digests = list(self._manifest["checkpoint_sha256"])
    self._with_state = "optimizer_state_sha256" in self._manifest
    self._state_digests = list(self._manifest.get("optimizer_state_sha256", []))
    self._next_row = len(self._digests)
    self.seconds = WriterSeconds()
    self._queue = queue.Queue(maxsize=max_pending)
    self._failure = None
    self._thread = threading.Thread(target=self._write_loop, name="trace-writer", daemon=True)
    self._thread.start()

  @classmethod
  def create(
      cls,
      path: str,
      manifest: dict,
      batches: np.ndarray,
      compression: Compression = Compression.NONE,
      optimizer_state: bool = False,
  ) -> "TraceWriter":
    """Creates the trace at `path` with no checkpoint written; with optimizer_state, every
    checkpoint comes with the optimizer's velocity (momentum SGD).

    `path` is a folder that must not exist or be empty, or a URL (storage.py) under which nothing
    is stored but what a creation or deletion cut short leaves (objects of the trace's arrays,
    no zarr.json), which are replaced. A trace there is an OSError, anything else a ConfigError.
    """
    steps = checkpoint_steps(manifest["steps"], manifest["k"], manifest["keep_pairs"])
    manifest = dict(
        manifest,
        format_version=FORMAT_VERSION,
        package_version=forging_tf.__version__,
        batches_sha256=sha256_hex(batches),
        checkpoint_sha256=[],
        complete=False,
    )
    if optimizer_state:
      manifest["optimizer_state_sha256"] = []
    manifest["manifest_sha256"] = manifest_digest(manifest)
    arrays = ("checkpoints", "optimizer_state") if optimizer_state else ("checkpoints",)
    if storage.is_url(path):
      _create_objects(storage.at(path), path, manifest, batches, steps, compression, arrays)
    else:
      _create_folder(path, manifest, batches, steps, compression, arrays)
    return cls(path, max_pending=_max_pending(manifest["num_parameters"]))

  @classmethod
  def reopen(cls, path: str) -> "TraceWriter":
    """Reopens an unfinished trace to append checkpoints after its last recorded one, stored as
    its first ones were."""
    manifest = Trace(path).manifest
    return cls(path, max_pending=_max_pending(manifest["num_parameters"]))

  def put(self, step: int, theta: np.ndarray, velocity: np.ndarray | None = None) -> None:
    """Hands over theta_step [P] (and, for a trace with optimizer state, the velocity [P])."""
    self._raise_failure()
    row = self._next_row
    if row >= len(self.checkpoint_steps) or self.checkpoint_steps[row] != step:
      raise errors.TraceError(f"{self.path}: checkpoint of step {step} handed over out of order")
    if (velocity is not None) != self._with_state:
      raise errors.TraceError(
          f"{self.path}: the trace {'stores' if self._with_state else 'has no'} optimizer "
          f"state, and step {step} was handed over {'without' if self._with_state else 'with'} it"
      )
    began = time.perf_counter()
    self._queue.put((row, theta, velocity))
    self.seconds.wait += time.perf_counter() - began
    self._next_row += 1

  def flush(self) -> None:
    """Blocks until every checkpoint handed over is written (its digest may commit later)."""
    self._queue.join()
    self._raise_failure()

  def close(self) -> bool:
    """Finishes the writes; returns whether the trace is complete."""
    self._queue.put(None)
    self._thread.join()
    self._raise_failure()
    if len(self._digests) == len(self.checkpoint_steps):
      self._manifest["complete"] = True
      self._save_manifest()
    return self._manifest["complete"]

  def _raise_failure(self) -> None:
    if self._failure is not None:
      raise errors.TraceError(f"writing the trace at {self.path} failed: {self._failure}")

  def _write_loop(self) -> None:
    last_commit, commit_took = time.monotonic(), 0.0
    written, written_states = list(self._digests), list(self._state_digests)
    cpu_began = time.thread_time()
    while True:
      item = self._queue.get()
      try:
        if item is not None and self._failure is None:
          row, theta, velocity = item
          written.append(self._store("checkpoints", row, theta))
          if velocity is not None:
            written_states.append(self._store("optimizer_state", row, velocity))
        now = time.monotonic()
        due = item is None or now - last_commit >= max(self._commit_every_s, 50 * commit_took)
        if due and self._failure is None and len(written) > len(self._digests):
          self._commit(written, written_states)
          last_commit = time.monotonic()
          commit_took = last_commit - now
          self.seconds.commit += commit_took
          self.seconds.commits += 1
      except Exception as e:  # Disk full, permissions, ...: reported by the next put/close.
        self._failure = f"{type(e).__name__}: {e}"
      finally:
        self.seconds.cpu = time.thread_time() - cpu_began
        self._queue.task_done()
      if item is None:
        return

  def _store(self, array: str, row: int, theta: np.ndarray) -> str:
    """Writes row `row` of `array` and returns its sha256 (of the raw float32 bytes)."""
    raw = np.ascontiguousarray(theta, dtype="<f4")
    began = time.perf_counter()
    digest = self._hash(raw)
    hashed = time.perf_counter()
    chunk = self._encode(raw)
    encoded = time.perf_counter()
    self._write(array, row, chunk)
    self.seconds.hash += hashed - began
    self.seconds.encode += encoded - hashed
    self.seconds.write += time.perf_counter() - encoded
    self.seconds.checkpoints += array == "checkpoints"  # a velocity counts with its checkpoint
    return digest

  def _hash(self, raw: np.ndarray) -> str:
    return sha256_hex(raw)

  def _encode(self, raw: np.ndarray):
    """The chunk's bytes: the raw bytes, or their blosc encoding (on this thread only)."""
    if self._blosc is None:
      return memoryview(raw).cast("B")
    cname, clevel, shuffle = self._blosc
    return blosc.compress(raw, cname.encode(), clevel, shuffle, 0)

  def _write(self, array: str, row: int, chunk) -> None:
    """Writes chunk `row` of `array` in place (in an object store, by one PUT).

    In place is safe: a chunk counts only once its digest is committed, after this returns, and
    rows at or before the last committed one are never written again. A crash mid-write leaves
    an uncommitted row that the resumed run overwrites, so no temporary file and rename is
    needed.
    """
    self._storage.write(f"{array}/c/{row}/0", chunk)

  def _commit(self, written: list[str], written_states: list[str]) -> None:
    """Records the digests of the chunks written so far in the manifest."""
    self._manifest["checkpoint_sha256"] = list(written)
    if self._with_state:
      self._manifest["optimizer_state_sha256"] = list(written_states)
    self._save_manifest()
    self._digests = list(written)
    self._state_digests = list(written_states)

  def _save_manifest(self) -> None:
    """Replaces zarr.json atomically (a whole new file and a rename, or one PUT) with the
    manifest in it."""
    self._metadata["attributes"][MANIFEST_KEY] = self._manifest
    self._storage.replace("zarr.json", json.dumps(self._metadata, allow_nan=False).encode())


def _write_skeleton(group, manifest, batches, steps, compression, arrays) -> None:
  """Fills an empty zarr group with a new trace: its arrays, no checkpoint, the manifest."""
  num_parameters = manifest["num_parameters"]
  configuration = Compression(compression).blosc_configuration()
  # TraceWriter._write relies on this encoding: chunk (row, 0) is checkpoints/c/row/0, holding
  # the row's float32 little-endian bytes, raw or through blosc.
  for name in arrays:
    group.create_array(
        name,
        shape=(len(steps), num_parameters),
        chunks=(1, num_parameters),
        dtype="<f4",
        compressors=None if configuration is None else zarr.codecs.BloscCodec(**configuration),
        filters=None,
        serializer=_LITTLE_ENDIAN,
        chunk_key_encoding={"name": "default", "separator": "/"},
        fill_value=np.nan,
    )
  # Every chunk is written, even one that equals the fill value: the reader counts the bytes of
  # these arrays before it reads them.
  group.create_array(
      "checkpoint_steps", data=steps, compressors=None, config={"write_empty_chunks": True}
  )
  group.create_array(
      "batches",
      data=batches.astype(np.int32),
      chunks=(min(len(batches), max(1, 2**20 // batches.shape[1])), batches.shape[1]),
      compressors=None,
      config={"write_empty_chunks": True},
  )
  group.attrs[MANIFEST_KEY] = manifest


def _create_folder(path: str, manifest, batches, steps, compression, arrays) -> None:
  """Assembles the trace in a hidden sibling folder and renames it into place."""
  if (
      os.path.exists(path)
      and (not os.path.isdir(path) or os.listdir(path))
      and not is_trace(path)  # A trace there is an OSError, below.
  ):
    raise errors.ConfigError(f"{path} exists and is not a forging_tf trace; choose another --out")
  parent = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.creating-", dir=parent)
  except OSError as e:
    raise errors.TraceError(f"cannot create the trace {path}: {e.strerror} ({parent})") from e
  try:
    group = zarr.open_group(store=zarr.storage.LocalStore(staging), mode="w", zarr_format=3)
    _write_skeleton(group, manifest, batches, steps, compression, arrays)
    for name in arrays:  # chunk folders up front: one mkdir less per step
      for row in range(len(steps)):
        os.makedirs(os.path.join(staging, name, "c", str(row)))
    os.replace(staging, path)  # Fails unless `path` is absent or an empty folder.
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


def _create_objects(store, path: str, manifest, batches, steps, compression, arrays) -> None:
  """Writes the trace's objects, the group's zarr.json (with the manifest) last: a creation cut
  short leaves no trace, only objects the next creation replaces."""
  existing = store.sizes()
  if "zarr.json" in existing:
    raise FileExistsError(f"{path} already holds a zarr group")
  foreign = sorted(key for key in existing if key.partition("/")[0] not in _ARRAYS)
  if foreign:
    raise errors.ConfigError(
        f"{path} holds objects that are not a forging_tf trace's ({_show(foreign[0])}); "
        "choose another --out or remove them"
    )
  store.remove(list(existing))
  objects = {}
  group = zarr.open_group(
      store=zarr.storage.MemoryStore(store_dict=objects), mode="w", zarr_format=3
  )
  _write_skeleton(group, manifest, batches, steps, compression, arrays)
  root = objects.pop("zarr.json")
  for key, buffer in objects.items():
    store.write(key, buffer.to_bytes())
  store.write("zarr.json", root.to_bytes())


def _max_pending(num_parameters: int) -> int:
  """Queue length: up to 256 MiB of checkpoints in flight, at least 2."""
  return max(2, min(64, (256 * 2**20) // (4 * num_parameters)))
