"""Dead first layers (SPEC 8): the count, the exact swap the verifier accepts at epsilon 0, the
in-domain search at a trained checkpoint, and REPORT.md's section "The exact in-domain question"."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from forging_tf import domain
from forging_tf import errors
from forging_tf import forging_game
from forging_tf import models
from forging_tf import sgd_step
from forging_tf import trace as trace_lib
from forging_tf.exact import dead_units
from forging_tf.exact import exact_lib
from forging_tf.exact import scoring
from forging_tf.exact import settings as exact_settings
from forging_tf.report import exact_question
from forging_tf.train import train_lib

# Not realpath: under Bazel the study's files are data in the runfiles tree beside this file.
_OLD_DOMAIN_RECORD = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "benchmarks",
    "results",
    "cpu_study",
    "exact",
    "domain",
    "summary.json",
)


def _naive_largest(images: np.ndarray, kernel: np.ndarray, bias: np.ndarray, padding: str):
  """Each example's largest first-layer pre-activation by explicit loops, float64: the
  reference the vectorised count is checked against."""
  x = domain.PIXEL_VALUES[images].astype(np.float64)  # the float32 q / 255 the SGD step sees
  if kernel.ndim == 2:
    return np.array([max(e.reshape(-1) @ kernel + bias) for e in x])
  kh, kw, _, units = kernel.shape
  if padding == "same":
    x = np.pad(x, [(0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)])
  largest = []
  for example in x:
    values = [
        float(np.sum(example[i : i + kh, j : j + kw, :] * kernel[..., o]) + bias[o])
        for i in range(example.shape[0] - kh + 1)
        for j in range(example.shape[1] - kw + 1)
        for o in range(units)
    ]
    largest.append(max(values))
  return np.array(largest)


def _conv_model(padding: str) -> keras.Model:
  return keras.Sequential(
      [
          keras.Input((6, 6, 2)),
          keras.layers.Conv2D(3, 3, padding=padding, activation="relu", name="conv1"),
          keras.layers.Flatten(),
          keras.layers.Dense(2, name="logits"),
      ]
  )


@pytest.mark.parametrize("first", ["dense", "same", "valid"])
def test_dead_count_matches_a_loop_forward_pass_and_tensorflow(first):
  if first == "dense":
    model = models.build_model("fcn", (4, 4, 1), 3, hidden=[3])
  else:
    model = _conv_model(first)
  rng = np.random.default_rng(0)
  theta = rng.standard_normal(models.num_parameters(models.parameter_layout(model)))
  layer = dead_units.first_layer(model, theta.astype(np.float32))
  # Negative biases, and images from blank to sparse (MNIST has many zero pixels): some dead.
  layer.bias[:] = -np.abs(layer.bias) - 0.5
  shape = (40, *model.input_shape[1:])
  density = np.linspace(0.0, 0.3, 40).reshape(40, 1, 1, 1)
  images = (rng.random(shape) < density) * rng.integers(0, 256, shape)
  images = images.astype(np.uint8)
  labels = rng.integers(0, 3, 40)
  pre = dead_units.preactivations(layer, images, chunk=7)
  reference = _naive_largest(images, layer.kernel, layer.bias, layer.padding)
  np.testing.assert_allclose(pre.largest, reference, rtol=0, atol=1e-12)
  assert np.all(pre.largest_upper >= pre.largest)
  count = dead_units.count_dead(pre, labels, 3)
  dead = reference <= 0
  assert count.examples == 40 and count.dead == dead.sum()
  assert 0 < count.certainly_dead <= count.dead < 40
  assert count.per_class == np.bincount(labels[pre.largest_upper <= 0], minlength=3).tolist()
  assert count.classes_with_two == [c for c in range(3) if count.per_class[c] >= 2]
  # What TensorFlow computes in float32: every certainly dead example's first layer is all 0.
  tf_layer = model.get_layer(layer.name)
  tf_layer.kernel.assign(layer.kernel.astype(np.float32))
  tf_layer.bias.assign(layer.bias.astype(np.float32))
  outputs = domain.PIXEL_VALUES[images]
  for keras_layer in model.layers[: model.layers.index(tf_layer) + 1]:
    outputs = keras_layer(outputs)
  outputs = outputs.numpy().reshape(40, -1)
  assert not outputs[pre.largest_upper <= 0].any()


def test_first_layer_without_relu_is_refused_in_one_line():
  model = models.build_model("logreg", (4, 4, 1), 3)
  with pytest.raises(errors.ConfigError, match="first layer that is Dense or a stride-1") as e:
    dead_units.first_layer(model, np.zeros(51, np.float32))
  assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def fcn_trace(mnist, tmp_path_factory) -> trace_lib.Trace:
  """784-2-10 on MNIST, b = 16, T = 3: at theta_0 (zero biases) a quarter of the examples have
  both hidden units inactive."""
  path = str(tmp_path_factory.mktemp("traces") / "fcn2")
  train_lib.train_trace(
      path, "fcn", mnist, batch_size=16, steps=3, seed=0, model_config={"hidden": [2]}
  )
  return trace_lib.Trace(path)


def test_dead_swap_is_exact_and_the_verifier_accepts_it_at_epsilon_0(mnist, fcn_trace):
  step_fn = sgd_step.step_for_trace(fcn_trace, mnist)
  theta = fcn_trace.checkpoint(0)
  layer = dead_units.first_layer(step_fn.model, theta)
  swap = dead_units.find_swap(layer, mnist.x_train, mnist.y_train, fcn_trace.batch(0))
  assert swap is not None and swap.removed in fcn_trace.batch(0)
  assert swap.added not in fcn_trace.batch(0)
  assert mnist.y_train[swap.removed] == mnist.y_train[swap.added] == swap.label
  # Both dead by a plain forward pass of the checkpoint's first layer.
  kernel, bias = layer.kernel, layer.bias
  for index in (swap.removed, swap.added):
    x = domain.PIXEL_VALUES[mnist.x_train[index]].reshape(-1).astype(np.float64)
    assert np.all(x @ kernel + bias <= 0)
  x, y = forging_game.examples_from_indices(mnist, swap.batch)
  forged_x, forged_y = forging_game.examples_from_indices(mnist, swap.forged)
  score = scoring.ForgeryScorer(step_fn.model, theta, step_fn.learning_rate).score(
      x, y, forged_x, forged_y
  )
  assert score.approximation_error_float64 == 0.0 and score.approximation_error == 0.0
  assert score.distinct and score.in_domain and score.max_pixel_change > 0
  game = forging_game.play(fcn_trace, 0, forged_x, forged_y, mnist, 0.0, step_fn)
  assert game.accepted and game.error == 0.0, game.describe()
  # A live example swapped for the same dead one changes the gradient: the verifier rejects it.
  live = np.flatnonzero(dead_units.preactivations(layer, mnist.x_train[swap.batch]).largest > 0.1)
  other = swap.batch.copy()
  other[live[0]] = swap.added
  live_x, live_y = forging_game.examples_from_indices(mnist, other)
  rejected = forging_game.play(fcn_trace, 0, live_x, live_y, mnist, 0.0, step_fn)
  assert not rejected.accepted and rejected.error > 0


def test_lenet_dead_swap_is_exact_in_the_float32_step(mnist):
  """LeNet with conv1 switched off everywhere (a bias of -10): two examples of one class swap
  exactly in the SGD step; there is no float64 convolution to score it with."""
  model = models.build_model("lenet", (28, 28, 1), 10)
  step_fn = sgd_step.SGDStep(model, 0.01)
  theta = models.initial_parameters(step_fn.layout, 0)
  bias = next(spec for spec in step_fn.layout if spec.name.endswith("conv1/bias"))
  theta[bias.offset : bias.offset + bias.size] = -10.0
  layer = dead_units.first_layer(model, theta)
  sevens = np.flatnonzero(mnist.y_train == 7)[:9]
  batch, outside = sevens[:8], sevens[8]
  assert (
      dead_units.count_dead(
          dead_units.preactivations(layer, mnist.x_train[sevens]), mnist.y_train[sevens], 10
      ).certainly_dead
      == 9
  )
  swap = dead_units.find_swap(layer, mnist.x_train[sevens], mnist.y_train[sevens], np.arange(8))
  assert swap is not None and (swap.position, swap.added) == (0, 8)
  x, y = forging_game.examples_from_indices(mnist, batch)
  forged_x, forged_y = forging_game.examples_from_indices(mnist, np.r_[outside, batch[1:]])
  score = exact_lib._swap_score(  # pylint: disable=protected-access
      step_fn, theta, x, y, forged_x, forged_y
  )
  assert score["approximation_error"] == 0.0 and score["approximation_error_float64"] is None
  assert score["distinct"] and score["in_domain"]


@pytest.fixture(scope="module")
def exact_question_records(mnist, fcn_trace, tmp_path_factory, data_dir) -> dict:
  """dead_units at checkpoints 0 and 2 of fcn_trace, and the domain search at theta_0 and at
  checkpoint 2, written by run_experiment; experiment -> summary.json's folder."""
  root = tmp_path_factory.mktemp("exact_question")
  small = {"batch_size": 8, "hidden": 2, "rounding_scales": (1.0,), "milp_examples": 2}
  small |= {"milp_pixels": 3, "milp_max_levels": 2, "milp_time_limit_s": 10.0}
  runs = {
      "dead_units": exact_settings.ExactSettings(
          experiment="dead_units", trace=fcn_trace.path, checkpoints=(0, 2)
      ),
      "domain_init": exact_settings.ExactSettings(experiment="domain", **small),
      "domain_trained": exact_settings.ExactSettings(
          experiment="domain", trace=fcn_trace.path, checkpoints=(2,), **small
      ),
  }
  for name, settings in runs.items():
    exact_lib.run_experiment(settings, str(root / name), data_dir=data_dir, download=False)
  return {name: str(root / name) for name in runs}


def test_dead_units_experiment_records_counts_and_the_accepted_swap(exact_question_records):
  with open(os.path.join(exact_question_records["dead_units"], "summary.json")) as f:
    summary = json.load(f)
  assert summary["kind"] == "forging_tf.exact_forging" and summary["experiment"] == "dead_units"
  assert [c["step"] for c in summary["checkpoints"]] == [0, 2]
  first = summary["checkpoints"][0]
  assert first["examples"] == 60000 and first["certainly_dead"] > 1000
  assert first["first_layer"]["bias_min"] == first["first_layer"]["bias_max"] == 0.0
  swap = first["swap"]
  assert swap["found"] and swap["step"] == 0 and swap["approximation_error_float64"] == 0.0
  assert swap["verifier"]["decision"] == "ACCEPT" and swap["verifier"]["epsilon"] == 0.0
  assert swap["verify_command"].startswith("forging-verify --trace=")
  assert summary["swaps_accepted_at_epsilon_0"] >= 1 and summary["distinct"] is True
  assert summary["settings"]["checkpoints"] == [0, 2]


def test_domain_search_at_a_trained_checkpoint_records_it(exact_question_records):
  with open(os.path.join(exact_question_records["domain_trained"], "summary.json")) as f:
    trained = json.load(f)
  with open(os.path.join(exact_question_records["domain_init"], "summary.json")) as f:
    initial = json.load(f)
  assert trained["checkpoint"] == 2 and trained["trace"]["model"] == "fcn"
  assert trained["biases_max_abs"] > 0 and initial["biases_max_abs"] == 0.0
  assert trained["batch_indices"] == initial["batch_indices"]  # the same batch at both
  for summary in (trained, initial):
    best = summary["best_float64"]
    assert best["approximation_error_float64"] == min(
        a["approximation_error_float64"]
        for a in summary["attempts"]
        if a["in_domain"] and a["distinct"]
    )
    assert summary["approximation_error_float64"] == best["approximation_error_float64"]


def test_exact_question_section_renders_from_records(exact_question_records):
  folders = exact_question_records
  with open(os.path.join(folders["dead_units"], "summary.json")) as f:
    dead = json.load(f) | {"folder": "dead_units"}
  # Paths, loaded dicts, a record written before best_float64 existed, and a fig4-free mix.
  lines = exact_question.exact_question_lines(
      [dead, folders["domain_init"], os.path.join(folders["domain_trained"], "summary.json")]
      + ([_OLD_DOMAIN_RECORD] if os.path.exists(_OLD_DOMAIN_RECORD) else [])
  )
  text = "\n".join(lines)
  assert lines[0] == "## The exact in-domain question" and lines[-1] == ""
  first = dead["checkpoints"][0]
  assert f"| {first['dead']} of 60000 | {first['certainly_dead']} |" in text
  swap = first["swap"]
  assert f"{swap['removed']} -> {swap['added']} ({swap['label']}) | 0 (exactly) | 0 (exactly)" in (
      text
  )
  assert "ACCEPT: recomputed theta_1 from theta_0, error 0 (exactly)" in text
  assert "Proposition 1" in text and "delta_1 != 0" in text
  assert "checkpoint 2 of `fcn2`" in text and "theta_0 (`models.initial_parameters(seed=0)`" in text
  assert f"(id {dead['platform']['id']})" in text
  if os.path.exists(_OLD_DOMAIN_RECORD):
    with open(_OLD_DOMAIN_RECORD) as f:
      old = json.load(f)
    smallest = min(
        a["approximation_error_float64"]
        for a in old["attempts"]
        if a["in_domain"] and a["distinct"]
    )
    assert f"{smallest:.2e}" in text
  assert exact_question.exact_question_lines([]) == []


def test_exact_question_refuses_a_bad_record_in_one_line(tmp_path, exact_question_records):
  (tmp_path / "summary.json").write_text(json.dumps({"kind": "forging_tf.attack_results"}))
  with pytest.raises(errors.ForgingError, match="does not hold an exact-forging result") as e:
    exact_question.exact_question_lines([str(tmp_path)])
  assert "\n" not in str(e.value)
  with open(os.path.join(exact_question_records["dead_units"], "summary.json")) as f:
    dead = json.load(f)
  del dead["checkpoints"][1]["swap"]
  with pytest.raises(errors.ForgingError, match=r"has no checkpoints\[\]\.swap\.found") as e:
    exact_question.exact_question_lines([dead | {"path": "dead/summary.json"}])
  assert "\n" not in str(e.value)
  with pytest.raises(errors.ConfigError, match="a dict or a path"):
    exact_question.exact_question_lines([3])


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--experiment=dead_units"],
            "dead_units counts at checkpoints of a trace: give --trace and --checkpoints",
        ),
        (
            ["--experiment=fig4", "--checkpoints=3", "--trace=x"],
            "fig4 runs at theta_0; --trace and --checkpoints are for domain and dead_units",
        ),
    ],
)
def test_binary_refuses_dead_units_without_a_trace_in_one_line(tmp_path, flags, message):
  completed = subprocess.run(
      [sys.executable, "-m", "forging_tf.exact.exact", f"--out={tmp_path / 'out'}", *flags],
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
  )
  assert completed.returncode != 0 and "Traceback" not in completed.stderr
  assert completed.stderr.strip().splitlines()[-1] == f"forging-exact: error: {message}"


def test_settings_take_one_checkpoint_for_domain():
  with pytest.raises(errors.ConfigError, match="one --checkpoints step"):
    exact_settings.ExactSettings(experiment="domain", trace="t", checkpoints=(1, 2))
  with pytest.raises(errors.ConfigError, match="increasing order"):
    exact_settings.ExactSettings(experiment="dead_units", trace="t", checkpoints=(2, 1))
