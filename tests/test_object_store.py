"""Traces and results on object storage: an S3 server (moto) on the loopback, and memory://."""

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import uuid

import numpy as np
import pytest

from forging_tf import errors
from forging_tf import results
from forging_tf import storage
from forging_tf import trace as trace_lib
from forging_tf.attacks import attack_lib
from forging_tf.attacks import settings as attack_settings
from forging_tf.recompute import recompute_lib
from forging_tf.train import train_lib

_B, _T = 100, 6
_BUCKET = "forging"


@pytest.fixture(scope="module")
def s3():
  """An S3 server on 127.0.0.1 with the bucket `forging`, and the environment that points s3fs
  (in this process and in the ones it starts) at it with fake credentials."""
  moto_server = pytest.importorskip("moto.server")
  s3fs = pytest.importorskip("s3fs")
  logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
  server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
  server.start()
  try:
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as patch:
      for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "FSSPEC_S3_ENDPOINT_URL"):
        patch.delenv(name, raising=False)
      patch.setenv("AWS_ACCESS_KEY_ID", "testing")
      patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
      patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
      patch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
      fs = s3fs.S3FileSystem(skip_instance_cache=True)
      fs.mkdir(_BUCKET)
      yield fs
  finally:
    server.stop()


def _train_command(out, data_dir, steps, *extra):
  return [
      sys.executable,
      "-m",
      "forging_tf.train.train",
      "--model=lenet",
      "--dataset=mnist",
      f"--batch_size={_B}",
      f"--steps={steps}",
      f"--data_dir={data_dir}",
      f"--out={out}",
      *extra,
  ]


@pytest.fixture(scope="module")
def traces(s3, data_dir, tmp_path_factory) -> tuple[str, str]:
  """(S3 URL, local folder): one forging-train command, written to both, in two processes at
  once. oneDNN is switched to the other setting, so that recomputing them here gives nonzero
  distances to compare."""
  from forging_tf import platform as platform_lib  # pylint: disable=import-outside-toplevel

  onednn = "--onednn=" + ("off" if platform_lib.onednn_enabled() else "on")
  url = f"s3://{_BUCKET}/traces/lenet"
  local = str(tmp_path_factory.mktemp("traces") / "lenet")
  runs = [
      subprocess.Popen(
          _train_command(out, data_dir, _T, onednn),
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for out in (url, local)
  ]
  for run in runs:
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr[-2000:]
    assert "trace " in stdout
  return url, local


def test_train_writes_the_same_trace_to_s3_as_to_a_folder(traces, s3, tmp_path):
  url, local = traces
  on_s3, in_folder = trace_lib.Trace(url), trace_lib.Trace(local)
  assert on_s3.path == url and on_s3.complete and on_s3.identity()["path"] == url
  # Every manifest field but the time of creation (and so the digest over it) is the same.
  differ = {"created", "manifest_sha256"}
  assert {k: v for k, v in on_s3.manifest.items() if k not in differ} == {
      k: v for k, v in in_folder.manifest.items() if k not in differ
  }
  for step in on_s3.checkpoint_steps:
    assert np.array_equal(on_s3.checkpoint(step), in_folder.checkpoint(step))
  # A download of the objects is a trace with the same digest, read from a folder.
  copy = str(tmp_path / "copy")
  s3.get(f"{_BUCKET}/traces/lenet", copy, recursive=True)
  assert trace_lib.Trace(copy).manifest == on_s3.manifest
  assert not any(key.endswith(".partial") for key in storage.at(url).sizes())


def test_ray_workers_read_the_trace_from_s3(traces, data_dir, tmp_path, monkeypatch):
  ray = pytest.importorskip("ray")
  url, local = traces
  specs = []
  ray_repeat = recompute_lib._ray_repeat

  def recorded(spec, options):
    specs.append(dict(spec))
    return ray_repeat(spec, options)

  monkeypatch.setattr(recompute_lib, "_ray_repeat", recorded)
  here = recompute_lib.recompute(
      local, str(tmp_path / "local"), repeats=1, fresh_process=False, data_dir=data_dir
  )
  ray.init(
      address="local",  # a Ray instance of its own, whatever else runs on this machine
      num_cpus=2,
      include_dashboard=False,
      configure_logging=False,
      _node_ip_address="127.0.0.1",
  )
  try:
    on_ray = recompute_lib.recompute(
        url,
        str(tmp_path / "ray"),
        repeats=1,
        executor="ray",
        ray_options=recompute_lib.RayOptions(shards=2),
        data_dir=data_dir,
    )
  finally:
    ray.shutdown()
  assert [spec["trace"] for spec in specs] == [url]  # the workers got the URL, no local copy
  a = results.read_npz(str(tmp_path / "local" / "distances.npz"), "", ("steps", "l2", "linf"))
  b = results.read_npz(str(tmp_path / "ray" / "distances.npz"), "", ("steps", "l2", "linf"))
  assert a["l2"].any()  # the comparison means something: distances are not all zero
  for name in ("steps", "l2", "linf"):
    np.testing.assert_array_equal(a[name], b[name])
  assert here.recomputer_platform == on_ray.recomputer_platform


def _copy(s3, url: str, name: str) -> str:
  """A copy of the trace at `url` under a new prefix, for a test to damage."""
  target = f"{_BUCKET}/damaged/{name}-{uuid.uuid4().hex[:8]}"
  s3.copy(url.removeprefix("s3://"), target, recursive=True)
  return f"s3://{target}"


def _edit_manifest(s3, url: str, edit) -> None:
  """What a forger can do: edit the manifest and recompute its digest."""
  key = url.removeprefix("s3://") + "/zarr.json"
  meta = json.loads(s3.cat_file(key))
  manifest = meta["attributes"][trace_lib.MANIFEST_KEY]
  edit(manifest)
  manifest["manifest_sha256"] = trace_lib.manifest_digest(manifest)
  s3.pipe_file(key, json.dumps(meta).encode())


def test_damaged_checkpoint_objects_are_trace_errors(traces, s3, monkeypatch):
  url = _copy(s3, traces[0], "chunks")
  key = url.removeprefix("s3://") + "/checkpoints/c/{}/0"
  raw = s3.cat_file(key.format(2))
  s3.pipe_file(key.format(2), raw[:1000])  # truncated
  flipped = bytearray(s3.cat_file(key.format(3)))
  flipped[17] ^= 0x01
  s3.pipe_file(key.format(3), bytes(flipped))  # altered
  s3.pipe_file(key.format(4), s3.cat_file(key.format(4)) + bytes(2**20))  # larger than 4 P
  s3.rm(key.format(5))  # missing
  reads = []
  read = storage.ObjectStorage.read

  def recorded(self, key, limit=None):
    reads.append((key, limit))
    return read(self, key, limit)

  monkeypatch.setattr(storage.ObjectStorage, "read", recorded)
  trace = trace_lib.Trace(url)
  trace.checkpoint(1)
  for step in (2, 3, 4, 5):
    with pytest.raises(errors.TraceError, match=f"step {step} fails its sha256"):
      trace.checkpoint(step)
  # Sizes are asked before anything is read: the short and long objects are never read, and no
  # read asks for more than the manifest implies.
  chunks_read = [k for k, _ in reads if k.startswith("checkpoints/")]
  assert chunks_read == ["checkpoints/c/1/0", "checkpoints/c/3/0"]
  assert all(limit == 4 * trace.num_parameters for k, limit in reads if k in chunks_read)


def test_a_size_bluff_on_s3_allocates_nothing(traces, s3):
  """A manifest and array metadata that agree on 10^8 steps, over 2,400 bytes of batches."""
  url = _copy(s3, traces[0], "bluff")
  _edit_manifest(s3, url, lambda m: m.update(steps=10**8, complete=False))
  key = url.removeprefix("s3://") + "/batches/zarr.json"
  meta = json.loads(s3.cat_file(key))
  meta["shape"] = [10**8, _B]
  s3.pipe_file(key, json.dumps(meta).encode())
  tracemalloc.start()
  try:
    with pytest.raises(errors.TraceError, match=f"'batches' holds {4 * _B * _T} bytes"):
      trace_lib.Trace(url)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 16 * 2**20  # the bluff implies 40 GB of batches


def test_edited_manifest_on_s3_fails_its_digest(traces, s3):
  url = _copy(s3, traces[0], "edited")
  key = url.removeprefix("s3://") + "/zarr.json"
  meta = json.loads(s3.cat_file(key))
  meta["attributes"][trace_lib.MANIFEST_KEY]["learning_rate"] = 0.02
  s3.pipe_file(key, json.dumps(meta).encode())
  with pytest.raises(errors.TraceError, match="fails its manifest_sha256"):
    trace_lib.Trace(url)


def _written(s3, url: str) -> int:
  try:
    meta = json.loads(s3.cat_file(url.removeprefix("s3://") + "/zarr.json"))
    return len(meta["attributes"][trace_lib.MANIFEST_KEY]["checkpoint_sha256"])
  except (OSError, ValueError, KeyError):
    return 0


def _uncommitted(s3, url: str) -> list[str]:
  """Checkpoint chunks on the store beyond the manifest's last commit."""
  written = _written(s3, url)
  return [
      key
      for key in storage.at(url).sizes()
      if key.startswith("checkpoints/c/") and int(key.split("/")[2]) >= written
  ]


def test_resume_on_s3_after_sigkill_equals_an_uninterrupted_run(s3, mnist, data_dir, tmp_path):
  """Killed after a manifest commit, while chunk PUTs go on past it (a commit every ~2 s, a
  chunk every few tens of ms): the resumed run replaces the chunks that were written but not
  committed."""
  steps = 100
  for attempt in range(3):  # a commit landing between the last look and the kill: again
    url = f"s3://{_BUCKET}/killed/lenet{attempt}"
    process = subprocess.Popen(
        _train_command(url, data_dir, steps),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
      if _written(s3, url) >= 1 and _uncommitted(s3, url):
        break
      time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    if _uncommitted(s3, url):  # chunks were written past the last commit
      break
  else:
    pytest.fail("three runs were never killed with chunks written past the last commit")
  interrupted = trace_lib.Trace(url)
  assert not interrupted.complete and 1 <= interrupted.num_written < steps + 1
  resumed = subprocess.run(
      _train_command(url, data_dir, steps), capture_output=True, text=True, check=False
  )
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resumed from step" in resumed.stdout
  reference = str(tmp_path / "uninterrupted")
  train_lib.train_trace(reference, "lenet", mnist, batch_size=_B, steps=steps)
  on_s3, uninterrupted = trace_lib.Trace(url), trace_lib.Trace(reference)
  assert on_s3.complete
  for step in on_s3.checkpoint_steps:
    assert np.array_equal(on_s3.checkpoint(step), uninterrupted.checkpoint(step)), step


def test_recompute_and_attack_results_on_s3(traces, s3, mnist, data_dir):
  url = traces[0]
  out = f"s3://{_BUCKET}/results/repro"
  first = recompute_lib.recompute(url, out, repeats=1, fresh_process=False, data_dir=data_dir)
  assert first.repeats_run_now == 1 and first.out == out
  # A rerun downloads the finished repeat and runs only the new one.
  more = recompute_lib.recompute(url, out, repeats=2, fresh_process=False, data_dir=data_dir)
  assert more.repeats_run_now == 1 and more.repeats == 2 and more.eps_repr == first.eps_repr
  keys = set(storage.at(out).sizes())
  assert keys == {
      "request.json",
      "repeats/000.npz",
      "repeats/001.npz",
      "distances.npz",
      "summary.json",
      "result.json",
  }
  record = results.read_record(out + "/result.json", results.ResultKind.REPRODUCTION_ERROR)
  assert record["trace"]["path"] == url and record["repeats"] == 2
  with pytest.raises(errors.ConfigError, match="another recomputation"):
    recompute_lib.recompute(url, out, repeats=1, stop=3, fresh_process=False, data_dir=data_dir)
  recompute_lib.recompute(
      url, out, repeats=1, stop=3, fresh_process=False, data_dir=data_dir, overwrite=True
  )
  assert "repeats/001.npz" not in storage.at(out).sizes()

  attacks = f"s3://{_BUCKET}/results/attack"
  settings = attack_settings.AttackSettings("thudi", "1", ("1/b",), runs=1, M=4, n=100)
  summary = attack_lib.run_attacks(url, mnist, settings, attacks)
  assert summary["trace"]["path"] == url
  assert set(storage.at(attacks).sizes()) >= {"summary.json", "approximation_error.npy"}
  assert results.read_json(attacks + "/summary.json", "") == json.loads(json.dumps(summary))
  with pytest.raises(errors.ConfigError, match="pass --overwrite"):
    attack_lib.run_attacks(url, mnist, settings, attacks)
  with pytest.raises(errors.ConfigError, match="does not hold attack results"):
    attack_lib.run_attacks(url, mnist, settings, out)


def test_a_prefix_holding_other_objects_is_refused_in_one_line(s3, data_dir):
  s3.pipe_file(f"{_BUCKET}/notes/paper.tex", b"mine")
  run = subprocess.run(
      _train_command(f"s3://{_BUCKET}/notes", data_dir, _T),
      capture_output=True,
      text=True,
      check=False,
  )
  assert run.returncode != 0 and "Traceback" not in run.stderr
  assert run.stderr.strip().splitlines()[-1] == (
      "forging-train: error: s3://forging/notes holds objects that are not a forging_tf "
      "trace's ('paper.tex'); choose another --out or remove them"
  )
  assert set(storage.at(f"s3://{_BUCKET}/notes").sizes()) == {"paper.tex"}


# The storage layer on memory://, without a server. ----------------------------------------------


def _toy_manifest() -> dict:
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
      "batch_size": 2,
      "learning_rate": 0.01,
      "seed": 0,
      "steps": 4,
      "k": 1,
      "keep_pairs": 0,
      "num_parameters": 15,
      "parameter_layout": [
          {"name": "logreg/logits/kernel", "shape": [4, 3], "offset": 0, "size": 12},
          {"name": "logreg/logits/bias", "shape": [3], "offset": 12, "size": 3},
      ],
      "platform": {"id": "test"},
  }


def _memory_url() -> str:
  return f"memory://forging-{uuid.uuid4().hex[:12]}/trace"


def _create(url: str, compression="none", finish=True) -> trace_lib.TraceWriter:
  batches = np.arange(8, dtype=np.int32).reshape(4, 2)
  writer = trace_lib.TraceWriter.create(url, _toy_manifest(), batches, compression)
  for step in range(5 if finish else 2):
    writer.put(step, np.full(15, step, np.float32))
  writer.close()
  return writer


@pytest.mark.parametrize("compression", ["none", "blosc-lz4"])
def test_memory_round_trip(compression):
  url = _memory_url()
  _create(url, compression)
  trace = trace_lib.Trace(url)
  assert trace.path == url and trace.complete and trace.compression == compression
  np.testing.assert_array_equal(trace.checkpoint(3), np.full(15, 3, np.float32))
  assert trace_lib.is_trace(url) and not trace_lib.is_trace(url + "-other")


def test_a_creation_cut_short_leaves_no_trace_and_is_replaced():
  url = _memory_url()
  store = storage.at(url)
  store.write("checkpoints/zarr.json", b"{}")  # what a killed creation or deletion leaves
  store.write("checkpoints/c/9/0", bytes(60))
  assert not trace_lib.is_trace(url)
  with pytest.raises(errors.TraceError, match="is not a forging_tf trace"):
    trace_lib.Trace(url)
  _create(url)
  assert trace_lib.Trace(url).complete and "checkpoints/c/9/0" not in store.sizes()
  with pytest.raises(FileExistsError):
    _create(url)
  trace_lib.remove(url)
  assert store.sizes() == {}


def test_unfinished_trace_on_memory_resumes():
  url = _memory_url()
  _create(url, finish=False)
  trace = trace_lib.Trace(url)
  assert not trace.complete and trace.num_written == 2
  writer = trace_lib.TraceWriter.reopen(url)
  for step in range(2, 5):
    writer.put(step, np.full(15, step, np.float32))
  assert writer.close() and trace_lib.Trace(url).num_written == 5


@pytest.mark.parametrize(
    "url, message",
    [
        ("memory://bucket/a/../b", "no '.' or '..' segments"),
        ("nosuchscheme://bucket/trace", "fsspec knows no storage nosuchscheme://"),
        ("gs://bucket/trace", "gs:// needs gcsfs: pip install gcsfs"),
    ],
)
def test_urls_that_cannot_be_used_are_config_errors(url, message):
  if url.startswith("gs:") and importlib.util.find_spec("gcsfs"):
    pytest.skip("gcsfs is installed")
  with pytest.raises(errors.ConfigError, match=message.replace(".", r"\.")):
    trace_lib.Trace(url)


def test_paths_and_urls():
  assert storage.is_url("s3://bucket/trace") and storage.is_url("memory://x")
  assert not storage.is_url("traces/lenet") and not storage.is_url("file:///tmp/t")
  assert storage.absolute("s3://bucket/trace/") == "s3://bucket/trace/"
  assert storage.absolute("file:///tmp/t") == "/tmp/t"
  assert storage.absolute("t") == os.path.abspath("t")
  assert storage.join("s3://b/r/", "result.json") == "s3://b/r/result.json"
