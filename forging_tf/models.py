"""The paper's models (SPEC section 3), built by name, and their flat parameter layout.

Every model outputs logits; the softmax lives in the loss (sgd_step.py). A model's parameters are
handled as one flat float32 vector theta [P]: the variables in `model.trainable_variables` order,
each flattened in C order. `parameter_layout` says where each variable sits in theta.
"""

import dataclasses
import inspect
import math
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from forging_tf import errors

_layers = keras.layers


def lenet(input_shape=(28, 28, 1), num_classes=10) -> keras.Model:
  """LeNet, 61,706 parameters on 28x28x1 inputs."""
  return keras.Sequential(
      [
          keras.Input(input_shape),
          _layers.Conv2D(6, 5, padding="same", activation="relu", name="conv1"),
          _layers.MaxPooling2D(2, name="pool1"),
          _layers.Conv2D(16, 5, padding="valid", activation="relu", name="conv2"),
          _layers.MaxPooling2D(2, name="pool2"),
          _layers.Flatten(name="flatten"),
          _layers.Dense(120, activation="relu", name="dense1"),
          _layers.Dense(84, activation="relu", name="dense2"),
          _layers.Dense(num_classes, name="logits"),
      ],
      name="lenet",
  )


def vggmini(input_shape=(32, 32, 3), num_classes=10) -> keras.Model:
  """VGGmini, 5,742,986 parameters on 32x32x3 inputs: ELU, same padding, no batch norm."""
  stack = [keras.Input(input_shape)]
  for block, width in enumerate((64, 128, 256, 512), start=1):
    stack += [
        _layers.Conv2D(width, 3, padding="same", activation="elu", name=f"conv{block}_1"),
        _layers.Conv2D(width, 3, padding="same", activation="elu", name=f"conv{block}_2"),
    ]
    if block < 4:
      stack.append(_layers.MaxPooling2D(2, name=f"pool{block}"))
  stack += [
      _layers.Flatten(name="flatten"),
      _layers.Dense(128, activation="elu", name="dense1"),
      _layers.Dense(64, activation="elu", name="dense2"),
      _layers.Dense(num_classes, name="logits"),
  ]
  return keras.Sequential(stack, name="vggmini")


def logreg(input_shape, num_classes=10, use_bias=True) -> keras.Model:
  """Softmax (logistic) regression: L = 1."""
  return keras.Sequential(
      [
          keras.Input(input_shape),
          _layers.Flatten(name="flatten"),
          _layers.Dense(num_classes, use_bias=use_bias, name="logits"),
      ],
      name="logreg",
  )


def fcn(input_shape, num_classes=10, hidden=(10,), use_bias=True) -> keras.Model:
  """Fully connected ReLU network with hidden layers of widths `hidden` (L = len(hidden) + 1)."""
  stack = [keras.Input(input_shape), _layers.Flatten(name="flatten")]
  stack += [
      _layers.Dense(int(w), activation="relu", use_bias=use_bias, name=f"dense{i}")
      for i, w in enumerate(hidden, start=1)
  ]
  stack.append(_layers.Dense(num_classes, use_bias=use_bias, name="logits"))
  return keras.Sequential(stack, name="fcn")


MODELS: dict[str, Callable[..., keras.Model]] = {
    "lenet": lenet,
    "vggmini": vggmini,
    "logreg": logreg,
    "fcn": fcn,
}


def build_model(name: str, input_shape, num_classes: int, **config) -> keras.Model:
  """Builds model `name` from the registry; `config` holds its extra options (fcn: hidden)."""
  if name not in MODELS:
    raise errors.ConfigError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
  try:
    return MODELS[name](input_shape=tuple(input_shape), num_classes=num_classes, **config)
  except (TypeError, ValueError) as e:
    raise errors.ConfigError(
        f"cannot build {name} for inputs {tuple(input_shape)} with options {config}: {e}"
    ) from e


def config_problem(
    name: str, config: dict, input_shape, num_classes: int, num_parameters: int
) -> str | None:
  """Why `config` cannot be the options of model `name` with `num_parameters` parameters on
  inputs `input_shape` and `num_classes` classes, or None if it can.

  Traces come from an adversary and a model is built from a trace's options before its layout
  can be compared: options must be the model's own, with their types, and the dense widths,
  which decide a logreg's or an fcn's size, must add up to the trace's parameter count.
  """
  options = inspect.signature(MODELS[name]).parameters
  unknown = sorted(set(config) - set(options) | set(config) & {"input_shape", "num_classes"})
  if unknown:
    return f"unknown options {unknown!r:.60}"
  if type(config.get("use_bias", True)) is not bool:
    return "use_bias is not true/false"
  if name not in ("logreg", "fcn"):
    return None
  hidden = config.get("hidden", list(options["hidden"].default)) if name == "fcn" else []
  if not (
      isinstance(hidden, list)
      and len(hidden) <= 100
      and all(type(w) is int and 0 < w <= num_parameters for w in hidden)
  ):
    return f"hidden is {hidden!r:.60}, not a list of positive widths"
  widths = [math.prod(input_shape), *hidden, num_classes]
  count = sum(a * b + b * config.get("use_bias", True) for a, b in zip(widths, widths[1:]))
  if count != num_parameters:
    return f"widths {widths} make {count} parameters, not {num_parameters}"
  return None


@dataclasses.dataclass(frozen=True)
class ParameterSpec:
  """One variable's place in theta: theta[offset:offset + size].reshape(shape)."""

  name: str
  shape: tuple[int, ...]
  offset: int
  size: int

  def as_dict(self) -> dict:
    return {"name": self.name, "shape": list(self.shape), "offset": self.offset, "size": self.size}


def parameter_layout(model: keras.Model) -> tuple[ParameterSpec, ...]:
  layout, offset = [], 0
  for variable in model.trainable_variables:
    shape = tuple(int(d) for d in variable.shape)
    size = int(np.prod(shape))
    layout.append(ParameterSpec(variable.path, shape, offset, size))
    offset += size
  return tuple(layout)


def split_parameters(theta, layout) -> list[tf.Tensor]:
  """theta [P] -> one tensor per variable of `layout`, in its order, each in its own shape."""
  parts = tf.split(theta, [spec.size for spec in layout])
  return [tf.reshape(part, spec.shape) for part, spec in zip(parts, layout)]


def num_parameters(layout) -> int:
  return sum(spec.size for spec in layout)


def initial_parameters(layout, seed: int) -> np.ndarray:
  """theta_0 [P] float32: Glorot-uniform kernels and zero biases (Keras' defaults).

  Drawn with numpy's PCG64 rather than Keras' initialisers so that theta_0 is the same on every
  platform, bit for bit, and a trace can be regenerated anywhere from its seed.
  """
  rng = np.random.Generator(np.random.PCG64(seed))
  theta = np.zeros(num_parameters(layout), dtype=np.float32)
  for spec in layout:
    if spec.name.endswith("kernel"):
      receptive_field = int(np.prod(spec.shape[:-2])) if len(spec.shape) > 2 else 1
      fan_in, fan_out = spec.shape[-2] * receptive_field, spec.shape[-1] * receptive_field
      limit = np.sqrt(6.0 / (fan_in + fan_out))
      theta[spec.offset : spec.offset + spec.size] = rng.uniform(-limit, limit, spec.size)
  return theta
