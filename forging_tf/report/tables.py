r"""Renders the paper's tables and figures, and REPORT.md, from saved results.

  forging-tables --results=results[,benchmarks/results] --out=report

Reads every result under the --results folders (recursively) and writes, as far as the results
allow, Tables I, II (a-c), III and IV and the reproduction error's distribution
(repro_distribution, repro_variables) and the comparison with the paper's published values
(comparison) as report/NAME.{md,tex,csv} plus report/tables.md, Figures
2-6 as report/figN.{png,pdf} and the reproduction error step by step as
report/fig_repro_steps.{png,pdf}, and report/REPORT.md around them (report_lib). Nothing is
recomputed: rerun it after adding results.
"""

import os

from absl import flags

from forging_tf import cli
from forging_tf.report import report_lib

_RESULTS = flags.DEFINE_list("results", ["results"], "Folders holding saved results.")
_OUT = flags.DEFINE_string("out", "report", "Folder to write the tables, figures and REPORT.md to.")


def main():
  report = report_lib.write_report(
      _RESULTS.value, _OUT.value, os.path.join(_OUT.value, "REPORT.md")
  )
  written = sorted(name for name in os.listdir(_OUT.value) if not name.startswith("."))
  print(f"written to {_OUT.value}/: {', '.join(written)}\nread {report} first")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
