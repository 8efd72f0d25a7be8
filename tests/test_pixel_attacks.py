"""perturb and gradmatch (attacks/pixel_search.py) and the distinctness margin of every attack,
on a small LeNet trace."""

import json
import os

import numpy as np
import pytest

from forging_tf import domain
from forging_tf import errors
from forging_tf import forging_game
from forging_tf import sgd_step
from forging_tf import trace as trace_lib
from forging_tf.attacks import attack_lib
from forging_tf.attacks import pixel_search
from forging_tf.attacks import settings as attack_settings

_N, _B, _T = 3000, 20, 4
_SEARCH = {"search_iterations": 15, "grid_rounds": 4, "grid_moves": 16, "M": 16, "n": 200}


@pytest.fixture(scope="module")
def small_trace(mnist_3000, lenet_trace) -> str:
  return lenet_trace(mnist_3000, _B, _T, seed=1)


@pytest.fixture(scope="module")
def attacked(small_trace, mnist_3000, tmp_path_factory):
  """(attack, D) -> the results folder of that attack at step 2, fractions 1/b and 0.25, 2 runs,
  seed 5; run once per module."""
  root = tmp_path_factory.mktemp("pixel_attacks")
  done = {}

  def run(attack: str, min_distance: float) -> str:
    if (attack, min_distance) not in done:
      out = str(root / f"{attack}_D{min_distance:g}")
      settings = attack_settings.AttackSettings(
          attack, "2", ("1/b", "0.25"), runs=2, seed=5, neighbours_k=8,
          min_distance=min_distance, **_SEARCH,
      )  # fmt: skip
      attack_lib.run_attacks(small_trace, mnist_3000, settings, out, command="test")
      done[(attack, min_distance)] = out
    return done[(attack, min_distance)]

  return run


def _load(out: str, name: str) -> np.ndarray:
  return np.load(os.path.join(out, f"{name}.npy"))


@pytest.mark.parametrize("attack", ["perturb", "gradmatch"])
@pytest.mark.parametrize("min_distance", [1.0, 64.0])
def test_winners_are_in_the_domain_keep_the_margin_and_rescore_independently(
    attacked, small_trace, mnist_3000, attack, min_distance
):
  out = attacked(attack, min_distance)
  trace = trace_lib.Trace(small_trace)
  step_fn = sgd_step.step_for_trace(trace, mnist_3000)
  theta, theta_next, batch = trace.checkpoint(2), trace.checkpoint(3), trace.batch(2)
  error, error64 = _load(out, "approximation_error"), _load(out, "approximation_error_float64")
  margin, mask = _load(out, "margin"), _load(out, "deleted_mask")
  for f in range(2):
    for r in range(2):
      images, labels = attack_lib.forged_examples(out, mnist_3000, 0, f, r)
      x, y = forging_game.examples_from_arrays(images, labels, mnist_3000.num_classes)
      assert domain.domain_violation(x, y, mnist_3000.num_classes) is None
      # The kept examples keep their places; every replacement is a new image.
      np.testing.assert_array_equal(
          images[~mask[0, f, r]], mnist_3000.x_train[batch][~mask[0, f, r]]
      )
      deleted = mnist_3000.x_train[batch[mask[0, f, r]]].reshape(int(mask[0, f, r].sum()), -1)
      added = images[mask[0, f, r]].reshape(len(deleted), -1)
      pairwise = np.linalg.norm(
          added[:, None, :].astype(np.int64) - deleted[None, :, :].astype(np.int64), axis=2
      )  # numpy in integers, independent of domain.pixel_distances
      assert pairwise.min() >= min_distance and pairwise.min() == margin[0, f, r]
      # The saved error is the SGD step's distance, recomputed here with numpy's norm.
      forged_next = step_fn(theta, x, y).numpy().astype(np.float64)
      expected = np.linalg.norm(forged_next - theta_next.astype(np.float64))
      np.testing.assert_allclose(error[0, f, r], expected, rtol=1e-12)
      assert error[0, f, r] == forging_game.recomputation_error(trace, 2, x, y, mnist_3000, step_fn)
      # float64: the forged and the true updates, both in float64 from theta_2.
      step64 = sgd_step.Float64Step(trace, mnist_3000, trace.learning_rate)
      true_x, true_y = forging_game.examples_from_indices(mnist_3000, batch)
      gap = step64(theta, x, y).numpy() - step64(theta, true_x, true_y).numpy()
      np.testing.assert_allclose(error64[0, f, r], np.linalg.norm(gap), rtol=1e-9)
      assert error64[0, f, r] > 0


@pytest.mark.parametrize("attack", ["perturb", "gradmatch"])
def test_the_search_never_returns_a_batch_worse_than_its_start(attacked, attack):
  out = attacked(attack, 16.0)
  error, start = _load(out, "approximation_error"), _load(out, "start_error")
  assert np.all(error <= start) and np.all(np.isfinite(start))


def test_gradmatch_starts_from_the_better_of_thudi_and_zhang_for_the_same_u(attacked):
  gradmatch = _load(attacked("gradmatch", 16.0), "start_error")
  thudi = _load(attacked("thudi", 16.0), "approximation_error")
  zhang = _load(attacked("zhang", 16.0), "approximation_error")
  np.testing.assert_array_equal(gradmatch, np.minimum(thudi, zhang))
  assert np.all(
      _load(attacked("gradmatch", 16.0), "approximation_error") <= np.minimum(thudi, zhang)
  )
  np.testing.assert_array_equal(
      _load(attacked("gradmatch", 16.0), "deleted_mask"),
      _load(attacked("thudi", 16.0), "deleted_mask"),
  )


def test_thudi_and_zhang_keep_the_margin_and_zhang_takes_the_nearest_allowed(
    attacked, small_trace, mnist_3000
):
  batch = trace_lib.Trace(small_trace).batch(2)
  for attack in ("thudi", "zhang"):
    out = attacked(attack, 1000.0)
    forged, mask = _load(out, "forged_batches"), _load(out, "deleted_mask")
    for f in range(2):
      for r in range(2):
        replaced = forged[0, f, r][mask[0, f, r]]
        deleted = batch[mask[0, f, r]]
        gaps = np.linalg.norm(
            mnist_3000.x_train[replaced].reshape(len(replaced), 1, -1).astype(np.int64)
            - mnist_3000.x_train[deleted].reshape(1, len(deleted), -1).astype(np.int64),
            axis=2,
        )
        assert gaps.min() >= 1000.0
        if attack == "zhang":
          # Brute force: each deleted example's nearest same-class example at >= 1000 from all of
          # U, outside the batch and not chosen before.
          flat = mnist_3000.x_train.reshape(_N, -1).astype(np.int64)
          to_deleted = np.linalg.norm(flat[None] - flat[deleted][:, None], axis=2)
          allowed = to_deleted.min(axis=0) >= 1000.0
          allowed[batch] = False
          for u, choice in zip(deleted, replaced):
            same = np.flatnonzero(allowed & (mnist_3000.y_train == mnist_3000.y_train[u]))
            distance_u = np.linalg.norm(flat[same] - flat[u], axis=1)
            assert choice == same[np.argmin(distance_u)]
            allowed[choice] = False


def test_margin_zero_leaves_thudi_and_zhang_as_they_were(small_trace, mnist_3000, tmp_path):
  common = {"steps": "2", "forging_fractions": ("1/b", "0.5"), "runs": 1, "seed": 9}
  for attack in ("thudi", "zhang"):
    outs = []
    for name, extra in (("plain", {}), ("zero", {"min_distance": 0.0})):
      out = str(tmp_path / attack / name)
      settings = attack_settings.AttackSettings(
          attack, M=8, n=100, neighbours_k=8, **common, **extra
      )
      attack_lib.run_attacks(small_trace, mnist_3000, settings, out, neighbours_dir=str(tmp_path))
      outs.append(_load(out, "forged_batches"))
    np.testing.assert_array_equal(*outs)


def test_projection_and_rounding_keep_the_box_and_the_margin():
  rng = np.random.default_rng(0)
  removed_levels = rng.integers(0, 256, size=(3, 6, 6, 1))
  removed = domain.PIXEL_VALUES[removed_levels].astype(np.float64)
  z = np.clip(removed[:2] + rng.normal(0, 0.01, size=(2, 6, 6, 1)), -0.2, 1.2)
  projected = pixel_search.project(z, removed, 40.0)
  assert projected.min() >= 0 and projected.max() <= 1
  assert (domain.pixel_distances(projected, removed_levels.astype(np.uint8)) * 1).min() >= 39
  levels = pixel_search.round_to_grid(projected, removed_levels, 40.0)
  assert (
      domain.margin_violation(levels.astype(np.uint8), removed_levels.astype(np.uint8), 40) is None
  )
  start = pixel_search.perturbation_start(removed_levels, 5.0, rng)
  assert start.min() >= 0 and start.max() <= 255
  own = np.linalg.norm((start - removed_levels).reshape(3, -1), axis=1)
  assert np.all(own >= 5.0)


def test_bad_margins_are_one_line_errors(small_trace, mnist_3000, tmp_path):
  with pytest.raises(errors.ConfigError, match="min_distance=-1.0"):
    attack_settings.AttackSettings("perturb", min_distance=-1)
  # No MNIST image of the 3,000 is 10,000 grey levels from a deleted one: Zhang cannot choose.
  with pytest.raises(errors.ConfigError, match="smaller --min_distance"):
    attack_lib.run_attacks(
        small_trace,
        mnist_3000,
        attack_settings.AttackSettings("zhang", "2", ("1/b",), runs=1, min_distance=10_000),
        str(tmp_path / "zhang"),
    )
  assert not os.path.exists(tmp_path / "zhang")
  with pytest.raises(errors.ConfigError, match="smaller --min_distance"):
    attack_lib.run_attacks(
        small_trace,
        mnist_3000,
        attack_settings.AttackSettings(
            "thudi", "2", ("1/b",), runs=1, M=4, n=50, min_distance=10_000
        ),
        str(tmp_path / "thudi"),
    )


def test_forging_reproduce_runs_perturb_and_gradmatch_stages(data_dir, tmp_path):
  """A preset with the pixel-searching forgers runs them as forging-attack stages and renders
  its report; the stages' results keep the margin they were asked for."""
  from forging_tf.reproduce import presets  # pylint: disable=import-outside-toplevel
  from forging_tf.reproduce import reproduce_lib  # pylint: disable=import-outside-toplevel

  preset = presets.Preset(
      name="pixel",
      purpose="perturb and gradmatch through forging-reproduce",
      platforms=("cpu",),
      steps=(("lenet", "mnist", 100, 4),),
      repeats_same=1,
      repeats_cross=1,
      attacks=tuple(
          presets.AttackPlan(
              "lenet", 100, attack, "middle", ("1/b",), 1, M=8, n=300, min_distance=16
          )
          for attack in (attack_settings.Attack.PERTURB, attack_settings.Attack.GRADMATCH)
      ),
      exact=(),
      bruteforce=("--models=logreg", "--levels=2", "--batch_sizes=1"),
      recompute_flags=("--nofresh_process",),
  )
  out = tmp_path / "study"
  lines = []
  reproduce_lib.reproduce(preset, str(out), data_dir=data_dir, download=False, echo=lines.append)
  for attack in ("perturb", "gradmatch"):
    folder = out / "results" / "attacks" / f"lenet_b100_T4_cpu_{attack}_middle_1overb_D16"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["settings"]["attack"] == attack and summary["settings"]["min_distance"] == 16
    assert summary["results"][0]["min_margin"] >= 16
    assert np.all(
        np.load(folder / "approximation_error.npy") <= np.load(folder / "start_error.npy")
    )
  assert (out / "REPORT.md").stat().st_size > 0
