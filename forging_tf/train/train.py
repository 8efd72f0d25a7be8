r"""Trains a model with plain SGD and writes its execution trace.

  forging-train --model=lenet --dataset=mnist --batch_size=100 --steps=1200 --k=1 --lr=0.01 \
      --seed=0 --deterministic=true --out=traces/lenet_b100 [--data_dir=...] [--device=cpu] \
      [--intra_op_threads=...] [--onednn=on|off] [--keep_pairs=N] [--overwrite] \
      [--compression=none|blosc-lz4|blosc-zstd]

Running the same command on an unfinished trace resumes it.
"""

from absl import flags

from forging_tf import cli
from forging_tf import data
from forging_tf import models
from forging_tf import trace as trace_lib
from forging_tf.train import train_lib

_MODEL = flags.DEFINE_enum("model", "lenet", sorted(models.MODELS), "Model to train.")
_HIDDEN = flags.DEFINE_list("hidden", ["10"], "Hidden layer widths of --model=fcn.")
flags.register_validator(
    "hidden",
    lambda widths: all(w.isdigit() and int(w) > 0 for w in widths),
    "must be positive integers, e.g. --hidden=10,10",
)
_DATASET = flags.DEFINE_enum("dataset", "mnist", sorted(data.SPECS), "Dataset to train on.")
_DATA_DIR, _DOWNLOAD = cli.define_data_flags()
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Mini-batch size b.", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 1200, "Number of SGD steps T.", lower_bound=1)
_K = flags.DEFINE_integer("k", 1, "Store every k-th checkpoint.", lower_bound=1)
_LR = flags.DEFINE_float("lr", 0.01, "Learning rate eta.", lower_bound=0.0)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of theta_0 and of the batch order.", lower_bound=0)
_KEEP_PAIRS = flags.DEFINE_integer(
    "keep_pairs",
    0,
    "Write a sparse trace with this many "
    "checkpoint pairs (i, i+1); 0 stores every k-th checkpoint.",
    lower_bound=0,
)
_OUT = flags.DEFINE_string(
    "out", None, "Trace directory to write, or an object-store URL (s3://bucket/prefix, ...)."
)
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace a trace already at --out.")
_COMPRESSION = flags.DEFINE_enum(
    "compression",
    trace_lib.Compression.NONE.value,
    [c.value for c in trace_lib.Compression],
    "How checkpoint chunks are stored: none (fastest), blosc-lz4 (7-9 % smaller) or "
    "blosc-zstd (12 % smaller); measured in benchmarks/results/trace_codecs.json.",
)
_PLATFORM = cli.define_platform_flags()
flags.mark_flags_as_required(["out"])


def main():
  platform = _PLATFORM.requested()
  dataset = data.load_dataset(_DATASET.value, _DATA_DIR.value, _DOWNLOAD.value)
  model_config = {"hidden": [int(w) for w in _HIDDEN.value]} if _MODEL.value == "fcn" else {}
  summary = train_lib.train_trace(
      _OUT.value,
      _MODEL.value,
      dataset,
      batch_size=_BATCH_SIZE.value,
      steps=_STEPS.value,
      k=_K.value,
      learning_rate=_LR.value,
      seed=_SEED.value,
      platform=platform,
      keep_pairs=_KEEP_PAIRS.value,
      overwrite=_OVERWRITE.value,
      model_config=model_config,
      compression=trace_lib.Compression(_COMPRESSION.value),
  )
  print(summary.describe())


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
