"""Recomputation and the reproduction error, on real MNIST LeNet traces."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from forging_tf import data
from forging_tf import errors
from forging_tf import trace as trace_lib
from forging_tf.recompute import recompute_lib

_B, _T = 100, 12


@pytest.fixture(scope="module")
def trace_b100(mnist, lenet_trace) -> str:
  return lenet_trace(mnist, _B, _T, seed=1)


def _recompute(trace, out, data_dir, **kwargs):
  kwargs.setdefault("fresh_process", False)
  return recompute_lib.recompute(trace, str(out), data_dir=data_dir, download=False, **kwargs)


def _distances(out) -> dict:
  with np.load(os.path.join(out, "distances.npz")) as f:
    return {name: f[name] for name in f.files}


def test_same_deterministic_platform_reproduces_every_step_exactly(trace_b100, data_dir, tmp_path):
  summary = _recompute(trace_b100, tmp_path / "r", data_dir, repeats=2)
  assert summary.eps_repr == 0.0 and summary.steps_recomputed == _T
  distances = _distances(tmp_path / "r")
  assert distances["l2"].shape == (2, _T) and not distances["l2"].any()
  assert not distances["linf"].any()
  # summary.json is plain JSON that needs no package to read.
  with open(tmp_path / "r" / "summary.json") as f:
    plain = json.load(f)
  assert plain["eps_repr"] == 0.0 and plain["steps"] == list(range(_T))
  assert plain["max_l2_per_step"] == [0.0] * _T and plain["repeats"] == 2
  assert plain["same_platform"] is True
  with open(tmp_path / "r" / "result.json") as f:
    record = json.load(f)
  assert (
      record["trace"]["manifest_sha256"] == trace_lib.Trace(trace_b100).manifest["manifest_sha256"]
  )
  assert record["generator_platform"]["id"] == record["platform"]["id"]
  assert record["kind"] == "forging_tf.reproduction_error" and record["format_version"] == 2


def test_repeats_in_fresh_processes_and_resume(trace_b100, data_dir, tmp_path):
  out = tmp_path / "fresh"
  first = _recompute(trace_b100, out, data_dir, repeats=1, fresh_process=True, start=3, stop=7)
  assert first.eps_repr == 0.0 and first.repeats_run_now == 1
  assert _distances(out)["steps"].tolist() == [3, 4, 5, 6]
  more = _recompute(trace_b100, out, data_dir, repeats=2, fresh_process=True, start=3, stop=7)
  assert more.repeats_run_now == 1 and more.repeats == 2 and more.eps_repr == 0.0
  with pytest.raises(errors.ConfigError, match="another recomputation"):
    _recompute(trace_b100, out, data_dir, repeats=2, start=0, stop=7)
  _recompute(trace_b100, out, data_dir, repeats=1, start=0, stop=2, overwrite=True)
  assert _distances(out)["steps"].tolist() == [0, 1]


def test_k_interval_trace_recomputes_k_steps_per_update(mnist, lenet_trace, data_dir, tmp_path):
  path = lenet_trace(mnist, _B, _T, k=3, seed=1)
  summary = _recompute(path, tmp_path / "r", data_dir, repeats=1)
  assert summary.eps_repr == 0.0
  assert _distances(tmp_path / "r")["steps"].tolist() == [0, 3, 6, 9]


def _rewrite_checkpoint(path: str, step: int, theta: np.ndarray) -> None:
  """What a forger can do: replace a checkpoint and its sha256 (the trace stays valid)."""
  with open(os.path.join(path, "checkpoints", "c", str(step), "0"), "wb") as f:
    f.write(theta.astype("<f4").tobytes())
  meta_path = os.path.join(path, "zarr.json")
  with open(meta_path) as f:
    meta = json.load(f)
  meta["attributes"][trace_lib.MANIFEST_KEY]["checkpoint_sha256"][step] = trace_lib.sha256_hex(
      theta.astype(np.float32)
  )
  with open(meta_path, "w") as f:
    json.dump(meta, f)


def _tampered_copy(trace_path, tmp_path) -> str:
  """A copy of the trace whose checkpoint 5 was moved (with its digest): a valid, forged trace."""
  path = str(tmp_path / "tampered")
  shutil.copytree(trace_path, path)
  theta = trace_lib.Trace(path).checkpoint(5)
  theta[:100] += 1e-3
  _rewrite_checkpoint(path, 5, theta)
  return path


def test_tampered_checkpoint_shows_at_its_step_and_only_there(trace_b100, data_dir, tmp_path):
  path = _tampered_copy(trace_b100, tmp_path)
  summary = _recompute(path, tmp_path / "r", data_dir, repeats=1)
  l2 = _distances(tmp_path / "r")["l2"][0]
  assert l2[4] > 9e-3 and l2[5] > 9e-3  # theta_5 is the end of update 4 and the start of 5
  assert not np.delete(l2, [4, 5]).any()
  assert summary.worst_step in (4, 5) and "step 4" in summary.describe()


def test_flipped_byte_in_a_checkpoint_is_an_error_naming_the_step(trace_b100, data_dir, tmp_path):
  path = str(tmp_path / "flipped")
  shutil.copytree(trace_b100, path)
  chunk = os.path.join(path, "checkpoints", "c", "7", "0")
  with open(chunk, "r+b") as f:
    f.seek(1000)
    byte = f.read(1)
    f.seek(1000)
    f.write(bytes([byte[0] ^ 0x01]))
  with pytest.raises(errors.TraceError, match="checkpoint of step 7 fails its sha256"):
    _recompute(path, tmp_path / "r", data_dir, repeats=1)


def test_other_float_order_gives_a_tiny_nonzero_error(other_onednn_trace, data_dir, tmp_path):
  summary = _recompute(other_onednn_trace, tmp_path / "r", data_dir, repeats=1)
  l2 = _distances(tmp_path / "r")["l2"][0]
  assert 0 < summary.eps_repr < 1e-3 and l2.any()
  assert summary.generator_platform != summary.recomputer_platform


def test_distances_split_by_variable_and_update_sizes_and_distribution(
    other_onednn_trace, data_dir, tmp_path
):
  _recompute(other_onednn_trace, tmp_path / "r", data_dir, repeats=2)
  saved = _distances(tmp_path / "r")
  trace = trace_lib.Trace(other_onednn_trace)
  assert saved["variable_l2"].shape == (2, 6, len(trace.layout))
  # The parts are the distance split over the parameter layout: their squares add up to it.
  np.testing.assert_allclose(
      np.sqrt(np.square(saved["variable_l2"]).sum(axis=2)), saved["l2"], rtol=1e-12
  )
  checkpoints = [trace.checkpoint(i).astype(np.float64) for i in range(7)]
  np.testing.assert_allclose(
      saved["update_l2"],
      [np.linalg.norm(checkpoints[i + 1] - checkpoints[i]) for i in range(6)],
      rtol=1e-12,
  )
  with open(tmp_path / "r" / "summary.json") as f:
    summary = json.load(f)
  assert summary["variables"] == [spec.name for spec in trace.layout]
  worst = np.unravel_index(np.argmax(saved["l2"]), saved["l2"].shape)
  share = np.square(saved["variable_l2"][worst]) / np.square(saved["l2"][worst])
  np.testing.assert_allclose(summary["worst_step_variable_share"], share, rtol=1e-9)
  over_repeats = summary["distribution"]["over_repeats"]
  max_l2 = saved["l2"].max(axis=0)
  assert over_repeats["max"] == max_l2.max() == summary["eps_repr"]
  assert over_repeats["median"] == np.median(max_l2)
  assert over_repeats["above"]["1e-08"] == int(np.sum(max_l2 > 1e-8))
  assert [d["max"] for d in summary["distribution"]["per_repeat"]] == saved["l2"].max(1).tolist()


def test_repeats_saved_before_distances_were_split_still_resume(trace_b100, data_dir, tmp_path):
  out = tmp_path / "r"
  _recompute(trace_b100, out, data_dir, repeats=1, stop=3)
  with np.load(out / "repeats" / "000.npz") as f:
    older = {name: f[name] for name in ("steps", "l2", "linf", "seconds", "platform")}
  np.savez(out / "repeats" / "000.npz", **older)
  os.remove(out / "result.json")
  summary = _recompute(trace_b100, out, data_dir, repeats=2, stop=3)
  assert summary.repeats_run_now == 1 and summary.eps_repr == 0.0
  with open(out / "summary.json") as f:
    assert "variables" not in json.load(f)  # one repeat lacks the parts: none are claimed


def test_top_q_recomputes_the_largest_logged_updates_of_each_epoch(trace_b100, data_dir, tmp_path):
  trace = trace_lib.Trace(trace_b100)
  checkpoints = [trace.checkpoint(i).astype(np.float64) for i in range(_T + 1)]
  sizes = np.array([np.linalg.norm(checkpoints[i + 1] - checkpoints[i]) for i in range(_T)])
  # T = 12 steps of b = 100 on MNIST's 60000 examples lie in one 600-step epoch.
  summary = _recompute(trace_b100, tmp_path / "r", data_dir, repeats=1, top_q=3)
  saved = _distances(tmp_path / "r")
  assert saved["steps"].tolist() == sorted(np.argsort(-sizes)[:3].tolist())
  assert saved["candidate_steps"].tolist() == list(range(_T))
  np.testing.assert_allclose(saved["candidate_update_l2"], sizes, rtol=1e-12)
  assert summary.steps_recomputed == 3 and "top 3 of each 600-step epoch" in summary.describe()
  with open(tmp_path / "r" / "summary.json") as f:
    saved_summary = json.load(f)
  # Twelve steps in ten stages: the first two stages hold two steps, the others one.
  assert saved_summary["stages"][:3] == [[0, 2], [2, 4], [4, 5]]
  chosen = set(saved["steps"].tolist())
  assert saved_summary["recomputed_share_by_stage"] == [
      np.mean([i in chosen for i in range(a, b)]) for a, b in saved_summary["stages"]
  ]
  with pytest.raises(errors.ConfigError, match="--top_q must be >= 1"):
    _recompute(trace_b100, tmp_path / "q0", data_dir, repeats=1, top_q=0)


def test_ray_executor_equals_local_bitwise(other_onednn_trace, data_dir, tmp_path):
  ray = pytest.importorskip("ray")
  local = _recompute(other_onednn_trace, tmp_path / "local", data_dir, repeats=1)
  ray.init(
      address="local",  # a Ray instance of its own, whatever else runs on this machine
      num_cpus=2,
      include_dashboard=False,
      configure_logging=False,
      _node_ip_address="127.0.0.1",
  )
  try:
    on_ray = _recompute(
        other_onednn_trace,
        tmp_path / "ray",
        data_dir,
        repeats=1,
        executor="ray",
        ray_options=recompute_lib.RayOptions(shards=2),
    )
  finally:
    ray.shutdown()
  a, b = _distances(tmp_path / "local"), _distances(tmp_path / "ray")
  assert a["l2"].any()  # the comparison means something: distances are not all zero
  for name in ("steps", "l2", "linf", "variable_l2", "update_l2"):
    np.testing.assert_array_equal(a[name], b[name])
  assert local.recomputer_platform == on_ray.recomputer_platform


def test_dataset_that_is_not_the_traces_is_refused(mnist, lenet_trace, data_dir, tmp_path):
  x_train = mnist.x_train.copy()
  x_train[0] = 255 - x_train[0]
  changed = data.Dataset(
      "mnist",
      x_train,
      mnist.y_train,
      mnist.x_test,
      mnist.y_test,
      10,
      "test",
      data.fingerprint(x_train, mnist.y_train, mnist.x_test, mnist.y_test),
  )
  path = lenet_trace(changed, _B, 2)
  with pytest.raises(errors.DatasetError, match="point --data_dir at the data the trace"):
    _recompute(path, tmp_path / "r", data_dir, repeats=1)


def test_bad_requests_are_refused(trace_b100, data_dir, tmp_path):
  with pytest.raises(errors.TraceError, match="no trace at"):
    _recompute(str(tmp_path / "missing"), tmp_path / "r", data_dir)
  with pytest.raises(errors.ConfigError, match="outside the trace's steps 0:12"):
    _recompute(trace_b100, tmp_path / "r", data_dir, start=5, stop=13)
  with pytest.raises(errors.ConfigError, match="repeats must be"):
    _recompute(trace_b100, tmp_path / "r", data_dir, repeats=0)
  os.makedirs(tmp_path / "taken")
  (tmp_path / "taken" / "notes.txt").write_text("mine")
  with pytest.raises(errors.ConfigError, match="does not hold a reproduction-error result"):
    _recompute(trace_b100, tmp_path / "taken", data_dir, overwrite=True)
  assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--steps=5:99"], "outside the trace's steps"),
        (["--steps=abc"], "is not START:END"),
        (["--repeats=0"], "--repeats"),
        (["--executor=spark"], "--executor"),
    ],
)
def test_binary_errors_are_one_line(trace_b100, data_dir, tmp_path, flags, message):
  result = subprocess.run(
      [
          sys.executable,
          "-m",
          "forging_tf.recompute.recompute",
          f"--trace={trace_b100}",
          f"--data_dir={data_dir}",
          f"--out={tmp_path / 'r'}",
          *flags,
      ],
      capture_output=True,
      text=True,
      check=False,
  )
  last = result.stderr.strip().splitlines()[-1]
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert last.startswith("forging-recompute: error:") and message in last, last


def test_missing_trace_binary_error(data_dir, tmp_path):
  result = subprocess.run(
      [
          sys.executable,
          "-m",
          "forging_tf.recompute.recompute",
          f"--trace={tmp_path / 'nothing'}",
          f"--out={tmp_path / 'r'}",
      ],
      capture_output=True,
      text=True,
      check=False,
  )
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "no trace at" in result.stderr.strip().splitlines()[-1]


def _recompute_command(trace, out, data_dir, *flags_):
  return [
      sys.executable,
      "-m",
      "forging_tf.recompute.recompute",
      f"--trace={trace}",
      f"--data_dir={data_dir}",
      f"--out={out}",
      *flags_,
  ]


def _files(folder) -> list[str]:
  return sorted(
      os.path.relpath(os.path.join(root, name), folder)
      for root, _, names in os.walk(folder)
      for name in names
  )


def _running_in_group(group: int) -> list[int]:
  """Processes (not zombies) in process group `group`, from /proc."""
  pids = []
  for entry in os.listdir("/proc"):
    try:
      with open(f"/proc/{entry}/stat") as f:
        state, _, pgrp = f.read().rsplit(")", 1)[1].split()[:3]
    except (OSError, ValueError):
      continue
    if int(pgrp) == group and state != "Z":
      pids.append(int(entry))
  return pids


def test_resume_after_sigkill_equals_an_uninterrupted_run(trace_b100, data_dir, tmp_path):
  # A forged checkpoint gives nonzero distances, so that "equal" compares numbers, not zeros.
  path = _tampered_copy(trace_b100, tmp_path)
  out = str(tmp_path / "killed")
  command = _recompute_command(path, out, data_dir, "--repeats=2")
  process = subprocess.Popen(
      command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
  )
  try:
    deadline = time.monotonic() + 120
    while (
        not os.path.exists(os.path.join(out, "repeats", "000.npz"))
        and process.poll() is None
        and time.monotonic() < deadline
    ):
      time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # while repeat 1 runs in its worker process
    process.wait()
    assert process.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 60
    while _running_in_group(process.pid) and time.monotonic() < deadline:
      time.sleep(0.1)
  finally:
    if _running_in_group(process.pid):
      os.killpg(process.pid, signal.SIGKILL)
  # The orphaned worker of repeat 1 noticed that its parent was gone and stopped before it
  # wrote a result; what the killed run finished is whole, the rest is hidden litter.
  assert not [name for name in _files(out) if name.endswith("result.npz")]
  finished = [
      name for name in _files(out) if not any(part.startswith(".") for part in name.split(os.sep))
  ]
  assert finished == ["repeats/000.npz", "request.json"]
  recompute_lib.load_repeat(os.path.join(out, "repeats", "000.npz"), "repeat 0")  # whole
  resumed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "(1 run now" in resumed.stdout
  reference = str(tmp_path / "uninterrupted")
  _recompute(path, reference, data_dir, repeats=2)
  assert _files(out) == _files(reference)  # nothing left over from the killed run
  killed, uninterrupted = _distances(out), _distances(reference)
  assert killed["l2"].any()
  for name in ("steps", "l2", "linf"):
    np.testing.assert_array_equal(killed[name], uninterrupted[name])
  with (
      open(os.path.join(out, "summary.json")) as f,
      open(os.path.join(reference, "summary.json")) as g,
  ):
    assert json.load(f) == json.load(g)


def test_binary_names_the_step_of_a_flipped_checkpoint_byte_once(trace_b100, data_dir, tmp_path):
  """The error comes from the worker process of repeat 0 and is reported once, on one line."""
  path = str(tmp_path / "flipped")
  shutil.copytree(trace_b100, path)
  with open(os.path.join(path, "checkpoints", "c", "7", "0"), "r+b") as f:
    f.seek(1000)
    byte = f.read(1)
    f.seek(1000)
    f.write(bytes([byte[0] ^ 0x01]))
  result = subprocess.run(
      _recompute_command(path, tmp_path / "r", data_dir),
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  lines = result.stderr.strip().splitlines()
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert lines[-1].startswith(
      f"forging-recompute: error: {path}: checkpoint of step 7 fails its sha256"
  ), lines[-1]
  assert sum("error:" in line for line in lines) == 1, result.stderr[-2000:]
