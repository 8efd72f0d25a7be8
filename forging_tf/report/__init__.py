"""Tables I-IV, Figures 2-6, where the reproduction error sits, and REPORT.md, from saved results.

  saved_results.py   every record under a results folder, by kind, checked
  platforms.py       platforms named and described from their fingerprints
  table_builders.py  the paper's Tables I-IV, and the reproduction error's distribution by step
                     and by variable
  figure_panels.py   the series of Figures 2, 3 and 6 and of fig_repro_steps
  render.py          tables as Markdown, LaTeX and CSV
  plotting.py        figures (matplotlib)
  report_lib.py      REPORT.md: findings, platforms, tables and figures
  tables.py          forging-tables

Nothing here loads TensorFlow: a report can be redrawn on a machine without it.
"""
