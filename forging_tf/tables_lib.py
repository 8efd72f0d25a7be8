"""Tables rendered from saved results, never from constants (binary: tables.py).

Every table is built from the result files that experiments wrote (recompute_lib's result.json
and so on), found by walking a results folder, and says which platforms and settings produced it.
Each is written as Markdown, LaTeX and CSV.

  Table I   largest eps_repr recomputing on the generating platform: rows LeNet/MNIST and
            VGGmini/CIFAR-10, columns b in {100, 500, 1000}.
  Table II  cross-platform matrices, rows the generating platform, columns the recomputing one:
            (a) LeNet b=100 generated without op determinism, (b) LeNet b=100 with it,
            (c) LeNet b=1000.
"""

import csv
import dataclasses
import io
import math
import os

from forging_tf import errors
from forging_tf import recompute_lib
from forging_tf import results

_TABLE1_ROWS = (("lenet", "mnist", "LeNet / MNIST"), ("vggmini", "cifar10", "VGGmini / CIFAR-10"))
_TABLE1_BATCHES = (100, 500, 1000)


@dataclasses.dataclass(frozen=True)
class Cell:
  """A measured number (None: not measured) and where it came from."""
  value: float | None
  sources: tuple[str, ...] = ()

  def text(self) -> str:
    if self.value is None:
      return "n/a"
    if self.value == 0:
      return "0 (bitwise)"
    return f"{self.value:.2e} (1e{math.floor(math.log10(self.value)):+03d})"

  def latex(self) -> str:
    if self.value is None:
      return "n/a"
    if self.value == 0:
      return "0 (bitwise)"
    mantissa, exponent = f"{self.value:.2e}".split("e")
    return f"${mantissa}\\times10^{{{int(exponent)}}}$"


@dataclasses.dataclass(frozen=True)
class Table:
  """rows: (row label, [Cell per column]); notes: the settings and platforms behind it."""
  name: str
  title: str
  corner: str
  columns: tuple[str, ...]
  rows: tuple[tuple[str, tuple[Cell, ...]], ...]
  notes: tuple[str, ...]


def find_reproduction_results(results_dir: str) -> list[dict]:
  """Every reproduction-error record (result.json) under `results_dir`, with its folder."""
  if not os.path.isdir(results_dir):
    raise errors.ConfigError(f"no results folder at {results_dir}; run forging-recompute first "
                             "or pass --results")
  found = []
  for root, _, names in sorted(os.walk(results_dir)):
    if "result.json" in names:
      record = results.read_json(os.path.join(root, "result.json"), "result")
      if record.get("kind") == recompute_lib.RESULT_KIND:
        found.append(record | {"folder": os.path.relpath(root, results_dir)})
  return found


def platform_label(fingerprint: dict) -> str:
  """A short name for a platform: device, threads, oneDNN, determinism, TF32."""
  in_force = fingerprint["in_force"]
  device = in_force.get("device", fingerprint["settings"]["device"])
  parts = [device]
  if device == "cpu":
    threads = in_force["intra_op_threads"]
    parts.append(f"t{threads}" if threads else "tdef")
    if in_force["inter_op_threads"]:
      parts.append(f"i{in_force['inter_op_threads']}")
    parts.append("dnn" if in_force["onednn"] else "nodnn")
  else:
    gpus = [d for d in fingerprint["hardware"]["devices"] if d["type"] == "GPU"]
    parts.append(gpus[0].get("device_name", "gpu").replace(" ", "") if gpus else "gpu")
    parts.append("tf32" if in_force["tf32"] else "notf32")
  parts.append("det" if in_force["op_determinism"] else "nodet")
  return "/".join(parts)


def _unique_labels(fingerprints: list[dict]) -> dict[str, str]:
  """Platform id -> label; platforms that share a label get their id appended."""
  by_id = {f["id"]: f for f in fingerprints}
  labels = {platform_id: platform_label(f) for platform_id, f in by_id.items()}
  shared = {label for label in labels.values() if list(labels.values()).count(label) > 1}
  return {platform_id: f"{label}@{platform_id[:6]}" if label in shared else label
          for platform_id, label in labels.items()}


def _platform_notes(fingerprints: list[dict]) -> list[str]:
  seen = {f["id"]: f for f in fingerprints}
  labels = _unique_labels(fingerprints)
  return [f"{labels[f['id']]} = platform {f['id']}: {f['hardware']['cpu']['model']}, "
          f"TensorFlow {f['software']['tensorflow']}, intra/inter-op threads "
          f"{f['in_force']['intra_op_threads']}/{f['in_force']['inter_op_threads']} "
          "(0: TensorFlow's default), XLA off"
          for _, f in sorted(seen.items(), key=lambda item: labels[item[0]])]


def _runs_note(records: list[dict]) -> str:
  runs = sorted({(r["trace"]["model"], r["trace"]["batch_size"], r["trace"]["steps"],
                  r["trace"]["k"], r["updates"], r["repeats"]) for r in records})
  return "runs: " + "; ".join(f"{m} b={b}: T={t}, k={k}, {u} updates recomputed, R={n}"
                              for m, b, t, k, u, n in runs)


def table1(records: list[dict]) -> Table:
  """Table I: the largest eps_repr over results recomputed on their generating platform."""
  same = [r for r in records
          if r["generator_platform"]["id"] == r["recomputer_platform"]["id"]]
  rows = []
  for model, dataset, label in _TABLE1_ROWS:
    cells = []
    for b in _TABLE1_BATCHES:
      matching = [r for r in same if r["trace"]["model"] == model and
                  r["trace"]["dataset"] == dataset and r["trace"]["batch_size"] == b]
      cells.append(Cell(max((r["eps_repr"] for r in matching), default=None),
                        tuple(r["folder"] for r in matching)))
    rows.append((label, tuple(cells)))
  used = [r for r in same if any(r["folder"] in c.sources for _, cells in rows for c in cells)]
  return Table(
      "table1", "Table I: reproduction error eps_repr (largest l2 distance over all steps and "
      "repeats) recomputing on the generating platform", "model / dataset",
      tuple(f"b = {b}" for b in _TABLE1_BATCHES), tuple(rows),
      (_runs_note(used) if used else "runs: none found",
       *_platform_notes([r["generator_platform"] for r in used])))


def table2(records: list[dict], part: str) -> Table:
  """Table II (a), (b) or (c): eps_repr per (generating, recomputing) platform pair."""
  if part == "a":
    title, pick = "(a) LeNet, b = 100, op determinism off", lambda r, det: r == 100 and not det
  elif part == "b":
    title, pick = "(b) LeNet, b = 100, op determinism on", lambda r, det: r == 100 and det
  elif part == "c":
    title, pick = "(c) LeNet, b = 1000", lambda r, det: r == 1000
  else:
    raise errors.ConfigError(f"Table II has parts a, b and c, not {part!r}")
  chosen = [r for r in records if r["trace"]["model"] == "lenet" and pick(
      r["trace"]["batch_size"], r["generator_platform"]["in_force"]["op_determinism"])]
  labels = _unique_labels([r[side] for r in chosen
                           for side in ("generator_platform", "recomputer_platform")])
  generators = sorted({r["generator_platform"]["id"] for r in chosen}, key=labels.get)
  recomputers = sorted({r["recomputer_platform"]["id"] for r in chosen}, key=labels.get)
  rows = []
  for generator in generators:
    cells = []
    for recomputer in recomputers:
      matching = [r for r in chosen if r["generator_platform"]["id"] == generator and
                  r["recomputer_platform"]["id"] == recomputer]
      cells.append(Cell(max((r["eps_repr"] for r in matching), default=None),
                        tuple(r["folder"] for r in matching)))
    rows.append((labels[generator], tuple(cells)))
  return Table(
      f"table2{part}", f"Table II {title}: eps_repr, rows the generating platform, columns the "
      "recomputing platform", "generated on \\ recomputed on",
      tuple(labels[r] for r in recomputers), tuple(rows),
      (_runs_note(chosen) if chosen else "runs: none found",
       *_platform_notes([r["generator_platform"] for r in chosen] +
                        [r["recomputer_platform"] for r in chosen])))


def to_markdown(table: Table) -> str:
  lines = [f"**{table.title}**", "", "| " + " | ".join((table.corner, *table.columns)) + " |",
           "|" + "---|" * (len(table.columns) + 1)]
  lines += ["| " + " | ".join((label, *(cell.text() for cell in cells))) + " |"
            for label, cells in table.rows]
  lines += [""] + [f"- {note}" for note in table.notes]
  return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
  for plain, escaped in (("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"),
                         ("#", "\\#")):
    text = text.replace(plain, escaped)
  return text


def to_latex(table: Table) -> str:
  lines = ["\\begin{table}[t]", "\\centering",
           f"\\caption{{{_latex_escape(table.title)}. "
           + " ".join(_latex_escape(note) + "." for note in table.notes) + "}",
           f"\\label{{tab:{table.name}}}",
           "\\begin{tabular}{l" + "r" * len(table.columns) + "}", "\\toprule",
           " & ".join(_latex_escape(c) for c in (table.corner, *table.columns)) + " \\\\",
           "\\midrule"]
  lines += [" & ".join((_latex_escape(label), *(cell.latex() for cell in cells))) + " \\\\"
            for label, cells in table.rows]
  lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
  return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
  """Full-precision numbers; an empty field is a cell that was not measured."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow((table.corner, *table.columns))
  for label, cells in table.rows:
    writer.writerow((label, *("" if c.value is None else repr(c.value) for c in cells)))
  return out.getvalue()


def write_table(table: Table, out_dir: str) -> list[str]:
  """Writes NAME.md, NAME.tex and NAME.csv into out_dir; returns their paths."""
  paths = []
  for extension, render in (("md", to_markdown), ("tex", to_latex), ("csv", to_csv)):
    path = os.path.join(out_dir, f"{table.name}.{extension}")
    results.write_text(path, render(table))
    paths.append(path)
  return paths


def render_tables(results_dir: str, out_dir: str) -> list[Table]:
  """Renders every table the saved results allow into out_dir (and tables.md, all of them)."""
  records = find_reproduction_results(results_dir)
  if not records:
    raise errors.ConfigError(f"no reproduction-error results under {results_dir}; run "
                             "forging-recompute first")
  tables = [table1(records), table2(records, "a"), table2(records, "b"), table2(records, "c")]
  for table in tables:
    write_table(table, out_dir)
  results.write_text(os.path.join(out_dir, "tables.md"),
                     "\n".join(to_markdown(table) for table in tables))
  return tables
