import keras
import numpy as np
import tensorflow as tf

from forging_tf import models
from forging_tf import sgd_step


def _random_batch(rng, b, shape, n):
  images = rng.integers(0, 256, (b,) + shape, dtype=np.uint8)
  labels = rng.integers(0, n, b)
  return images, labels


def test_logreg_step_is_the_analytic_sgd_update():
  rng = np.random.default_rng(0)
  model = models.build_model("logreg", (2, 2, 1), 3)
  step = sgd_step.SGDStep(model, learning_rate=0.5)
  theta = rng.normal(size=step.num_parameters).astype(np.float32)
  images, labels = _random_batch(rng, 7, (2, 2, 1), 3)
  x, y = sgd_step.model_inputs(images, labels, 3)
  new = step(theta, x, y).numpy()
  # float64 reference: grad_W = X^T (softmax(XW + c) - Y) / b, grad_c = mean(softmax - Y).
  w, c = theta[:12].reshape(4, 3).astype(np.float64), theta[12:].astype(np.float64)
  xs, ys = x.numpy().reshape(7, 4).astype(np.float64), y.numpy().astype(np.float64)
  logits = xs @ w + c
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  grad = np.concatenate([(xs.T @ (p - ys) / 7).ravel(), (p - ys).mean(0)])
  np.testing.assert_allclose(new, theta - 0.5 * grad, rtol=0, atol=1e-6)


def test_lenet_step_agrees_with_keras_sgd():
  rng = np.random.default_rng(1)
  model = models.build_model("lenet", (28, 28, 1), 10)
  step = sgd_step.SGDStep(model, learning_rate=0.01)
  theta = models.initial_parameters(step.layout, seed=0)
  x, y = sgd_step.model_inputs(*_random_batch(rng, 16, (28, 28, 1), 10), 10)
  ours = step(theta, x, y).numpy()
  for variable, spec in zip(model.trainable_variables, step.layout):
    variable.assign(theta[spec.offset : spec.offset + spec.size].reshape(spec.shape))
  with tf.GradientTape() as tape:
    loss = keras.losses.CategoricalCrossentropy(from_logits=True)(y, model(x))
  keras.optimizers.SGD(0.01).apply_gradients(
      zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
  )
  keras_theta = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])
  assert np.abs(ours - theta).max() > 1e-5  # the step moved
  np.testing.assert_allclose(ours, keras_theta, rtol=0, atol=1e-6)


def test_step_is_bitwise_repeatable_and_takes_soft_labels():
  rng = np.random.default_rng(2)
  step = sgd_step.SGDStep(models.build_model("fcn", (2, 2, 1), 3, hidden=(5,)), 0.1)
  theta = rng.normal(size=step.num_parameters).astype(np.float32)
  x = rng.random((6, 2, 2, 1), dtype=np.float32)
  soft = rng.random((6, 3)).astype(np.float32)
  first, second = step(theta, x, soft).numpy(), step(theta, x, soft).numpy()
  assert np.array_equal(first, second) and np.isfinite(first).all()


def test_batch_source_gives_pixel_over_255_and_one_hot_labels():
  rng = np.random.default_rng(3)
  images, labels = _random_batch(rng, 50, (4, 4, 1), 5)
  source = sgd_step.BatchSource(images, labels, 5)
  indices = np.array([7, 3, 3, 49], dtype=np.int32)
  x, y = source(indices)
  np.testing.assert_array_equal(x.numpy(), images[indices].astype(np.float32) / np.float32(255))
  np.testing.assert_array_equal(y.numpy(), np.eye(5, dtype=np.float32)[labels[indices]])
  x2, y2 = sgd_step.model_inputs(images[indices], labels[indices], 5)
  assert np.array_equal(x.numpy(), x2.numpy()) and np.array_equal(y.numpy(), y2.numpy())
