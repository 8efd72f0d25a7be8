"""The paper's Tables I-IV, built from saved records, never from constants.

Every table is built from the records that experiments wrote (saved_results.find_results) and says
which platforms and settings produced it; render.py writes it as Markdown, LaTeX and CSV.

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
"""

import dataclasses
import math

from forging_tf import errors
from forging_tf.report import platforms
from forging_tf.report import saved_results

_TABLE1_MODELS = (("lenet", "mnist"), ("vggmini", "cifar10"))
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


def platform_notes(fingerprints: list[dict]) -> list[str]:
  return [
      f"{label} = platform {platform_id}: {description}"
      for label, platform_id, description in platforms.described_platforms(fingerprints)
  ]


def _runs_note(records: list[dict]) -> str:
  runs = sorted(
      {
          (
              r["trace"]["model"],
              r["trace"]["batch_size"],
              r["trace"]["steps"],
              r["trace"]["k"],
              r["updates"],
              r["repeats"],
          )
          for r in records
      }
  )
  return "runs: " + "; ".join(
      f"{m} b={b}: T={t}, k={k}, {u} updates recomputed, R={n}" for m, b, t, k, u, n in runs
  )


def table1(records: list[dict]) -> Table:
  """Table I: the largest eps_repr over results recomputed on their generating platform."""
  same = [r for r in records if r["generator_platform"]["id"] == r["platform"]["id"]]
  rows = []
  for model, dataset in _TABLE1_MODELS:
    label = saved_results.model_label(model, dataset)
    cells = []
    for b in _TABLE1_BATCHES:
      matching = [
          r
          for r in same
          if r["trace"]["model"] == model
          and r["trace"]["dataset"] == dataset
          and r["trace"]["batch_size"] == b
      ]
      cells.append(
          Cell(
              max((r["eps_repr"] for r in matching), default=None),
              tuple(r["folder"] for r in matching),
          )
      )
    rows.append((label, tuple(cells)))
  used = [r for r in same if any(r["folder"] in c.sources for _, cells in rows for c in cells)]
  return Table(
      "table1",
      "Table I: reproduction error eps_repr (largest l2 distance over all steps and "
      "repeats) recomputing on the generating platform",
      "model / dataset",
      tuple(f"b = {b}" for b in _TABLE1_BATCHES),
      tuple(rows),
      (
          _runs_note(used) if used else "runs: none found",
          *platform_notes([r["generator_platform"] for r in used]),
      ),
  )


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
  chosen = [
      r
      for r in records
      if r["trace"]["model"] == "lenet"
      and pick(r["trace"]["batch_size"], r["generator_platform"]["in_force"]["op_determinism"])
  ]
  labels = platforms.platform_labels(
      [r[side] for r in chosen for side in ("generator_platform", "platform")]
  )
  generators = sorted({r["generator_platform"]["id"] for r in chosen}, key=labels.get)
  recomputers = sorted({r["platform"]["id"] for r in chosen}, key=labels.get)
  rows = []
  for generator in generators:
    cells = []
    for recomputer in recomputers:
      matching = [
          r
          for r in chosen
          if r["generator_platform"]["id"] == generator and r["platform"]["id"] == recomputer
      ]
      cells.append(
          Cell(
              max((r["eps_repr"] for r in matching), default=None),
              tuple(r["folder"] for r in matching),
          )
      )
    rows.append((labels[generator], tuple(cells)))
  return Table(
      f"table2{part}",
      f"Table II {title}: eps_repr, rows the generating platform, columns the "
      "recomputing platform",
      "generated on \\ recomputed on",
      tuple(labels[r] for r in recomputers),
      tuple(rows),
      (
          _runs_note(chosen) if chosen else "runs: none found",
          *platform_notes(
              [r["generator_platform"] for r in chosen] + [r["platform"] for r in chosen]
          ),
      ),
  )


def table3(reproduction: list[dict], attack_records: list[dict]) -> Table:
  """Table III: smallest re-scored approximation error early / late x fraction 1/b / 1."""
  columns = ("early, 1/b", "early, 1", "late, 1/b", "late, 1")
  rows, notes = [], []
  pairs = sorted(
      {
          (r["trace"]["model"], r["trace"]["dataset"], r["trace"]["batch_size"])
          for r in attack_records
      }
  )
  for model, dataset, b in pairs:
    entries = [
        e
        for e in saved_results.attack_entries(attack_records, model, b)
        if e["num_replaced"] in (1, b)
    ]
    if not entries:
      continue
    steps = sorted({e["step"] for e in entries})
    if len(steps) < 2:
      continue  # Early and late need two attacked steps.
    threshold = saved_results.largest_reproduction_error(reproduction, model)
    cells = []
    for step in (steps[0], steps[-1]):
      for replaced in (1, b):
        chosen = [e for e in entries if e["step"] == step and e["num_replaced"] == replaced]
        best = min(chosen, key=lambda e: e["min_approximation_error"], default=None)
        cells.append(
            StealthCell(
                None if best is None else best["min_approximation_error"],
                tuple(sorted({e["folder"] for e in chosen})),
                threshold,
                None if best is None else best["attack"],
            )
        )
    label = f"{model} / {dataset}, b = {b}"
    rows.append((label, tuple(cells)))
    notes.append(
        f"{label}: early = step {steps[0]}, late = step {steps[-1]} of T = "
        f"{entries[0]['trace_steps']}; threshold = largest reproduction error measured "
        f"for {model}: " + ("none measured" if threshold is None else f"{threshold:.3e}")
    )
  notes.append(f"attacks: {attack_runs_note(attack_records, ', M={M}, n={n}')}")
  notes += platform_notes([r["platform"] for r in attack_records])
  return Table(
      "table3",
      "Table III: smallest approximation error (re-scored with the SGD step) "
      "early and late in training at forging fractions 1/b and 1; stealthy iff <= the "
      "largest reproduction error measured for the model",
      "model / dataset, b",
      columns,
      tuple(rows),
      tuple(notes),
  )


def attack_runs_note(attack_records: list[dict], thudi_search: str) -> str:
  """'thudi: 3 runs, M=300, n=3000; zhang: 3 runs': each attack's runs, and Thudi's search as
  thudi_search formats it (fields M and n)."""
  settings = sorted(
      {
          (r["settings"]["attack"], r["settings"]["runs"], r["settings"]["M"], r["settings"]["n"])
          for r in attack_records
      }
  )
  return "; ".join(
      f"{attack}: {runs} runs" + (thudi_search.format(M=m, n=n) if attack == "thudi" else "")
      for attack, runs, m, n in settings
  )


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
    miss = "" if self.value is None else (f", miss {'' if self.exact else '<= '}{self.value:.2e}")
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
      rows.append(
          (
              f"{model}, v = {v}",
              tuple(
                  BruteForceCell(
                      by_b[b]["nearest_miss"],
                      (),
                      by_b[b]["batches"],
                      by_b[b]["decided"],
                      by_b[b]["found"],
                      by_b[b].get("nearest_miss_exact", True),
                  )
                  if b in by_b
                  else Cell(None)
                  for b in batch_sizes
              ),
          )
      )
  settings = document.get("settings", {})
  decided = sum(c["decided"] for c in cells)
  found = sum(c["found"] for c in cells)
  notes = (
      f"{decided} of {len(cells)} cells decided, {found} with a distinct batch of the same "
      f"gradient; {document.get('seconds', 0):.0f} s in all",
      "cell: FOUND or none of the C(v^d n, b) batches (the true batch and its reorderings "
      "excluded), and the nearest miss, "
      f"{settings.get('distances', 'l2 between mean gradients')}; '<=' marks an upper "
      "bound where the search proved only that nothing lies closer than the collision "
      "tolerance",
      f"d = {settings.get('pixels')} pixels, n = {settings.get('classes')} classes, FCN with "
      f"{settings.get('fcn_hidden_units')} ReLU hidden units, seed {settings.get('seed')}, "
      f"tolerance {settings.get('tolerance')}",
      *platform_notes([document["platform"]] if "platform" in document else []),
  )
  return Table(
      "table4",
      "Table IV: brute force, is there a distinct batch with the true batch's gradient?",
      "model, pixel levels",
      tuple(f"b = {b}" for b in batch_sizes),
      tuple(rows),
      notes,
  )
