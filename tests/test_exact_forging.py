"""Exact forging (SPEC 6): Prop. 1, Prop. 2 and 3 forgeries, the in-domain search, the binary."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from forging_tf import domain
from forging_tf import errors
from forging_tf import models
from forging_tf.exact import dense
from forging_tf.exact import exact_lib
from forging_tf.exact import in_domain
from forging_tf.exact import propositions
from forging_tf.exact import scoring
from forging_tf.exact import settings as exact_settings

# (model, config): FCNs of depth 1..3 with and without biases, and softmax regression.
_NETWORKS = [
    ("fcn", {"hidden": [6]}),
    ("fcn", {"hidden": [6, 5]}),
    ("fcn", {"hidden": [5, 6, 4], "use_bias": False}),
    ("logreg", {}),
    ("logreg", {"use_bias": False}),
]


def _setting(name, config, seed, b=12, image=(3, 3, 1), num_classes=4):
  """A model with random weights (biases too) and a batch of distinct grid examples."""
  rng = np.random.default_rng(seed)
  model = models.build_model(name, image, num_classes, **config)
  size = models.num_parameters(models.parameter_layout(model))
  theta = (rng.standard_normal(size) * 0.5).astype(np.float32)
  scorer = scoring.ForgeryScorer(model, theta, learning_rate=0.01)
  x = domain.PIXEL_VALUES[rng.integers(0, 256, (b, int(np.prod(image))))].astype(np.float64)
  y = np.eye(num_classes)[rng.integers(0, num_classes, b)]
  return scorer, x, y, rng


@pytest.mark.parametrize("name, config", _NETWORKS)
def test_numpy_gradient_is_the_sgd_step_gradient(name, config):
  scorer, x, y, _ = _setting(name, config, seed=1)
  stepped = scorer._step(x, y).astype(np.float64)  # pylint: disable=protected-access
  gradient = dense.batch_gradient(scorer.layers, x, y)
  implied = (scorer.theta.astype(np.float64) - stepped) / scorer.learning_rate
  # float32 step: theta - eta g rounds at ~6e-8 |theta|, i.e. 6e-6 |theta| in units of g.
  np.testing.assert_allclose(implied, gradient, rtol=0, atol=2e-5 * np.abs(scorer.theta).max())


@pytest.mark.parametrize("name, config", _NETWORKS)
def test_mini_batch_perturbation_is_an_exact_forgery(name, config):
  scorer, x, y, rng = _setting(name, config, seed=2)
  p, space = propositions.mini_batch_perturbation(scorer.layers, x, y, rng, scale=0.3)
  d1 = dense.first_layer_errors(scorer.layers, x, y)
  w1 = scorer.layers[0].kernel
  assert np.abs(p @ w1).max() < 1e-13 and np.abs(p.T @ d1).max() < 1e-13
  assert (
      space.dimension
      == (x.shape[1] - np.linalg.matrix_rank(w1)) * (x.shape[0] - np.linalg.matrix_rank(d1))
      > 0
  )
  assert space.paper_condition == (9 * 12 > w1.shape[1] * (9 + 12))
  score = scorer.score(x, y, x + p, y)
  assert score.distinct and abs(score.max_pixel_change - 0.3) < 1e-12
  assert score.approximation_error_float64 < 1e-15
  assert score.approximation_error < 1e-5


def test_factored_projector_is_the_kronecker_pseudo_inverse():
  scorer, x, y, rng = _setting("fcn", {"hidden": [3, 2]}, seed=3, b=7)
  f = rng.standard_normal(x.shape)
  space = propositions.solution_space(scorer.layers, x, y)
  reference = propositions.kronecker_perturbation(
      scorer.layers[0].kernel, dense.first_layer_errors(scorer.layers, x, y), f
  )
  np.testing.assert_allclose(propositions.project(space, f), reference, rtol=0, atol=1e-12)
  # The Kronecker null space has the dimension the factored form reports.
  k = np.concatenate(
      [
          np.kron(dense.first_layer_errors(scorer.layers, x, y).T, np.eye(9)),
          np.kron(np.eye(7), scorer.layers[0].kernel.T),
      ]
  )
  assert k.shape[1] - np.linalg.matrix_rank(k) == space.dimension


def test_no_perturbation_when_the_batch_is_narrower_than_the_first_layer():
  scorer, x, y, rng = _setting("fcn", {"hidden": [12]}, seed=4, b=9)
  with pytest.raises(errors.ConfigError, match="solution space of this batch is"):
    propositions.mini_batch_perturbation(scorer.layers, x, y, rng, scale=0.1)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("b", [12, 2])  # b >= n - 1 (D' gets new directions) and b < n - 1.
def test_error_matrix_sampling_is_an_exact_forgery(use_bias, b):
  scorer, x, y, rng = _setting("logreg", {"use_bias": use_bias}, seed=5, b=b, num_classes=4)
  forgery = propositions.error_matrix_sampling(scorer.layers, x, y, rng, scale=0.5)
  assert forgery.rank_forged_errors >= forgery.rank_gradient
  np.testing.assert_allclose(forgery.errors.sum(axis=1), 0.0, atol=1e-15)  # Lemma 1
  np.testing.assert_allclose(forgery.forged_errors.sum(axis=1), 0.0, atol=1e-14)
  np.testing.assert_allclose(forgery.y.sum(axis=1), 1.0, atol=1e-14)
  score = scorer.score(x, y, forgery.x, forgery.y)
  assert score.distinct and score.domain_label > 0  # labels need not be one-hot
  assert score.approximation_error_float64 < 1e-15
  assert score.approximation_error < 1e-5


def test_error_matrix_sampling_needs_softmax_regression():
  scorer, x, y, rng = _setting("fcn", {"hidden": [3]}, seed=6)
  with pytest.raises(errors.ConfigError, match="L = 1"):
    propositions.error_matrix_sampling(scorer.layers, x, y, rng, scale=0.5)


def test_prop1_holds_on_random_draws():
  rng = np.random.default_rng(7)
  for draw in range(30):
    name, config = _NETWORKS[draw % len(_NETWORKS)]
    scorer, _, _, _ = _setting(name, config, seed=100 + draw)
    # Continuous pixels, plus grid pixels with every label on one image (same x, other y).
    x = np.concatenate([rng.random((20, 9)), np.repeat(rng.integers(0, 2, (1, 9)), 4, axis=0)])
    labels = np.concatenate([rng.integers(0, 4, 20), np.arange(4)])
    check = propositions.prop1_check(scorer.layers, x, labels)
    assert check.holds and check.min_distance > 1e-6, (draw, check)


def test_prop1_exception_an_inactive_first_layer_forgets_the_input():
  model = models.build_model("fcn", (2, 2, 1), 3, hidden=[5])
  theta = (
      np.random.default_rng(8)
      .standard_normal(models.num_parameters(models.parameter_layout(model)))
      .astype(np.float32)
  )
  layers = dense.dense_layers(model, theta)
  layers[0].kernel[:] = -np.abs(layers[0].kernel)
  layers[0].bias[:] = 0.0
  rng = np.random.default_rng(9)
  # Pixels > 0 switch every unit off; pixels < 0 (outside the domain) switch units on.
  x = np.concatenate([rng.random((4, 4)) + 0.1, -rng.random((3, 4)) - 0.1])
  labels = np.array([0, 0, 0, 1, 0, 1, 2])
  check = propositions.prop1_check(layers, x, labels)
  assert check.inactive_pairs == 6 and check.holds and check.min_distance > 1e-3
  gradients = dense.per_example_gradients(layers, x[:3], np.eye(3)[labels[:3]])
  assert np.array_equal(gradients[0], gradients[1]) and np.array_equal(gradients[0], gradients[2])


def test_dense_layers_rejects_convolutional_models():
  model = models.build_model("lenet", (28, 28, 1), 10)
  with pytest.raises(errors.ConfigError, match="fully connected ReLU model"):
    dense.dense_layers(model, np.zeros(61706, np.float32))


def test_in_domain_search_reports_valid_attempts():
  scorer, x, y, rng = _setting("fcn", {"hidden": [2]}, seed=10, b=6, image=(4, 4, 1))
  report = in_domain.in_domain_search(
      scorer,
      x,
      y,
      rng,
      rounding_scales=[1.0, 0.1],
      milp_examples=2,
      milp_pixels=3,
      milp_max_levels=2,
      milp_time_limit_s=20,
  )
  methods = [a.method for a in report.attempts]
  assert methods[0] == "lp_box" and methods[-1] == "milp"
  lp = report.attempts[0].score
  assert lp.domain_box < 1e-9 and lp.approximation_error_float64 < 1e-15 and lp.distinct
  for attempt in report.attempts[1:]:
    assert attempt.score.in_domain and attempt.score.distinct
    assert domain.domain_violation(attempt.forged, y, 4) is None
  best = report.best
  assert best is not None and best.score.approximation_error == min(
      a.score.approximation_error for a in report.attempts[1:]
  )
  milp = report.attempts[-1]
  assert milp.detail["milp_status"] == 0 and 1 <= milp.detail["levels_changed"] <= 12


def test_fig4_on_mnist(mnist):
  result = exact_lib.fig4_experiment(
      mnist, exact_settings.ExactSettings(batch_size=32, hidden=8, perturbation_scale=0.5)
  )
  summary = result.summary
  assert summary["distinct"] and summary["approximation_error"] < 1e-5
  assert summary["approximation_error_float64"] < 1e-15
  assert summary["solution_space"]["dimension"] == (784 - 8) * (32 - 8)
  assert result.arrays["forged"].shape == (32, 28, 28, 1)
  json.dumps(summary)


def test_binary_writes_summary_data_and_figure(tmp_path, data_dir):
  out = tmp_path / "fig4"
  completed = subprocess.run(
      [
          sys.executable,
          "-m",
          "forging_tf.exact.exact",
          "--experiment=fig4",
          f"--out={out}",
          f"--data_dir={data_dir}",
          "--batch_size=16",
          "--hidden=4",
      ],
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert completed.returncode == 0, completed.stderr[-2000:]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["distinct"] is True and summary["approximation_error"] < 1e-5
  assert summary["kind"] == "forging_tf.exact_forging" and summary["platform"]["id"]
  assert summary["settings"]["batch_size"] == 16 and summary["settings"]["experiment"] == "fig4"
  assert summary["command"].startswith("forging-exact --experiment=fig4")
  saved = np.load(out / "data.npz")
  assert saved["original"].shape == saved["forged"].shape == (16, 28, 28, 1)
  assert os.path.getsize(out / "fig4.png") > 0 and os.path.getsize(out / "fig4.pdf") > 0


def test_binary_that_cannot_write_its_results_says_so_in_one_line(tmp_path, data_dir):
  (tmp_path / "file").write_text("mine")
  completed = subprocess.run(
      [
          sys.executable,
          "-m",
          "forging_tf.exact.exact",
          "--experiment=fig4",
          f"--out={tmp_path / 'file'}",
          f"--data_dir={data_dir}",
          "--batch_size=4",
          "--hidden=2",
      ],
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  last = completed.stderr.strip().splitlines()[-1]
  assert completed.returncode != 0 and "Traceback" not in completed.stderr
  assert last == f"forging-exact: error: {tmp_path / 'file'} is a file; choose another --out"
  assert (tmp_path / "file").read_text() == "mine"
