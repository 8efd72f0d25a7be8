"""Your own Keras training, traced: model.fit with a TraceCallback writes a forging_tf trace.

  from forging_tf import data
  from forging_tf import keras as forging_keras

  mnist = data.load_dataset("mnist")
  batches = forging_keras.indexed_batches(mnist, batch_size=100, steps=300, seed=0)
  trace = forging_keras.TraceCallback("traces/mine", batches, model_fn="mymodels:build")
  model.fit(trace.dataset(), epochs=1, callbacks=[trace])

then `forging-recompute --trace=traces/mine --model_fn=mymodels:build ...` recomputes it with
Keras' own update (bitwise on the same platform). See README "Your own Keras training".

batches.py   indexed_batches: forging-train's seeded shuffles as a tf.data.Dataset for model.fit
callback.py  TraceCallback: the trace written while model.fit runs, resumable
step.py      KerasStep: Keras' own update for recomputing, attacking and verifying such traces
             (what can be traced: step.SUPPORTED), and --model_fn

The names below are imported when first used: sgd_step.py imports step.py, which must not pull
in batches.py and callback.py (they build on sgd_step).
"""

import importlib

_EXPORTS = {
    "IndexedBatches": "batches",
    "indexed_batches": "batches",
    "TraceCallback": "callback",
    "KerasStep": "step",
    "SUPPORTED": "step",
}
__all__ = ["SUPPORTED", "IndexedBatches", "KerasStep", "TraceCallback", "indexed_batches"]


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
