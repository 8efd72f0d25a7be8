"""Dead first layers: examples whose every first-layer ReLU unit is inactive (SPEC section 8).

An example x whose first-layer pre-activations z_1 = W1^T x + b1 are all <= 0 (for a convolution:
every output unit at every position) has first-layer activation 0 and first-layer error
delta_1 = 0: ReLU's derivative is 0 at z <= 0 in TensorFlow (and in dense.py). Everything after
the first layer then sees the input 0, and the first layer's gradient x delta_1^T is 0, so the
example's gradient depends on its label only. Two such examples of one class have the same
gradient bit for bit, and swapping one in a batch for the other is an exact forgery inside the
domain. Proposition 1 (b = 1: equal gradients imply the same example) needs delta_1 != 0, which its
proof assumes; this is the case it leaves out.

`preactivations` computes the first layer of every example in float64, with the rounding bound of
a float32 sum in any order, so that `count_dead` can say which examples are dead in float64 and
which are certainly dead in the float32 SGD step as well; `find_swap` looks in a batch for a
certainly dead example with a certainly dead partner of its class outside the batch.
"""

import dataclasses

import keras
import numpy as np

from forging_tf import domain
from forging_tf import errors
from forging_tf import models

# Unit roundoffs: float32 (TensorFlow's sums) and float64 (this module's).
_U32, _U64 = 2.0**-24, 2.0**-53


def _gamma(terms: int) -> float:
  """gamma_n = n u / (1 - n u): |fl(sum of n products) - sum| <= gamma_n * sum of |products|, for
  any order of the sum (Higham, Accuracy and Stability of Numerical Algorithms, eq. 3.4), for
  float32 and for the float64 sum that stands in for the exact one."""
  return sum(terms * u / (1 - terms * u) for u in (_U32, _U64))


@dataclasses.dataclass(frozen=True)
class FirstLayer:
  """A model's first layer with weights, in float64: z = x @ kernel + bias (dense) or the
  cross-correlation of x with kernel, stride 1, plus bias (conv2d); ReLU follows it.

  kernel: dense [d, units]; conv2d [kh, kw, c, units]. bias: [units] or None. padding: conv2d's
  "same" or "valid" (TensorFlow's rule: "same" pads (k - 1) // 2 before and the rest after).
  """

  name: str
  kind: str
  kernel: np.ndarray
  bias: np.ndarray | None
  padding: str | None = None

  @property
  def units(self) -> int:
    return int(self.kernel.shape[-1])

  @property
  def fan_in(self) -> int:
    return int(np.prod(self.kernel.shape[:-1]))

  def as_dict(self) -> dict:
    bias = np.zeros(self.units) if self.bias is None else self.bias
    return {
        "name": self.name,
        "kind": self.kind,
        "kernel_shape": list(self.kernel.shape),
        "padding": self.padding,
        "units": self.units,
        "bias_min": float(bias.min()),
        "bias_max": float(bias.max()),
    }


def first_layer(model: keras.Model, theta: np.ndarray) -> FirstLayer:
  """The first layer with weights of `model`, read out of theta [P] float32 into float64.

  It must be a Dense or a stride-1, undilated Conv2D layer with ReLU (fcn, lenet); anything else
  is a ConfigError.
  """
  layer = next((layer for layer in model.layers if layer.weights), None)
  kind = {keras.layers.Dense: "dense", keras.layers.Conv2D: "conv2d"}.get(type(layer))
  if (
      kind is None
      or layer.activation is not keras.activations.relu
      or kind == "conv2d"
      and (tuple(layer.strides) != (1, 1) or tuple(layer.dilation_rate) != (1, 1))
  ):
    raise errors.ConfigError(
        f"dead units are counted on a first layer that is Dense or a stride-1 Conv2D with ReLU; "
        f"{model.name}'s is {None if layer is None else layer.name}"
    )
  layout = {spec.name: spec for spec in models.parameter_layout(model)}
  theta = np.asarray(theta)
  if theta.shape != (models.num_parameters(layout.values()),):
    raise errors.ConfigError(
        f"theta has shape {theta.shape}, {model.name} has "
        f"{models.num_parameters(layout.values())} parameters"
    )

  def read(variable) -> np.ndarray:
    spec = layout[variable.path]
    return theta[spec.offset : spec.offset + spec.size].astype(np.float64).reshape(spec.shape)

  return FirstLayer(
      name=layer.name,
      kind=kind,
      kernel=read(layer.kernel),
      bias=read(layer.bias) if layer.use_bias else None,
      padding=layer.padding if kind == "conv2d" else None,
  )


def _pre_activations(layer: FirstLayer, x: np.ndarray):
  """x [n, h, w, c] float64 pixels >= 0 -> (z, bound), both [n, positions, units].

  One product gives both: x @ [W, |W|], since |x| = x for pixels in [0, 1].
  """
  gamma = _gamma(layer.fan_in + 1)
  bias = np.zeros(layer.units) if layer.bias is None else layer.bias
  kernel = layer.kernel
  if layer.kind == "dense":
    patches = x.reshape(len(x), -1)
  else:
    kh, kw, c, units = kernel.shape
    if layer.padding == "same":
      pad_h, pad_w = ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)
      x = np.pad(x, [(0, 0), pad_h, pad_w, (0, 0)])
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    patches = windows.reshape(-1, c * kh * kw)  # rows: (example, position); columns: (c, i, j)
    kernel = kernel.transpose(2, 0, 1, 3).reshape(c * kh * kw, units)
  both = patches @ np.concatenate([kernel, np.abs(kernel)], axis=1)
  z, magnitude = np.split(both.reshape(len(x), -1, 2 * layer.units), 2, axis=2)
  return z + bias, gamma * (magnitude + np.abs(bias))


@dataclasses.dataclass(frozen=True)
class PreActivations:
  """The first layer over a set of examples, float64.

  largest: [n] each example's largest pre-activation (over units and positions): <= 0 is dead;
  largest_upper: [n] the largest of z + the float32 rounding bound of z: <= 0 proves every unit
  inactive in a float32 forward pass that sums in any order; unit_largest: [units] each unit's
  largest pre-activation over the examples (and positions).
  """

  largest: np.ndarray
  largest_upper: np.ndarray
  unit_largest: np.ndarray


def preactivations(layer: FirstLayer, images: np.ndarray, chunk: int = 250) -> PreActivations:
  """The first layer of `layer` on images [n, h, w, c] (uint8 levels q, fed as the float32 q / 255
  the SGD step sees), in chunks of `chunk` examples (a convolution's patches of a chunk take
  chunk * positions * fan_in * 8 bytes: 39 MB for LeNet's conv1)."""
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4:
    raise errors.ConfigError(
        f"images must be uint8 levels [n, h, w, c], got {images.dtype} {images.shape}"
    )
  largest, upper, units = [], [], np.full(layer.units, -np.inf)
  for start in range(0, len(images), chunk):
    z, bound = _pre_activations(
        layer, domain.PIXEL_VALUES[images[start : start + chunk]].astype(np.float64)
    )
    largest.append(z.max(axis=(1, 2)))
    upper.append((z + bound).max(axis=(1, 2)))
    units = np.maximum(units, z.max(axis=(0, 1)))
  empty = np.zeros(0)
  return PreActivations(
      np.concatenate(largest) if largest else empty,
      np.concatenate(upper) if upper else empty,
      units,
  )


@dataclasses.dataclass(frozen=True)
class DeadCount:
  """Dead examples of a set at one theta.

  dead: examples with every first-layer unit inactive in float64; certainly_dead: those also
  inactive in float32 whatever the order of its sums; per_class: certainly dead examples of each
  class; classes_with_two: the classes with two or more of them (an exact swap exists within each);
  swappable: the certainly dead examples of those classes; units_never_active: units whose
  pre-activation is <= 0 on every example; closest_to_dead: the smallest of the examples' largest
  pre-activations (> 0: no example is dead, and this is how far the nearest one is from it).
  """

  examples: int
  dead: int
  certainly_dead: int
  per_class: list[int]
  classes_with_two: list[int]
  swappable: int
  units_never_active: int
  closest_to_dead: float | None

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


def count_dead(pre: PreActivations, labels: np.ndarray, num_classes: int) -> DeadCount:
  """Counts the dead examples of `pre` (preactivations of examples with class ids labels [n])."""
  labels = np.asarray(labels)
  certain = pre.largest_upper <= 0
  per_class = np.bincount(labels[certain], minlength=num_classes)
  pairs = per_class >= 2
  return DeadCount(
      examples=int(len(labels)),
      dead=int((pre.largest <= 0).sum()),
      certainly_dead=int(certain.sum()),
      per_class=[int(c) for c in per_class],
      classes_with_two=[int(c) for c in np.flatnonzero(pairs)],
      swappable=int(per_class[pairs].sum()),
      units_never_active=int((pre.unit_largest <= 0).sum()),
      closest_to_dead=float(pre.largest.min()) if len(pre.largest) else None,
  )


@dataclasses.dataclass(frozen=True)
class Swap:
  """A batch with one certainly dead example replaced by another of its class from outside it.

  position: where in the batch; removed, added: training-set indices; label: their class;
  batch, forged: the indices [b] before and after.
  """

  position: int
  removed: int
  added: int
  label: int
  batch: np.ndarray
  forged: np.ndarray

  def as_dict(self) -> dict:
    return {
        "position": self.position,
        "removed": self.removed,
        "added": self.added,
        "label": self.label,
        "batch_indices": [int(i) for i in self.batch],
        "forged_indices": [int(i) for i in self.forged],
    }


def find_swap(
    layer: FirstLayer, images: np.ndarray, labels: np.ndarray, batch: np.ndarray
) -> Swap | None:
  """The first certainly dead example of `batch` (indices [b] into images [N, h, w, c] uint8 with
  class ids labels [N]) that has a certainly dead partner of its class outside the batch with
  other pixels (so that the batches differ as multisets); the partner is the lowest such index.
  None if there is none."""
  batch = np.asarray(batch)
  candidates = np.flatnonzero(preactivations(layer, images[batch]).largest_upper <= 0)
  if not candidates.size:
    return None
  outside = np.ones(len(labels), bool)
  outside[batch] = False
  pool = np.flatnonzero(outside & np.isin(labels, labels[batch[candidates]]))
  pool = pool[preactivations(layer, images[pool]).largest_upper <= 0]
  for position in candidates:
    removed = int(batch[position])
    partners = pool[labels[pool] == labels[removed]]
    partners = partners[
        (images[partners].reshape(len(partners), -1) != images[removed].reshape(1, -1)).any(axis=1)
    ]
    if partners.size:
      forged = batch.copy()
      forged[position] = partners[0]
      return Swap(int(position), removed, int(partners[0]), int(labels[removed]), batch, forged)
  return None
