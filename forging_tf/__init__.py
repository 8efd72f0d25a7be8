"""forging_tf: make claims about data forging checkable.

The shared core, one module per concept:
  errors.py        ForgingError and its kinds: every failure a user can cause
  cli.py           what the binaries share: flags, one-line errors, the command line
  data.py          datasets (MNIST, CIFAR-10) and their fingerprints
  models.py        the paper's exact models and their parameter layout
  platform.py      everything that changes floating-point order, applied and recorded
  domain.py        the forging game's domain, and when two batches are the same
  sgd_step.py      the one SGD step used to train, recompute and score forgeries
  trace.py         execution traces (zarr v3): writer and validating reader
  storage.py       where traces and results live: a local folder or an object-store URL
  results.py       results as data: atomic files and folders, the record header, record kinds
  ray_util.py      the executors (local, ray) and joining a Ray cluster
  forging_game.py  paper Algorithm 1 and the approximation error; verify.py: forging-verify

The pipeline, one subpackage per stage, each with its binary:
  train/      forging-train       training that writes a trace
  keras/      (a library)         your own model.fit, traced; Keras' own update recomputes it
  recompute/  forging-recompute   recomputing it: the benign reproduction error;
              forging-near-ties, forging-explain-outliers   why a recomputed step jumps
  attacks/    forging-attack      greedy forging attacks: the approximation error
  exact/      forging-exact, forging-bruteforce   exact forging and Table IV
  report/     forging-tables      Tables I-IV, Figures 2-6 and REPORT.md from saved results
  calibrate/  forging-calibrate   the verifier's threshold from saved results, held-out checked
  reproduce/  forging-reproduce   the whole study as a plan of stages

Importing the package does not import TensorFlow.
"""

__version__ = "0.2.0"

# The command-line tools: command -> the module whose run() it calls. setup.py installs these as
# console scripts, and forging-reproduce runs its stages as `python -m MODULE`.
COMMANDS = {
    "forging-train": "forging_tf.train.train",
    "forging-recompute": "forging_tf.recompute.recompute",
    "forging-near-ties": "forging_tf.recompute.near_ties",
    "forging-explain-outliers": "forging_tf.recompute.outliers",
    "forging-attack": "forging_tf.attacks.attack",
    "forging-verify": "forging_tf.verify",
    "forging-exact": "forging_tf.exact.exact",
    "forging-bruteforce": "forging_tf.exact.bruteforce",
    "forging-tables": "forging_tf.report.tables",
    "forging-calibrate": "forging_tf.calibrate.calibrate",
    "forging-reproduce": "forging_tf.reproduce.reproduce",
}
