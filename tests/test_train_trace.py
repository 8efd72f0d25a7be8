"""Training that writes traces, on the real MNIST and CIFAR-10."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import zarr

from forging_tf import errors
from forging_tf import models
from forging_tf import platform as platform_lib
from forging_tf import sgd_step
from forging_tf import trace as trace_lib
from forging_tf.train import train_lib

_B, _T = 100, 40


@pytest.fixture(scope="module")
def reference(mnist, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("traces") / "lenet_b100")
  summary = train_lib.train_trace(path, "lenet", mnist, batch_size=_B, steps=_T, seed=0)
  return path, summary


def _checkpoints(path) -> np.ndarray:
  return zarr.open_group(path, mode="r")["checkpoints"][:]


def test_trace_holds_what_training_did(reference, mnist):
  path, summary = reference
  trace = trace_lib.Trace(path)
  assert trace.complete and summary.checkpoints == _T + 1 and summary.steps_trained == _T
  assert trace.manifest["dataset"]["fingerprint"] == mnist.fingerprint
  assert trace.manifest["platform"]["settings"]["xla"] is False
  assert trace.manifest["platform"]["in_force"]["op_determinism"] is True
  model = models.build_model("lenet", (28, 28, 1), 10)
  step = sgd_step.SGDStep(model, trace.learning_rate)
  assert trace.layout == step.layout and trace.num_parameters == 61_706
  np.testing.assert_array_equal(trace.checkpoint(0), models.initial_parameters(step.layout, 0))
  np.testing.assert_array_equal(trace.batches, train_lib.batch_schedule(60_000, _B, _T, seed=0))
  # Every logged step is exactly the one SGD step applied to the logged checkpoint and batch.
  source = sgd_step.BatchSource(mnist.x_train, mnist.y_train, 10)
  for i in range(_T):
    recomputed = step(trace.checkpoint(i), *source(trace.batch(i))).numpy()
    assert np.array_equal(recomputed, trace.checkpoint(i + 1)), f"step {i}"
  assert not np.array_equal(trace.checkpoint(0), trace.checkpoint(_T))


def test_two_runs_are_bitwise_identical(reference, mnist, tmp_path):
  train_lib.train_trace(str(tmp_path / "again"), "lenet", mnist, batch_size=_B, steps=_T)
  assert np.array_equal(_checkpoints(reference[0]), _checkpoints(str(tmp_path / "again")))


@pytest.mark.parametrize("k, keep_pairs", [(5, 0), (1, 4)])
def test_interval_and_sparse_traces_store_the_same_checkpoints(
    reference, mnist, tmp_path, k, keep_pairs
):
  path = str(tmp_path / "t")
  train_lib.train_trace(path, "lenet", mnist, batch_size=_B, steps=_T, k=k, keep_pairs=keep_pairs)
  trace, full = trace_lib.Trace(path), trace_lib.Trace(reference[0])
  assert trace.checkpoint_steps.tolist() == trace_lib.checkpoint_steps(_T, k, keep_pairs).tolist()
  for step in trace.checkpoint_steps:
    assert np.array_equal(trace.checkpoint(step), full.checkpoint(step))


def test_existing_outputs_are_never_lost(reference, mnist, tmp_path):
  path, _ = reference
  before = _checkpoints(path)
  with pytest.raises(errors.ConfigError, match="finished trace; pass --overwrite"):
    train_lib.train_trace(path, "lenet", mnist, batch_size=_B, steps=_T)
  assert np.array_equal(before, _checkpoints(path))
  (tmp_path / "notes").mkdir()
  (tmp_path / "notes" / "paper.tex").write_text("mine")
  for overwrite in (False, True):
    with pytest.raises(errors.ConfigError, match="not a forging_tf trace"):
      train_lib.train_trace(
          str(tmp_path / "notes"), "lenet", mnist, batch_size=_B, steps=_T, overwrite=overwrite
      )
  assert (tmp_path / "notes" / "paper.tex").read_text() == "mine"
  copy = str(tmp_path / "copy")
  train_lib.train_trace(copy, "lenet", mnist, batch_size=_B, steps=10)
  train_lib.train_trace(copy, "lenet", mnist, batch_size=_B, steps=_T, overwrite=True)
  assert trace_lib.Trace(copy).steps == _T


def test_vggmini_takes_a_step_on_cifar10(cifar10):
  model = models.build_model("vggmini", cifar10.x_train.shape[1:], 10)
  step = sgd_step.SGDStep(model, 0.01)
  assert step.num_parameters == 5_742_986
  theta = models.initial_parameters(step.layout, seed=0)
  indices = train_lib.batch_schedule(50_000, 32, 1, seed=0)[0]
  new = step(theta, *sgd_step.BatchSource(cifar10.x_train, cifar10.y_train, 10)(indices)).numpy()
  assert np.isfinite(new).all() and 0 < np.linalg.norm(new - theta) < 1


def test_batch_schedule_is_seeded_epoch_shuffles():
  batches = train_lib.batch_schedule(10, 3, steps=7, seed=5)
  assert batches.shape == (7, 3) and batches.dtype == np.int32
  for epoch in (batches[0:3], batches[3:6]):  # 3 batches per epoch, one example dropped
    assert len(set(epoch.ravel())) == 9
  assert not np.array_equal(batches[0:3], batches[3:6])
  np.testing.assert_array_equal(batches, train_lib.batch_schedule(10, 3, 7, seed=5))


def _train_command(out, data_dir, *extra):
  return [
      sys.executable,
      "-m",
      "forging_tf.train.train",
      "--model=lenet",
      "--dataset=mnist",
      f"--batch_size={_B}",
      "--steps=300",
      f"--data_dir={data_dir}",
      f"--out={out}",
      *extra,
  ]


def _written(out) -> int:
  try:
    with open(os.path.join(out, "zarr.json")) as f:
      manifest = json.load(f)["attributes"][trace_lib.MANIFEST_KEY]
    return len(manifest["checkpoint_sha256"])
  except (OSError, ValueError, KeyError):
    return 0


@pytest.mark.parametrize("compression", ["none", "blosc-zstd"])
def test_resume_after_sigkill_equals_an_uninterrupted_run(mnist, data_dir, tmp_path, compression):
  """Also with compressed chunks: the resumed trace holds the uncompressed run's values, bitwise."""
  out = str(tmp_path / "killed")
  stored = f"--compression={compression}"
  process = subprocess.Popen(
      _train_command(out, data_dir, stored), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  deadline = time.monotonic() + 120
  while _written(out) < 100 and process.poll() is None and time.monotonic() < deadline:
    time.sleep(0.01)
  process.send_signal(signal.SIGKILL)
  process.wait()
  interrupted = trace_lib.Trace(out)
  assert not interrupted.complete and 100 <= interrupted.num_written < 301
  assert interrupted.compression == compression
  for other_run, differs in (("--lr=0.02", "learning_rate"), ("--compression=blosc-lz4", "compr")):
    other = subprocess.run(
        _train_command(out, data_dir, stored, other_run),
        capture_output=True,
        text=True,
        check=False,
    )
    assert other.returncode != 0 and "unfinished trace of another run" in other.stderr
    assert differs in other.stderr
  resumed = subprocess.run(
      _train_command(out, data_dir, stored), capture_output=True, text=True, check=False
  )
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resumed from step" in resumed.stdout and f"chunks {compression}" in resumed.stdout
  assert "trace writer:" in resumed.stdout
  reference = str(tmp_path / "uninterrupted")
  train_lib.train_trace(reference, "lenet", mnist, batch_size=_B, steps=300)
  assert trace_lib.Trace(out).complete
  assert np.array_equal(_checkpoints(out), _checkpoints(reference))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--steps=0"], "--steps=0"),
        (["--k=7"], "not a multiple of k"),
        (["--onednn=maybe"], "--onednn"),
        (["--device=tpu"], "device 'tpu'"),
        (["--model=fcn", "--hidden=10,x"], "--hidden"),
        (["--batch_size=60001"], "batch_size must be in 1..60000"),
        (["--data_dir=/nonexistent", "--nodownload"], "FORGING_TF_DATA"),
        (["--lr=nan"], "learning_rate must be positive (and finite)"),
        (["positional"], "unexpected arguments: positional (see --helpshort)"),
        (["--bogus=1"], "Unknown command line flag 'bogus'"),
        (["--compression=lzma"], "--compression"),
    ],
)
def test_binary_errors_are_one_line(data_dir, tmp_path, flags, message):
  command = _train_command(str(tmp_path / "t"), data_dir) + flags
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  last = result.stderr.strip().splitlines()[-1]
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert last.startswith("forging-train: error:") and message in last
  assert not os.path.exists(tmp_path / "t")


def test_platform_fingerprint_records_settings():
  fingerprint = platform_lib.platform_fingerprint(platform_lib.Platform())
  assert fingerprint["software"]["tensorflow"].startswith("2.")
  assert fingerprint["hardware"]["cpu"]["logical_cores"] >= 1
  assert fingerprint["in_force"]["xla_auto_jit"] is False and len(fingerprint["id"]) == 12
  with pytest.raises(errors.PlatformError, match="TF_ENABLE_ONEDNN_OPTS"):
    platform_lib.apply_platform(platform_lib.Platform(onednn=not platform_lib.onednn_enabled()))
  if not tf.config.list_physical_devices("GPU"):
    with pytest.raises(errors.PlatformError, match="sees no GPU; use --device=cpu"):
      platform_lib.apply_platform(platform_lib.Platform(device="gpu:0"))


def test_binary_applies_and_records_platform_flags(data_dir, tmp_path):
  """--onednn flips TF_ENABLE_ONEDNN_OPTS by re-executing; threads are applied; both recorded."""
  want = "off" if platform_lib.onednn_enabled() else "on"
  out = str(tmp_path / "t")
  command = _train_command(out, data_dir, f"--onednn={want}", "--intra_op_threads=1")
  result = subprocess.run(
      [c if c != "--steps=300" else "--steps=3" for c in command],
      capture_output=True,
      text=True,
      check=False,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  platform = trace_lib.Trace(out).manifest["platform"]
  assert platform["in_force"]["onednn"] is (want == "on")
  assert platform["settings"]["onednn"] is (want == "on")
  assert platform["in_force"]["intra_op_threads"] == 1
