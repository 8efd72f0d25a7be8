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


def _latex_escape(text: str) -> str:
  for plain, escaped in (
      ("\\", "\\textbackslash{}"),
      ("_", "\\_"),
      ("%", "\\%"),
      ("&", "\\&"),
      ("#", "\\#"),
  ):
    text = text.replace(plain, escaped)
  return text


def to_latex(table: table_builders.Table) -> str:
  lines = [
      "\\begin{table}[t]",
      "\\centering",
      f"\\caption{{{_latex_escape(table.title)}. "
      + " ".join(_latex_escape(note) + "." for note in table.notes)
      + "}",
      f"\\label{{tab:{table.name}}}",
      "\\begin{tabular}{l" + "r" * len(table.columns) + "}",
      "\\toprule",
      " & ".join(_latex_escape(c) for c in (table.corner, *table.columns)) + " \\\\",
      "\\midrule",
  ]
  lines += [
      " & ".join((_latex_escape(label), *(cell.latex() for cell in cells))) + " \\\\"
      for label, cells in table.rows
  ]
  lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
  return "\n".join(lines) + "\n"


def to_csv(table: table_builders.Table) -> str:
  """Full-precision numbers; an empty field is a cell that was not measured. Tables judged
  against a threshold add a column per cell column with the threshold and one with the verdict."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  judged = any(isinstance(c, table_builders.StealthCell) for _, cells in table.rows for c in cells)
  extra = [f"{c} {what}" for c in table.columns for what in ("threshold", "stealthy")]
  writer.writerow((table.corner, *table.columns, *(extra if judged else ())))
  for label, cells in table.rows:
    row = [label, *("" if c.value is None else repr(c.value) for c in cells)]
    if judged:
      for c in cells:
        row += [
            "" if c.threshold is None else repr(c.threshold),
            "" if c.stealthy is None else str(c.stealthy).lower(),
        ]
    writer.writerow(row)
  return out.getvalue()


def write_table(table: table_builders.Table, out_dir: str) -> list[str]:
  """Writes NAME.md, NAME.tex and NAME.csv into out_dir; returns their paths."""
  paths = []
  for extension, render in (("md", to_markdown), ("tex", to_latex), ("csv", to_csv)):
    path = os.path.join(out_dir, f"{table.name}.{extension}")
    results.write_text(path, render(table))
    paths.append(path)
  return paths
