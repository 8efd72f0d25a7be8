r"""Your own Keras model, trained with model.fit, traced, then recomputed by a verifier.

  python examples/keras_fit.py --out=runs/keras_fit [--steps=200] [--batch_size=100] \
      [--momentum=0.9] [--data_dir=../shared/data] [--overwrite]

Trains `build()` of examples/my_model.py on MNIST with keras.optimizers.SGD (momentum by
default) for --steps steps, writing a forging_tf trace with TraceCallback, then recomputes every
step of the trace as a verifier would (what forging-recompute --model_fn=my_model:build does, one
repeat in a fresh process) and prints the reproduction error it got: 0, bitwise, on the same
platform.
"""

import os

import keras
import my_model
from absl import app
from absl import flags

from forging_tf import data
from forging_tf import keras as forging_keras
from forging_tf.recompute import recompute_lib

_OUT = flags.DEFINE_string("out", "runs/keras_fit", "Folder for the trace and the recomputation.")
_STEPS = flags.DEFINE_integer("steps", 200, "SGD steps T.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Mini-batch size b.", lower_bound=1)
_MOMENTUM = flags.DEFINE_float("momentum", 0.9, "SGD momentum (0: plain SGD).", lower_bound=0.0)
_DATA_DIR = flags.DEFINE_string("data_dir", None, f"Local data (default: ${data.DATA_DIR_ENV}).")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace the trace and result of a run.")


def main(argv):
  del argv
  mnist = data.load_dataset("mnist", _DATA_DIR.value)
  trace_dir = os.path.join(_OUT.value, "trace")
  batches = forging_keras.indexed_batches(
      mnist, _BATCH_SIZE.value, _STEPS.value, seed=0, sparse_labels=True
  )
  trace = forging_keras.TraceCallback(
      trace_dir, batches, model_fn="my_model:build", overwrite=_OVERWRITE.value
  )
  model = my_model.build()
  model.compile(
      optimizer=keras.optimizers.SGD(0.01, momentum=_MOMENTUM.value),
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      jit_compile=False,
  )
  model.fit(trace.dataset(), epochs=1, shuffle=False, callbacks=[trace], verbose=0)

  summary = recompute_lib.recompute(
      trace_dir,
      os.path.join(_OUT.value, "recompute"),
      repeats=1,
      data_dir=_DATA_DIR.value,
      model_fn="my_model:build",
      overwrite=_OVERWRITE.value,
  )
  print(f"trace: {trace_dir} ({_STEPS.value} steps of model.fit, momentum {_MOMENTUM.value})")
  print(f"reproduction error on this platform: {summary.eps_repr:.6g}")


if __name__ == "__main__":
  app.run(main)
