r"""Fills Table IV: for each model, pixel levels v and batch size b, does any other batch have the
true batch's gradient? Meet-in-the-middle decides every cell; plain enumeration cross-checks the
cells with at most --exhaustive_limit batches.

  forging-bruteforce --out=results/table4.json [--models=logreg,fcn] \
      [--levels=2,3,4,5,6] [--batch_sizes=1,2,3,4,5] [--seed=0] [--method=both|mitm|exhaustive]

The JSON is rewritten after every cell: {"settings", "platform", "seconds", "cells": [...]}, one
cell per (model, v, b) with model, v, b, batches, decided, found, nearest_miss, method, seconds.
"""

import os
import time

# numpy's OpenBLAS threads buy nothing on the small matrices of this search, and on shared cores
# they spin for up to a second per call (one 240 x 83 SVD: 0.8 s instead of 1.4 ms); one thread
# unless the caller chose otherwise. Read when numpy is first imported, hence here.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from absl import app
from absl import flags

from forging_tf import bruteforce_lib
from forging_tf import cli
from forging_tf import platform as platform_lib
from forging_tf import results as results_io

_OUT = flags.DEFINE_string("out", None, "JSON file to write.")
_MODELS = flags.DEFINE_list("models", list(bruteforce_lib.TABLE_MODELS), "Models (logreg, fcn).")
_LEVELS = flags.DEFINE_list("levels", ["2", "3", "4", "5", "6"], "Pixel levels v (2..256).")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "2", "3", "4", "5"], "Batch sizes b.")
for _name in ("levels", "batch_sizes"):
  flags.register_validator(_name, lambda values: all(v.isdigit() and int(v) > 0 for v in values),
                           "must be positive integers, e.g. 2,3,4")
flags.register_validator("models", lambda names: set(names) <= set(bruteforce_lib.TABLE_MODELS),
                         f"must be among {','.join(bruteforce_lib.TABLE_MODELS)}")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights and of the true batches.",
                             lower_bound=0)
_METHOD = flags.DEFINE_enum("method", "both", ["both", "mitm", "exhaustive"],
                            "both: meet-in-the-middle, cross-checked by enumeration where "
                            "C(N, b) <= --exhaustive_limit.")
_TOLERANCE = flags.DEFINE_float("tolerance", 1e-10, "Mean-gradient l2 distance (float64) up to "
                                "which two batches count as having the same gradient.",
                                lower_bound=0.0)
_EXHAUSTIVE_LIMIT = flags.DEFINE_integer("exhaustive_limit", 10_000_000,
                                         "Largest C(N, b) that is enumerated.", lower_bound=0)
_LOOKUP_BUDGET = flags.DEFINE_float("lookup_budget", 2e7, "Expected table lookups per part; "
                                    "bounds the window in which nearest misses are exact.",
                                    lower_bound=1.0)
_TIME_LIMIT = flags.DEFINE_float("time_limit", 1800.0, "Seconds per cell before it is reported "
                                 "undecided.", lower_bound=1.0)
flags.mark_flags_as_required(["out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  platform = cli.applied_platform()
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  began = time.perf_counter()
  document = {
      "table": "IV",
      "settings": {
          "models": _MODELS.value, "levels": [int(v) for v in _LEVELS.value],
          "batch_sizes": [int(b) for b in _BATCH_SIZES.value], "seed": _SEED.value,
          "method": _METHOD.value, "tolerance": _TOLERANCE.value,
          "exhaustive_limit": _EXHAUSTIVE_LIMIT.value, "lookup_budget": _LOOKUP_BUDGET.value,
          "time_limit_s": _TIME_LIMIT.value, "pixels": bruteforce_lib.NUM_PIXELS,
          "classes": bruteforce_lib.NUM_CLASSES, "fcn_hidden_units": bruteforce_lib.HIDDEN_UNITS,
          "pixel_levels": {v: bruteforce_lib.pixel_levels(int(v)).tolist()
                           for v in _LEVELS.value},
          "distances": "l2 between mean gradients (float64)",
          "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
      },
      "platform": platform_lib.platform_fingerprint(platform),
      "complete": False,
      "cells": [],
  }

  def on_cell(result):
    document["cells"].append(result.describe())
    document["seconds"] = round(time.perf_counter() - began, 1)
    results_io.write_json(_OUT.value, document)

  results = bruteforce_lib.table_iv(
      _MODELS.value, [int(v) for v in _LEVELS.value], [int(b) for b in _BATCH_SIZES.value],
      _SEED.value, _METHOD.value, _TOLERANCE.value, _EXHAUSTIVE_LIMIT.value,
      _LOOKUP_BUDGET.value, _TIME_LIMIT.value, on_cell)
  document["complete"] = True  # The file is rewritten after each cell; this marks the last.
  results_io.write_json(_OUT.value, document)
  for name in _MODELS.value:
    cells = [r for r in results if r.model == name]
    print(f"{name}: {sum(r.decided for r in cells)}/{len(cells)} cells decided, "
          f"{sum(r.found for r in cells)} with a colliding batch; "
          f"{sum(r.seconds for r in cells):.0f} s")
  print(f"wrote {_OUT.value} ({document['seconds']:.0f} s)")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
