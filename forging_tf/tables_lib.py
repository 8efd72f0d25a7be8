"""Tables rendered from saved results, never from constants (binary: tables.py).

Every table is built from the result files that experiments wrote (recompute_lib's result.json
and so on), found by walking a results folder, and says which platforms and settings produced it.
Each is written as Markdown, LaTeX and CSV.

  Table I   largest eps_repr recomputing on the generating platform: rows LeNet/MNIST and
            VGGmini/CIFAR-10, columns b in {100, 500, 1000}.
  Table II  cross-platform matrices, rows the generating platform, columns the recomputing one:
            (a) LeNet b=100 generated without op determinism, (b) LeNet b=100 with it,
            (c) LeNet b=1000.
  Table III smallest approximation error of the attacks early / late in training at forging
            fractions 1/b and 1, each cell marked stealthy iff it is <= the largest reproduction
            error measured for that model (the loosest threshold a verifier could justify).

  Table IV  brute force: for logreg and the L = 2 FCN, pixel levels v x batch size b, whether any
            other batch has the true batch's gradient, and the nearest miss (forging-bruteforce).

Figures 2, 3 and 6 take their series from attack results here, Figures 4 and 5 their batches from
forging-exact's data.npz; plotting.py draws them.
"""

import csv
import dataclasses
import io
import math
import os

import numpy as np

from forging_tf import errors
from forging_tf import plotting
from forging_tf import results

_TABLE1_ROWS = (("lenet", "mnist", "LeNet / MNIST"), ("vggmini", "cifar10", "VGGmini / CIFAR-10"))
_TABLE1_BATCHES = (100, 500, 1000)


def format_error(value: float | None) -> str:
  """An error as the tables print it: 'n/a', '0 (bitwise)' or '1.23e-05 (1e-05)'."""
  if value is None:
    return "n/a"
  if value == 0:
    return "0 (bitwise)"
  return f"{value:.2e} (1e{math.floor(math.log10(value)):+03d})"


@dataclasses.dataclass(frozen=True)
class Cell:
  """A measured number (None: not measured) and where it came from."""
  value: float | None
  sources: tuple[str, ...] = ()

  def text(self) -> str:
    return format_error(self.value)

  def latex(self) -> str:
    if self.value is None:
      return "n/a"
    if self.value == 0:
      return "0 (bitwise)"
    mantissa, exponent = f"{self.value:.2e}".split("e")
    return f"${mantissa}\\times10^{{{int(exponent)}}}$"


@dataclasses.dataclass(frozen=True)
class StealthCell(Cell):
  """An approximation error judged against a verifier threshold (None: no threshold measured)."""
  threshold: float | None = None
  attack: str | None = None

  @property
  def stealthy(self) -> bool | None:
    if self.value is None or self.threshold is None:
      return None
    return self.value <= self.threshold

  def _verdict(self) -> str:
    by = f" ({self.attack})" if self.attack else ""
    return {True: f", stealthy{by}", False: f", caught{by}", None: by}[self.stealthy]

  def text(self) -> str:
    return super().text() + ("" if self.value is None else self._verdict())

  def latex(self) -> str:
    return super().latex() + ("" if self.value is None else self._verdict())


@dataclasses.dataclass(frozen=True)
class Table:
  """rows: (row label, [Cell per column]); notes: the settings and platforms behind it."""
  name: str
  title: str
  corner: str
  columns: tuple[str, ...]
  rows: tuple[tuple[str, tuple[Cell, ...]], ...]
  notes: tuple[str, ...]


def _walk_records(results_dir: str, kinds: tuple[results.ResultKind, ...]) -> dict:
  """kind -> [record + {"folder", "path"}] of every record of `kinds` under `results_dir`.

  A record is a JSON file whose (upgraded) kind is one of `kinds` and whose name is its kind's
  record file (results.RECORDS). Hidden files and folders (a result being written) are passed
  over; a record file that cannot be read, or lacks a field the tables read, is an error that
  names it.
  """
  if not os.path.isdir(results_dir):
    raise errors.ConfigError(f"no results folder at {results_dir}; run the experiments first or "
                             "pass --results")
  record_files = {results.RECORDS[kind].file_name for kind in kinds}
  found = {kind: [] for kind in kinds}
  for root, folders, names in os.walk(results_dir):
    folders[:] = sorted(f for f in folders if not f.startswith("."))
    for name in sorted(names):
      if name.startswith(".") or not name.endswith(".json"):
        continue
      path = os.path.join(root, name)
      try:
        record = results.upgrade(results.read_json(path, "result"))
      except errors.ForgingError:
        if name in record_files:
          raise
        continue  # Some other JSON file, and not readable: none of ours.
      kind = record.get("kind")
      if kind not in found or results.RECORDS[kind].file_name not in (None, name):
        continue
      record = results.checked_record(record, path, kind)
      found[kind].append(record | {"folder": os.path.relpath(root, results_dir), "path": path})
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


def platform_labels(fingerprints: list[dict]) -> dict[str, str]:
  """Platform id -> label; platforms that share a label get their id appended."""
  by_id = {f["id"]: f for f in fingerprints}
  labels = {platform_id: platform_label(f) for platform_id, f in by_id.items()}
  shared = {label for label in labels.values() if list(labels.values()).count(label) > 1}
  return {platform_id: f"{label}@{platform_id[:6]}" if label in shared else label
          for platform_id, label in labels.items()}


def describe_platform(fingerprint: dict) -> str:
  """A platform spelled out from its fingerprint: device, CPU, GPUs, software and settings."""
  in_force, software = fingerprint["in_force"], fingerprint["software"]
  cpu = fingerprint["hardware"]["cpu"]
  gpus = [d.get("device_name", d["name"]) for d in fingerprint["hardware"]["devices"]
          if d["type"] == "GPU"]
  cuda = (f", CUDA {software['cuda_version']}, cuDNN {software['cudnn_version']}"
          if software.get("cuda_build") else "")
  return (f"device {in_force.get('device')}; CPU {cpu['model']} ({cpu['logical_cores']} logical "
          f"cores){'; GPU ' + ', '.join(gpus) if gpus else ''}; TensorFlow "
          f"{software['tensorflow']}{cuda}; op determinism "
          f"{'on' if in_force['op_determinism'] else 'off'}, oneDNN "
          f"{'on' if in_force['onednn'] else 'off'}, intra/inter-op threads "
          f"{in_force['intra_op_threads']}/{in_force['inter_op_threads']} (0: TensorFlow's "
          f"default), TF32 {'on' if in_force['tf32'] else 'off'}, XLA "
          f"{'on' if in_force.get('xla_auto_jit') else 'off'}")


def described_platforms(fingerprints: list[dict]) -> list[tuple[str, str, str]]:
  """(label, id, description) of each distinct platform among `fingerprints`, by label."""
  by_id = {f["id"]: f for f in fingerprints}
  labels = platform_labels(fingerprints)
  return sorted((labels[platform_id], platform_id, describe_platform(fingerprint))
                for platform_id, fingerprint in by_id.items())


def platform_notes(fingerprints: list[dict]) -> list[str]:
  return [f"{label} = platform {platform_id}: {description}"
          for label, platform_id, description in described_platforms(fingerprints)]


def _runs_note(records: list[dict]) -> str:
  runs = sorted({(r["trace"]["model"], r["trace"]["batch_size"], r["trace"]["steps"],
                  r["trace"]["k"], r["updates"], r["repeats"]) for r in records})
  return "runs: " + "; ".join(f"{m} b={b}: T={t}, k={k}, {u} updates recomputed, R={n}"
                              for m, b, t, k, u, n in runs)


def table1(records: list[dict]) -> Table:
  """Table I: the largest eps_repr over results recomputed on their generating platform."""
  same = [r for r in records
          if r["generator_platform"]["id"] == r["platform"]["id"]]
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
       *platform_notes([r["generator_platform"] for r in used])))


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
  labels = platform_labels([r[side] for r in chosen
                           for side in ("generator_platform", "platform")])
  generators = sorted({r["generator_platform"]["id"] for r in chosen}, key=labels.get)
  recomputers = sorted({r["platform"]["id"] for r in chosen}, key=labels.get)
  rows = []
  for generator in generators:
    cells = []
    for recomputer in recomputers:
      matching = [r for r in chosen if r["generator_platform"]["id"] == generator and
                  r["platform"]["id"] == recomputer]
      cells.append(Cell(max((r["eps_repr"] for r in matching), default=None),
                        tuple(r["folder"] for r in matching)))
    rows.append((labels[generator], tuple(cells)))
  return Table(
      f"table2{part}", f"Table II {title}: eps_repr, rows the generating platform, columns the "
      "recomputing platform", "generated on \\ recomputed on",
      tuple(labels[r] for r in recomputers), tuple(rows),
      (_runs_note(chosen) if chosen else "runs: none found",
       *platform_notes([r["generator_platform"] for r in chosen] +
                        [r["platform"] for r in chosen])))


def largest_reproduction_error(reproduction: list[dict], model: str) -> float | None:
  """The largest eps_repr measured for `model` over every platform pair: the threshold."""
  return max((r["eps_repr"] for r in reproduction if r["trace"]["model"] == model), default=None)


def _attack_entries(attack_records: list[dict], model: str, batch_size: int) -> list[dict]:
  """Per-step, per-fraction entries of every attack on (model, b), with the attack's name."""
  return [entry | {"attack": record["settings"]["attack"], "folder": record["folder"],
                   "trace_steps": record["trace"]["steps"]}
          for record in attack_records
          if record["trace"]["model"] == model and record["trace"]["batch_size"] == batch_size
          for entry in record["results"]]


def table3(reproduction: list[dict], attack_records: list[dict]) -> Table:
  """Table III: smallest re-scored approximation error early / late x fraction 1/b / 1."""
  columns = ("early, 1/b", "early, 1", "late, 1/b", "late, 1")
  rows, notes = [], []
  pairs = sorted({(r["trace"]["model"], r["trace"]["dataset"], r["trace"]["batch_size"])
                  for r in attack_records})
  for model, dataset, b in pairs:
    entries = [e for e in _attack_entries(attack_records, model, b)
               if e["num_replaced"] in (1, b)]
    if not entries:
      continue
    steps = sorted({e["step"] for e in entries})
    if len(steps) < 2:
      continue  # Early and late need two attacked steps.
    threshold = largest_reproduction_error(reproduction, model)
    cells = []
    for step in (steps[0], steps[-1]):
      for replaced in (1, b):
        chosen = [e for e in entries if e["step"] == step and e["num_replaced"] == replaced]
        best = min(chosen, key=lambda e: e["min_approximation_error"], default=None)
        cells.append(StealthCell(
            None if best is None else best["min_approximation_error"],
            tuple(sorted({e["folder"] for e in chosen})), threshold,
            None if best is None else best["attack"]))
    label = f"{model} / {dataset}, b = {b}"
    rows.append((label, tuple(cells)))
    notes.append(f"{label}: early = step {steps[0]}, late = step {steps[-1]} of T = "
                 f"{entries[0]['trace_steps']}; threshold = largest reproduction error measured "
                 f"for {model}: " + ("none measured" if threshold is None else f"{threshold:.3e}"))
  notes.append(f"attacks: {_attack_settings(attack_records, ', M={M}, n={n}')}")
  notes += platform_notes([r["platform"] for r in attack_records])
  return Table("table3", "Table III: smallest approximation error (re-scored with the SGD step) "
               "early and late in training at forging fractions 1/b and 1; stealthy iff <= the "
               "largest reproduction error measured for the model", "model / dataset, b",
               columns, tuple(rows), tuple(notes))


@dataclasses.dataclass(frozen=True)
class Series:
  """One line of a figure: x [k], the minimum, mean and maximum over runs [k], and its label."""
  label: str
  x: tuple[float, ...]
  minimum: tuple[float, ...]
  mean: tuple[float, ...]
  maximum: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Panel:
  """One panel of a figure: its title, lines, and the verifier threshold to draw (if measured)."""
  title: str
  series: tuple[Series, ...]
  threshold: float | None


def _series(label: str, entries: list[dict], x_key: str) -> Series:
  entries = sorted(entries, key=lambda e: e[x_key])
  return Series(label, tuple(e[x_key] for e in entries),
                tuple(e["min_approximation_error"] for e in entries),
                tuple(e["mean_approximation_error"] for e in entries),
                tuple(e["max_approximation_error"] for e in entries))


def _model_label(model: str) -> str:
  return {"lenet": "LeNet / MNIST", "vggmini": "VGGmini / CIFAR-10"}.get(model, model)


def figure2_panels(reproduction: list[dict], attack_records: list[dict]) -> list[Panel]:
  """Fig. 2: Thudi's error vs forging fraction at the middle step, one line per b, per model."""
  panels = []
  for model in sorted({r["trace"]["model"] for r in attack_records}):
    lines = []
    for b in sorted({r["trace"]["batch_size"] for r in attack_records
                     if r["trace"]["model"] == model}):
      middle = [e for e in _attack_entries(attack_records, model, b)
                if e["attack"] == "thudi" and e["step"] == e["trace_steps"] // 2]
      if middle:
        lines.append(_series(f"b = {b} (step {middle[0]['step']})", middle, "forging_fraction"))
    if lines:
      panels.append(Panel(_model_label(model), tuple(lines),
                          largest_reproduction_error(reproduction, model)))
  return panels


def figure3_panels(reproduction: list[dict], attack_records: list[dict]) -> list[Panel]:
  """Fig. 3: Thudi's error at every attacked stage, fractions 1/b and 1, at the largest b that
  was attacked at three or more steps, per model."""
  panels = []
  for model in sorted({r["trace"]["model"] for r in attack_records}):
    for b in sorted({r["trace"]["batch_size"] for r in attack_records
                     if r["trace"]["model"] == model}, reverse=True):
      entries = [e for e in _attack_entries(attack_records, model, b) if e["attack"] == "thudi"]
      if len({e["step"] for e in entries}) < 3:
        continue
      lines = tuple(_series(f"fraction {label}", chosen, "step")
                    for label, replaced in (("1/b", 1), ("1", b))
                    if (chosen := [e for e in entries if e["num_replaced"] == replaced]))
      panels.append(Panel(f"{_model_label(model)}, b = {b}", lines,
                          largest_reproduction_error(reproduction, model)))
      break
  return panels


def figure6_panels(reproduction: list[dict], attack_records: list[dict]) -> list[Panel]:
  """Fig. 6: Thudi vs Zhang at the middle step, vs forging fraction, per model and b."""
  panels = []
  for model, b in sorted({(r["trace"]["model"], r["trace"]["batch_size"])
                          for r in attack_records}):
    middle = [e for e in _attack_entries(attack_records, model, b)
              if e["step"] == e["trace_steps"] // 2]
    lines = tuple(_series(attack.capitalize(), chosen, "forging_fraction")
                  for attack in ("thudi", "zhang")
                  if (chosen := [e for e in middle if e["attack"] == attack]))
    if len(lines) == 2:
      panels.append(Panel(f"{_model_label(model)}, b = {b}", lines,
                          largest_reproduction_error(reproduction, model)))
  return panels


@dataclasses.dataclass(frozen=True)
class BruteForceCell(Cell):
  """A Table IV cell: value is the nearest miss (l2 between mean gradients)."""
  batches: int = 0
  decided: bool = False
  found: bool = False
  exact: bool = True

  def text(self) -> str:
    if self.value is None and not self.decided:
      return "undecided"
    verdict = "FOUND" if self.found else "none"
    miss = "" if self.value is None else (f", miss {'' if self.exact else '<= '}"
                                          f"{self.value:.2e}")
    count = f"{self.batches:,}" if self.batches < 10**7 else f"{self.batches:.2e}"
    return f"{verdict} of {count}{miss}" if self.decided else f"undecided{miss}"

  def latex(self) -> str:
    return self.text().replace("<=", "$\\le$")


def table4(document: dict) -> Table:
  """Table IV from forging-bruteforce's JSON: rows (model, v), columns b."""
  cells = document["cells"]
  batch_sizes = sorted({c["b"] for c in cells})
  rows = []
  for model in dict.fromkeys(c["model"] for c in cells):
    for v in sorted({c["v"] for c in cells if c["model"] == model}):
      by_b = {c["b"]: c for c in cells if c["model"] == model and c["v"] == v}
      rows.append((f"{model}, v = {v}", tuple(
          BruteForceCell(by_b[b]["nearest_miss"], (), by_b[b]["batches"], by_b[b]["decided"],
                         by_b[b]["found"], by_b[b].get("nearest_miss_exact", True))
          if b in by_b else Cell(None) for b in batch_sizes)))
  settings = document.get("settings", {})
  decided = sum(c["decided"] for c in cells)
  found = sum(c["found"] for c in cells)
  notes = (f"{decided} of {len(cells)} cells decided, {found} with a distinct batch of the same "
           f"gradient; {document.get('seconds', 0):.0f} s in all",
           "cell: FOUND or none of the C(v^d n, b) batches (the true batch and its reorderings "
           "excluded), and the nearest miss, "
           f"{settings.get('distances', 'l2 between mean gradients')}; '<=' marks an upper "
           "bound where the search proved only that nothing lies closer than the collision "
           "tolerance",
           f"d = {settings.get('pixels')} pixels, n = {settings.get('classes')} classes, FCN with "
           f"{settings.get('fcn_hidden_units')} ReLU hidden units, seed {settings.get('seed')}, "
           f"tolerance {settings.get('tolerance')}",
           *platform_notes([document["platform"]] if "platform" in document else []))
  return Table("table4", "Table IV: brute force, is there a distinct batch with the true batch's "
               "gradient?", "model, pixel levels", tuple(f"b = {b}" for b in batch_sizes),
               tuple(rows), notes)


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
  """Full-precision numbers; an empty field is a cell that was not measured. Tables judged
  against a threshold add a column per cell column with the threshold and one with the verdict."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  judged = any(isinstance(c, StealthCell) for _, cells in table.rows for c in cells)
  extra = [f"{c} {what}" for c in table.columns for what in ("threshold", "stealthy")]
  writer.writerow((table.corner, *table.columns, *(extra if judged else ())))
  for label, cells in table.rows:
    row = [label, *("" if c.value is None else repr(c.value) for c in cells)]
    if judged:
      for c in cells:
        row += ["" if c.threshold is None else repr(c.threshold),
                "" if c.stealthy is None else str(c.stealthy).lower()]
    writer.writerow(row)
  return out.getvalue()


def write_table(table: Table, out_dir: str) -> list[str]:
  """Writes NAME.md, NAME.tex and NAME.csv into out_dir; returns their paths."""
  paths = []
  for extension, render in (("md", to_markdown), ("tex", to_latex), ("csv", to_csv)):
    path = os.path.join(out_dir, f"{table.name}.{extension}")
    results.write_text(path, render(table))
    paths.append(path)
  return paths


@dataclasses.dataclass(frozen=True)
class FoundResults:
  """Every saved result under some results folders (records carry their folder and path).

  table4 is the newest Table IV record (by the file's time), if any.
  """
  dirs: tuple[str, ...]
  reproduction: list[dict]
  attacks: list[dict]
  exact: list[dict]
  table4: dict | None


def find_results(results_dirs: list[str]) -> FoundResults:
  """Reads every result under `results_dirs`; none at all is an error that says what to run."""
  kinds = (results.ResultKind.REPRODUCTION_ERROR, results.ResultKind.ATTACK,
           results.ResultKind.EXACT_FORGING, results.ResultKind.TABLE_IV)
  found = {kind: [] for kind in kinds}
  for results_dir in results_dirs:
    for kind, records in _walk_records(results_dir, kinds).items():
      found[kind] += records
  table4 = max(found[results.ResultKind.TABLE_IV], key=lambda r: os.path.getmtime(r["path"]),
               default=None)
  if not any(found.values()):
    raise errors.ConfigError(f"no results under {', '.join(results_dirs)}; run forging-recompute, "
                             "forging-attack, forging-exact or forging-bruteforce first")
  return FoundResults(tuple(results_dirs), found[results.ResultKind.REPRODUCTION_ERROR],
                      found[results.ResultKind.ATTACK], found[results.ResultKind.EXACT_FORGING],
                      table4)


def render_tables_and_figures(found: FoundResults, out_dir: str
                              ) -> tuple[list[Table], list[str]]:
  """Renders every table and figure `found` allows into out_dir (tables as .md/.tex/.csv plus
  tables.md with all of them; figures as .png/.pdf)."""
  tables = []
  if found.reproduction:
    tables += [table1(found.reproduction), *(table2(found.reproduction, part) for part in "abc")]
  if found.attacks:
    tables.append(table3(found.reproduction, found.attacks))
  if found.table4:
    tables.append(table4(found.table4))
  tables = [table for table in tables if table.rows]  # Nothing measured: no table.
  for table in tables:
    write_table(table, out_dir)
  results.write_text(os.path.join(out_dir, "tables.md"),
                     "\n".join(to_markdown(table) for table in tables))
  return tables, _render_figures(found.reproduction, found.attacks, found.exact, out_dir)


def _render_figures(reproduction: list[dict], attack_records: list[dict], exact: list[dict],
                    out_dir: str) -> list[str]:
  figures = []
  if attack_records:
    platforms = ", ".join(sorted({r["platform"]["id"] for r in attack_records}))
    caption = ("Approximation error re-scored with the SGD step, on platform " + platforms + "; "
               + _attack_settings(attack_records, ", M = {M}")
               + ". Line: mean over runs, band: min..max, dashed: min; dotted: the largest "
               "reproduction error measured for the model (forging-recompute).")
    for name, panels, x_label, log_x in (
        ("fig2", figure2_panels(reproduction, attack_records), "forging fraction", True),
        ("fig3", figure3_panels(reproduction, attack_records), "training step", False),
        ("fig6", figure6_panels(reproduction, attack_records), "forging fraction", True)):
      if panels:
        figures += plotting.approximation_error_figure(panels, os.path.join(out_dir, name),
                                                       x_label, log_x, caption)
  for summary in exact:
    batches = os.path.join(os.path.dirname(summary["path"]), "data.npz")
    if not os.path.exists(batches):
      continue  # The batches were not kept (e.g. dataset images left out of git).
    with np.load(batches, allow_pickle=False) as arrays:
      figures += plotting.draw_exact(summary, dict(arrays),
                                     os.path.join(out_dir, summary["experiment"]))
  return figures


def _attack_settings(attack_records: list[dict], thudi_search: str) -> str:
  """'thudi: 3 runs, M=300, n=3000; zhang: 3 runs': each attack's runs, and Thudi's search as
  thudi_search formats it (fields M and n)."""
  settings = sorted({(r["settings"]["attack"], r["settings"]["runs"], r["settings"]["M"],
                      r["settings"]["n"]) for r in attack_records})
  return "; ".join(f"{attack}: {runs} runs" + (thudi_search.format(M=m, n=n)
                                               if attack == "thudi" else "")
                   for attack, runs, m, n in settings)
