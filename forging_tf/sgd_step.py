"""The one SGD step (SPEC section 1): theta_{i+1} = theta_i - eta * grad L(B_i; theta_i).

L(B) = (1/b) * sum over B of crossentropy(softmax(f_theta(x)), y). Training, recomputation,
attacks and the verifier all call `SGDStep.__call__`, the same compiled function, so that "the
update" has exactly one definition. It is functional: theta goes in as a flat float32 vector and
comes out as one; the Keras model only supplies the forward pass (`stateless_call`), so no
variable state can leak from one step into the next.

Labels enter as float32 rows y [b, n]: one-hot for real data, any row for the exact forgeries of
Prop. 3 (SPEC section 6), whose labels need not be one-hot.

Traces written by keras.Model.fit (forging_tf.keras) are recomputed with Keras' own update
instead, SGD with momentum included (forging_tf.keras.step.KerasStep); `step_for_trace` picks
the step a trace needs. Both steps offer `update(theta, velocity, x, y)`, which carries the
optimizer's velocity (None for plain SGD), and `apply_gradient`, the update for a given gradient
as graph code (the attack engine's).
"""

import keras
import numpy as np
import tensorflow as tf

from forging_tf import data
from forging_tf import domain
from forging_tf import errors
from forging_tf import models
from forging_tf import trace as trace_lib


def _to_model_input(images, labels, num_classes: int):
  """uint8 pixels [b, h, w, c] -> q / 255 float32; class ids [b] -> one-hot float32 [b, n]."""
  # Looked up in the domain's table rather than computed: TensorFlow turns x / 255 into
  # x * (1 / 255), one ulp off for some q; the table gives the same inputs on every platform.
  x = tf.gather(tf.constant(domain.PIXEL_VALUES), tf.cast(images, tf.int32))
  y = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)
  return x, y


class SGDStep:
  """theta [P] float32, x [b, h, w, c] float32, y [b, n] float32 -> theta_next [P] float32."""

  def __init__(self, model: keras.Model, learning_rate: float):
    self.model = model
    self.layout = models.parameter_layout(model)
    self.num_parameters = models.num_parameters(self.layout)
    self.learning_rate = float(learning_rate)
    self.input_shape = tuple(int(d) for d in model.input_shape[1:])
    self.num_classes = int(model.output_shape[-1])
    self._non_trainable = [v.value for v in model.non_trainable_variables]
    # The batch dimension stays unknown so that every batch size runs the same graph.
    self._step = tf.function(
        self._update,
        input_signature=[
            tf.TensorSpec([self.num_parameters], tf.float32),
            tf.TensorSpec([None, *self.input_shape], tf.float32),
            tf.TensorSpec([None, self.num_classes], tf.float32),
        ],
        jit_compile=False,
    )

  def __call__(self, theta, x, y) -> tf.Tensor:
    return self._step(theta, x, y)

  def update(self, theta, velocity, x, y) -> tuple[tf.Tensor, None]:
    """(theta_next, velocity_next): plain SGD has no velocity (None in, None out)."""
    if velocity is not None:
      raise errors.TraceError("plain SGD has no optimizer state, yet a velocity was given")
    return self._step(theta, x, y), None

  def apply_gradient(self, theta, gradient, velocity):
    """theta - eta * gradient, in float32 as the step rounds it (velocity is unused)."""
    del velocity
    return theta - tf.constant(self.learning_rate, tf.float32) * gradient

  def variables(self, theta) -> list[tf.Tensor]:
    """theta [P] -> the model's trainable variables, in layout order, each in its own shape."""
    return models.split_parameters(theta, self.layout)

  def example_losses(self, variables, x, y) -> tf.Tensor:
    """The forward pass and the loss: crossentropy(softmax(f_theta(x_j)), y_j) per example [b].

    The one definition of both, for the step below and for the attack engine's per-example
    gradients.
    """
    logits, _ = self.model.stateless_call(variables, self._non_trainable, x, training=True)
    return tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=logits)

  def _update(self, theta, x, y):
    with tf.GradientTape() as tape:
      tape.watch(theta)
      loss = tf.reduce_mean(self.example_losses(self.variables(theta), x, y))
    return self.apply_gradient(theta, tape.gradient(loss, theta), None)


def step_for_trace(
    trace: trace_lib.Trace,
    dataset: data.Dataset,
    model_fn: str | None = None,
    model_fn_paths: list[str] | None = None,
):
  """The SGD step of a trace's model and learning rate, for recomputing or forging its steps.

  Checks that `dataset` is the trace's (by fingerprint) and that the model built here has the
  trace's parameter layout. A trace written by keras.Model.fit gets Keras' own update
  (KerasStep), of the model that `model_fn` ("module:function", the verifier's choice) builds;
  the package's own traces get SGDStep of their registry model, and no model_fn. model_fn's
  module is looked for in model_fn_paths (default: the working folder) if it is not installed.
  """
  data.check_described(dataset, trace.manifest["dataset"])
  entry = trace.manifest["model"]
  if entry["name"] == trace_lib.KERAS_MODEL:
    # Imported here: forging_tf.keras builds on this module.
    from forging_tf.keras import step as keras_step  # pylint: disable=import-outside-toplevel

    return keras_step.step_for_keras_trace(trace, dataset, model_fn, model_fn_paths)
  if model_fn:
    raise errors.ConfigError(
        f"--model_fn is for traces written by keras.Model.fit; {trace.path} was written by "
        f"forging-train with the package's own {entry['name']}: leave --model_fn out"
    )
  model = models.build_model(
      entry["name"], dataset.x_train.shape[1:], dataset.num_classes, **entry["config"]
  )
  step_fn = SGDStep(model, trace.learning_rate)
  if step_fn.layout != trace.layout:
    raise errors.TraceError(
        f"{trace.path}: the parameter layout of {entry['name']} built here "
        "differs from the trace's; it was written by an incompatible version "
        "of the model"
    )
  return step_fn


def float64_model(trace: trace_lib.Trace, dataset: data.Dataset) -> keras.Model:
  """The trace's model built in float64 (the package's own models only): the reference pass that
  tells float32 rounding from a real difference (near-ties, and how exact a forgery is)."""
  entry = trace.manifest["model"]
  if entry["name"] == trace_lib.KERAS_MODEL:
    raise errors.ConfigError(
        "float64 passes are built for the package's own models; this trace was written by "
        "keras.Model.fit"
    )
  policy = keras.config.dtype_policy()
  keras.config.set_dtype_policy("float64")
  try:
    return models.build_model(
        entry["name"], dataset.x_train.shape[1:], dataset.num_classes, **entry["config"]
    )
  finally:
    keras.config.set_dtype_policy(policy)


class Float64Step:
  """SGDStep's update in float64: theta [P] float64, x, y float64 -> theta - eta * grad L(B).

  Not a platform's step: the real-number update up to float64 rounding, so that
  ||update(B') - update(B)|| says how exact a forgery is, free of the ~1e-8 float32 rounding
  that hides whether two batches' gradients differ at all.
  """

  def __init__(self, trace: trace_lib.Trace, dataset: data.Dataset, learning_rate: float):
    self.model = float64_model(trace, dataset)
    self.layout = models.parameter_layout(self.model)
    self.learning_rate = float(learning_rate)
    self._non_trainable = [v.value for v in self.model.non_trainable_variables]
    num_parameters = models.num_parameters(self.layout)
    self._step = tf.function(
        self._update,
        input_signature=[
            tf.TensorSpec([num_parameters], tf.float64),
            tf.TensorSpec([None, *self.model.input_shape[1:]], tf.float64),
            tf.TensorSpec([None, int(self.model.output_shape[-1])], tf.float64),
        ],
        jit_compile=False,
    )

  def __call__(self, theta, x, y) -> tf.Tensor:
    return self._step(tf.cast(theta, tf.float64), tf.cast(x, tf.float64), tf.cast(y, tf.float64))

  def _update(self, theta, x, y):
    with tf.GradientTape() as tape:
      tape.watch(theta)
      variables = models.split_parameters(theta, self.layout)
      logits, _ = self.model.stateless_call(variables, self._non_trainable, x, training=True)
      loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=logits))
    return theta - tf.constant(self.learning_rate, tf.float64) * tape.gradient(loss, theta)


@tf.function(jit_compile=False, input_signature=[tf.TensorSpec([None], tf.float32)] * 2)
def _distances(theta_a, theta_b):
  difference = tf.cast(theta_a, tf.float64) - tf.cast(theta_b, tf.float64)
  return tf.sqrt(tf.reduce_sum(tf.square(difference))), tf.reduce_max(tf.abs(difference))


def distances(theta_a, theta_b) -> tuple[float, float]:
  """(||a - b||_2, max_j |a_j - b_j|) of two [P] float32 vectors: the one distance of SPEC 2, 4.

  Reproduction and approximation errors are both this l2 distance. It is taken in float64, so
  that the sum of P squares does not round away differences of one float32 ulp, and in
  TensorFlow, so that a recomputation loop hands TensorFlow's thread pool no numpy work to
  compete with (on 2 cores that tripled the cost of the distance).
  """
  l2, linf = _distances(
      tf.convert_to_tensor(theta_a, tf.float32), tf.convert_to_tensor(theta_b, tf.float32)
  )
  return float(l2), float(linf)


def l2_distance(theta_a, theta_b) -> float:
  """||theta_a - theta_b||_2 of two [P] float32 vectors (see `distances`)."""
  return distances(theta_a, theta_b)[0]


@tf.function(
    jit_compile=False,
    input_signature=[
        tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([], tf.int32),
    ],
)
def _variable_distances(theta_a, theta_b, variable_of, num_variables):
  difference = tf.cast(theta_a, tf.float64) - tf.cast(theta_b, tf.float64)
  return tf.sqrt(tf.math.unsorted_segment_sum(tf.square(difference), variable_of, num_variables))


def variable_distances(theta_a, theta_b, layout) -> np.ndarray:
  """float64 [V]: the l2 distance of two [P] float32 vectors restricted to each variable of
  `layout` (which layer carries a distance); their squares sum to l2_distance's square, up to
  float64 rounding."""
  variable_of = np.repeat(np.arange(len(layout), dtype=np.int32), [s.size for s in layout])
  return _variable_distances(
      tf.convert_to_tensor(theta_a, tf.float32),
      tf.convert_to_tensor(theta_b, tf.float32),
      variable_of,
      np.int32(len(layout)),
  ).numpy()


@tf.function(jit_compile=False, reduce_retracing=True)
def _model_inputs(images, labels, num_classes: int):
  return _to_model_input(images, labels, num_classes)


def model_inputs(images: np.ndarray, labels: np.ndarray, num_classes: int):
  """Explicit examples -> (x, y) for SGDStep: images [b, h, w, c] uint8, labels [b] int."""
  return _model_inputs(
      tf.convert_to_tensor(images, tf.uint8), tf.convert_to_tensor(labels, tf.int32), num_classes
  )


class BatchSource:
  """Mini-batches by example index from a dataset held on the compute device.

  images [n, h, w, c] uint8, labels [n] int; `source(indices [b] int32)` -> (x, y) for SGDStep.
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int):
    self.num_examples = int(images.shape[0])
    self._images = tf.constant(images, tf.uint8)
    self._labels = tf.constant(labels, tf.int32)
    self._num_classes = num_classes
    self._gather = tf.function(
        self._gather_inputs, input_signature=[tf.TensorSpec([None], tf.int32)], jit_compile=False
    )

  def __call__(self, indices):
    return self._gather(tf.convert_to_tensor(indices, tf.int32))

  def _gather_inputs(self, indices):
    return _to_model_input(
        tf.gather(self._images, indices), tf.gather(self._labels, indices), self._num_classes
    )
