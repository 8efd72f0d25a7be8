r"""Renders the paper's tables from saved results, as Markdown, LaTeX and CSV.

  forging-tables --results=results --out=report

Reads every result under --results (recursively) and writes report/table1.{md,tex,csv},
report/table2a..c.{md,tex,csv} and report/tables.md. Nothing is recomputed: rerun it after
adding results.
"""

from absl import app
from absl import flags

from forging_tf import cli
from forging_tf import tables_lib

_RESULTS = flags.DEFINE_string("results", "results", "Folder holding saved results.")
_OUT = flags.DEFINE_string("out", "report", "Folder to write the tables to.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  for table in tables_lib.render_tables(_RESULTS.value, _OUT.value):
    print(tables_lib.to_markdown(table))
  print(f"written to {_OUT.value}/")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
