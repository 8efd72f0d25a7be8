"""The trace format on small synthetic traces: round trip, tampering, hostile manifests."""

import json
import os

import numpy as np
import pytest

from forging_tf import errors
from forging_tf import trace as trace_lib

_P = 15  # logreg on 4 pixels, 3 classes


def _manifest(steps=6, k=1, keep_pairs=0, batch_size=2):
  return {
      "created": "2026-11-21T00:00:00+00:00",
      "model": {"name": "logreg", "config": {}},
      "dataset": {"name": "toy", "split": "train", "num_examples": 10, "image_shape": [2, 2, 1],
                  "num_classes": 3, "fingerprint": "ab" * 32, "source": "test"},
      "batch_size": batch_size, "learning_rate": 0.01, "seed": 0, "steps": steps, "k": k,
      "keep_pairs": keep_pairs, "num_parameters": _P,
      "parameter_layout": [{"name": "logreg/logits/kernel", "shape": [4, 3], "offset": 0,
                            "size": 12},
                           {"name": "logreg/logits/bias", "shape": [3], "offset": 12, "size": 3}],
      "platform": {"id": "test"},
  }


def _write(path, steps=6, k=1, keep_pairs=0, finish=True):
  manifest = _manifest(steps, k, keep_pairs)
  batches = np.arange(steps * 2, dtype=np.int32).reshape(steps, 2) % 10
  writer = trace_lib.TraceWriter.create(str(path), manifest, batches)
  thetas = {}
  stored = trace_lib.checkpoint_steps(steps, k, keep_pairs)
  for step in stored if finish else stored[:len(stored) // 2]:
    thetas[int(step)] = np.full(_P, step, dtype=np.float32) + np.arange(_P, dtype=np.float32)
    writer.put(int(step), thetas[int(step)])
  assert writer.close() == finish
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


def test_unfinished_trace_reads_what_was_written(tmp_path):
  thetas, _ = _write(tmp_path / "t", finish=False)
  trace = trace_lib.Trace(str(tmp_path / "t"))
  assert not trace.complete and trace.num_written == 3
  np.testing.assert_array_equal(trace.checkpoint(2), thetas[2])
  with pytest.raises(errors.TraceError, match="step 3 has not been written"):
    trace.checkpoint(3)


def test_writer_refuses_out_of_order_checkpoints(tmp_path):
  writer = trace_lib.TraceWriter.create(str(tmp_path / "t"), _manifest(),
                                        np.zeros((6, 2), np.int32))
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


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(steps=-1), "steps is -1"),
    (lambda m: m.update(steps=True), "steps is True"),
    (lambda m: m.update(steps=7), "records 7 of 8 checkpoints"),
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
])
def test_hostile_manifests_are_rejected(tmp_path, edit, message):
  _write(tmp_path / "t")
  _edit_manifest(str(tmp_path / "t"), edit)
  with pytest.raises(errors.TraceError, match=message):
    trace_lib.Trace(str(tmp_path / "t"))


def test_not_a_trace(tmp_path):
  with pytest.raises(errors.TraceError, match="does not exist"):
    trace_lib.Trace(str(tmp_path / "nothing"))
  (tmp_path / "folder").mkdir()
  (tmp_path / "folder" / "zarr.json").write_text("{not json")
  with pytest.raises(errors.TraceError, match="not a forging_tf trace"):
    trace_lib.Trace(str(tmp_path / "folder"))
