"""forging_tf: make claims about data forging checkable.

The pipeline, one module per stage:
  data.py            datasets (MNIST, CIFAR-10) and their fingerprints
  models.py          the paper's exact models and their parameter layout
  platform.py        everything that changes floating-point order, applied and recorded
  sgd_step.py        the one SGD step used to train, recompute and score forgeries
  trace.py           execution traces (zarr v3) and their reader
  train_trace_lib.py training that writes a trace (binary: train_trace.py)

Importing the package does not import TensorFlow.
"""

__version__ = "0.1.0"
