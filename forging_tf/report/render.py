"""Tables as Markdown, LaTeX and CSV (table_builders.Table), written next to each other."""

import csv
import io
import os

from forging_tf import results
from forging_tf.report import table_builders


def to_markdown(table: table_builders.Table) -> str:
  lines = [
      f"**{table.title}**",
      "",
      "| " + " | ".join((table.corner, *table.columns)) + " |",
      "|" + "---|" * (len(table.columns) + 1),
  ]
  lines += [
      "| " + " | ".join((label, *(cell.text() for cell in cells))) + " |"
      for label, cells in table.rows
  ]
  lines += [""] + [f"- {note}" for note in table.notes]
  return "\n".join(lines) + "\n"


def to_latex(table: table_builders.Table) -> str:
  lines = [
      "\\begin{table}[t]",
      "\\centering",
      f"\\caption{{{table_builders.latex_escape(table.title)}. "
      + " ".join(table_builders.latex_escape(note) + "." for note in table.notes)
      + "}",
      f"\\label{{tab:{table.name}}}",
      "\\begin{tabular}{l" + "r" * len(table.columns) + "}",
      "\\toprule",
      " & ".join(table_builders.latex_escape(c) for c in (table.corner, *table.columns)) + " \\\\",
      "\\midrule",
  ]
  lines += [
      " & ".join((table_builders.latex_escape(label), *(cell.latex() for cell in cells))) + " \\\\"
      for label, cells in table.rows
  ]
  lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
  return "\n".join(lines) + "\n"


def to_csv(table: table_builders.Table) -> str:
  """Full-precision numbers; an empty field is a cell that was not measured. Cells that carry more
  than their number (Table III's threshold and verdict, Tables I and II's p99) add, after all the
  cell columns, a column per cell column and extra, named "COLUMN EXTRA"."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  extras = [
      tuple(dict.fromkeys(name for _, cells in table.rows for name, _ in cells[i].csv_extras()))
      for i in range(len(table.columns))
  ]
  writer.writerow(
      (
          table.corner,
          *table.columns,
          *(f"{column} {name}" for column, names in zip(table.columns, extras) for name in names),
      )
  )
  for label, cells in table.rows:
    writer.writerow(
        (
            label,
            *(cell.csv() for cell in cells),
            *(
                dict(cell.csv_extras()).get(name, "")
                for cell, names in zip(cells, extras)
                for name in names
            ),
        )
    )
  return out.getvalue()


def write_table(table: table_builders.Table, out_dir: str) -> list[str]:
  """Writes NAME.md, NAME.tex and NAME.csv into out_dir; returns their paths."""
  paths = []
  for extension, render in (("md", to_markdown), ("tex", to_latex), ("csv", to_csv)):
    path = os.path.join(out_dir, f"{table.name}.{extension}")
    results.write_text(path, render(table))
    paths.append(path)
  return paths
