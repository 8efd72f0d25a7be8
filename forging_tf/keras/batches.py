"""Mini-batches for model.fit whose example indices are known: the ones a trace records.

`indexed_batches` draws the same seeded epoch shuffles as forging-train
(train_lib.batch_schedule) and feeds model.fit exactly the inputs the recomputation feeds Keras'
update later: pixels q / 255 looked up in domain.PIXEL_VALUES, labels one-hot float32 rows or
class ids int32.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from forging_tf import data
from forging_tf import errors
from forging_tf import sgd_step
from forging_tf.train import train_lib


@dataclasses.dataclass(frozen=True)
class IndexedBatches:
  """T mini-batches of a dataset by example index (indices int32 [T, b])."""

  dataset: data.Dataset
  indices: np.ndarray
  seed: int
  sparse_labels: bool

  @property
  def steps(self) -> int:
    return int(self.indices.shape[0])

  @property
  def batch_size(self) -> int:
    return int(self.indices.shape[1])

  def tf_dataset(self, start: int = 0) -> tf.data.Dataset:
    """Batches start..T-1 as a tf.data.Dataset of (x [b, h, w, c] float32, y) for model.fit: y
    one-hot float32 [b, n], or class ids int32 [b] with sparse_labels."""
    source = sgd_step.BatchSource(
        self.dataset.x_train, self.dataset.y_train, self.dataset.num_classes
    )
    sparse = self.sparse_labels

    def inputs(batch):
      x, y = source(batch)
      return x, tf.argmax(y, axis=-1, output_type=tf.int32) if sparse else y

    return tf.data.Dataset.from_tensor_slices(self.indices[start:]).map(inputs)


def indexed_batches(
    dataset: data.Dataset, batch_size: int, steps: int, seed: int = 0, sparse_labels: bool = False
) -> IndexedBatches:
  """The first `steps` mini-batches of size `batch_size` of forging-train's seeded epoch shuffles
  of `dataset` (train_lib.batch_schedule); sparse_labels for a sparse categorical loss."""
  if steps < 1 or seed < 0:
    raise errors.ConfigError(f"steps must be >= 1 and seed >= 0, got {steps=}, {seed=}")
  indices = train_lib.batch_schedule(dataset.x_train.shape[0], batch_size, steps, seed)
  return IndexedBatches(dataset, indices, seed, bool(sparse_labels))
