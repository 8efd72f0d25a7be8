"""Keras' own update, for traces written by keras.Model.fit (forging_tf.keras.TraceCallback).

model.fit updates the weights with the model's compiled `train_step`: the loss Keras computes
(mean over the batch), its gradient, and the optimizer's `apply_gradients`. A verifier that wants
the same bits on the same platform has to run that code, not a re-derivation of it, so
`KerasStep.update` sets the model's weights and the optimizer's velocity to a logged checkpoint
and runs one `train_on_batch`, which calls the same compiled train function as model.fit.

What is supported is what can be recomputed from a trace: keras.optimizers.SGD with a constant
learning rate, momentum and nesterov (the velocity is logged with every checkpoint), no weight
decay, clipping, EMA, loss scaling or gradient accumulation; the categorical or sparse
categorical crossentropy (from logits or probabilities, no label smoothing); float32 models
without non-trainable state (batch-norm statistics or dropout seeds would change a step without
being in the trace); one step per execution and no XLA (the package keeps XLA off, see
platform.py). `keras_entry` says what the trace records of it, and refuses anything else with
one line that names what to change.

The model's code is never taken from a trace: the verifier names it (`--model_fn`).
"""

import importlib
import os
import re
import sys

import keras
import numpy as np
import tensorflow as tf

from forging_tf import data
from forging_tf import errors
from forging_tf import models
from forging_tf import trace as trace_lib

TRAINER = "keras.Model.fit"
SUPPORTED = (
    "keras.optimizers.SGD with a constant learning rate, momentum and nesterov (no weight decay, "
    "clipping, EMA, loss scaling or gradient accumulation), and the loss "
    "categorical_crossentropy or sparse_categorical_crossentropy"
)
_LOSS_CLASSES = {
    "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
    "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
}
_MODEL_FN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def check_model_fn(model_fn) -> None:
  """ConfigError unless `model_fn` reads "module:function" (and fits in a manifest)."""
  if not isinstance(model_fn, str) or len(model_fn) > 200 or not _MODEL_FN.fullmatch(model_fn):
    raise errors.ConfigError(
        f"--model_fn={model_fn!r:.80} is not module:function (e.g. mymodels:build, a function "
        "that takes no arguments and returns the keras.Model)"
    )


def load_model_fn(model_fn: str, search_paths: list[str] | None = None):
  """The function `model_fn` ("module:function") names; `search_paths` (default: the working
  folder) are where a module that is not installed is looked for, after the installed ones."""
  check_model_fn(model_fn)
  module_name, function_name = model_fn.split(":")
  for folder in search_paths or [os.getcwd()]:
    if os.path.abspath(folder) not in sys.path:
      sys.path.append(os.path.abspath(folder))
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise errors.ConfigError(
        f"--model_fn={model_fn}: cannot import {module_name} ({e}); run from the folder that "
        "holds it or put that folder on PYTHONPATH"
    ) from e
  except Exception as e:  # The user's module failed as it was imported: say so on one line.
    raise errors.ConfigError(
        f"--model_fn={model_fn}: importing {module_name} raised {_one_line(e)}"
    ) from e
  function = getattr(module, function_name, None)
  if not callable(function):
    raise errors.ConfigError(
        f"--model_fn={model_fn}: {module_name} has no function {function_name}"
    )
  return function


def build_model(model_fn: str, search_paths: list[str] | None = None) -> keras.Model:
  """Calls the function `model_fn` names, with no arguments; it must return a keras.Model."""
  function = load_model_fn(model_fn, search_paths)
  try:
    model = function()
  except Exception as e:  # The user's code: its failure is reported, on one line.
    raise errors.ConfigError(f"--model_fn={model_fn} raised {_one_line(e)}") from e
  if not isinstance(model, keras.Model):
    raise errors.ConfigError(
        f"--model_fn={model_fn} returned {type(model).__name__}, not a keras.Model"
    )
  return model


def _one_line(e: Exception) -> str:
  text = " ".join(str(e).split())
  return f"{type(e).__name__}: {text if len(text) <= 200 else text[:197] + '...'}"


def check_model(model: keras.Model, dataset: data.Dataset) -> None:
  """Refuses models a trace cannot recompute, or that do not fit `dataset`."""
  if model.non_trainable_variables:
    names = ", ".join(v.path for v in model.non_trainable_variables[:3])
    raise errors.ConfigError(
        f"model {model.name} has non-trainable state ({names}, ...): batch-norm statistics or "
        "dropout seeds change a step without being in the trace; remove those layers"
    )
  if model.dtype_policy.name != "float32":
    raise errors.ConfigError(
        f"model {model.name} computes in {model.dtype_policy.name}; traces hold float32 models"
    )
  input_shape = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
  if input_shape != tuple(dataset.x_train.shape[1:]) or model.output_shape != (
      None,
      dataset.num_classes,
  ):
    raise errors.ConfigError(
        f"model {model.name} maps {model.input_shape} to {model.output_shape}; {dataset.name} "
        f"needs inputs (None, {', '.join(map(str, dataset.x_train.shape[1:]))}) and outputs "
        f"(None, {dataset.num_classes})"
    )


def keras_entry(model: keras.Model) -> dict:
  """The manifest's `keras` field for a model compiled for model.fit; ConfigError if it uses
  anything a trace cannot recompute (module docstring)."""
  optimizer = model.optimizer
  if type(optimizer) is not keras.optimizers.SGD:
    raise errors.ConfigError(
        f"the model is compiled with {type(optimizer).__name__}; traces support {SUPPORTED}"
    )
  unsupported = [
      name
      for name in (
          "weight_decay",
          "clipnorm",
          "clipvalue",
          "global_clipnorm",
          "loss_scale_factor",
          "gradient_accumulation_steps",
      )
      if getattr(optimizer, name, None)
  ] + (["use_ema"] if optimizer.use_ema else [])
  if isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
    unsupported.append("a learning-rate schedule")
  if unsupported:
    raise errors.ConfigError(
        f"the SGD optimizer uses {', '.join(unsupported)}; traces support {SUPPORTED}"
    )
  if model.jit_compile:
    raise errors.ConfigError(
        "the model is compiled with XLA (jit_compile); compile it with jit_compile=False: XLA "
        "reorders arithmetic and has no deterministic max-pool gradient"
    )
  if model.steps_per_execution != 1:
    raise errors.ConfigError(
        f"the model is compiled with steps_per_execution={model.steps_per_execution}; use 1, "
        "so that the trace sees every step"
    )
  return {
      "trainer": TRAINER,
      "keras_version": keras.__version__,
      "optimizer": {
          "name": "SGD",
          "momentum": float(optimizer.momentum),
          "nesterov": bool(optimizer.nesterov),
      },
      "loss": _loss_entry(model.loss),
  }


def optimizer_learning_rate(model: keras.Model) -> float:
  """eta as the optimizer holds it (a float32 variable), as a Python float."""
  return float(np.float32(model.optimizer.learning_rate.numpy()))


def _loss_entry(loss) -> dict:
  if isinstance(loss, str) and loss in _LOSS_CLASSES:
    return {"name": loss, "from_logits": False}
  for name, loss_class in _LOSS_CLASSES.items():
    if type(loss) is loss_class:
      config = loss.get_config()
      if (
          config.get("label_smoothing", 0) == 0
          and config.get("axis", -1) == -1
          and config.get("ignore_class") is None
          and config.get("reduction") == "sum_over_batch_size"
      ):
        return {"name": name, "from_logits": bool(config["from_logits"])}
  raise errors.ConfigError(
      f"the model is compiled with the loss {loss!r:.60}; traces support {SUPPORTED} (with the "
      "default reduction, no label smoothing)"
  )


def _flat(variables) -> tf.Tensor:
  return tf.concat([tf.reshape(v, [-1]) for v in variables], axis=0)


class FlatState:
  """A model's weights and its optimizer's velocities as flat [P] float32 vectors (each variable
  flattened in C order, in model.trainable_variables order), read and assigned by compiled
  functions: reading LeNet's two vectors took 0.76 ms compiled and 8.1 ms with one eager op per
  variable on a 2-core CPU (benchmarks/results/keras_fit_overhead.json, read_ms)."""

  def __init__(self, model: keras.Model):
    self._weights, self._velocities = list(model.trainable_variables), velocities(model)
    self.has_velocity = bool(self._velocities)
    self._layout = models.parameter_layout(model)
    self._read = tf.function(self._read_all, jit_compile=False)
    self._assign = tf.function(self._assign_all, jit_compile=False)

  def read(self):
    """(theta [P], velocity [P] or None) as tensors."""
    theta, velocity = self._read()
    return theta, velocity if self.has_velocity else None

  def assign(self, theta, velocity=None) -> None:
    theta = tf.convert_to_tensor(theta, tf.float32)
    self._assign(theta, theta if velocity is None else tf.convert_to_tensor(velocity, tf.float32))

  def _read_all(self):
    return _flat(self._weights), _flat(self._velocities) if self.has_velocity else tf.zeros([0])

  def _assign_all(self, theta, velocity):
    for variables, vector in ((self._weights, theta), (self._velocities, velocity)):
      for variable, part in zip(variables, models.split_parameters(vector, self._layout)):
        variable.assign(part)


def velocities(model: keras.Model) -> list:
  """The optimizer's momentum variables in the order of model.trainable_variables ([] without
  momentum); builds the optimizer if model.fit has not yet."""
  optimizer = model.optimizer
  if not optimizer.built:
    optimizer.build(model.trainable_variables)
  # SGD.build makes one momentum per variable, in the order of the list it is built on, which is
  # model.trainable_variables (here and in model.fit).
  return list(optimizer.momentums)


class KerasStep:
  """Keras' own update of a model.fit trace: theta [P], x, y (as SGDStep takes them) -> theta'.

  The model is compiled here as the trace's `keras` entry says; `update` runs one
  `train_on_batch` from the given weights and velocity.
  """

  def __init__(self, model: keras.Model, learning_rate: float, entry: dict):
    optimizer, loss = entry["optimizer"], entry["loss"]
    self.model = model
    self.learning_rate = float(learning_rate)
    self.momentum, self.nesterov = optimizer["momentum"], optimizer["nesterov"]
    self.sparse_labels = loss["name"] == "sparse_categorical_crossentropy"
    self._from_logits = loss["from_logits"]
    model.compile(
        optimizer=keras.optimizers.SGD(
            self.learning_rate, momentum=self.momentum, nesterov=self.nesterov
        ),
        loss=_LOSS_CLASSES[loss["name"]](from_logits=self._from_logits),
        jit_compile=False,
    )
    self.layout = models.parameter_layout(model)
    self.num_parameters = models.num_parameters(self.layout)
    self.input_shape = tuple(int(d) for d in model.input_shape[1:])
    self.num_classes = int(model.output_shape[-1])
    self._state = FlatState(model)

  def variables(self, theta) -> list[tf.Tensor]:
    """theta [P] -> the model's trainable variables, in layout order, each in its own shape."""
    return models.split_parameters(theta, self.layout)

  def labels(self, y):
    """One-hot rows [b, n] -> what the compiled loss takes (class ids int32 for the sparse one,
    as forging_tf.keras.indexed_batches fed model.fit)."""
    return tf.argmax(y, axis=-1, output_type=tf.int32) if self.sparse_labels else y

  def example_losses(self, variables, x, y) -> tf.Tensor:
    """The model's forward pass and the trace's loss per example [b] (the attack engine's)."""
    outputs, _ = self.model.stateless_call(variables, [], x, training=True)
    loss = (
        keras.losses.sparse_categorical_crossentropy
        if self.sparse_labels
        else keras.losses.categorical_crossentropy
    )
    return loss(self.labels(y), outputs, from_logits=self._from_logits)

  def update(self, theta, velocity, x, y):
    """(theta_next, velocity_next) from (theta_i, v_i) and the batch: one train_on_batch."""
    if (velocity is None) != (self.momentum == 0.0):
      raise errors.TraceError(
          "momentum SGD needs the velocity logged with the checkpoint"
          if velocity is None
          else "plain SGD has no optimizer state, yet a velocity was given"
      )
    self._state.assign(theta, velocity)
    self.model.train_on_batch(tf.convert_to_tensor(x), self.labels(tf.convert_to_tensor(y)))
    return self._state.read()

  def __call__(self, theta, x, y) -> tf.Tensor:
    return self.update(theta, None, x, y)[0]

  def apply_gradient(self, theta, gradient, velocity):
    """Keras SGD's update for a given mean gradient, as graph code (float32, its op order)."""
    eta = tf.constant(self.learning_rate, tf.float32)
    if self.momentum == 0.0:
      return theta - gradient * eta
    momentum = tf.constant(self.momentum, tf.float32)
    velocity = velocity * momentum - gradient * eta
    return theta + (velocity * momentum - gradient * eta if self.nesterov else velocity)


def step_for_keras_trace(
    trace: trace_lib.Trace,
    dataset: data.Dataset,
    model_fn: str | None,
    search_paths: list[str] | None = None,
) -> KerasStep:
  """KerasStep for a model.fit trace, with the model `model_fn` builds; checks its layout."""
  if not model_fn:
    raise errors.ConfigError(
        f"{trace.path} was written by keras.Model.fit: name its model with "
        "--model_fn=module:function (your function that builds it; a trace never chooses the "
        "code that runs)"
    )
  model = build_model(model_fn, search_paths)
  check_model(model, dataset)
  layout = models.parameter_layout(model)
  # Variable names carry Keras' per-process naming counters (dense_3): shapes decide.
  if [(s.shape, s.offset) for s in layout] != [(s.shape, s.offset) for s in trace.layout]:
    raise errors.TraceError(
        f"{trace.path}: the model --model_fn={model_fn} builds has variables of shapes "
        f"{[list(s.shape) for s in layout]!s:.120}, the trace's are "
        f"{[list(s.shape) for s in trace.layout]!s:.120}"
    )
  return KerasStep(model, trace.learning_rate, trace.manifest["keras"])
