r"""What makes the outlier steps of a reproduction error jump, from measurements.

  forging-explain-outliers --reproduction=results/repro/lenet_b100__on__nodnn \
      --near_ties=results/near_ties/lenet_b100__on__dnn,results/near_ties/lenet_b100__on__nodnn \
      --out=results/outliers/lenet_b100__on__nodnn

--near_ties: forging-near-ties results of the trace on the pair's generating platform, then on its
recomputing platform. Writes summary.json: per step the distance, the ReLU units and max-pool
windows that choose differently on the two platforms, the near-ties each platform sees, and the
table of outlier steps (distance > 10 x the median step's) against flips and near-ties.
"""

from absl import flags

from forging_tf import cli
from forging_tf import errors
from forging_tf.recompute import near_ties_lib

_REPRODUCTION = flags.DEFINE_string(
    "reproduction", None, "A forging-recompute result folder (the platform pair)."
)
_NEAR_TIES = flags.DEFINE_list(
    "near_ties", None, "GENERATOR_DIR,RECOMPUTER_DIR: forging-near-ties results on the pair."
)
_OUT = flags.DEFINE_string("out", None, "Result folder to write.")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace a result already at --out.")
flags.mark_flags_as_required(["reproduction", "near_ties", "out"])


def main():
  if len(_NEAR_TIES.value) != 2:
    raise errors.ConfigError(
        "--near_ties takes two folders: the generating platform's, then the recomputing one's"
    )
  record = near_ties_lib.explain_outliers(
      _REPRODUCTION.value, *_NEAR_TIES.value, _OUT.value, _OVERWRITE.value, cli.command_line()
  )
  table = record["table"]
  print(
      f"{table['outliers']} outlier steps (> {record['outlier_factor']:g} x the median "
      f"{record['median_distance']:.3e}): {table['outliers_with_flips']} with a ReLU or pool "
      f"flip between the platforms; {table['others_with_flips']} of {table['others']} other "
      f"steps with one -> {_OUT.value}"
  )


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
