r"""Renders the paper's tables and figures from saved results.

  forging-tables --results=results[,benchmarks/results] --out=report

Reads every result under the --results folders (recursively) and writes, as far as the results
allow, Tables I, II (a-c), III and IV as report/NAME.{md,tex,csv} plus report/tables.md, and
Figures 2-6 as report/figN.{png,pdf}. Nothing is recomputed: rerun it after adding results.
"""

import os

from absl import app
from absl import flags

from forging_tf import cli
from forging_tf import tables_lib

_RESULTS = flags.DEFINE_list("results", ["results"], "Folders holding saved results.")
_OUT = flags.DEFINE_string("out", "report", "Folder to write the tables to.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  tables, figures = tables_lib.render_report(_RESULTS.value, _OUT.value)
  for table in tables:
    print(tables_lib.to_markdown(table))
  print(f"written to {_OUT.value}/: {len(tables)} tables, "
        f"{', '.join(sorted({os.path.basename(f) for f in figures})) or 'no figures'}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
