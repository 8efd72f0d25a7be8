"""The paper's Tables I-IV, built from saved records, never from constants.

Every table is built from the records that experiments wrote (saved_results.find_results) and says
which platforms and settings produced it; render.py writes it as Markdown, LaTeX and CSV.

  Table I   largest eps_repr recomputing on the generating platform: rows LeNet/MNIST and
            VGGmini/CIFAR-10, columns b in {100, 500, 1000}.
  Table II  cross-platform matrices, rows the generating platform, columns the recomputing one:
            (a) LeNet b=100 generated without op determinism, (b) LeNet b=100 with it,
            (c) LeNet b=1000.
  Table III smallest approximation error of the attacks early / late in training (the first /
            last 10% of the steps: training_ranges) at forging fractions 1/b and 1, one row per
            (model, dataset, b, T), each cell naming the attack and batch mode that reached it and
            marked stealthy iff it is <= the largest reproduction error measured for that model
            (the loosest threshold a verifier could justify).

  Table IV  brute force: for logreg and the L = 2 FCN, pixel levels v x batch size b, whether any
            other batch has the true batch's gradient, and the nearest miss (forging-bruteforce).

Tables I and II show, beside eps_repr, the 99th percentile over steps: the max is set by a handful
of outlier steps. Two more tables say where the reproduction error sits:

  repro_distribution  per reproduction result, the per-step distribution (median, p90, p99, max,
                      steps above 1e-8 .. 1e-5), so a reader sees how many steps set the max.
  repro_variables     per result that split its distances by variable, the variable carrying the
                      largest share of the worst step, and the distribution.
  outlier_causes      per forging-explain-outliers result, the outlier steps of a platform pair
                      against the ReLU units and max-pool windows that chose differently on the
                      two platforms, and the near-ties a verifier sees on its own platform.
  pol_coverage        per forging-recompute --top_q result, what proof-of-learning's verifier
                      recomputed and the chance that a forged step in each tenth of training is
                      among those steps.
"""

import dataclasses
import math

from forging_tf import errors
from forging_tf.recompute import distribution
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
    return _latex_number(self.value)

  def csv(self) -> str:
    """The full-precision value; empty where nothing was measured."""
    return "" if self.value is None else repr(self.value)

  def csv_extras(self) -> tuple[tuple[str, str], ...]:
    """(name, value) of the columns the CSV adds for this cell's column, after all the cells."""
    return ()


def _latex_number(value: float) -> str:
  mantissa, exponent = f"{value:.2e}".split("e")
  return f"${mantissa}\\times10^{{{int(exponent)}}}$"


def latex_escape(text: str) -> str:
  """Plain text as LaTeX prints it."""
  for plain, escaped in (
      ("\\", "\\textbackslash{}"),
      ("_", "\\_"),
      ("%", "\\%"),
      ("&", "\\&"),
      ("#", "\\#"),
  ):
    text = text.replace(plain, escaped)
  return text


@dataclasses.dataclass(frozen=True)
class ReproductionCell(Cell):
  """eps_repr (the largest distance) and the 99th percentile over steps of each step's largest
  distance over repeats (None: a result without per-step distances)."""

  p99: float | None = None

  def _p99(self, number) -> str:
    if self.value is None or self.value == 0:
      return ""  # Nothing measured, or every step bitwise: the p99 says nothing more.
    return "; p99 " + ("n/a" if self.p99 is None else "0" if self.p99 == 0 else number(self.p99))

  def text(self) -> str:
    return super().text() + self._p99(lambda value: f"{value:.2e}")

  def latex(self) -> str:
    return super().latex() + self._p99(_latex_number)

  def csv_extras(self) -> tuple[tuple[str, str], ...]:
    return (("p99", "" if self.p99 is None else repr(self.p99)),)


@dataclasses.dataclass(frozen=True)
class DistanceCell(Cell):
  """A quantile of distances, compact: '1.00e-07', or '0'."""

  def text(self) -> str:
    return "n/a" if self.value is None else "0" if self.value == 0 else f"{self.value:.2e}"

  def latex(self) -> str:
    return self.text() if self.value in (None, 0) else _latex_number(self.value)


@dataclasses.dataclass(frozen=True)
class CountCell(Cell):
  """A number of steps."""

  value: int | None

  def text(self) -> str:
    return "n/a" if self.value is None else str(self.value)

  def latex(self) -> str:
    return self.text()


@dataclasses.dataclass(frozen=True)
class ShareCell(Cell):
  """A fraction of a whole, as a percentage."""

  def text(self) -> str:
    return "n/a" if self.value is None else f"{self.value:.1%}"

  def latex(self) -> str:
    return latex_escape(self.text())


@dataclasses.dataclass(frozen=True)
class NameCell(Cell):
  """A name (a model variable's): printed as it is."""

  value: str | None

  def text(self) -> str:
    return "n/a" if self.value is None else self.value

  def latex(self) -> str:
    return "n/a" if self.value is None else f"\\texttt{{{latex_escape(self.value)}}}"

  def csv(self) -> str:
    return self.value or ""


@dataclasses.dataclass(frozen=True)
class StealthCell(Cell):
  """An approximation error judged against a verifier threshold (None: no threshold measured)."""

  threshold: float | None = None
  attack: str | None = None
  batch: str | None = None  # the attack's batch mode (saved_results.batch_mode)

  @property
  def stealthy(self) -> bool | None:
    if self.value is None or self.threshold is None:
      return None
    return self.value <= self.threshold

  def _verdict(self) -> str:
    named = ", ".join(name for name in (self.attack, self.batch) if name)
    by = f" ({named})" if named else ""
    return {True: f", stealthy{by}", False: f", caught{by}", None: by}[self.stealthy]

  def text(self) -> str:
    return super().text() + ("" if self.value is None else self._verdict())

  def latex(self) -> str:
    return super().latex() + ("" if self.value is None else self._verdict())

  def csv_extras(self) -> tuple[tuple[str, str], ...]:
    return (
        ("threshold", "" if self.threshold is None else repr(self.threshold)),
        ("stealthy", "" if self.stealthy is None else str(self.stealthy).lower()),
        ("attack", self.attack or ""),
        ("batch", self.batch or ""),
    )


@dataclasses.dataclass(frozen=True)
class VerdictCell(StealthCell):
  """A StealthCell's verdict alone: 'stealthy (<= 1.00e-07)', 'caught (> 1.00e-07)', or 'n/a'
  where no threshold was measured; in the CSV true / false, and the threshold beside it."""

  def text(self) -> str:
    if self.stealthy is None:
      return "n/a"
    threshold = "0" if self.threshold == 0 else f"{self.threshold:.2e}"
    return f"{'stealthy (<=' if self.stealthy else 'caught (>'} {threshold})"

  def latex(self) -> str:
    return self.text().replace("<=", "$\\le$").replace(">", "$>$")

  def csv(self) -> str:
    return "" if self.stealthy is None else str(self.stealthy).lower()

  def csv_extras(self) -> tuple[tuple[str, str], ...]:
    return (("threshold", "" if self.threshold is None else repr(self.threshold)),)


@dataclasses.dataclass(frozen=True)
class LevelCell(Cell):
  """A distance between images in grey levels (l2 over the pixels in 0..255 units): '64.8'."""

  def text(self) -> str:
    return "n/a" if self.value is None else f"{self.value:.1f}"

  def latex(self) -> str:
    return self.text()


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


_P99_NOTE = (
    "p99: the 99th percentile over the recomputed steps of each step's largest l2 distance over "
    "repeats (forging_tf.recompute.distribution); where a cell holds several results it shows the "
    "largest eps_repr and the largest p99 among them (n/a: a result without per-step distances)"
)


def _reproduction_cell(matching: list[dict]) -> ReproductionCell:
  """The largest eps_repr and the largest p99 of `matching` (p99 None if any lacks it)."""
  if not matching:
    return ReproductionCell(None)
  shapes = [saved_results.reproduction_distribution(r) for r in matching]
  return ReproductionCell(
      max(r["eps_repr"] for r in matching),
      tuple(r["folder"] for r in matching),
      None if None in shapes else max(shape["p99"] for shape in shapes),
  )


def same_platform_records(records: list[dict], model: str, dataset: str, b: int) -> list[dict]:
  """The reproduction results of Table I's cell (model, dataset, b): those recomputed on their
  generating platform."""
  return [
      r
      for r in records
      if r["generator_platform"]["id"] == r["platform"]["id"]
      and r["trace"]["model"] == model
      and r["trace"]["dataset"] == dataset
      and r["trace"]["batch_size"] == b
  ]


def table1(records: list[dict]) -> Table:
  """Table I: the largest eps_repr over results recomputed on their generating platform."""
  rows, used = [], []
  for model, dataset in _TABLE1_MODELS:
    cells = []
    for b in _TABLE1_BATCHES:
      matching = same_platform_records(records, model, dataset, b)
      cells.append(_reproduction_cell(matching))
      used += matching
    rows.append((saved_results.model_label(model, dataset), tuple(cells)))
  return Table(
      "table1",
      "Table I: reproduction error eps_repr (largest l2 distance over all steps and "
      "repeats), and its 99th percentile over steps, recomputing on the generating platform",
      "model / dataset",
      tuple(f"b = {b}" for b in _TABLE1_BATCHES),
      tuple(rows),
      (
          _runs_note(used) if used else "runs: none found",
          _P99_NOTE,
          *platform_notes([r["generator_platform"] for r in used]),
      ),
  )


TABLE2_PARTS = {
    "a": "(a) LeNet, b = 100, op determinism off",
    "b": "(b) LeNet, b = 100, op determinism on",
    "c": "(c) LeNet, b = 1000",
}


def table2_records(records: list[dict], part: str) -> list[dict]:
  """The reproduction results of Table II part a, b or c (TABLE2_PARTS): LeNet's at b = 100
  generated without op determinism (a) or with it (b), or at b = 1000 (c)."""
  picks = {
      "a": lambda b, deterministic: b == 100 and not deterministic,
      "b": lambda b, deterministic: b == 100 and deterministic,
      "c": lambda b, deterministic: b == 1000,
  }
  if part not in picks:
    raise errors.ConfigError(f"Table II has parts a, b and c, not {part!r}")
  return [
      r
      for r in records
      if r["trace"]["model"] == "lenet"
      and picks[part](
          r["trace"]["batch_size"], r["generator_platform"]["in_force"]["op_determinism"]
      )
  ]


def table2(records: list[dict], part: str) -> Table:
  """Table II (a), (b) or (c): eps_repr per (generating, recomputing) platform pair."""
  chosen = table2_records(records, part)
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
      cells.append(_reproduction_cell(matching))
    rows.append((labels[generator], tuple(cells)))
  return Table(
      f"table2{part}",
      f"Table II {TABLE2_PARTS[part]}: eps_repr and its 99th percentile over steps, rows the "
      "generating platform, columns the recomputing platform",
      "generated on \\ recomputed on",
      tuple(labels[r] for r in recomputers),
      tuple(rows),
      (
          _runs_note(chosen) if chosen else "runs: none found",
          _P99_NOTE,
          *platform_notes(
              [r["generator_platform"] for r in chosen] + [r["platform"] for r in chosen]
          ),
      ),
  )


_LEVEL_COLUMNS = tuple(f"> {distribution.level_key(level)}" for level in distribution.LEVELS)
_DISTRIBUTION_NOTE = (
    "per step: the largest l2 distance over repeats; median, pNN: quantiles over the recomputed "
    "steps (linear interpolation); max = eps_repr; > 1e-08 ... > 1e-05: how many steps "
    "exceed that distance. From each result's summary.json (its distribution, or for results "
    "written before distributions were recorded, its max_l2_per_step)"
)


def _distribution_cells(shape: dict, p90: bool = True) -> tuple[Cell, ...]:
  """median, (p90,) p99, max, and the steps above each level, of a distribution."""
  above = shape["above"]
  return (
      DistanceCell(shape["median"]),
      *((DistanceCell(shape["p90"]),) if p90 else ()),
      DistanceCell(shape["p99"]),
      DistanceCell(shape["max"]),
      *(CountCell(above.get(distribution.level_key(level))) for level in distribution.LEVELS),
  )


def _with_distribution(records: list[dict]) -> list[tuple[str, dict, dict]]:
  """(row label, record, distribution) of each record with per-step distances, by model, dataset,
  b and label."""
  measured = [(r, shape) for r in records if (shape := saved_results.reproduction_distribution(r))]
  labels = saved_results.reproduction_labels([r for r, _ in measured], with_model=True)
  return sorted(
      ((label, r, shape) for label, (r, shape) in zip(labels, measured)),
      key=lambda row: (
          *(row[1]["trace"][key] for key in ("model", "dataset", "batch_size")),
          row[0],
      ),
  )


def _reproduction_notes(records: list[dict]) -> tuple[str, ...]:
  return (
      _runs_note(records),
      *platform_notes([r[side] for r in records for side in ("generator_platform", "platform")]),
  )


def repro_distribution(records: list[dict]) -> Table:
  """Where the reproduction error sits, over steps: per reproduction result with per-step
  distances, how many steps, their quantiles, the max, and how many exceed each level."""
  rows = _with_distribution(records)
  return Table(
      "repro_distribution",
      "Where the reproduction error sits: the per-step distribution of each reproduction result",
      "result (model, b: generated on -> recomputed on)",
      ("steps", "median", "p90", "p99", "max", *_LEVEL_COLUMNS),
      tuple(
          (label, (CountCell(shape["steps"]), *_distribution_cells(shape)))
          for label, _, shape in rows
      ),
      (_DISTRIBUTION_NOTE, *_reproduction_notes([r for _, r, _ in rows])) if rows else (),
  )


def _largest(names: list[str], values: list[float]) -> tuple[str | None, float | None]:
  """The name of the largest value and the value; (None, None) when every value is 0."""
  if not values or max(values) <= 0:
    return None, None
  index = max(range(len(values)), key=values.__getitem__)
  return names[index], values[index]


def repro_variables(records: list[dict]) -> Table:
  """Where the reproduction error sits, over the model's variables: per result whose summary split
  its distances by variable, the variable carrying the largest share of the worst step's squared
  distance, the variable farthest from the logged one over all steps, and the per-step
  distribution."""
  rows, used = [], []
  for label, record, shape in _with_distribution(records):
    summary = record["summary"]
    if not summary.get("variables"):
      continue  # Written before distances were split by variable.
    names = summary["variables"]
    worst_name, worst_share = _largest(names, summary["worst_step_variable_share"])
    far_name, far_distance = _largest(names, summary["max_l2_per_variable"])
    rows.append(
        (
            label,
            (
                CountCell(record.get("worst", {}).get("step")),
                NameCell(worst_name),
                ShareCell(worst_share),
                NameCell(far_name),
                DistanceCell(far_distance),
                *_distribution_cells(shape, p90=False),
            ),
        )
    )
    used.append(record)
  return Table(
      "repro_variables",
      "Where the reproduction error sits, by variable",
      "result (model, b: generated on -> recomputed on)",
      (
          "worst step",
          "its largest variable",
          "its share",
          "farthest variable",
          "its distance",
          "median",
          "p99",
          "max",
          *_LEVEL_COLUMNS,
      ),
      tuple(rows),
      (
          "its largest variable: the variable carrying the largest share of the worst step's "
          "squared l2 distance (in the worst repeat; the shares of all variables sum to 100%); "
          "farthest variable: the largest l2 distance restricted to one variable, over all steps "
          "and repeats; n/a: every step reproduced bitwise",
          _DISTRIBUTION_NOTE,
          *_reproduction_notes(used),
      )
      if rows
      else (),
  )


def training_ranges(trace_steps: int) -> dict[str, range]:
  """Table III's stages of a trace of T steps (steps 0..T-1): "early", the first ceil(T/10) steps,
  and "late", the last ceil(T/10), i.e. the steps i < T/10 and i >= T - T/10 when T is a multiple
  of 10 (T = 1200: 0..119 and 1080..1199); for other T, the steps whose update overlaps the first
  or last tenth of training (T = 6: step 0 and step 5)."""
  tenth = -(-trace_steps // 10)
  return {"early": range(0, tenth), "late": range(trace_steps - tenth, trace_steps)}


def steps_text(steps: range) -> str:
  """A range of steps as the tables name it: 'steps 0..119' or 'step 0'."""
  if len(steps) == 1:
    return f"step {steps[0]}"
  return f"steps {steps[0]}..{steps[-1]}" if steps else "no steps"


TABLE3_COLUMNS = (("early", "1/b"), ("early", "1"), ("late", "1/b"), ("late", "1"))


@dataclasses.dataclass(frozen=True)
class Table3Row:
  """One row of Table III, a (model, dataset, b, T): its stages (training_ranges), the steps
  attacked in each at fraction 1/b or 1, and per column of TABLE3_COLUMNS the entries that compete
  for the cell (saved_results.attack_entries: every paper attack, batch mode, run's minimum and
  attacked step in the stage, at the column's fraction)."""

  model: str
  dataset: str
  batch_size: int
  trace_steps: int
  ranges: dict[str, range]
  attacked: dict[str, tuple[int, ...]]
  entries: dict[tuple[str, str], tuple[dict, ...]]

  @property
  def label(self) -> str:
    return f"{self.model} / {self.dataset}, b = {self.batch_size}, T = {self.trace_steps}"

  def best(self, column: tuple[str, str]) -> dict | None:
    """The entry with the smallest min_approximation_error of a column (None: nothing attacked)."""
    return min(self.entries[column], key=lambda e: e["min_approximation_error"], default=None)

  def ranges_text(self) -> str:
    """'early = steps 0..119 (attacked: 0, 63), late = steps 1080..1199 (attacked: 1136, 1199)
    of T = 1200'."""
    return (
        ", ".join(
            f"{stage} = {steps_text(steps)} (attacked: "
            f"{', '.join(map(str, self.attacked[stage])) or 'none'})"
            for stage, steps in self.ranges.items()
        )
        + f" of T = {self.trace_steps}"
    )


def table3_rows(attack_records: list[dict]) -> list[Table3Row]:
  """Table III's rows from attack records (the paper's attacks, both batch modes): one per (model,
  dataset, b, T) with some attacked step in its early or late stage, by model, dataset, b, T."""
  rows = []
  for model, dataset, b, steps in sorted(
      {
          (
              r["trace"]["model"],
              r["trace"]["dataset"],
              r["trace"]["batch_size"],
              r["trace"]["steps"],
          )
          for r in attack_records
      }
  ):
    replaced = {"1/b": 1, "1": b}
    entries = [
        e
        for e in saved_results.attack_entries(attack_records, model, b, steps)
        if e["record"]["trace"]["dataset"] == dataset
        and e["num_replaced"] in replaced.values()
        and e["min_approximation_error"] is not None
        and math.isfinite(e["min_approximation_error"])
    ]
    ranges = training_ranges(steps)
    row = Table3Row(
        model,
        dataset,
        b,
        steps,
        ranges,
        {
            stage: tuple(sorted({e["step"] for e in entries if e["step"] in within}))
            for stage, within in ranges.items()
        },
        {
            (stage, fraction): tuple(
                e
                for e in entries
                if e["step"] in ranges[stage] and e["num_replaced"] == replaced[fraction]
            )
            for stage, fraction in TABLE3_COLUMNS
        },
    )
    if any(row.entries.values()):
      rows.append(row)
  return rows


def table3(reproduction: list[dict], attack_records: list[dict]) -> Table:
  """Table III: the smallest re-scored approximation error early / late in training (the first /
  last 10% of the steps: training_ranges) x fraction 1/b / 1, over every step attacked in the
  range, every run and both batch modes; each cell names the attack and batch mode that reached it
  and is judged against the largest reproduction error measured for the model."""
  rows, notes = [], []
  for row in table3_rows(attack_records):
    threshold = saved_results.largest_reproduction_error(reproduction, row.model)
    cells = []
    for column in TABLE3_COLUMNS:
      best = row.best(column)
      cells.append(
          StealthCell(
              None if best is None else best["min_approximation_error"],
              tuple(sorted({e["folder"] for e in row.entries[column]})),
              threshold,
              None if best is None else best["attack"],
              None if best is None else best["batch"],
          )
      )
    rows.append((row.label, tuple(cells)))
    notes.append(
        f"{row.label}: {row.ranges_text()}; threshold = largest reproduction error measured "
        f"for {row.model}: " + ("none measured" if threshold is None else f"{threshold:.3e}")
    )
  notes.append(
      "batch modes: trace, the trace's own batch B_i at each attacked step (a run: a deletion "
      "set); random, R seeded true batches B_r from the training set, each kept fixed over the "
      "attacked steps (a run: a true batch)"
  )
  notes.append(f"attacks: {attack_runs_note(attack_records, ', M={M}, n={n}')}")
  notes += platform_notes([r["platform"] for r in attack_records if r.get("platform")])
  return Table(
      "table3",
      "Table III: smallest approximation error (re-scored with the SGD step) early (the first "
      "10% of the training steps) and late (the last 10%) in training at forging fractions 1/b "
      "and 1, over every step attacked in each range, every run and both batch modes, with the "
      "attack and batch mode that reached it; stealthy iff <= the largest reproduction error "
      "measured for the model",
      "model / dataset, b, T",
      tuple(f"{stage}, {fraction}" for stage, fraction in TABLE3_COLUMNS),
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


def _pair_label(record: dict) -> str:
  trace = record["reproduction"]["trace"]
  return (
      f"{saved_results.model_label(trace['model'], trace['dataset'])} b={trace['batch_size']}: "
      f"{record['reproduction']['generator_platform'][:6]} -> "
      f"{record['reproduction']['recomputer_platform'][:6]}"
  )


def outlier_causes(records: list[dict], tolerances: tuple[float, ...] = (1.0, 16.0)) -> Table:
  """Outlier steps of each explained platform pair against the choices that differ between the
  two platforms and the near-ties the recomputing platform sees (at each of `tolerances`
  roundings)."""
  rows = []
  for record in sorted(records, key=_pair_label):
    table = record["table"]
    predictors = [
        next(
            (
                row
                for row in table["near_ties_predictor"]
                if row["platform"] == "recomputer" and row["tolerance"] == tolerance
            ),
            None,
        )
        for tolerance in tolerances
    ]
    by_layer = ", ".join(
        f"{name} {count}" for name, count in table["flips_by_layer_at_outliers"].items() if count
    )
    rows.append(
        (
            _pair_label(record),
            (
                CountCell(record["steps"]),
                DistanceCell(record["median_distance"]),
                CountCell(table["outliers"]),
                CountCell(table["outliers_with_flips"]),
                NameCell(by_layer or "none"),
                CountCell(table["others_with_flips"]),
                *(
                    CountCell(predictor and predictor[key])
                    for predictor in predictors
                    for key in ("outliers_with_near_ties", "others_with_near_ties")
                ),
            ),
        )
    )
  factor = records[0]["outlier_factor"] if records else 0
  return Table(
      "outlier_causes",
      "Why outlier steps jump: choices that differ between the two platforms",
      "pair (model, b: generated on -> recomputed on)",
      (
          "steps",
          "median distance",
          "outlier steps",
          "with a flip",
          "outliers with a flip, by layer",
          "other steps with a flip",
          *(
              f"{which} with near-ties (<= {tolerance:g} u S)"
              for tolerance in tolerances
              for which in ("outliers", "other steps")
          ),
      ),
      tuple(rows),
      (
          f"outlier step: its distance (largest over repeats) exceeds {factor:g} x the pair's "
          "median step; flip: a ReLU unit whose pre-activation has another sign, or a max-pool "
          "window that routes to another element, on the two platforms (forging-near-ties on "
          "each, compared); near-ties: ReLU pre-activations |z| and pool gaps top1 - top2 within "
          "that many roundings u S (S = |W||x| + |b|, u = 2^-24) in the recomputing platform's "
          "own forward pass, what a verifier sees without the other platform; platforms by id",
      )
      if rows
      else (),
  )


def pol_coverage(records: list[dict]) -> Table:
  """Proof-of-learning's verifier (forging-recompute --top_q): its cost and what it misses."""
  rows, used = [], []
  for label, record, _ in _with_distribution(records):
    summary = record["summary"]
    if not summary.get("top_q"):
      continue
    used.append(record)
    rows.append(
        (
            label,
            (
                CountCell(summary["top_q"]),
                CountCell(summary["steps_per_epoch"]),
                NameCell(f"{len(summary['steps'])} of {summary['candidate_updates']}"),
                DistanceCell(record["eps_repr"]),
                *(ShareCell(share) for share in summary["recomputed_share_by_stage"]),
            ),
        )
    )
  stages = max((len(r["summary"]["recomputed_share_by_stage"]) for r in used), default=0)
  return Table(
      "pol_coverage",
      "Proof-of-learning's verifier: the Q largest updates of each epoch",
      "result (model, b: generated on -> recomputed on)",
      (
          "Q",
          "epoch (steps)",
          "updates recomputed",
          "their largest distance",
          *(f"stage {i + 1}" for i in range(stages)),
      ),
      tuple(rows),
      (
          "stage k: the k-th tenth of the trace's updates; each stage cell is the share of its "
          "updates that the verifier recomputes, i.e. the chance that a forged step placed at "
          "random in that stage is checked (a forger who makes the forged update as large as the "
          "honest one does not change which updates are the largest); their largest distance: "
          "eps_repr over the recomputed updates only",
          *_reproduction_notes(used),
      )
      if rows
      else (),
  )
