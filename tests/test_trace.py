"""The trace format on small synthetic traces: round trip, tampering, hostile manifests."""

import json
import os
import shutil
import tempfile
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from forging_tf import errors
from forging_tf import trace as trace_lib

_P = 15  # logreg on 4 pixels, 3 classes


def _manifest(steps=6, k=1, keep_pairs=0, batch_size=2):
  return {
      "created": "2026-11-21T00:00:00+00:00",
      "model": {"name": "logreg", "config": {}},
      "dataset": {
          "name": "toy",
          "split": "train",
          "num_examples": 10,
          "image_shape": [2, 2, 1],
          "num_classes": 3,
          "fingerprint": "ab" * 32,
          "source": "test",
      },
      "batch_size": batch_size,
      "learning_rate": 0.01,
      "seed": 0,
      "steps": steps,
      "k": k,
      "keep_pairs": keep_pairs,
      "num_parameters": _P,
      "parameter_layout": [
          {"name": "logreg/logits/kernel", "shape": [4, 3], "offset": 0, "size": 12},
          {"name": "logreg/logits/bias", "shape": [3], "offset": 12, "size": 3},
      ],
      "platform": {"id": "test"},
  }


def _write(path, steps=6, k=1, keep_pairs=0, finish=True, compression="none"):
  manifest = _manifest(steps, k, keep_pairs)
  batches = np.arange(steps * 2, dtype=np.int32).reshape(steps, 2) % 10
  writer = trace_lib.TraceWriter.create(str(path), manifest, batches, compression)
  thetas = {}
  stored = trace_lib.checkpoint_steps(steps, k, keep_pairs)
  for step in stored if finish else stored[: len(stored) // 2]:
    thetas[int(step)] = np.full(_P, step, dtype=np.float32) + np.arange(_P, dtype=np.float32)
    writer.put(int(step), thetas[int(step)])
  assert writer.close() == finish
  assert writer.seconds.checkpoints == len(thetas) and writer.seconds.commits >= finish
  return thetas, batches


def _edit_manifest(path, edit, keep_digest=False):
  meta_path = os.path.join(path, "zarr.json")
  with open(meta_path) as f:
    meta = json.load(f)
  manifest = meta["attributes"][trace_lib.MANIFEST_KEY]
  edit(manifest)
  if not keep_digest:  # an adversary can recompute the digest; the field checks must still hold
    manifest["manifest_sha256"] = trace_lib.manifest_digest(manifest)
  with open(meta_path, "w") as f:
    json.dump(meta, f)


def test_checkpoint_steps():
  assert trace_lib.checkpoint_steps(6, 1).tolist() == [0, 1, 2, 3, 4, 5, 6]
  assert trace_lib.checkpoint_steps(6, 3).tolist() == [0, 3, 6]
  assert trace_lib.checkpoint_steps(100, 1, keep_pairs=3).tolist() == [0, 1, 50, 51, 99, 100]
  with pytest.raises(errors.ConfigError, match="multiple of k"):
    trace_lib.checkpoint_steps(7, 3)
  with pytest.raises(errors.ConfigError, match="k=1"):
    trace_lib.checkpoint_steps(6, 2, keep_pairs=2)


@pytest.mark.parametrize("k, keep_pairs", [(1, 0), (2, 0), (1, 2)])
def test_round_trip(tmp_path, k, keep_pairs):
  thetas, batches = _write(tmp_path / "t", k=k, keep_pairs=keep_pairs)
  trace = trace_lib.Trace(str(tmp_path / "t"))
  assert trace.complete and trace.num_written == len(thetas)
  assert trace.checkpoint_steps.tolist() == sorted(thetas)
  for step, theta in thetas.items():
    np.testing.assert_array_equal(trace.checkpoint(step), theta)
  for step in range(6):
    np.testing.assert_array_equal(trace.batch(step), batches[step])
  assert [spec.name for spec in trace.layout] == ["logreg/logits/kernel", "logreg/logits/bias"]
  assert trace.manifest["batches_sha256"] == trace_lib.sha256_hex(batches)
  # Readable with plain zarr + numpy, as docs/TRACE_FORMAT.md says.
  import zarr

  group = zarr.open_group(str(tmp_path / "t"), mode="r")
  np.testing.assert_array_equal(group["checkpoints"][0], thetas[0])


@pytest.mark.parametrize("compression", ["blosc-lz4", "blosc-zstd"])
def test_compressed_chunks_round_trip_bitwise_and_read_with_plain_zarr(tmp_path, compression):
  rng = np.random.default_rng(0)
  manifest, batches = _manifest(), np.zeros((6, 2), np.int32)
  writer = trace_lib.TraceWriter.create(str(tmp_path / "t"), manifest, batches, compression)
  # Values of every kind: random mantissas, zeros of both signs, subnormals, infinities.
  thetas = [rng.normal(size=_P).astype(np.float32) for _ in range(7)]
  thetas[3][:6] = [0.0, -0.0, 1e-45, -3e-39, np.inf, -np.inf]
  for step, theta in enumerate(thetas):
    writer.put(step, theta)
  assert writer.close()
  trace = trace_lib.Trace(str(tmp_path / "t"))
  assert trace.compression == compression
  import zarr

  plain = zarr.open_group(str(tmp_path / "t"), mode="r")["checkpoints"][:]
  for step, theta in enumerate(thetas):
    assert trace.checkpoint(step).tobytes() == theta.tobytes() == plain[step].tobytes()
  with open(tmp_path / "t" / "checkpoints" / "c" / "0" / "0", "rb") as f:
    assert f.read(1) == b"\x02"  # a blosc frame, not raw bytes


def test_compressed_chunks_that_claim_more_than_the_manifest_are_not_read(tmp_path):
  """A blosc header is the adversary's: one that says a chunk decompresses to more (or less)
  than 4 P bytes, or that it is longer than its file, is refused before anything is allocated;
  flipped and cut chunks are refused as well."""
  _write(tmp_path / "t", compression="blosc-zstd")
  chunks = tmp_path / "t" / "checkpoints" / "c"
  for row, (offset, value) in {1: (4, 2**31), 2: (4, 4 * _P - 4), 3: (12, 10**6)}.items():
    raw = bytearray((chunks / str(row) / "0").read_bytes())
    raw[offset : offset + 4] = value.to_bytes(4, "little")
    (chunks / str(row) / "0").write_bytes(bytes(raw))
  raw = (chunks / "4" / "0").read_bytes()
  (chunks / "4" / "0").write_bytes(raw[:-3])
  (chunks / "5" / "0").write_bytes(raw[:10])
  trace = trace_lib.Trace(str(tmp_path / "t"))
  trace.checkpoint(0)
  tracemalloc.start()
  try:
    for step in (1, 2, 3, 4, 5):
      with pytest.raises(errors.TraceError, match=f"step {step} fails its sha256"):
        trace.checkpoint(step)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 2**20


def test_checkpoints_in_a_layout_the_writer_does_not_make_are_refused(tmp_path):
  _write(tmp_path / "t")
  meta_path = tmp_path / "t" / "checkpoints" / "zarr.json"
  meta = json.loads(meta_path.read_text())
  meta["codecs"].append({"name": "gzip", "configuration": {"level": 1}})
  meta_path.write_text(json.dumps(meta))
  with pytest.raises(errors.TraceError, match="array 'checkpoints' uses codecs"):
    trace_lib.Trace(str(tmp_path / "t"))
  meta["codecs"][1:] = [
      {
          "name": "blosc",
          "configuration": dict(trace_lib.Compression.BLOSC_LZ4.blosc_configuration(), clevel=9),
      }
  ]
  meta_path.write_text(json.dumps(meta))
  with pytest.raises(errors.TraceError, match="this reader reads one little-endian chunk"):
    trace_lib.Trace(str(tmp_path / "t"))


def test_unfinished_trace_reads_what_was_written(tmp_path):
  thetas, _ = _write(tmp_path / "t", finish=False)
  trace = trace_lib.Trace(str(tmp_path / "t"))
  assert not trace.complete and trace.num_written == 3
  np.testing.assert_array_equal(trace.checkpoint(2), thetas[2])
  with pytest.raises(errors.TraceError, match="step 3 has not been written"):
    trace.checkpoint(3)


def test_writer_refuses_out_of_order_checkpoints(tmp_path):
  writer = trace_lib.TraceWriter.create(
      str(tmp_path / "t"), _manifest(), np.zeros((6, 2), np.int32)
  )
  writer.put(0, np.zeros(_P, np.float32))
  with pytest.raises(errors.TraceError, match="step 2 handed over out of order"):
    writer.put(2, np.zeros(_P, np.float32))
  writer.close()


def test_create_never_replaces_existing_data(tmp_path):
  _write(tmp_path / "t")
  before = trace_lib.Trace(str(tmp_path / "t")).checkpoint(6)
  with pytest.raises(OSError):
    trace_lib.TraceWriter.create(str(tmp_path / "t"), _manifest(), np.zeros((6, 2), np.int32))
  np.testing.assert_array_equal(trace_lib.Trace(str(tmp_path / "t")).checkpoint(6), before)
  assert [p for p in os.listdir(tmp_path) if p != "t"] == []  # no staging folder left behind


def test_a_trace_that_cannot_be_created_is_a_trace_error(tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(errors.TraceError, match="cannot create the trace"):
    trace_lib.TraceWriter.create(
        str(tmp_path / "file" / "t"), _manifest(), np.zeros((6, 2), np.int32)
    )


def test_flipped_byte_in_a_checkpoint_names_the_step(tmp_path):
  _write(tmp_path / "t")
  chunk = tmp_path / "t" / "checkpoints" / "c" / "4" / "0"
  raw = bytearray(chunk.read_bytes())
  raw[17] ^= 0x01
  chunk.write_bytes(bytes(raw))
  trace = trace_lib.Trace(str(tmp_path / "t"))
  trace.checkpoint(3)
  with pytest.raises(errors.TraceError, match="step 4 fails its sha256"):
    trace.checkpoint(4)


def test_deleted_and_truncated_checkpoint_chunks(tmp_path):
  _write(tmp_path / "t")
  os.remove(tmp_path / "t" / "checkpoints" / "c" / "2" / "0")
  chunk = tmp_path / "t" / "checkpoints" / "c" / "5" / "0"
  chunk.write_bytes(chunk.read_bytes()[:7])
  trace = trace_lib.Trace(str(tmp_path / "t"))
  with pytest.raises(errors.TraceError, match="step 2 fails its sha256"):
    trace.checkpoint(2)
  with pytest.raises(errors.TraceError, match="step 5"):
    trace.checkpoint(5)


def test_truncated_batches_array(tmp_path):
  _write(tmp_path / "t")
  chunk = tmp_path / "t" / "batches" / "c" / "0" / "0"
  chunk.write_bytes(chunk.read_bytes()[:-4])
  with pytest.raises(errors.TraceError, match="batches"):
    trace_lib.Trace(str(tmp_path / "t"))


def test_edited_manifest_fails_its_digest(tmp_path):
  _write(tmp_path / "t")
  _edit_manifest(str(tmp_path / "t"), lambda m: m.update(learning_rate=0.02), keep_digest=True)
  with pytest.raises(errors.TraceError, match="manifest_sha256"):
    trace_lib.Trace(str(tmp_path / "t"))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(steps=-1), "steps is -1"),
        (lambda m: m.update(steps=True), "steps is True"),
        (lambda m: m.update(steps=7), r"the manifest implies int32 \[7, 2\]"),
        (lambda m: m.update(num_parameters=10**12), "num_parameters"),
        (lambda m: m.update(batch_size=10**7), "batch_size"),
        (lambda m: m["model"].update(name="../../etc/passwd"), "unknown model"),
        (lambda m: m.update(learning_rate="0.01"), "learning_rate"),
        (lambda m: m.update(learning_rate=float("nan")), "learning_rate"),
        (lambda m: m["parameter_layout"][1].update(offset=11), "offset/size"),
        (lambda m: m["parameter_layout"][0].update(shape=[4, -3]), "shape"),
        (lambda m: m["parameter_layout"].pop(), "covers 12 parameters"),
        (lambda m: m.update(checkpoint_sha256=["x"] * 7), "checkpoint_sha256"),
        (lambda m: m.update(checkpoint_sha256=m["checkpoint_sha256"][:3]), "says complete"),
        (lambda m: m.update(format_version=2), "format_version"),
        (lambda m: m.update(k=4), "contradict"),
        (lambda m: m.pop("platform"), "platform"),
        (lambda m: m["dataset"].update(num_examples=1), "batch_size"),
        (lambda m: m.update(steps=10**8), r"implies int32 \[100000000, 2\]"),
        (lambda m: m.update(platform={"settings": {}}), "platform is not an object with an id"),
        (lambda m: m["parameter_layout"][1].update(offset=12.0), "offset/size 12.0/3"),
        (lambda m: m["parameter_layout"][1].update(shape=[1], size=True), "offset/size 12/True"),
        (lambda m: m["dataset"].update(image_shape="28x28"), "image_shape"),
        (lambda m: m["dataset"].update(num_classes=4), r"widths \[4, 4\] make 20 parameters"),
        (
            lambda m: m.update(model={"name": "fcn", "config": {"hidden": [10**6, 10**6]}}),
            "hidden is",
        ),
        (
            lambda m: m.update(model={"name": "fcn", "config": {"hidden": [2]}}),
            r"widths \[4, 2, 3\] make 19 parameters, not 15",
        ),
        (lambda m: m.update(model={"name": "lenet", "config": {"filters": 6}}), "unknown options"),
        (lambda m: m.update(model={"name": "logreg", "config": {"use_bias": "yes"}}), "use_bias"),
        (lambda m: m.update(steps="x" * 10**5), r"steps is 'x+\.\.\.$"),
    ],
)
def test_hostile_manifests_are_rejected(tmp_path, edit, message):
  _write(tmp_path / "t")
  _edit_manifest(str(tmp_path / "t"), edit)
  with pytest.raises(errors.TraceError, match=message):
    trace_lib.Trace(str(tmp_path / "t"))


def test_not_a_trace(tmp_path):
  with pytest.raises(errors.TraceError, match="does not exist"):
    trace_lib.Trace(str(tmp_path / "nothing"))
  (tmp_path / "folder").mkdir()
  for text in (
      "{not json",
      '{"attributes": 5}',
      '{"attributes": ' + "[" * 10**5 + "]" * 10**5 + "}",
  ):
    (tmp_path / "folder" / "zarr.json").write_text(text)
    with pytest.raises(errors.TraceError, match="not a forging_tf trace"):
      trace_lib.Trace(str(tmp_path / "folder"))


def test_a_size_bluff_allocates_nothing(tmp_path):
  """A manifest and array metadata that agree on 10^8 steps, over 48 bytes of batches."""
  _write(tmp_path / "t")
  _edit_manifest(str(tmp_path / "t"), lambda m: m.update(steps=10**8, complete=False))
  meta = json.loads((tmp_path / "t" / "batches" / "zarr.json").read_text())
  meta["shape"] = [10**8, 2]
  (tmp_path / "t" / "batches" / "zarr.json").write_text(json.dumps(meta))
  tracemalloc.start()
  try:
    with pytest.raises(
        errors.TraceError, match="'batches' holds 48 bytes, the manifest implies 800000000"
    ):
      trace_lib.Trace(str(tmp_path / "t"))
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 2**20


@pytest.mark.parametrize("target", ["/dev/zero", "outside"])
def test_links_out_of_the_trace_are_refused(tmp_path, target):
  _write(tmp_path / "t")
  (tmp_path / "outside").write_bytes(bytes(60))
  chunk = tmp_path / "t" / "checkpoints" / "c" / "3" / "0"
  chunk.unlink()
  chunk.symlink_to(target if target.startswith("/") else tmp_path / target)
  with pytest.raises(errors.TraceError, match="checkpoints/c/3/0 is a link or a special file"):
    trace_lib.Trace(str(tmp_path / "t"))


# Fuzzing: a trace comes from the adversary and may hold anything; only TraceError may come out,
# with a one-line message, and nothing large may be allocated. ------------------------------------

_HOSTILE_INTS = (
    -(10**30),
    -1,
    0,
    1,
    2,
    3,
    5,
    6,
    7,
    8,
    12,
    14,
    15,
    16,
    2**31,
    10**7,
    10**8,
    10**8 + 1,
    10**9,
    2**63 - 1,
    2**63,
    10**30,
)
_HOSTILE_STRINGS = (
    "",
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    "resnet",
    "lenet",
    "fcn",
    "logreg",
    "mnist",
    "0" * 64,
    "x" * 1000,
    "\n",
    "NaN",
)
_JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(_HOSTILE_INTS + _HOSTILE_STRINGS + (float("nan"), float("inf"))),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def _like(value) -> st.SearchStrategy:
  """Wrong values of the same type as `value`: what gets past a type check."""
  if isinstance(value, bool):
    return st.sampled_from([not value, 0, 1])
  if isinstance(value, int):
    return st.sampled_from(_HOSTILE_INTS) | st.integers() | st.sampled_from([float(value), True])
  if isinstance(value, float):
    return st.floats() | st.sampled_from([0.0, -value, float("nan"), float("inf"), 1e308])
  if isinstance(value, str):
    return st.sampled_from(_HOSTILE_STRINGS) | st.text(max_size=12)
  if isinstance(value, list):
    return st.lists(_like(value[0]) if value else _JUNK, max_size=5)
  return _JUNK


# Values a zarr reader takes for well-formed but wrong array metadata.
_ARRAY_METADATA = st.sampled_from(
    (
        [7, 15],
        [6, 2],
        [7],
        [1, 15],
        [1, 1],
        [10**9],
        [1, 10**9],
        [10**9, 10**9],
        [0],
        [],
        "float64",
        "int64",
        "uint32",
        "float16",
        "bool",
        "NaN",
        0,
        -1,
        2**40,
        [{"name": "bytes", "configuration": {"endian": "big"}}],
        [{"name": "bytes"}, {"name": "gzip", "configuration": {"level": 1}}],
        [{"name": "bytes", "configuration": {"endian": "little"}}],
        [
            {"name": "bytes", "configuration": {"endian": "little"}},
            {
                "name": "blosc",
                "configuration": trace_lib.Compression.BLOSC_ZSTD.blosc_configuration(),
            },
        ],
        [{"name": "sharding_indexed", "configuration": {"chunk_shape": [1, 15]}}],
        {"name": "v2", "configuration": {"separator": "."}},
        {"name": "default", "configuration": {"separator": "."}},
    )
)
_FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module", params=["none", "blosc-zstd"])
def pristine(tmp_path_factory, request) -> str:
  path = tmp_path_factory.mktemp("fuzz") / "t"
  _write(path, compression=request.param)
  return str(path)


def _paths(value, prefix=()):
  """Every place in a JSON document: key / index tuples, the root () first."""
  yield prefix
  children = (
      value.items()
      if isinstance(value, dict)
      else enumerate(value)
      if isinstance(value, list)
      else ()
  )
  for key, child in children:
    yield from _paths(child, prefix + (key,))


def _mutate_json(data, path: str, under: tuple = (), values=_JUNK) -> None:
  """Deletes or replaces one value of the JSON file `path` at or below `under`, or garbles the
  file's text."""
  try:
    with open(path) as f:
      document = json.load(f)
  except ValueError:
    return  # Garbled by an earlier edit already.
  places = [p for p in _paths(document) if p[: len(under)] == under] or [()]
  fields = [p for p in places if len(p) == len(under) + 1]  # Half the edits hit a field itself.
  place = data.draw(
      st.sampled_from(fields) if fields and data.draw(st.booleans()) else st.sampled_from(places)
  )
  action = data.draw(st.sampled_from(["replace"] * 6 + ["delete"] * 3 + ["text"]))
  if action == "text":
    text = json.dumps(document)
    cut = data.draw(st.integers(0, len(text)))
    with open(path, "w") as f:
      f.write(text[:cut] + data.draw(st.text(max_size=4)))
    return
  if not place:
    document = data.draw(values)
  else:
    parent = document
    for key in place[:-1]:
      parent = parent[key]
    if action == "delete":
      del parent[place[-1]]
    else:
      parent[place[-1]] = data.draw(_like(parent[place[-1]]) | values)
  with open(path, "w") as f:
    json.dump(document, f)


def _mutate_chunk(data, path: str) -> None:
  """Flips a byte of, truncates, extends or deletes the file `path`."""
  with open(path, "rb") as f:
    raw = f.read()
  action = data.draw(st.sampled_from(["flip", "truncate", "append", "delete"]))
  if action == "delete":
    os.remove(path)
    return
  if action == "flip" and raw:
    at = data.draw(st.integers(0, len(raw) - 1))
    raw = raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255))]) + raw[at + 1 :]
  elif action == "truncate":
    raw = raw[: data.draw(st.integers(0, max(0, len(raw) - 1)))]
  else:
    raw += data.draw(st.binary(min_size=1, max_size=16))
  with open(path, "wb") as f:
    f.write(raw)


def _bluff(data, path: str) -> None:
  """The adversary's cheapest threat: claim a huge (or absurd) size in a few bytes of manifest."""
  meta_path = os.path.join(path, "zarr.json")
  with open(meta_path) as f:
    meta = json.load(f)
  manifest = meta["attributes"][trace_lib.MANIFEST_KEY]
  field = data.draw(st.sampled_from(["steps", "batch_size", "num_parameters", "k", "keep_pairs"]))
  manifest[field] = data.draw(st.sampled_from([-1, 0, 7, 2**31, 10**7, 10**8, 10**9, 2**63]))
  with open(meta_path, "w") as f:
    json.dump(meta, f)


def _redigest(path: str) -> None:
  """What an adversary does after an edit: recompute manifest_sha256 so the digest passes."""
  meta_path = os.path.join(path, "zarr.json")
  try:
    with open(meta_path) as f:
      meta = json.load(f)
    manifest = meta["attributes"][trace_lib.MANIFEST_KEY]
    manifest["manifest_sha256"] = trace_lib.manifest_digest(manifest)
  except (ValueError, KeyError, TypeError, AttributeError):
    return  # Not a dict any more: nothing to recompute.
  with open(meta_path, "w") as f:
    json.dump(meta, f)


def _read_everything(path: str) -> None:
  """Opens the trace and reads what a recomputation would read; only TraceError may escape and
  nothing large may be allocated on the strength of a few hundred bytes of metadata."""
  tracemalloc.start()
  try:
    trace = trace_lib.Trace(path)
    for step in trace.checkpoint_steps[: trace.num_written][:20]:
      assert trace.checkpoint(int(step)).shape == (trace.num_parameters,)
    for step in range(min(trace.steps, 20)):
      assert trace.batch(step).shape == (trace.batch_size,)
  except errors.TraceError as e:
    assert "\n" not in str(e), str(e)
  finally:
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
  assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB allocated"


def _fuzz_copy(pristine: str) -> str:
  folder = tempfile.mkdtemp(prefix="fuzz-")
  shutil.copytree(pristine, os.path.join(folder, "t"))
  return os.path.join(folder, "t")


@_FUZZ
@given(data=st.data())
def test_fuzzed_manifests_raise_only_trace_errors(pristine, data):
  path = _fuzz_copy(pristine)
  manifest = ("attributes", trace_lib.MANIFEST_KEY)
  try:
    if data.draw(st.booleans()):
      _bluff(data, path)
    for _ in range(data.draw(st.integers(0, 3))):
      _mutate_json(
          data,
          os.path.join(path, "zarr.json"),
          under=data.draw(st.sampled_from([manifest] * 9 + [()])),
      )
    if data.draw(st.integers(0, 4)):
      _redigest(path)
    _read_everything(path)
  finally:
    shutil.rmtree(os.path.dirname(path))


@_FUZZ
@given(data=st.data())
def test_fuzzed_arrays_and_chunks_raise_only_trace_errors(pristine, data):
  path = _fuzz_copy(pristine)
  files = sorted(
      os.path.relpath(os.path.join(root, name), path)
      for root, _, names in os.walk(path)
      for name in names
      if root != path
  )
  try:
    for _ in range(data.draw(st.integers(1, 3))):
      name = data.draw(st.sampled_from(files))
      if not os.path.exists(os.path.join(path, name)):
        continue
      if name.endswith("zarr.json"):
        _mutate_json(
            data,
            os.path.join(path, name),
            values=data.draw(st.sampled_from([_JUNK, _ARRAY_METADATA])),
        )
      else:
        _mutate_chunk(data, os.path.join(path, name))
    _read_everything(path)
  finally:
    shutil.rmtree(os.path.dirname(path))
