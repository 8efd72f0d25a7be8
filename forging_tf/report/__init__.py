"""Tables I-IV, Figures 2-6 and REPORT.md, rendered from saved results only.

  saved_results.py   every record under a results folder, by kind, checked
  platforms.py       platforms named and described from their fingerprints
  table_builders.py  the paper's Tables I-IV
  figure_panels.py   the series of Figures 2, 3 and 6
  render.py          tables as Markdown, LaTeX and CSV
  plotting.py        figures (matplotlib)
  report_lib.py      REPORT.md: findings, platforms, tables and figures
  tables.py          forging-tables

Nothing here loads TensorFlow: a report can be redrawn on a machine without it.
"""
