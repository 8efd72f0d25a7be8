r"""Fills Table IV: for each model, pixel levels v and batch size b, does any other batch have the
true batch's gradient? Meet-in-the-middle decides every cell; plain enumeration cross-checks the
cells with at most --exhaustive_limit batches.

  forging-bruteforce --out=results/table4.json [--models=logreg,fcn] \
      [--levels=2,3,4,5,6] [--batch_sizes=1,2,3,4,5] [--seed=0] [--method=both|mitm|exhaustive] \
      [--overwrite]

The JSON (bruteforce_lib.write_table_iv) is rewritten after every cell: the record header, the
settings, "complete", "seconds" and "cells": one per (model, v, b) with model, v, b, batches,
decided, found, nearest_miss, method, seconds.
"""

import os

# numpy's OpenBLAS threads buy nothing on the small matrices of this search, and on shared cores
# they spin for up to a second per call (one 240 x 83 SVD: 0.8 s instead of 1.4 ms); one thread
# unless the caller chose otherwise. Read when numpy is first imported, hence here.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from absl import flags

from forging_tf import cli
from forging_tf.exact import bruteforce_lib
from forging_tf.exact import settings as exact_settings

_DEFAULTS = exact_settings.BruteForceSettings()
_OUT = flags.DEFINE_string("out", None, "JSON file to write.")
_MODELS = flags.DEFINE_list("models", list(_DEFAULTS.models), "Models (logreg, fcn).")
_LEVELS = flags.DEFINE_list(
    "levels", [str(v) for v in _DEFAULTS.levels], "Pixel levels v (2..256)."
)
_BATCH_SIZES = flags.DEFINE_list(
    "batch_sizes", [str(b) for b in _DEFAULTS.batch_sizes], "Batch sizes b."
)
for _name in ("levels", "batch_sizes"):
  flags.register_validator(
      _name,
      lambda values: all(v.isdigit() and int(v) > 0 for v in values),
      "must be positive integers, e.g. 2,3,4",
  )
_SEED = flags.DEFINE_integer(
    "seed", _DEFAULTS.seed, "Seed of the weights and of the true batches.", lower_bound=0
)
_METHOD = flags.DEFINE_enum_class(
    "method",
    _DEFAULTS.method,
    exact_settings.BruteForceMethod,
    "both: meet-in-the-middle, cross-checked by enumeration where "
    "C(N, b) <= --exhaustive_limit.",
    case_sensitive=False,
)
_TOLERANCE = flags.DEFINE_float(
    "tolerance",
    _DEFAULTS.tolerance,
    "Mean-gradient l2 distance "
    "(float64) up to which two batches count as having the same "
    "gradient.",
    lower_bound=0.0,
)
_EXHAUSTIVE_LIMIT = flags.DEFINE_integer(
    "exhaustive_limit",
    _DEFAULTS.exhaustive_limit,
    "Largest C(N, b) that is enumerated.",
    lower_bound=0,
)
_LOOKUP_BUDGET = flags.DEFINE_float(
    "lookup_budget",
    _DEFAULTS.lookup_budget,
    "Expected table lookups per part; bounds the window in which nearest misses are exact.",
    lower_bound=1.0,
)
_TIME_LIMIT = flags.DEFINE_float(
    "time_limit",
    _DEFAULTS.time_limit_s,
    "Seconds per cell before it is reported undecided.",
    lower_bound=1.0,
)
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace a finished Table IV at --out.")
_PLATFORM = cli.define_platform_flags()
flags.mark_flags_as_required(["out"])


def main():
  platform = _PLATFORM.requested()
  settings = exact_settings.BruteForceSettings(
      models=tuple(_MODELS.value),
      levels=tuple(int(v) for v in _LEVELS.value),
      batch_sizes=tuple(int(b) for b in _BATCH_SIZES.value),
      seed=_SEED.value,
      method=_METHOD.value,
      tolerance=_TOLERANCE.value,
      exhaustive_limit=_EXHAUSTIVE_LIMIT.value,
      lookup_budget=_LOOKUP_BUDGET.value,
      time_limit_s=_TIME_LIMIT.value,
  )
  record = bruteforce_lib.write_table_iv(
      settings,
      _OUT.value,
      platform=platform,
      overwrite=_OVERWRITE.value,
      command=cli.command_line(),
  )
  for name in settings.models:
    cells = [cell for cell in record["cells"] if cell["model"] == name]
    print(
        f"{name}: {sum(c['decided'] for c in cells)}/{len(cells)} cells decided, "
        f"{sum(c['found'] for c in cells)} with a colliding batch; "
        f"{sum(c['seconds'] for c in cells):.0f} s"
    )
  print(f"wrote {_OUT.value} ({record['seconds']:.0f} s)")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
