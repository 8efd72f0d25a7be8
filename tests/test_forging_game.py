"""The forging game (paper Algorithm 1) and forging-verify, on small LeNet/MNIST traces."""

import json
import os
import shutil

import numpy as np
import pytest

from forging_tf import domain
from forging_tf import errors
from forging_tf import forging_game
from forging_tf import sgd_step
from forging_tf import trace as trace_lib

_B, _T = 20, 4


@pytest.fixture(scope="module")
def traces(mnist, lenet_trace) -> dict[int, str]:
  """k -> a LeNet/MNIST trace with b=20, T=4 storing every k-th checkpoint."""
  return {k: lenet_trace(mnist, _B, _T, k=k, seed=2) for k in (1, 2)}


@pytest.fixture(scope="module")
def step_fn(traces, mnist):
  return sgd_step.step_for_trace(trace_lib.Trace(traces[1]), mnist)


def _one_swapped(trace: trace_lib.Trace, step: int) -> np.ndarray:
  """B_step with its first example replaced by an example outside the batch."""
  batch = trace.batch(step).copy()
  batch[0] = next(i for i in range(1000) if i not in set(batch.tolist()))
  return batch


def test_identical_batches_are_rejected(traces, mnist, step_fn):
  """B_t, reordered, as explicit pixels, and with its zero pixels written as -0.0: the same batch,
  REJECTed by that rule whatever the margin D (it adds and removes nothing)."""
  trace = trace_lib.Trace(traces[1])
  batch = trace.batch(2)
  reordered = np.roll(batch, 5)
  explicit = forging_game.examples_from_arrays(
      mnist.x_train[reordered], mnist.y_train[reordered], 10
  )
  signed_zeros = np.where(explicit[0] == 0, np.float32(-0.0), explicit[0])
  assert np.signbit(signed_zeros).any()
  for x, y in (
      forging_game.examples_from_indices(mnist, batch),
      forging_game.examples_from_indices(mnist, reordered),
      explicit,
      (signed_zeros, explicit[1]),
  ):
    for min_distance in (0.0, 16.0):
      result = forging_game.play(trace, 2, x, y, mnist, 1.0, step_fn, min_distance=min_distance)
      assert result.decision == forging_game.REJECT and result.error is None
      assert "equals B_2 as a multiset" in result.reason
      assert result.min_distance == min_distance


def test_added_and_removed_is_the_multiset_difference_by_value(traces, mnist):
  trace = trace_lib.Trace(traces[1])
  true_x, true_y = forging_game.examples_from_indices(mnist, trace.batch(1))

  def difference(x, y) -> tuple[list[int], list[int]]:
    added, removed = forging_game.added_and_removed(x, y, true_x, true_y)
    return added.tolist(), removed.tolist()

  order = np.roll(np.arange(_B), 5)
  signed_zeros = np.where(true_x == 0, np.float32(-0.0), true_x)
  assert difference(true_x[order], true_y[order]) == ([], [])
  assert difference(signed_zeros[order], true_y[order]) == ([], [])
  assert difference(*forging_game.examples_from_indices(mnist, _one_swapped(trace, 1))) == (
      [0],
      [0],
  )
  # Example 0 twice in place of example 19: its second occurrence is the one added.
  twice = np.concatenate([[0], np.arange(_B - 1)])
  assert difference(true_x[twice], true_y[twice]) == ([1], [_B - 1])
  # The label is part of the example: relabelling example 2 adds and removes it.
  relabelled = true_y.copy()
  relabelled[2] = np.roll(relabelled[2], 1)
  assert difference(true_x, relabelled) == ([2], [2])


def test_out_of_domain_and_wrong_size_batches_are_rejected(traces, mnist, step_fn):
  trace = trace_lib.Trace(traces[1])
  x, y = forging_game.examples_from_indices(mnist, _one_swapped(trace, 1))
  off_grid, above, exact_real, soft = x.copy(), x.copy(), x.astype(np.float64), y.copy()
  off_grid[3, 10, 10, 0] = 0.5
  above[0, 0, 0, 0] = 1.5
  exact_real[0, 14, 14, 0] = 128 / 255  # the real number, not the float32 pixel of level 128
  soft[2] = 0.1
  for x_, y_, reason in (
      (off_grid, y, "pixel 290 of example 3"),
      (above, y, "example 0"),
      (exact_real, y, "off the grid"),
      (x, soft, "not a one-hot row"),
      (x[:-1], y[:-1], "has 19 examples"),
  ):
    result = forging_game.play(trace, 1, x_, y_, mnist, 1.0, step_fn)
    assert result.decision == forging_game.REJECT and result.error is None
    assert reason in result.reason, result.reason
  assert domain.domain_violation(x, y, 10) is None


def test_a_near_copy_nearer_than_the_margin_is_rejected_with_the_pair_named(traces, mnist, step_fn):
  """B_1 reordered, with its example at position 3 (now at 8) one pixel 3 grey levels brighter: at
  D = 4 a forgery of nothing, REJECTed naming both positions; at D = 3 (and 0) a forgery that is
  recomputed and judged by epsilon."""
  trace = trace_lib.Trace(traces[1])
  batch = trace.batch(1)
  order = np.roll(np.arange(_B), 5)
  assert order[8] == 3
  images, labels = mnist.x_train[batch][order], mnist.y_train[batch][order]
  images[8].flat[np.argmin(images[8])] += 3
  x, y = forging_game.examples_from_arrays(images, labels, 10)
  assert domain.pixel_distances(x[8:9], mnist.x_train[batch[3:4]]).tolist() == [[3.0]]
  rejected = forging_game.play(trace, 1, x, y, mnist, 10.0, step_fn, min_distance=4)
  assert rejected.decision == forging_game.REJECT and rejected.error is None
  assert rejected.min_distance == 4.0
  assert rejected.reason == (
      f"forged example at position 8 is 3 grey levels from B_1's example at position 3 "
      f"(training index {batch[3]}), less than the margin D = 4"
  )
  for min_distance in (3.0, 0.0):
    scored = forging_game.play(trace, 1, x, y, mnist, 10.0, step_fn, min_distance=min_distance)
    assert scored.accepted and scored.error > 0 and scored.min_distance == min_distance
    assert scored.reason.startswith("recomputed theta_2 from theta_1: error ")
  # The distance is the images' alone: B_1 with example 2 relabelled is 0 away from B_1.
  true_x, true_y = forging_game.examples_from_indices(mnist, batch)
  true_y[2] = np.roll(true_y[2], 1)
  relabelled = forging_game.play(trace, 1, true_x, true_y, mnist, 10.0, step_fn, min_distance=0.5)
  assert relabelled.reason.startswith(
      "forged example at position 2 is 0 grey levels from B_1's example at position 2 "
  )


def test_random_step_is_uniform_over_the_steps_and_replays_per_seed():
  draws = [forging_game.random_step(_T, seed) for seed in range(100)]
  assert draws == [forging_game.random_step(_T, seed) for seed in range(100)]
  assert sorted(set(draws)) == list(range(_T))
  # The recorded seed replays the draw with numpy alone.
  generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence([7])))
  assert forging_game.random_step(1200, 7) == generator.integers(1200)


@pytest.mark.parametrize("k, step, span", [(1, 1, (1, 2)), (2, 1, (0, 2)), (2, 2, (2, 4))])
def test_true_batch_recomputes_exactly_and_forgeries_are_judged_by_epsilon(
    traces, mnist, step_fn, k, step, span
):
  trace = trace_lib.Trace(traces[k])
  assert forging_game.recomputation_span(trace, step) == span
  # eps_repr = 0: the verifier recomputes on the platform that wrote the trace.
  true_x, true_y = forging_game.examples_from_indices(mnist, trace.batch(step))
  assert forging_game.recomputation_error(trace, step, true_x, true_y, mnist, step_fn) == 0.0
  x, y = forging_game.examples_from_indices(mnist, _one_swapped(trace, step))
  error = forging_game.recomputation_error(trace, step, x, y, mnist, step_fn)
  assert error > 0
  accepted = forging_game.play(trace, step, x, y, mnist, error, step_fn)
  assert accepted.accepted and accepted.error == error
  assert (accepted.recomputed_from, accepted.recomputed_to) == span
  assert not forging_game.play(trace, step, x, y, mnist, np.nextafter(error, 0), step_fn).accepted
  # Explicit float pixels on the grid are the same forgery as the indices.
  explicit = forging_game.play(
      trace,
      step,
      domain.PIXEL_VALUES[mnist.x_train[_one_swapped(trace, step)]],
      y,
      mnist,
      error,
      step_fn,
  )
  assert explicit.accepted and explicit.error == error


def test_bad_submissions_are_errors(traces, mnist, step_fn):
  trace = trace_lib.Trace(traces[1])
  x, y = forging_game.examples_from_indices(mnist, trace.batch(0))
  with pytest.raises(errors.ConfigError, match="epsilon"):
    forging_game.play(trace, 0, x, y, mnist, -1.0, step_fn)
  for min_distance in (-1.0, np.nan, np.inf):
    with pytest.raises(errors.ConfigError, match="min_distance must be a finite number >= 0"):
      forging_game.play(trace, 0, x, y, mnist, 1.0, step_fn, min_distance=min_distance)
  with pytest.raises(errors.ConfigError, match="takes"):
    forging_game.play(trace, 0, x[:, :27], y, mnist, 1.0, step_fn)
  with pytest.raises(errors.TraceError, match="outside the trace's steps"):
    forging_game.play(trace, _T, x, y, mnist, 1.0, step_fn)
  with pytest.raises(errors.ConfigError, match="integers in 0..59999"):
    forging_game.examples_from_indices(mnist, np.array([0, 60_000]))
  with pytest.raises(errors.ConfigError, match="class ids"):
    forging_game.examples_from_arrays(mnist.x_train[:2], np.array([3, 10]), 10)


def _edited_copy(path: str, to: str, edit) -> str:
  """The trace at `path` copied to `to` with its manifest edited and its digest recomputed: what
  a forger can publish."""
  shutil.copytree(path, to)
  meta_path = os.path.join(to, "zarr.json")
  with open(meta_path) as f:
    meta = json.load(f)
  manifest = meta["attributes"][trace_lib.MANIFEST_KEY]
  edit(manifest)
  manifest["manifest_sha256"] = trace_lib.manifest_digest(manifest)
  with open(meta_path, "w") as f:
    json.dump(meta, f)
  return to


def test_a_trace_edited_to_another_model_or_data_is_refused(traces, mnist, tmp_path):
  logreg = _edited_copy(
      traces[1], str(tmp_path / "logreg"), lambda m: m["model"].update(name="logreg")
  )
  with pytest.raises(
      errors.TraceError, match=r"widths \[784, 10\] make 7850 parameters, not 61706"
  ):
    trace_lib.Trace(logreg)
  vggmini = _edited_copy(
      traces[1], str(tmp_path / "vggmini"), lambda m: m["model"].update(name="vggmini")
  )
  with pytest.raises(errors.TraceError, match="parameter layout of vggmini built here differs"):
    sgd_step.step_for_trace(trace_lib.Trace(vggmini), mnist)
  # The model is built from the data's shape, so the shape the trace states must be the data's.
  shape = _edited_copy(
      traces[1], str(tmp_path / "shape"), lambda m: m["dataset"].update(image_shape=[1, 1, 1])
  )
  with pytest.raises(errors.DatasetError, match=r"describes image_shape \[1, 1, 1\]"):
    sgd_step.step_for_trace(trace_lib.Trace(shape), mnist)


def test_verify_binary_exit_codes(traces, mnist, data_dir, tmp_path, verify_binary):
  trace = trace_lib.Trace(traces[1])
  common = [f"--trace={traces[1]}", "--step=1", f"--data_dir={data_dir}"]
  forged = ",".join(str(i) for i in _one_swapped(trace, 1))
  accepted = verify_binary(*common, f"--forged_indices={forged}", "--epsilon=10")
  assert accepted.returncode == 0, accepted.stderr[-2000:]
  assert accepted.stdout.startswith("ACCEPT: step 1: recomputed theta_2 from theta_1: error ")
  npz = str(tmp_path / "true.npz")
  batch = trace.batch(1)
  np.savez(npz, x=mnist.x_train[batch], y=mnist.y_train[batch])
  rejected = verify_binary(*common, f"--forged_npz={npz}", "--epsilon=10")
  assert rejected.returncode == 3, rejected.stderr[-2000:]
  assert rejected.stdout.startswith("REJECT: step 1: the forged batch equals B_1 as a multiset")
  bad = verify_binary(*common, "--forged_indices=1,x", "--epsilon=1")
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines()[-1] == (
      "forging-verify: error: --forged_indices must be comma-separated integers or a .npy file"
  )


def test_true_batch_with_negative_zero_pixels_is_rejected(
    traces, mnist, data_dir, tmp_path, verify_binary
):
  """-0.0 is in the domain and the SGD step cannot tell it from 0: B_t written with -0.0 pixels is
  B_t, not a forgery (a byte comparison let it through and ACCEPTed it at error 0)."""
  trace = trace_lib.Trace(traces[1])
  batch = trace.batch(1)
  pixels = domain.PIXEL_VALUES[mnist.x_train[batch]]
  signed = np.where(pixels == 0, np.float32(-0.0), pixels)
  assert (
      np.signbit(signed).any()
      and domain.domain_violation(signed, np.eye(10, dtype=np.float32)[mnist.y_train[batch]], 10)
      is None
  )
  npz = str(tmp_path / "signed_zeros.npz")
  np.savez(npz, x=signed, y=mnist.y_train[batch])
  result = verify_binary(
      f"--trace={traces[1]}",
      "--step=1",
      f"--data_dir={data_dir}",
      f"--forged_npz={npz}",
      "--epsilon=0",
  )
  assert result.returncode == 3, result.stderr[-2000:]
  assert result.stdout.startswith(
      "REJECT: step 1: the forged batch equals B_1 as a multiset of examples (the true batch)"
  ), result.stdout


def test_verify_binary_bad_inputs(traces, data_dir, verify_binary):
  """One line and a nonzero exit each: an error (1), or REJECT (3) for a batch of the wrong size,
  which the game's rules refuse (paper Algorithm 1) rather than an error."""
  common = [f"--trace={traces[1]}", "--step=1", "--epsilon=1", f"--data_dir={data_dir}"]
  for flag, code, line in (
      ("--forged_indices=1,2,3", 3, "REJECT: step 1: the forged batch has 3 examples"),
      (
          "--forged_indices=99999999999999999999",
          1,
          "forging-verify: error: --forged_indices must be comma-separated integers",
      ),
  ):
    result = verify_binary(*common, flag)
    output = (result.stdout if code == 3 else result.stderr).strip().splitlines()
    assert result.returncode == code and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert output[-1].startswith(line), output[-1]
    assert sum("error:" in error for error in result.stderr.splitlines()) == (code == 1)


def test_verify_binary_draws_t_from_the_seed_and_plays_row_t_of_the_commitment(
    traces, data_dir, tmp_path, verify_binary
):
  """--step=random: the adversary commits to a batch per step ([T, b]); the verifier draws t from
  --seed (default 0), the same t for the same seed, and plays row t, naming t and the seed."""
  trace = trace_lib.Trace(traces[1])
  t = forging_game.random_step(_T, 0)
  other_seed = next(seed for seed in range(1, 100) if forging_game.random_step(_T, seed) != t)
  u = forging_game.random_step(_T, other_seed)
  committed = np.stack([_one_swapped(trace, i) for i in range(_T)])
  committed[t] = trace.batch(t)
  path = str(tmp_path / "committed.npy")
  np.save(path, committed)
  common = [
      f"--trace={traces[1]}",
      "--step=random",
      f"--data_dir={data_dir}",
      f"--forged_indices={path}",
      "--epsilon=10",
  ]
  first, again = verify_binary(*common, "--seed=0"), verify_binary(*common)
  assert first.returncode == 3, first.stderr[-2000:]
  assert first.stdout.startswith(
      f"REJECT: step {t}: the forged batch equals B_{t} as a multiset"
  ), first.stdout
  assert f"(step {t} drawn by the verifier, seed 0; verifier platform " in first.stdout
  assert again.returncode == 3 and again.stdout == first.stdout
  other = verify_binary(*common, f"--seed={other_seed}", "--min_distance=16")
  assert other.returncode == 0, other.stderr[-2000:]
  assert other.stdout.startswith(
      f"ACCEPT: step {u}: recomputed theta_{u + 1} from theta_{u}: error "
  ), other.stdout
  assert f"(step {u} drawn by the verifier, seed {other_seed}; verifier platform " in other.stdout
  assert other.stdout.rstrip().endswith("; margin D = 16 grey levels)"), other.stdout


def test_verify_binary_random_step_without_a_batch_for_every_step_is_a_one_line_error(
    traces, mnist, data_dir, tmp_path, verify_binary
):
  """With --step=random the adversary does not know t: a single batch, or batches for the wrong
  number of steps, is an error that says what to give (exit 1); so is a negative margin."""
  trace = trace_lib.Trace(traces[1])
  short = str(tmp_path / "short.npy")
  np.save(short, trace.batches[: _T - 1])
  single = str(tmp_path / "single.npz")
  np.savez(single, x=mnist.x_train[trace.batch(1)], y=mnist.y_train[trace.batch(1)])
  common = [f"--trace={traces[1]}", f"--data_dir={data_dir}", "--epsilon=1"]
  needs_indices = f"give --forged_indices as a .npy of shape [{_T}, b]; got shape "
  for flags_, line in (
      (["--step=random", "--forged_indices=1,2,3"], f"{needs_indices}(3,)"),
      (["--step=random", f"--forged_indices={short}"], f"{needs_indices}({_T - 1}, {_B})"),
      (
          ["--step=random", f"--forged_npz={single}"],
          f"give --forged_npz with x [{_T}, b, h, w, c] and y [{_T}, b] or [{_T}, b, n]; got "
          f"shape ({_B}, 28, 28, 1) and ({_B},)",
      ),
      (
          ["--step=1", "--forged_indices=1,2,3", "--min_distance=-1"],
          "the margin min_distance must be a finite number >= 0 (grey levels), got -1.0",
      ),
  ):
    result = verify_binary(*common, *flags_)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("forging-verify: error: ") and last.endswith(line), last
