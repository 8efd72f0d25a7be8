r"""Table IV's meet-in-the-middle search against plain enumeration on a cell both can decide.

Default cell: the L = 2 FCN (10 ReLU units), v = 3 pixel levels, b = 3: C(243, 3) = 2,362,041
batches, the largest the paper enumerated. Both must give the same answer (collision or not) and
the same nearest miss (the search's must be exact). ratio = enumeration seconds / search seconds,
medians of --rounds interleaved runs.

  python benchmarks/bruteforce_speed.py [--model=fcn] [--levels=3] [--b=3] [--rounds=5]
"""

import math
import os

# numpy's OpenBLAS threads buy nothing on the small matrices of this search, and on shared cores
# they spin for up to a second per call (one 240 x 83 SVD: 0.8 s instead of 1.4 ms); one thread
# unless the caller chose otherwise. Read when numpy is first imported, hence here.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from absl import app
from absl import flags

from forging_tf.exact import bruteforce_lib
from forging_tf.exact import dense
from forging_tf.exact import settings as exact_settings

import _results

_MODEL = flags.DEFINE_enum("model", "fcn", list(exact_settings.TABLE_MODELS), "Model.")
_LEVELS = flags.DEFINE_integer("levels", 3, "Pixel levels v.", lower_bound=2)
_B = flags.DEFINE_integer("b", 3, "Batch size.", lower_bound=1)
_ROUNDS = _results.define_rounds(5)
_SEED, _TOLERANCE, _LOOKUP_BUDGET = 0, 1e-10, 2e7


def main(argv):
  del argv
  platform = _results.applied_platform()
  model, theta = bruteforce_lib.table_model(_MODEL.value, _SEED)
  pool = bruteforce_lib.make_pool(dense.dense_layers(model, theta), _LEVELS.value)
  rows = bruteforce_lib.sample_true_batch(pool.size, _B.value, _SEED, _MODEL.value, _LEVELS.value)

  def search() -> bruteforce_lib.CellResult:
    return bruteforce_lib.meet_in_the_middle(
        pool, _MODEL.value, rows, _TOLERANCE, _LOOKUP_BUDGET, 3600, _SEED
    )

  def exhaustive() -> bruteforce_lib.CellResult:
    return bruteforce_lib.exhaustive(pool, _MODEL.value, rows, _TOLERANCE)

  times = _results.interleaved({"search": search, "exhaustive": exhaustive}, _ROUNDS.value)
  fast_s, baseline_s = _results.medians(times).values()
  search, exhaustive = search(), exhaustive()
  _results.write(
      "bruteforce_speed",
      ratio=baseline_s / fast_s,
      fast_s=fast_s,
      baseline_s=baseline_s,
      ratio_definition="exhaustive enumeration seconds / meet-in-the-middle seconds, one cell",
      same_answer=search.found == exhaustive.found,
      same_nearest_miss=bool(
          search.nearest_miss_exact
          and math.isclose(search.nearest_miss, exhaustive.nearest_miss, rel_tol=1e-9)
      ),
      found=search.found,
      nearest_miss_search=search.nearest_miss,
      nearest_miss_exhaustive=exhaustive.nearest_miss,
      batches=search.batches,
      batches_enumerated=exhaustive.batches_covered + 1,
      times_s=times,
      settings={
          "model": _MODEL.value,
          "v": _LEVELS.value,
          "b": _B.value,
          "seed": _SEED,
          "tolerance": _TOLERANCE,
          "lookup_budget": _LOOKUP_BUDGET,
          "rounds": _ROUNDS.value,
          "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
      },
      platform=platform,
  )


if __name__ == "__main__":
  app.run(main)
