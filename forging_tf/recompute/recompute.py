r"""Recomputes a trace on this platform and measures the reproduction error.

  forging-recompute --trace=traces/lenet_b100 --repeats=5 --out=results/repro/lenet_b100_cpu \
      [--steps=START:END] [--data_dir=...] [platform flags as in forging-train] \
      [--executor=local|ray] [--ray_address=...] [--num_gpus_per_task=...] \
      [--accelerator_type=...]

Each repeat runs in a fresh process (--nofresh_process: in this one). Running the same command
again after an interruption keeps the repeats that had finished.
"""

from absl import flags

from forging_tf import cli
from forging_tf.recompute import recompute_lib

_TRACE = flags.DEFINE_string(
    "trace", None, "Trace directory (or object-store URL: s3://...) to recompute."
)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Independent repeats R.", lower_bound=1)
_OUT = flags.DEFINE_string("out", None, "Result folder (or object-store URL) to write.")
_STEPS = flags.DEFINE_string(
    "steps", ":", "Updates to recompute: START:END (END exclusive; either may be left out)."
)
_DATA_DIR, _DOWNLOAD = cli.define_data_flags()
_FRESH_PROCESS = flags.DEFINE_boolean(
    "fresh_process", True, "Run each repeat in a new process, as a separate verifier would."
)
_EXECUTOR, _RAY_ADDRESS = cli.define_executor_flags("shards of each repeat")
_NUM_CPUS_PER_TASK = flags.DEFINE_float(
    "num_cpus_per_task", 1.0, "CPUs per Ray task.", lower_bound=0.0
)
_NUM_GPUS_PER_TASK = flags.DEFINE_float(
    "num_gpus_per_task", 0.0, "GPUs per Ray task.", lower_bound=0.0
)
_ACCELERATOR_TYPE = flags.DEFINE_string(
    "accelerator_type",
    None,
    "Run every Ray task on this GPU type (e.g. H100), one result per type.",
)
_SHARDS = flags.DEFINE_integer(
    "shards", 0, "Ray tasks per repeat (0: one per slot).", lower_bound=0
)
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace a result already at --out.")
_TOP_Q = flags.DEFINE_integer(
    "top_q",
    None,
    "Proof-of-learning's verifier: recompute only the Q largest logged updates of each epoch "
    "(default: every update).",
    lower_bound=1,
)
_MODEL_FN = cli.define_model_fn_flag()
_PLATFORM = cli.define_platform_flags()
flags.mark_flags_as_required(["trace", "out"])


def main():
  platform = _PLATFORM.requested()
  start, stop = cli.parse_step_range(_STEPS.value)
  ray_options = recompute_lib.RayOptions(
      address=_RAY_ADDRESS.value,
      num_cpus_per_task=_NUM_CPUS_PER_TASK.value,
      num_gpus_per_task=_NUM_GPUS_PER_TASK.value,
      accelerator_type=_ACCELERATOR_TYPE.value,
      shards=_SHARDS.value,
  )
  summary = recompute_lib.recompute(
      _TRACE.value,
      _OUT.value,
      repeats=_REPEATS.value,
      platform=platform,
      start=start,
      stop=stop,
      executor=_EXECUTOR.value,
      fresh_process=_FRESH_PROCESS.value,
      data_dir=_DATA_DIR.value,
      download=_DOWNLOAD.value,
      ray_options=ray_options,
      overwrite=_OVERWRITE.value,
      command=cli.command_line(),
      model_fn=_MODEL_FN.value,
      top_q=_TOP_Q.value,
  )
  print(summary.describe())


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
