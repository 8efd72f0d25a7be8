"""Greedy forging attacks, the vectorised engine and forging-attack, on small LeNet traces."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from forging_tf import errors
from forging_tf import forging_game
from forging_tf import sgd_step
from forging_tf import trace as trace_lib
from forging_tf.attacks import attack_lib
from forging_tf.attacks import engine as engine_lib
from forging_tf.attacks import greedy
from forging_tf.attacks import settings as attack_settings

_N, _B, _T = 3000, 20, 4


@pytest.fixture(scope="module")
def small_trace(mnist_3000, lenet_trace) -> str:
  return lenet_trace(mnist_3000, _B, _T, seed=1)


@pytest.fixture(scope="module")
def engine(small_trace, mnist_3000) -> engine_lib.AttackEngine:
  step_fn = sgd_step.step_for_trace(trace_lib.Trace(small_trace), mnist_3000)
  return engine_lib.AttackEngine(
      step_fn,
      sgd_step.BatchSource(mnist_3000.x_train, mnist_3000.y_train, mnist_3000.num_classes),
      memory_budget_bytes=2**20 * 60,
  )  # 63 candidates a group: the 64 below take two groups


@pytest.mark.parametrize("m", [1, 7, _B])
def test_engine_matches_the_sequential_loop(engine, small_trace, m):
  trace = trace_lib.Trace(small_trace)
  theta, theta_next, batch = trace.checkpoint(2), trace.checkpoint(3), trace.batch(2)
  positions = greedy.deletion_positions(_B, m, np.random.default_rng(m))
  candidates = greedy.thudi_candidates(
      batch, positions, _N, M=64, n=300, rng=np.random.default_rng(100 + m)
  )
  assert engine.candidates_per_group < len(candidates)
  fast = engine.candidate_errors(theta, theta_next, batch, positions, candidates)
  reference = engine.sequential_errors(theta, theta_next, batch, positions, candidates)
  # Only the summation order differs: float32 rounding of the gradient sums, far below the
  # spread between candidates.
  np.testing.assert_allclose(fast, reference, rtol=1e-5)
  assert np.argmin(fast) == np.argmin(reference)
  assert np.sort(reference)[1] - np.sort(reference)[0] > 1e-4 * reference.min()
  forgery = greedy.thudi_attack(
      engine, 2, theta, theta_next, batch, positions, 64, 300, np.random.default_rng(100 + m)
  )
  # The reported number is the SGDStep re-score, i.e. the sequential loop's number.
  assert forgery.approximation_error == reference[int(np.argmin(reference))]
  assert forgery.engine_error == fast.min()


def test_no_forged_batch_contains_an_example_of_u(engine, small_trace, mnist_3000):
  trace = trace_lib.Trace(small_trace)
  batch = trace.batch(1)
  neighbours, _ = greedy.nearest_neighbours(mnist_3000.x_train, mnist_3000.y_train, 8)
  for seed in range(20):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, _B + 1))
    positions = greedy.deletion_positions(_B, m, rng)
    deleted = set(batch[positions].tolist())
    candidates = greedy.thudi_candidates(batch, positions, _N, M=30, n=m + 5, rng=rng)
    zhang = engine_lib.replace(
        batch, positions, greedy.zhang_replacements(batch, positions, neighbours)
    )
    for forged in [engine_lib.replace(batch, positions, c) for c in candidates] + [zhang]:
      assert not deleted & set(forged.tolist())
      assert len(set(forged.tolist())) == _B  # no example twice in a batch
      kept = np.setdiff1d(np.arange(_B), positions)
      np.testing.assert_array_equal(forged[kept], batch[kept])


def test_zhang_neighbours_are_same_class_nearest_and_outside_the_batch(mnist_3000, small_trace):
  k = 16
  indices, distances = greedy.nearest_neighbours(mnist_3000.x_train, mnist_3000.y_train, k)
  labels = mnist_3000.y_train
  assert np.all(labels[indices] == labels[:, None])
  assert not np.any(indices == np.arange(_N)[:, None])
  assert np.all(np.diff(distances, axis=1) >= 0)
  flat = mnist_3000.x_train.reshape(_N, -1).astype(np.int64)
  for example in (0, 1234, _N - 1):  # exact brute force, ties by index
    same = np.flatnonzero(labels == labels[example])
    same = same[same != example]
    squared = ((flat[same] - flat[example]) ** 2).sum(axis=1)
    order = np.lexsort((same, squared))[:k]
    np.testing.assert_array_equal(indices[example], same[order])
    np.testing.assert_array_equal(distances[example], squared[order])
  batch = trace_lib.Trace(small_trace).batch(0)
  positions = np.arange(_B)
  replacements = greedy.zhang_replacements(batch, positions, indices)
  assert np.all(labels[replacements] == labels[batch])
  assert not set(replacements.tolist()) & set(batch.tolist())
  assert len(set(replacements.tolist())) == _B
  with pytest.raises(errors.ConfigError, match="use more neighbours"):
    greedy.zhang_replacements(batch, positions, indices[:, :0])


def test_run_attacks_saves_results_and_summary(small_trace, mnist_3000, tmp_path):
  out = str(tmp_path / "attacks" / "thudi")
  settings = attack_settings.AttackSettings(
      "thudi", "1,3", ("1/b", "0.5", "1"), runs=2, M=8, n=100, seed=3
  )
  summary = attack_lib.run_attacks(small_trace, mnist_3000, settings, out, command="cmd")
  assert summary["settings"] == settings.as_dict() and summary["settings"]["attack"] == "thudi"
  assert summary["kind"] == "forging_tf.attack_results" and summary["command"] == "cmd"
  assert summary["steps"] == [1, 3]
  assert [f["num_replaced"] for f in summary["forging_fractions"]] == [1, 10, 20]
  assert (
      summary["trace"]["manifest_sha256"]
      == trace_lib.Trace(small_trace).manifest["manifest_sha256"]
  )
  assert summary["trace"]["batch_size"] == _B and summary["platform"]["id"]
  with open(os.path.join(out, "summary.json")) as f:
    assert json.load(f) == json.loads(json.dumps(summary))
  error = np.load(os.path.join(out, "approximation_error.npy"))
  forged = np.load(os.path.join(out, "forged_batches.npy"))
  mask = np.load(os.path.join(out, "deleted_mask.npy"))
  candidates = np.load(os.path.join(out, "candidate_errors.npy"))
  assert error.shape == (2, 3, 2) and forged.shape == mask.shape == (2, 3, 2, _B)
  assert candidates.shape == (2, 3, 2, 8)
  assert np.all(mask.sum(axis=-1) == np.array([1, 10, 20])[None, :, None])
  trace = trace_lib.Trace(small_trace)
  step_fn = sgd_step.step_for_trace(trace, mnist_3000)
  update_l2 = np.load(os.path.join(out, "update_l2.npy"))
  for s, step in enumerate((1, 3)):
    logged_update = trace.checkpoint(step + 1).astype(np.float64) - trace.checkpoint(step)
    np.testing.assert_allclose(update_l2[s], np.linalg.norm(logged_update), rtol=1e-12)
    for f in range(3):
      # Stored errors are what the verifier's game measures for the stored batches.
      x, y = forging_game.examples_from_indices(mnist_3000, forged[s, f, 0])
      assert error[s, f, 0] == forging_game.recomputation_error(
          trace, step, x, y, mnist_3000, step_fn
      )
      assert not set(forged[s, f, 1][mask[s, f, 1]]) & set(trace.batch(step).tolist())
      row = summary["results"][3 * s + f]
      assert row["min_approximation_error"] == error[s, f].min() > 0
  with pytest.raises(errors.ConfigError, match="pass --overwrite"):
    attack_lib.run_attacks(
        small_trace,
        mnist_3000,
        attack_settings.AttackSettings(steps="1", forging_fractions=("1",), runs=1, M=2),
        out,
    )
  zhang = attack_lib.run_attacks(
      small_trace,
      mnist_3000,
      attack_settings.AttackSettings(
          "zhang", "middle", ("1/b", "1"), runs=2, seed=3, neighbours_k=8
      ),
      str(tmp_path / "attacks" / "zhang"),
  )
  assert zhang["steps"] == [2] and os.path.isfile(zhang["method"]["neighbours_file"])
  assert os.path.dirname(zhang["method"]["neighbours_file"]) == str(
      tmp_path / "attacks" / "neighbours"
  )
  assert zhang["results"][0]["min_engine_error"] is None


@pytest.mark.parametrize("attack", ["thudi", "zhang", "perturb"])
def test_random_batches_are_fixed_and_forged_against_their_own_update(
    small_trace, mnist_3000, tmp_path, attack
):
  """--batch=random: R seeded true batches, each with one deletion set, forged at every step
  against theta_i - eta grad L(B_r; theta_i) recomputed here; errors as an independent step."""
  settings = attack_settings.AttackSettings(
      attack,
      "0,2,3",
      ("1/b", "0.5"),
      runs=2,
      M=6,
      n=100,
      seed=5,
      neighbours_k=8,
      batch="random",
      min_distance=1.0 if attack == "perturb" else 0.0,
      search_iterations=2,
      grid_rounds=1,
      grid_moves=4,
  )
  out = str(tmp_path / attack)
  summary = attack_lib.run_attacks(small_trace, mnist_3000, settings, out)
  assert summary["settings"]["batch"] == "random"
  assert "RANDOM_TAG" in summary["method"]["true_batch"]
  true = np.load(os.path.join(out, "true_batches.npy"))
  np.testing.assert_array_equal(true, attack_lib.random_true_batches(_N, _B, 2, 5))
  assert true.shape == (2, _B) and all(len(set(row)) == _B for row in true)
  assert not np.array_equal(true[0], true[1])
  error = np.load(os.path.join(out, "approximation_error.npy"))
  forged = np.load(os.path.join(out, "forged_batches.npy"))
  mask = np.load(os.path.join(out, "deleted_mask.npy"))
  assert error.shape == (3, 2, 2)
  # One deletion set per (fraction, run), kept across the steps.
  assert np.all(mask == mask[:1])
  trace = trace_lib.Trace(small_trace)
  # An independent recomputation: a fresh SGDStep of the trace's model, on this platform.
  step_fn = sgd_step.step_for_trace(trace, mnist_3000)
  for s, step in enumerate((0, 2, 3)):
    theta = trace.checkpoint(step)
    for r in range(2):
      reference = step_fn(theta, *forging_game.examples_from_indices(mnist_3000, true[r]))
      assert not np.array_equal(true[r], trace.batch(step))
      for f in range(2):
        kept = true[r][~mask[s, f, r]]
        np.testing.assert_array_equal(forged[s, f, r][~mask[s, f, r]], kept)
        assert not set(forged[s, f, r][mask[s, f, r]]) & set(true[r].tolist())
        images, labels = attack_lib.forged_examples(out, mnist_3000, s, f, r)
        x, y = sgd_step.model_inputs(images, labels, mnist_3000.num_classes)
        assert error[s, f, r] == sgd_step.l2_distance(step_fn(theta, x, y).numpy(), reference)
        assert error[s, f, r] > 0
  with pytest.raises(errors.ConfigError, match="unknown batch 'fixed'; choose one of"):
    attack_settings.AttackSettings(batch="fixed")


@pytest.mark.parametrize(
    "call, message",
    [
        (dict(forging_fractions=("1.5",)), r"outside \(0, 1\]"),
        (dict(forging_fractions=("0.001",)), "replaces no example"),
        (dict(forging_fractions=("1/b", "0.05")), "both replace 1"),
        (dict(forging_fractions=("half",)), "neither a number"),
        (dict(M=0), r"M >= 1"),
        (dict(n=5), "use n >= 20"),
        (dict(n=_N), "more than the 2980 examples"),
        (dict(steps="7"), "no stored pair"),
        (dict(steps="1,x"), "comma list"),
        (dict(runs=0), "at least one run"),
        (dict(attack="greedy"), "unknown attack 'greedy'; choose one of"),
        (dict(engine="fast"), "unknown engine 'fast'; choose one of"),
    ],
)
def test_bad_settings_are_one_line_errors(small_trace, mnist_3000, tmp_path, call, message):
  with pytest.raises(errors.ForgingError, match=message) as raised:
    attack_lib.run_attacks(
        small_trace, mnist_3000, attack_settings.AttackSettings(**call), str(tmp_path / "out")
    )
  assert "\n" not in str(raised.value)
  assert not os.path.exists(tmp_path / "out")


def test_traces_without_pairs_and_other_data_are_refused(
    mnist_3000, mnist, small_trace, lenet_trace, tmp_path
):
  path = lenet_trace(mnist_3000, _B, _T, k=2)
  with pytest.raises(errors.TraceError, match="use a trace with k=1 or --keep_pairs"):
    attack_lib.parse_steps("middle", trace_lib.Trace(path))
  with pytest.raises(errors.DatasetError, match="point --data_dir at the data the trace"):
    attack_lib.run_attacks(
        small_trace,
        mnist,
        attack_settings.AttackSettings(steps="1", forging_fractions=("1",), M=2, n=30),
        str(tmp_path / "o"),
    )


def _attack_binary(*flags_):
  return subprocess.run(
      [sys.executable, "-m", "forging_tf.attacks.attack", *flags_],
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
  )


def test_binary_gives_one_line_errors(small_trace, data_dir, tmp_path):
  common = [f"--trace={small_trace}", f"--data_dir={data_dir}", f"--out={tmp_path / 'o'}"]
  # A library error (ConfigError) and a flag parsing error; the trace/data mismatch is checked
  # in-process above.
  for extra, message in (
      (["--forging_fraction=1/b,1.5"], "forging fraction 1.5 is outside"),
      (["--M=0"], "M=0: the greedy search needs at least one candidate"),
      (["--attack=greedy"], "flag --attack=greedy"),
  ):
    result = _attack_binary(*common, *extra)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("forging-attack: error:") and message in last, result.stderr[-2000:]
