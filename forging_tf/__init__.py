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

# The command-line tools: command -> the module whose run() it calls. setup.py installs these as
# console scripts, and forging-reproduce runs its stages as `python -m MODULE`.
COMMANDS = {
    "forging-train": "forging_tf.train_trace",
    "forging-recompute": "forging_tf.recompute",
    "forging-attack": "forging_tf.attack_trace",
    "forging-verify": "forging_tf.verify",
    "forging-exact": "forging_tf.exact_forging",
    "forging-bruteforce": "forging_tf.bruteforce",
    "forging-tables": "forging_tf.tables",
    "forging-reproduce": "forging_tf.reproduce",
}
