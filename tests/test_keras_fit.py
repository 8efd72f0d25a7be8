"""Traces of keras.Model.fit (forging_tf.keras): written by TraceCallback, recomputed bitwise with
Keras' own update, resumed after a kill, attacked and verified, on real MNIST."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from forging_tf import errors
from forging_tf import forging_game
from forging_tf import keras as forging_keras
from forging_tf import sgd_step
from forging_tf import trace as trace_lib
from forging_tf.attacks import attack_lib
from forging_tf.attacks import settings as attack_settings
from forging_tf.recompute import recompute_lib

_REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
_B, _T = 32, 6
_USER_MODEL = """
import keras


def build():
  return keras.Sequential(
      [
          keras.Input((28, 28, 1)),
          keras.layers.Conv2D(4, 3, activation="relu"),
          keras.layers.MaxPooling2D(2),
          keras.layers.Flatten(),
          keras.layers.Dense(10),
      ]
  )


def build_wider():
  return keras.Sequential(
      [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
  )


def build_with_dropout():
  return keras.Sequential(
      [
          keras.Input((28, 28, 1)),
          keras.layers.Flatten(),
          keras.layers.Dropout(0.5, seed=1),
          keras.layers.Dense(10),
      ]
  )


def not_a_model():
  return 3


def broken():
  raise ValueError("no such layer\\nsecond line")
"""
_FIT_SCRIPT = """
import sys
import time

import keras

import user_model
from forging_tf import data
from forging_tf import keras as forging_keras

out, data_dir, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
mnist = data.load_dataset("mnist", data_dir, download=False)
batches = forging_keras.indexed_batches(mnist, 32, 16, seed=3)
trace = forging_keras.TraceCallback(out, batches, model_fn="user_model:build")


class Slow(keras.callbacks.Callback):
  def on_train_batch_end(self, batch, logs=None):
    time.sleep(delay)


keras.utils.set_random_seed(0)
model = user_model.build()
model.compile(
    optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
    loss=keras.losses.CategoricalCrossentropy(from_logits=True),
    jit_compile=False,
)
model.fit(trace.dataset(), epochs=1, callbacks=[trace, Slow()], verbose=0)
print("resumed at step", trace.start_step)
"""


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> str:
  """A folder holding the user's own model module (and a fit script), importable from here."""
  folder = tmp_path_factory.mktemp("user")
  (folder / "user_model.py").write_text(_USER_MODEL)
  (folder / "fit_script.py").write_text(_FIT_SCRIPT)
  sys.path.insert(0, str(folder))
  yield str(folder)
  sys.path.remove(str(folder))


def _fit(
    mnist,
    out,
    *,
    momentum=0.0,
    nesterov=False,
    sparse=False,
    k=1,
    steps=_T,
    xla=False,
    **compile_kw,
):
  import user_model  # pylint: disable=import-outside-toplevel

  batches = forging_keras.indexed_batches(mnist, _B, steps, seed=0, sparse_labels=sparse)
  callback = forging_keras.TraceCallback(str(out), batches, k=k, model_fn="user_model:build")
  model = user_model.build()
  compile_kw.setdefault(
      "optimizer", keras.optimizers.SGD(0.05, momentum=momentum, nesterov=nesterov)
  )
  compile_kw.setdefault(
      "loss",
      "sparse_categorical_crossentropy"
      if sparse
      else keras.losses.CategoricalCrossentropy(from_logits=True),
  )
  compile_kw.setdefault("jit_compile", False)
  model.compile(**compile_kw)
  if xla:  # as where Keras keeps XLA on (it turns it off while op determinism is on)
    model._jit_compile = True  # pylint: disable=protected-access
  model.fit(callback.dataset(), epochs=1, callbacks=[callback], verbose=0)
  return str(out)


@pytest.fixture(scope="module")
def momentum_trace(mnist, user_dir, tmp_path_factory) -> str:
  del user_dir
  return _fit(mnist, tmp_path_factory.mktemp("traces") / "momentum", momentum=0.9)


def _recompute(trace, out, data_dir, **kwargs):
  kwargs.setdefault("fresh_process", False)
  kwargs.setdefault("model_fn", "user_model:build")
  return recompute_lib.recompute(trace, str(out), data_dir=data_dir, download=False, **kwargs)


def test_momentum_trace_holds_the_velocity_and_the_update(momentum_trace):
  trace = trace_lib.Trace(momentum_trace)
  assert trace.complete and trace.has_optimizer_state
  assert trace.manifest["model"] == {
      "name": "keras",
      "config": {
          "keras_name": trace.manifest["model"]["config"]["keras_name"],
          "model_fn": "user_model:build",
      },
  }
  assert trace.manifest["keras"]["optimizer"] == {"name": "SGD", "momentum": 0.9, "nesterov": False}
  assert trace.manifest["keras"]["loss"] == {
      "name": "categorical_crossentropy",
      "from_logits": True,
  }
  assert not trace.optimizer_state(0).any()  # v_0 = 0
  # Classical momentum: theta_{i+1} - theta_i is the velocity v_{i+1}, as Keras adds it.
  theta_1, theta_2 = trace.checkpoint(1), trace.checkpoint(2)
  np.testing.assert_array_equal(theta_2, theta_1 + trace.optimizer_state(2))


@pytest.mark.parametrize(
    "settings",
    [
        {"sparse": True},
        {"momentum": 0.9},
        {"momentum": 0.5, "nesterov": True, "k": 2},
    ],
    ids=["plain-sparse", "momentum", "nesterov-k2"],
)
def test_same_platform_recomputation_of_model_fit_is_bitwise(
    mnist, user_dir, data_dir, tmp_path, settings
):
  del user_dir
  path = _fit(mnist, tmp_path / "trace", **settings)
  summary = _recompute(path, tmp_path / "r", data_dir, repeats=1)
  assert summary.eps_repr == 0.0
  assert summary.steps_recomputed == _T // settings.get("k", 1)
  with open(tmp_path / "r" / "result.json") as f:
    assert json.load(f)["model_fn"] == "user_model:build"


def test_resume_after_sigkill_of_model_fit_equals_an_uninterrupted_run(
    user_dir, data_dir, tmp_path
):
  def command(out, delay):
    return [sys.executable, "fit_script.py", str(out), data_dir, str(delay)]

  killed = tmp_path / "killed"
  process = subprocess.Popen(
      command(killed, 0.4), cwd=user_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  try:
    deadline = time.monotonic() + 120
    written = 0
    while written < 5 and process.poll() is None and time.monotonic() < deadline:
      time.sleep(0.05)
      if trace_lib.is_trace(str(killed)):
        with open(killed / "zarr.json") as f:
          written = len(json.load(f)["attributes"][trace_lib.MANIFEST_KEY]["checkpoint_sha256"])
    assert process.poll() is None, "model.fit ended before it could be killed"
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait()
  unfinished = trace_lib.Trace(str(killed))
  assert not unfinished.complete and 5 <= unfinished.num_written < 17
  resumed = subprocess.run(
      command(killed, 0), cwd=user_dir, capture_output=True, text=True, timeout=300, check=False
  )
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f"resumed at step {unfinished.checkpoint_steps[unfinished.num_written - 1]}" in (
      resumed.stdout
  )
  reference = tmp_path / "uninterrupted"
  subprocess.run(command(reference, 0), cwd=user_dir, capture_output=True, timeout=300, check=True)
  a, b = trace_lib.Trace(str(killed)), trace_lib.Trace(str(reference))
  assert a.complete and b.complete
  for step in b.checkpoint_steps:
    np.testing.assert_array_equal(a.checkpoint(step), b.checkpoint(step))
    np.testing.assert_array_equal(a.optimizer_state(step), b.optimizer_state(step))


def test_recompute_binary_with_the_users_model_fn(momentum_trace, user_dir, data_dir, tmp_path):
  def recompute(*flags):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "forging_tf.recompute.recompute",
            f"--trace={momentum_trace}",
            f"--data_dir={data_dir}",
            "--repeats=1",
            *flags,
        ],
        cwd=user_dir,  # the module is found in the working folder, as a user runs it
        capture_output=True,
        text=True,
        check=False,
    )

  done = recompute("--model_fn=user_model:build", f"--out={tmp_path / 'r'}")
  assert done.returncode == 0, done.stderr[-2000:]
  assert "eps_repr = 0.000000e+00" in done.stdout
  for flags, message in [
      ([], "was written by keras.Model.fit: name its model with --model_fn"),
      (["--model_fn=user_model:build_wider"], "has variables of shapes"),
  ]:
    failed = recompute(*flags, f"--out={tmp_path / 'refused'}")
    last = failed.stderr.strip().splitlines()[-1]
    assert failed.returncode != 0 and "Traceback" not in failed.stderr, failed.stderr[-2000:]
    assert last.startswith("forging-recompute: error:") and message in last, last
    assert not os.path.exists(tmp_path / "refused")  # refused before anything was written


@pytest.mark.parametrize(
    "model_fn, error, message",
    [
        ("user_model", errors.ConfigError, "is not module:function"),
        ("nowhere:build", errors.ConfigError, "cannot import nowhere"),
        ("user_model:missing", errors.ConfigError, "user_model has no function missing"),
        ("user_model:not_a_model", errors.ConfigError, "returned int, not a keras.Model"),
        ("user_model:broken", errors.ConfigError, "raised ValueError: no such layer second line"),
        ("user_model:build_with_dropout", errors.ConfigError, "has non-trainable state"),
        ("user_model:build_wider", errors.TraceError, "has variables of shapes"),
    ],
)
def test_a_model_fn_that_cannot_recompute_the_trace_is_refused_before_writing(
    momentum_trace, user_dir, data_dir, tmp_path, model_fn, error, message
):
  del user_dir
  with pytest.raises(error, match=message):
    _recompute(momentum_trace, tmp_path / "refused", data_dir, model_fn=model_fn)
  assert not os.path.exists(tmp_path / "refused")


def test_model_fn_is_refused_for_the_packages_own_traces(mnist, lenet_trace):
  trace = trace_lib.Trace(lenet_trace(mnist, 100, 2))
  with pytest.raises(errors.ConfigError, match="leave --model_fn out"):
    sgd_step.step_for_trace(trace, mnist, "user_model:build")


def _with_manifest(path, tmp_path, change) -> str:
  """A copy of the trace at `path` whose manifest `change` edited, with its digest renewed (an
  adversary can recompute a digest; what the reader must refuse is the content)."""
  copy = str(tmp_path / "edited")
  shutil.copytree(path, copy)
  with open(os.path.join(copy, "zarr.json")) as f:
    metadata = json.load(f)
  manifest = metadata["attributes"][trace_lib.MANIFEST_KEY]
  change(manifest)
  manifest["manifest_sha256"] = trace_lib.manifest_digest(manifest)
  with open(os.path.join(copy, "zarr.json"), "w") as f:
    json.dump(metadata, f)
  return copy


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m["keras"]["optimizer"].update(name="Adam"), "not SGD with momentum"),
        (lambda m: m["keras"]["optimizer"].update(momentum=1.5), "not SGD with momentum"),
        (lambda m: m["keras"]["loss"].update(name="hinge"), "keras.loss is"),
        (lambda m: m.pop("keras"), "keras is not"),
        (lambda m: m.pop("optimizer_state_sha256"), "optimizer_state_sha256 must be present"),
        (lambda m: m["optimizer_state_sha256"].pop(), "one per written checkpoint"),
        (lambda m: m["model"]["config"].update(code="import os"), "model.config of a"),
        (lambda m: m.update(model={"name": "lenet", "config": {}}), "has keras.Model.fit fields"),
    ],
)
def test_a_trace_naming_what_cannot_be_recomputed_is_refused_in_one_line(
    momentum_trace, tmp_path, change, message
):
  path = _with_manifest(momentum_trace, tmp_path, change)
  with pytest.raises(errors.TraceError, match="manifest") as caught:
    trace_lib.Trace(path)
  assert message in str(caught.value) and "\n" not in str(caught.value)


def test_tampered_velocity_is_named_by_its_step(momentum_trace, tmp_path):
  copy = str(tmp_path / "tampered")
  shutil.copytree(momentum_trace, copy)
  chunk = os.path.join(copy, "optimizer_state", "c", "3", "0")
  raw = bytearray(open(chunk, "rb").read())
  raw[100] ^= 1
  open(chunk, "wb").write(bytes(raw))
  trace = trace_lib.Trace(copy)
  trace.checkpoint(3)  # the weights are intact
  with pytest.raises(errors.TraceError, match="optimizer state of step 3 fails its sha256"):
    trace.optimizer_state(3)


@pytest.mark.parametrize(
    "compile_kw, message",
    [
        ({"optimizer": "adam"}, "compiled with Adam; traces support keras.optimizers.SGD"),
        ({"optimizer": keras.optimizers.SGD(0.1, clipnorm=1.0)}, "uses clipnorm"),
        (
            {
                "optimizer": keras.optimizers.SGD(
                    keras.optimizers.schedules.ExponentialDecay(0.1, 5, 0.9)
                )
            },
            "a learning-rate schedule",
        ),
        ({"loss": keras.losses.CategoricalCrossentropy(label_smoothing=0.1)}, "no label smoothing"),
        ({"loss": "mse"}, "compiled with the loss 'mse'"),
        ({"xla": True}, "compile it with jit_compile=False"),
        ({"steps_per_execution": 2}, "steps_per_execution=2"),
        ({"loss": "sparse_categorical_crossentropy"}, "sparse_labels=True"),
    ],
)
def test_what_a_trace_cannot_recompute_is_refused_before_training(
    mnist, user_dir, tmp_path, compile_kw, message
):
  del user_dir
  with pytest.raises(errors.ConfigError) as caught:
    _fit(mnist, tmp_path / "trace", **compile_kw)
  assert message in str(caught.value)
  assert not os.path.exists(tmp_path / "trace")  # refused before anything was written


def test_fit_past_the_batches_and_a_finished_trace_are_refused(
    mnist, momentum_trace, user_dir, tmp_path
):
  import user_model  # pylint: disable=import-outside-toplevel

  del user_dir
  batches = forging_keras.indexed_batches(mnist, _B, 4, seed=0)
  callback = forging_keras.TraceCallback(str(tmp_path / "trace"), batches)
  model = user_model.build()
  model.compile(optimizer="sgd", loss="categorical_crossentropy", jit_compile=False)
  with pytest.raises(errors.ConfigError, match="more than the 4 steps"):
    model.fit(callback.dataset().repeat(), steps_per_epoch=5, callbacks=[callback], verbose=0)
  with pytest.raises(errors.ConfigError, match="holds a finished trace; pass overwrite=True"):
    forging_keras.TraceCallback(momentum_trace, forging_keras.indexed_batches(mnist, _B, _T))


def test_attack_and_verifier_on_a_momentum_trace(
    mnist, momentum_trace, data_dir, user_dir, tmp_path
):
  settings = attack_settings.AttackSettings(
      attack=attack_settings.Attack.THUDI,
      steps="2",
      forging_fractions=("1/b",),
      runs=1,
      M=8,
      n=64,
  )
  summary = attack_lib.run_attacks(
      momentum_trace, mnist, settings, str(tmp_path / "attack"), model_fn="user_model:build"
  )
  cell = summary["results"][0]
  assert cell["reproduction_error"] == 0.0  # the logged batch, through Keras' update: bitwise
  forged = np.load(tmp_path / "attack" / "forged_batches.npy")[0, 0, 0]
  # The verifier, on its own: theta_2 and v_2 from the trace, Keras' update on the forged batch.
  trace = trace_lib.Trace(momentum_trace)
  step_fn = sgd_step.step_for_trace(trace, mnist, "user_model:build")
  x, y = forging_game.examples_from_indices(mnist, forged)
  result = forging_game.play(trace, 2, x, y, mnist, 1.0, step_fn)
  assert result.accepted and result.error == pytest.approx(
      cell["min_approximation_error"], rel=0, abs=0
  )
  # Independently: with momentum the forged update differs from the logged one by eta * (g - g').
  theta, velocity = trace.checkpoint(2), trace.optimizer_state(2)
  source = sgd_step.BatchSource(mnist.x_train, mnist.y_train, mnist.num_classes)
  honest, _ = step_fn.update(theta, velocity, *source(trace.batch(2)))
  dishonest, _ = step_fn.update(theta, velocity, *source(forged))
  np.testing.assert_array_equal(honest.numpy(), trace.checkpoint(3))
  assert result.error == sgd_step.l2_distance(dishonest.numpy(), trace.checkpoint(3))
  engine_error = np.load(tmp_path / "attack" / "engine_error.npy")[0, 0, 0]
  assert engine_error == pytest.approx(result.error, rel=1e-3)
  rejected = forging_game.play(trace, 2, x, y, mnist, result.error / 2, step_fn)
  assert not rejected.accepted
  # The binary, with the user's model named from the user's folder.
  verify = subprocess.run(
      [
          sys.executable,
          "-m",
          "forging_tf.verify",
          f"--trace={momentum_trace}",
          "--step=2",
          f"--forged_indices={','.join(map(str, forged))}",
          f"--epsilon={result.error!r}",
          f"--data_dir={data_dir}",
          "--model_fn=user_model:build",
      ],
      cwd=user_dir,
      capture_output=True,
      text=True,
      check=False,
  )
  assert verify.returncode == 0, verify.stderr[-2000:]
  assert verify.stdout.startswith(
      f"ACCEPT: step 2: recomputed theta_3 from theta_2: error {result.error:.6g}"
  )


def test_the_readme_example_runs_and_recomputes_bitwise(data_dir, tmp_path):
  result = subprocess.run(
      [
          sys.executable,
          os.path.join(_REPO, "examples", "keras_fit.py"),
          f"--out={tmp_path / 'run'}",
          "--steps=8",
          f"--data_dir={data_dir}",
      ],
      cwd=tmp_path,
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "reproduction error on this platform: 0\n" in result.stdout
  assert trace_lib.Trace(str(tmp_path / "run" / "trace")).complete


def test_indexed_batches_are_forging_trains_batches(mnist):
  from forging_tf.train import train_lib  # pylint: disable=import-outside-toplevel

  batches = forging_keras.indexed_batches(mnist, 50, 7, seed=4, sparse_labels=True)
  np.testing.assert_array_equal(batches.indices, train_lib.batch_schedule(60000, 50, 7, 4))
  x, y = next(iter(batches.tf_dataset(start=2)))
  source = sgd_step.BatchSource(mnist.x_train, mnist.y_train, mnist.num_classes)
  want_x, want_y = source(batches.indices[2])
  np.testing.assert_array_equal(x.numpy(), want_x.numpy())
  np.testing.assert_array_equal(y.numpy(), np.argmax(want_y.numpy(), axis=1))
  assert y.dtype == "int32"
