"""Fully connected ReLU networks as float64 linear algebra: the layers, errors and gradients.

Exact forging (SPEC section 6) works on a fully connected ReLU network (models.fcn, any depth) or
softmax regression (models.logreg, L = 1), taken out of its flat parameter vector theta into
float64 numpy (`dense_layers`). Notation follows the paper, with one change of orientation: the
paper's X is d x b (one column per example); here a batch is x [b, d] (one row per example), as
everywhere else in the package.
"""

import dataclasses

import keras
import numpy as np

from forging_tf import errors
from forging_tf import models


@dataclasses.dataclass(frozen=True)
class DenseLayer:
  """One Dense layer in float64: z = a @ kernel + bias; ReLU after every layer but the last."""

  kernel: np.ndarray  # [in, out] float64
  bias: np.ndarray | None  # [out] float64, None without biases
  kernel_offset: int  # where the kernel starts in theta (C order)
  bias_offset: int | None


def dense_layers(model: keras.Model, theta: np.ndarray) -> tuple[DenseLayer, ...]:
  """The Dense layers of an fcn or logreg model, read out of theta [P] float32 into float64."""
  dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
  others = [
      layer.name
      for layer in model.layers
      if not isinstance(layer, (keras.layers.Dense, keras.layers.Flatten))
  ]
  activations = [layer.activation for layer in dense]
  if (
      others
      or not dense
      or any(a is not keras.activations.relu for a in activations[:-1])
      or activations[-1] is not keras.activations.linear
  ):
    raise errors.ConfigError(
        f"exact forging needs a fully connected ReLU model (fcn or logreg); "
        f"{model.name} has layers {[layer.name for layer in model.layers]}"
    )
  layout = {spec.name: spec for spec in models.parameter_layout(model)}
  theta = np.asarray(theta)
  if theta.shape != (models.num_parameters(layout.values()),):
    raise errors.ConfigError(
        f"theta has shape {theta.shape}, the model has "
        f"{models.num_parameters(layout.values())} parameters"
    )
  layers = []
  for layer in dense:
    kernel = layout[layer.kernel.path]
    bias = layout[layer.bias.path] if layer.use_bias else None
    layers.append(
        DenseLayer(
            kernel=theta[kernel.offset : kernel.offset + kernel.size]
            .astype(np.float64)
            .reshape(kernel.shape),
            bias=None
            if bias is None
            else theta[bias.offset : bias.offset + bias.size].astype(np.float64),
            kernel_offset=kernel.offset,
            bias_offset=None if bias is None else bias.offset,
        )
    )
  return tuple(layers)


def _num_parameters(layers) -> int:
  return sum(layer.kernel.size + (0 if layer.bias is None else layer.bias.size) for layer in layers)


def _forward(layers, x: np.ndarray):
  """x [b, d] -> (activations [a_0 = x, a_1, ..., a_{L-1}], pre-activations [z_1, ..., z_L])."""
  activations, pre_activations = [x], []
  for i, layer in enumerate(layers):
    z = activations[-1] @ layer.kernel
    if layer.bias is not None:
      z = z + layer.bias
    pre_activations.append(z)
    if i < len(layers) - 1:
      activations.append(np.maximum(z, 0.0))
  return activations, pre_activations


def softmax(logits: np.ndarray) -> np.ndarray:
  """logits [b, n] float64 -> probabilities [b, n]."""
  shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
  return shifted / shifted.sum(axis=1, keepdims=True)


def layer_errors(layers, x: np.ndarray, y: np.ndarray):
  """Per-example errors delta_l = dL_k / dz_l of every layer, for crossentropy on softmax.

  x: [b, d] float64, y: [b, n] float64 (any rows). Returns (activations, deltas) with deltas[l]
  [b, width of layer l]. The output error is softmax(z_L) * sum(y) - y: the exact derivative for
  label rows that need not sum to one (Prop. 3's labels sum to one only up to rounding). ReLU's
  derivative at 0 is 0, as in TensorFlow.
  """
  activations, pre_activations = _forward(layers, x)
  delta = softmax(pre_activations[-1]) * y.sum(axis=1, keepdims=True) - y
  deltas = [delta]
  for layer, z in zip(layers[:0:-1], pre_activations[-2::-1]):
    delta = (delta @ layer.kernel.T) * (z > 0)
    deltas.insert(0, delta)
  return activations, deltas


def first_layer_errors(layers, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """D1 [b, d1] float64: the first-layer errors delta_1 of each example (Prop. 2)."""
  return layer_errors(layers, x, y)[1][0]


def per_example_gradients(layers, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """grad_theta of each example's loss: [b, P] float64, in theta's layout (C-order kernels).

  x: [b, d] float64, y: [b, n] float64. The batch gradient of SPEC 1 is the mean over rows.
  """
  activations, deltas = layer_errors(layers, x, y)
  b = x.shape[0]
  gradients = np.zeros((b, _num_parameters(layers)))
  for layer, a, delta in zip(layers, activations, deltas):
    kernel = np.einsum("bi,bj->bij", a, delta).reshape(b, -1)
    gradients[:, layer.kernel_offset : layer.kernel_offset + kernel.shape[1]] = kernel
    if layer.bias is not None:
      gradients[:, layer.bias_offset : layer.bias_offset + delta.shape[1]] = delta
  return gradients


def batch_gradient(layers, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """grad L(B; theta) [P] float64 = mean of the per-example gradients."""
  return per_example_gradients(layers, x, y).mean(axis=0)
