r"""Near-ties of a trace's logged steps on this platform: what makes a recomputed step jump.

  forging-near-ties --trace=runs/traces/lenet_b100 --out=results/near_ties/lenet_b100_dnn \
      [--steps=START:END] [--data_dir=...] [platform flags as in forging-train]

Writes, per step, how many ReLU pre-activations and max-pool windows lie within a few roundings
of their discontinuity, and their choices (for comparing two platforms); near_ties_lib.py says
how a margin is measured. Run it on each platform of a pair to see which units flip.
"""

from absl import flags

from forging_tf import cli
from forging_tf import trace as trace_lib
from forging_tf.recompute import near_ties_lib
from forging_tf.recompute import recompute_lib

_TRACE = flags.DEFINE_string("trace", None, "Trace directory (or object-store URL).")
_OUT = flags.DEFINE_string("out", None, "Result folder to write.")
_STEPS = flags.DEFINE_string(
    "steps", ":", "Steps whose logged batch is measured: START:END (END exclusive)."
)
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace a result already at --out.")
_DATA_DIR, _DOWNLOAD = cli.define_data_flags()
_PLATFORM = cli.define_platform_flags()
flags.mark_flags_as_required(["trace", "out"])


def main():
  platform = _PLATFORM.applied()
  start, stop = cli.parse_step_range(_STEPS.value)
  steps = recompute_lib.recomputed_steps(trace_lib.Trace(_TRACE.value), start, stop)
  record = near_ties_lib.near_ties(
      _TRACE.value,
      _OUT.value,
      steps,
      platform,
      _DATA_DIR.value,
      _DOWNLOAD.value,
      _OVERWRITE.value,
      cli.command_line(),
  )
  print(
      f"near-ties of {len(record['steps'])} steps of {record['trace']['path']} on platform "
      f"{record['platform']['id']} -> {_OUT.value} ({record['seconds']:.1f} s)"
  )


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
