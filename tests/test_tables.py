"""Tables, figures and REPORT.md rendered from saved result records."""

import copy
import csv
import io
import json
import math
import os
import subprocess
import sys

import matplotlib.figure
import numpy as np
import pytest

from forging_tf import errors
from forging_tf import platform as platform_lib
from forging_tf import results
from forging_tf.calibrate import calibrate_lib
from forging_tf.recompute import distribution
from forging_tf.report import figure_panels
from forging_tf.report import margin_figure
from forging_tf.report import paper_comparison
from forging_tf.report import platforms
from forging_tf.report import plotting
from forging_tf.report import render
from forging_tf.report import report_lib
from forging_tf.report import saved_results
from forging_tf.report import table_builders


@pytest.fixture(scope="module")
def fingerprints() -> dict:
  """Fingerprints of four CPU platforms, derived from this process's own."""
  base = platform_lib.platform_fingerprint(platform_lib.Platform())
  made = {}
  for name, threads, onednn, det in (
      ("a", 0, True, True),
      ("b", 1, True, True),
      ("c", 0, False, True),
      ("d", 0, True, False),
  ):
    fingerprint = copy.deepcopy(base)
    fingerprint["in_force"].update(intra_op_threads=threads, onednn=onednn, op_determinism=det)
    fingerprint["id"] = name * 12
    made[name] = fingerprint
  return made


def _record(folder, model, b, generator, recomputer, eps, steps=1200, repeats=3):
  return {
      "kind": results.ResultKind.REPRODUCTION_ERROR,
      "folder": folder,
      "eps_repr": eps,
      "trace": {
          "model": model,
          "dataset": "mnist" if model == "lenet" else "cifar10",
          "batch_size": b,
          "steps": steps,
          "k": 1,
          "manifest_sha256": f"{model}-b{b}-T{steps}",
      },
      "updates": steps,
      "repeats": repeats,
      "generator_platform": generator,
      "platform": recomputer,
  }


def test_table1_takes_the_largest_same_platform_error(fingerprints):
  a, b = fingerprints["a"], fingerprints["b"]
  records = [
      _record("1", "lenet", 100, a, a, 0.0),
      _record("2", "lenet", 100, b, b, 2e-8),
      _record("3", "lenet", 100, a, b, 5.0),  # cross-platform: not in Table I
      _record("4", "vggmini", 1000, a, a, 3e-7, steps=30),
  ]
  table = table_builders.table1(records)
  (lenet, lenet_cells), (vgg, vgg_cells) = table.rows
  assert lenet.startswith("LeNet") and vgg.startswith("VGGmini")
  assert lenet_cells[0].value == 2e-8 and set(lenet_cells[0].sources) == {"1", "2"}
  assert lenet_cells[1].value is None and vgg_cells[2].value == 3e-7
  markdown = render.to_markdown(table)
  assert "2.00e-08 (1e-08)" in markdown and "n/a" in markdown and "T=30" in markdown
  assert "$3.00\\times10^{-7}$" in render.to_latex(table)


def test_table2_matrix_rows_generate_columns_recompute(fingerprints):
  a, b, c, d = (fingerprints[n] for n in "abcd")
  records = [
      _record("ab", "lenet", 100, a, b, 3e-8),
      _record("aa", "lenet", 100, a, a, 0.0),
      _record("ca", "lenet", 100, c, a, 5e-5),
      _record("dd", "lenet", 100, d, d, 1e-8),
      _record("big", "lenet", 1000, a, c, 7e-5),
  ]
  table = table_builders.table2(records, "b")
  labels = [label for label, _ in table.rows]
  assert labels == sorted(labels) and len(labels) == 2  # generators a and c, determinism on
  by_row = {label: dict(zip(table.columns, cells)) for label, cells in table.rows}
  a_label, b_label = platforms.platform_label(a), platforms.platform_label(b)
  assert by_row[a_label][b_label].value == 3e-8 and by_row[a_label][a_label].value == 0.0
  assert by_row[platforms.platform_label(c)][b_label].value is None
  rows = list(csv.reader(io.StringIO(render.to_csv(table))))
  assert float(rows[1 + labels.index(a_label)][1 + table.columns.index(b_label)]) == 3e-8
  assert table_builders.table2(records, "a").rows[0][0] == platforms.platform_label(d)
  assert table_builders.table2(records, "c").rows[0][1][0].value == 7e-5
  with pytest.raises(errors.ConfigError):
    table_builders.table2(records, "z")


def test_platforms_sharing_a_label_are_told_apart(fingerprints):
  a = fingerprints["a"]
  twin = copy.deepcopy(a)
  twin["id"] = "e" * 12
  labels = platforms.platform_labels([a, twin])
  assert labels[a["id"]] != labels[twin["id"]]


def test_render_tables_reads_result_files(fingerprints, tmp_path):
  a, b = fingerprints["a"], fingerprints["b"]
  for name, record in (
      ("x", _record("", "lenet", 100, a, a, 0.0)),
      ("y/z", _record("", "lenet", 100, a, b, 4e-8)),
  ):
    os.makedirs(tmp_path / "results" / name)
    with open(tmp_path / "results" / name / "result.json", "w") as f:
      json.dump({k: v for k, v in record.items() if k != "folder"}, f)
  tables, figures = report_lib.render_tables_and_figures(
      saved_results.find_results([str(tmp_path / "results")]), str(tmp_path / "report")
  )
  assert figures == []
  # Nothing measured for 2a, 2c; the paper's values beside ours.
  assert [t.name for t in tables] == ["table1", "table2b", "comparison"]
  for name in ("table1", "table2b"):
    for extension in ("md", "tex", "csv"):
      assert (tmp_path / "report" / f"{name}.{extension}").stat().st_size > 0
  assert "4.00e-08" in (tmp_path / "report" / "tables.md").read_text()
  with pytest.raises(errors.ConfigError, match="no results under"):
    saved_results.find_results([str(tmp_path / "report")])


def _attack(folder, attack, model, b, steps, fractions, errors_by_step):
  """An attack summary as forging-attack writes it; errors_by_step[step][k]: min error at
  fractions[k] (mean = 2 x min, max = 3 x min)."""
  return {
      "kind": "forging_tf.attack_results",
      "folder": folder,
      "settings": {"attack": attack, "runs": 3, "M": 300, "n": 3000},
      "trace": {
          "model": model,
          "dataset": "mnist",
          "batch_size": b,
          "steps": 1200,
          "manifest_sha256": f"{model}-b{b}-T1200",
      },
      "platform": None,
      "steps": steps,
      "results": [
          {
              "step": step,
              "num_replaced": m,
              "forging_fraction": m / b,
              "min_approximation_error": e,
              "mean_approximation_error": 2 * e,
              "max_approximation_error": 3 * e,
          }
          for step in steps
          for m, e in zip(fractions, errors_by_step[step])
      ],
  }


def test_table3_marks_cells_stealthy_against_the_largest_reproduction_error(fingerprints):
  a, c = fingerprints["a"], fingerprints["c"]
  reproduction = [_record("r1", "lenet", 100, a, a, 0.0), _record("r2", "lenet", 100, a, c, 5e-5)]
  stages = _attack(
      "s",
      "thudi",
      "lenet",
      1000,
      [0, 600, 1199],
      [1, 1000],
      {0: [1e-5, 1e-3], 600: [1e-6, 2e-3], 1199: [2e-6, 6e-3]},
  )
  middle = _attack("m", "zhang", "lenet", 1000, [600], [1, 1000], {600: [5e-7, 1e-3]})
  records = [stages | {"platform": a}, middle | {"platform": a}]
  table = table_builders.table3(reproduction, records)
  ((label, cells),) = table.rows
  assert label == "lenet / mnist, b = 1000, T = 1200"
  assert [c.value for c in cells] == [1e-5, 1e-3, 2e-6, 6e-3]
  assert [c.stealthy for c in cells] == [True, False, True, False]
  assert all(c.threshold == 5e-5 for c in cells)
  assert "stealthy (thudi, trace)" in render.to_markdown(table)
  assert (
      "early = steps 0..119 (attacked: 0), late = steps 1080..1199 (attacked: 1199) of T = 1200"
      in render.to_markdown(table)
  )
  rows = list(csv.reader(io.StringIO(render.to_csv(table))))
  assert rows[0][5:9] == [
      "early, 1/b threshold",
      "early, 1/b stealthy",
      "early, 1/b attack",
      "early, 1/b batch",
  ]
  assert rows[1][5:9] == [repr(5e-5), "true", "thudi", "trace"]

  ((fig2,),) = figure_panels.figure2_panels(reproduction, records).panels
  (series,) = fig2.series
  assert series.x == (0.001, 1.0) and series.minimum == (1e-6, 2e-3) and fig2.threshold == 5e-5
  fig3 = figure_panels.figure3_panels(reproduction, records)
  assert [title.split(":")[0] for title in fig3.row_titles] == ["trace batches"]
  ((fig3,),) = fig3.panels
  assert [s.x for s in fig3.series] == [(0, 600, 1199)] * 2
  ((fig6,),) = figure_panels.figure6_panels(reproduction, records).panels
  assert [s.label for s in fig6.series] == ["Thudi", "Zhang"]
  assert fig6.series[1].minimum == (5e-7, 1e-3)


def test_report_judges_stealth_at_the_same_platform_and_the_cross_platform_threshold(fingerprints):
  a, c = fingerprints["a"], fingerprints["c"]
  reproduction = [_record("r1", "lenet", 100, a, a, 1e-7), _record("r2", "lenet", 100, a, c, 5e-5)]
  attack = _attack(
      "s", "thudi", "lenet", 1000, [0, 1199], [1, 1000], {0: [1e-5, 1e-3], 1199: [5e-8, 6e-3]}
  ) | {"platform": a}
  for entry in attack["results"]:
    entry["label"] = "1/b" if entry["num_replaced"] == 1 else "1"
  lines = "\n".join(report_lib._attack_findings(reproduction, [attack]))
  assert lines.index("fraction 1/b: 5.00e-08") < lines.index("fraction 1: 1.00e-03 (1e-03) (step 0")
  assert "fraction 1/b: 5.00e-08 (1e-08) (step 1199; 2 step(s) attacked)" in lines
  assert "threshold 1.00e-07 (1e-07) = same platform" in lines
  assert "1 of 2 stealthy: thudi b=1000 fraction 1/b (5.00e-08 (1e-08))." in lines
  assert "threshold 5.00e-05 (1e-05) = any measured platform pair" in lines
  findings = "\n".join(report_lib._reproduction_findings(reproduction))
  assert f"{platforms.platform_label(a)} -> {platforms.platform_label(c)}: 5.00e-05" in findings


def test_a_result_lacking_a_field_is_refused_by_name(fingerprints, tmp_path):
  record = _record("r", "lenet", 100, fingerprints["a"], copy.deepcopy(fingerprints["a"]), 0.0)
  del record["folder"], record["platform"]["id"]
  (tmp_path / "r").mkdir()
  (tmp_path / "r" / "result.json").write_text(json.dumps(record))
  with pytest.raises(errors.ForgingError, match=r"r/result.json has no platform.id: it was edited"):
    saved_results.find_results([str(tmp_path)])


def test_results_of_version_0_1_0_render_the_same_tables_without_tensorflow(
    old_smoke_run, tmp_path, assert_old_tables
):
  """forging-tables reads records as an earlier version wrote them (no kind for Table IV, the
  recomputing platform under another name, ...), and renders without loading TensorFlow."""
  out = tmp_path / "report"
  script = (
      "import runpy, sys\n"
      f"sys.argv = ['forging-tables', '--results={old_smoke_run}/results', '--out={out}']\n"
      "try:\n"
      "  runpy.run_module('forging_tf.report.tables', run_name='__main__')\n"
      "except SystemExit as e:\n"
      "  assert not e.code, e.code\n"
      "print('loaded:', sorted({'tensorflow', 'keras', 'zarr'} & set(sys.modules)))\n"
  )
  result = subprocess.run(
      [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().splitlines()[-1] == "loaded: []"
  assert_old_tables(os.path.join(old_smoke_run, "report"), str(out))
  # The p99 beside each cell: of the saved per-step distances (no distribution recorded then).
  table2b = list(csv.reader(io.StringIO((out / "table2b.csv").read_text())))
  assert table2b[0] == [
      "generated on \\ recomputed on",
      "cpu/tdef/dnn/det",
      "cpu/tdef/nodnn/det",
      "cpu/tdef/dnn/det p99",
      "cpu/tdef/nodnn/det p99",
  ]
  with open(f"{old_smoke_run}/results/repro/lenet_b100_T6_cpu__on__cpu-nodnn/summary.json") as f:
    saved = json.load(f)
  assert "distribution" not in saved
  assert float(table2b[1][4]) == distribution.summary_distribution(saved)["p99"]
  assert "| 3.83e-08 (1e-08); p99 3.78e-08 |" in (out / "table2b.md").read_text()
  report = (out / "REPORT.md").read_text()
  assert "Brute force (Table IV):** 2 of 2 cells decided" in report
  assert "cpu/tdef/dnn/det -> cpu/tdef/nodnn/det: 3.83e-08" in report


def test_platforms_are_described_with_their_widest_simd(fingerprints):
  """Two CPUs of one model name can differ in AVX-512, and so in float order and speed."""
  assert platforms.widest_simd(["avx", "avx2", "avx512f", "fma"]) == "AVX-512"
  assert platforms.widest_simd(["avx", "avx2", "fma", "sse4_2"]) == "AVX2"
  assert platforms.widest_simd(["asimd"]) == "NEON"
  description = platforms.describe_platform(fingerprints["a"])
  assert (
      f"logical cores, {platforms.widest_simd(fingerprints['a']['hardware']['cpu']['simd_flags'])})"
      in description
  )


def _summary(per_step: list[float], recorded: bool, by_variable: dict | None = None) -> dict:
  """A forging-recompute summary.json: with its distribution recorded (as written now) or not (as
  written before), and by_variable: variables, max_l2_per_variable, worst_step_variable_share."""
  summary = {
      "eps_repr": max(per_step),
      "steps": list(range(len(per_step))),
      "max_l2_per_step": per_step,
      "max_linf_per_step": per_step,
      "repeats": 2,
  }
  if recorded:
    summary["distribution"] = {
        "over_repeats": distribution.step_distribution(per_step),
        "per_repeat": [distribution.step_distribution(per_step)] * 2,
    }
    summary["update_l2_per_step"] = [1e-3] * len(per_step)
  return summary | (by_variable or {})


def _write_result(root, folder: str, record: dict, summary: dict | None) -> None:
  os.makedirs(root / folder)
  (root / folder / "result.json").write_text(
      json.dumps({k: v for k, v in record.items() if k != "folder"})
  )
  if summary is not None:
    (root / folder / "summary.json").write_text(json.dumps(summary))


_STEPS = [1e-7] * 150 + [3e-7, 0.0, 2e-5, 1.5e-7]  # 154 steps: a handful of outliers set the max


def test_the_p99_beside_eps_repr_is_the_saved_results_distribution(fingerprints, tmp_path):
  """Tables I and II: beside the largest eps_repr, the largest p99 of the cell's results, as
  summary_distribution reads it from each summary.json (recorded, or from max_l2_per_step)."""
  a, c = fingerprints["a"], fingerprints["c"]
  root = tmp_path / "results"
  cross = _summary(_STEPS, recorded=True)
  old = _summary([0.0, 4e-8, 1e-8], recorded=False)
  wider = _summary([5e-8] * 9 + [1e-5], recorded=False)  # smaller max, larger p99
  _write_result(root, "cross", _record("", "lenet", 100, a, c, cross["eps_repr"]), cross)
  _write_result(root, "same/1", _record("", "lenet", 100, a, a, old["eps_repr"]), old)
  _write_result(root, "same/2", _record("", "lenet", 100, a, a, 1e-5), wider)
  _write_result(root, "none", _record("", "vggmini", 100, a, a, 3e-7, steps=20), None)
  found = saved_results.find_results([str(root)])
  table1 = table_builders.table1(found.reproduction)
  table2b = table_builders.table2(found.reproduction, "b")

  rows = list(csv.reader(io.StringIO(render.to_csv(table2b))))
  column = rows[0].index(f"{platforms.platform_label(c)} p99")
  row = next(r for r in rows if r[0] == platforms.platform_label(a))
  assert float(row[column]) == distribution.summary_distribution(cross)["p99"]
  assert float(row[column]) == pytest.approx(1.5e-7, rel=0.5)  # the outliers do not set it
  assert "2.00e-05 (1e-05); p99 " in render.to_markdown(table2b)

  (_, lenet), (_, vgg) = table1.rows
  assert lenet[0].value == 1e-5
  assert (
      lenet[0].p99
      == max(distribution.summary_distribution(s)["p99"] for s in (old, wider))
      == distribution.summary_distribution(wider)["p99"]
  )
  assert vgg[0].value == 3e-7 and vgg[0].p99 is None  # no summary.json: the max alone
  markdown = render.to_markdown(table1)
  assert "3.00e-07 (1e-07); p99 n/a" in markdown and "largest p99 among them" in markdown
  assert "p99 $" in render.to_latex(table1)
  header = next(csv.reader(io.StringIO(render.to_csv(table1))))
  assert header[4:] == ["b = 100 p99", "b = 500 p99", "b = 1000 p99"]

  # Every result with per-step distances, recorded or not, in the distribution table.
  table = table_builders.repro_distribution(found.reproduction)
  by_label = dict(table.rows)
  assert len(by_label) == 3  # the result without a summary.json has no row
  pair = f"{platforms.platform_label(a)} -> {platforms.platform_label(c)}"
  cells = dict(zip(table.columns, by_label[f"LeNet / MNIST b=100: {pair}"]))
  assert cells["steps"].value == len(_STEPS) and cells["max"].value == 2e-5
  assert [cells[f"> {level}"].value for level in ("1e-08", "1e-07", "1e-06", "1e-05")] == [
      153,  # every step but the bitwise one
      3,
      1,
      1,
  ]
  same = [label for label in by_label if label.endswith(")")]
  assert sorted(same) == [  # one platform pair, two results: told apart by folder
      f"LeNet / MNIST b=100: {platforms.platform_label(a)} -> {platforms.platform_label(a)} ({n})"
      for n in ("1", "2")
  ]
  report_lib.render_tables_and_figures(found, str(tmp_path / "report"))
  assert (tmp_path / "report" / "repro_distribution.csv").read_text().count("\n") == 4


def test_the_variable_table_names_the_variable_carrying_the_worst_step(fingerprints, tmp_path):
  """Per result that split its distances by variable: the worst step's largest share, by name."""
  a, c = fingerprints["a"], fingerprints["c"]
  root = tmp_path / "results"
  variables = ["conv1/kernel", "conv1/bias", "dense_1/kernel"]
  split = _summary(
      _STEPS,
      recorded=True,
      by_variable={
          "variables": variables,
          "max_l2_per_variable": [3e-6, 1e-9, 1.9e-5],
          "worst_step_variable_share": [0.2, 0.0001, 0.7999],
      },
  )
  bitwise = _summary(
      [0.0] * 4,
      recorded=True,
      by_variable={
          "variables": variables,
          "max_l2_per_variable": [0.0] * 3,
          "worst_step_variable_share": [0.0] * 3,  # as written when the worst step is bitwise
      },
  )
  record = _record("", "lenet", 100, a, c, split["eps_repr"]) | {"worst": {"step": 152}}
  _write_result(root, "split", record, split)
  _write_result(root, "bitwise", _record("", "lenet", 100, a, a, 0.0), bitwise)
  _write_result(root, "old", _record("", "lenet", 500, a, c, 2e-5), _summary(_STEPS, False))
  found = saved_results.find_results([str(root)])
  table = table_builders.repro_variables(found.reproduction)

  assert len(table.rows) == 2  # the old result did not split its distances by variable
  rows = {label: dict(zip(table.columns, cells)) for label, cells in table.rows}
  pair = f"{platforms.platform_label(a)} -> {platforms.platform_label(c)}"
  cross = rows[f"LeNet / MNIST b=100: {pair}"]
  assert cross["worst step"].value == 152
  assert cross["its largest variable"].text() == "dense_1/kernel"
  assert cross["its share"].text() == "80.0%"
  assert cross["farthest variable"].value == "dense_1/kernel"
  assert cross["p99"].value == distribution.summary_distribution(split)["p99"]
  same = rows[f"LeNet / MNIST b=100: {platforms.platform_label(a)} -> {pair.split(' -> ')[0]}"]
  assert same["its largest variable"].text() == "n/a" and same["max"].text() == "0"
  csv_rows = list(csv.reader(io.StringIO(render.to_csv(table))))
  assert csv_rows[0][2:4] == ["its largest variable", "its share"]
  assert ["dense_1/kernel", "0.7999"] in [row[2:4] for row in csv_rows]
  assert "\\texttt{dense\\_1/kernel}" in render.to_latex(table)


def test_the_reproduction_steps_figure_draws_each_result_and_the_attacks(fingerprints, tmp_path):
  """fig_repro_steps: a row per (model, dataset, b) with per-step distances, the attacks on it
  from their per-run array (or, where it was not kept, the summary's smallest over runs)."""
  a, c = fingerprints["a"], fingerprints["c"]
  root = tmp_path / "results"
  cross = _summary(_STEPS, recorded=True)
  _write_result(root, "repro/cross", _record("", "lenet", 100, a, c, cross["eps_repr"]), cross)
  bitwise = _summary([0.0] * len(_STEPS), recorded=False)
  _write_result(root, "repro/same", _record("", "lenet", 100, a, a, 0.0), bitwise)
  _write_result(root, "repro/old", _record("", "lenet", 1000, a, a, 0.0), None)
  fractions = [
      {"label": "1/b", "num_replaced": 1, "forging_fraction": 0.01},
      {"label": "1", "num_replaced": 100, "forging_fraction": 1.0},
  ]
  for name, attack, steps in (("thudi", "thudi", [0, 77, 153]), ("zhang", "zhang", [77])):
    record = _attack(
        "", attack, "lenet", 100, steps, [1, 100], {s: [2e-6, 3e-3] for s in steps}
    ) | {"platform": a, "forging_fractions": fractions}
    del record["folder"]
    for entry in record["results"]:
      entry["label"] = "1/b" if entry["num_replaced"] == 1 else "1"
    os.makedirs(root / "attacks" / name)
    (root / "attacks" / name / "summary.json").write_text(json.dumps(record))
    if attack == "thudi":  # zhang's per-run array was not kept
      runs = np.full((len(steps), 2, 3), 4e-6)
      runs[:, 1] = 5e-3
      runs[0, 0, 2] = np.nan  # a failed run is left out
      np.save(root / "attacks" / name / "approximation_error.npy", runs)
  found = saved_results.find_results([str(root)])

  (row,) = figure_panels.reproduction_steps_rows(found.reproduction, found.attacks)
  assert row.title == "LeNet / MNIST, b = 100"
  assert [s.distances for s in row.series] == [tuple(bitwise["max_l2_per_step"]), tuple(_STEPS)]
  thudi_1b, thudi_1, zhang_1b, zhang_1 = row.attacks
  assert (thudi_1b.attack, thudi_1b.fraction, thudi_1b.per_run) == ("thudi", "1/b", True)
  assert thudi_1b.steps == (0, 0, 77, 77, 77, 153, 153, 153) and set(thudi_1.errors) == {5e-3}
  assert (zhang_1b.per_run, zhang_1b.steps, zhang_1b.errors) == (False, (77,), (2e-6,))
  assert zhang_1.errors == (3e-3,)

  _, figures = report_lib.render_tables_and_figures(found, str(tmp_path / "report"))
  for extension in ("png", "pdf"):
    path = tmp_path / "report" / f"fig_repro_steps.{extension}"
    assert str(path) in figures and path.stat().st_size > 0
  report = tmp_path / "REPORT.md"
  report_lib.write_report([str(root)], str(tmp_path / "report"), str(report))
  text = report.read_text()
  assert "## Where the reproduction error sits" in text
  assert "(report/fig_repro_steps.png)" in text and "max_l2_per_step of 2 forging-recompute" in text
  assert "Which variable carries the error: not recorded" in text
  assert "## Choosing epsilon" in text and (tmp_path / "report" / "tradeoff.png").stat().st_size


def test_proof_of_learning_coverage_is_read_from_top_q_results(fingerprints, tmp_path):
  a, c = fingerprints["a"], fingerprints["c"]
  root = tmp_path / "results"
  top = _summary([1e-7, 2e-7], recorded=True) | {
      "steps": [3, 17],
      "top_q": 1,
      "steps_per_epoch": 10,
      "candidate_updates": 20,
      "stages": [[0, 10], [10, 20]],
      "recomputed_share_by_stage": [0.1, 0.1],
  }
  _write_result(root, "top1", _record("", "lenet", 100, a, c, 2e-7, steps=20), top)
  everything = _summary([1e-7] * 20, recorded=True)
  _write_result(root, "all", _record("", "lenet", 100, a, c, 1e-7, steps=20), everything)
  table = table_builders.pol_coverage(saved_results.find_results([str(root)]).reproduction)
  ((label, cells),) = table.rows  # the result without --top_q has no row
  assert "(top1)" in label
  assert [cell.text() for cell in cells] == ["1", "10", "2 of 20", "2.00e-07", "10.0%", "10.0%"]
  assert table.columns[-2:] == ("stage 1", "stage 2")


def test_outlier_causes_table_counts_outliers_flips_and_near_ties(fingerprints, tmp_path):
  root = tmp_path / "results" / "outliers"
  os.makedirs(root)
  predictor = [
      {
          "platform": side,
          "tolerance": tolerance,
          "outliers_with_near_ties": 2 if side == "recomputer" else 9,
          "outliers_without": 1,
          "others_with_near_ties": 40 if tolerance == 16.0 else 7,
          "others_without": 57,
      }
      for tolerance in (1.0, 16.0)
      for side in ("recomputer", "generator")
  ]
  record = results.header(results.ResultKind.OUTLIER_CAUSES, "cmd", None) | {
      "reproduction": {
          "trace": {"model": "lenet", "dataset": "mnist", "batch_size": 100},
          "generator_platform": "a" * 12,
          "recomputer_platform": "c" * 12,
      },
      "outlier_factor": 10.0,
      "median_distance": 1e-7,
      "steps": 100,
      "table": {
          "outliers": 3,
          "others": 97,
          "outliers_with_flips": 3,
          "others_with_flips": 5,
          "flips_by_layer_at_outliers": {"conv1": 0, "pool2": 3},
          "near_ties_predictor": predictor,
      },
  }
  (root / "summary.json").write_text(json.dumps(record))
  found = saved_results.find_results([str(tmp_path / "results")])
  table = table_builders.outlier_causes(list(found.outliers))
  ((label, cells),) = table.rows
  assert label == "LeNet / MNIST b=100: aaaaaa -> cccccc"
  assert [cell.text() for cell in cells] == [
      *("100", "1.00e-07", "3", "3", "pool2 3", "5"),
      *("2", "7", "2", "40"),  # at 1 and at 16 roundings
  ]


def _margin_attack(attack, margin, step_errors, fractions=(1,), b=100, manifest="lenet-b100-T1200"):
  """An attack summary of forging-attack 0.2 on LeNet b=100 T=1200 at margin D = `margin` grey
  levels: step_errors[step][k], the smallest error at fractions[k] (m replaced); the float64 error
  is 0.9 x it and the margin reached D + 0.5 (the paper's attacks: 1000)."""
  steps = sorted(step_errors)
  record = _attack("", attack, "lenet", b, steps, list(fractions), step_errors)
  del record["folder"]
  record["settings"] |= {"min_distance": float(margin), "search_iterations": 100}
  record["trace"]["manifest_sha256"] = manifest
  record["forging_fractions"] = [
      {"label": "1/b" if m == 1 else f"{m / b:g}", "num_replaced": m, "forging_fraction": m / b}
      for m in fractions
  ]
  for entry in record["results"]:
    entry["label"] = "1/b" if entry["num_replaced"] == 1 else f"{entry['forging_fraction']:g}"
    entry["min_approximation_error_float64"] = 0.9 * entry["min_approximation_error"]
    entry["min_margin"] = margin + 0.5 if margin else 1000.0
  return record


def _write_attack(root, folder: str, record: dict) -> None:
  os.makedirs(root / folder)
  (root / folder / "summary.json").write_text(json.dumps(record))


# Figure 7's records: the paper's attacks at D = 0 and the searches at several margins, at the
# middle step (600) at 1/b, and perturb alone early (step 120) at 1/b and 0.1.
_MARGIN_RECORDS = {
    "thudi_D0": ("thudi", 0, {600: [4e-5]}),
    "zhang_D0": ("zhang", 0, {600: [4e-4]}),
    "perturb_D1": ("perturb", 1, {600: [5e-8]}),  # stealthy at both thresholds
    "perturb_D64": ("perturb", 64, {600: [1e-5]}),  # stealthy across platforms only
    "perturb_D1024": ("perturb", 1024, {600: [4e-4]}),  # caught
    "gradmatch_D1": ("gradmatch", 1, {600: [3e-5]}),
    "gradmatch_D64": ("gradmatch", 64, {600: [2e-4]}),
}


def test_figure7_draws_each_attack_against_the_margin_and_its_table_holds_the_records_numbers(
    fingerprints, tmp_path
):
  a, c = fingerprints["a"], fingerprints["c"]
  root = tmp_path / "results"
  for folder, b, recomputer, eps in (
      ("same", 100, a, 1e-7),
      ("cross", 100, c, 5e-5),
      ("b1000", 1000, c, 1.0),  # another b: not Figure 7's threshold
  ):
    record = _record("", "lenet", b, a, recomputer, eps)
    _write_result(root, f"repro/{folder}", record, _summary([eps] * 4, recorded=True))
  for folder, (attack, margin, errors_by_step) in _MARGIN_RECORDS.items():
    _write_attack(root, folder, _margin_attack(attack, margin, errors_by_step) | {"platform": a})
  early = _margin_attack("perturb", 16, {120: [2e-6, 3e-4]}, fractions=(1, 10))
  _write_attack(root, "perturb_D16_early", early | {"platform": a})
  # The paper's attacks join a panel only on the same trace, and make none of their own.
  other = _margin_attack("thudi", 0, {600: [1e-9]}, manifest="another trace")
  _write_attack(root, "thudi_other_trace", other | {"platform": a})
  _write_attack(root, "thudi_late", _margin_attack("thudi", 0, {1080: [1e-9]}) | {"platform": a})
  found = saved_results.find_results([str(root)])

  panels = margin_figure.margin_panels(found.reproduction, found.attacks)
  assert [(p.setting.fraction, p.setting.stage_label()) for p in panels] == [
      ("1/b", "early (step 120 of 1200)"),
      ("1/b", "middle (step 600 of 1200)"),
      ("0.1", "early (step 120 of 1200)"),
  ]
  middle = panels[1]
  assert middle.thresholds == saved_results.Thresholds(1e-7, 5e-5)  # LeNet b=100's, not b=1000's
  assert [(p.attack, p.min_distance, p.paper) for p in middle.points] == [
      ("thudi", 0.0, True),
      ("zhang", 0.0, True),
      ("perturb", 1.0, False),
      ("perturb", 64.0, False),
      ("perturb", 1024.0, False),
      ("gradmatch", 1.0, False),
      ("gradmatch", 64.0, False),
  ]
  assert [p.folders for p in middle.points][:2] == [("thudi_D0",), ("zhang_D0",)]

  table = margin_figure.margin_table(panels, found.attacks)
  rows = [dict(zip(table.columns, cells)) for _, cells in table.rows]
  assert len(rows) == 1 + 7 + 1  # a row per panel and point
  for row in rows[1:8]:
    attack, margin = row["attack"].value, row["D (grey levels)"].value
    folder = f"{attack}_D{margin.split()[0]}"
    (entry,) = _margin_attack(*_MARGIN_RECORDS[folder])["results"]
    assert row["smallest error (float32 SGD step)"].value == entry["min_approximation_error"]
    assert row["float64 error"].value == entry["min_approximation_error_float64"]
    assert row["margin reached (grey levels)"].value == entry["min_margin"]
  verdicts = {
      (row["attack"].value, row["D (grey levels)"].value): (
          row["stealthy at same-platform"].stealthy,
          row["stealthy at cross-platform"].stealthy,
      )
      for row in rows[1:8]
  }
  assert verdicts[("perturb", "1")] == (True, True)
  assert verdicts[("perturb", "64")] == (False, True)
  assert verdicts[("perturb", "1024")] == (False, False)
  assert verdicts[("thudi", "0 (real images)")] == (False, True)
  markdown = render.to_markdown(table)
  assert "| LeNet / MNIST, b = 100 | 1/b | middle (step 600 of 1200) | perturb | 1 | 5.00e-08" in (
      markdown
  )
  assert "| stealthy (<= 5.00e-05) |" in markdown and "caught (> 1.00e-07)" in markdown
  assert "same-platform threshold 1.00e-07 (1e-07)" in markdown
  csv_rows = list(csv.reader(io.StringIO(render.to_csv(table))))
  assert csv_rows[0][-2:] == [
      "stealthy at same-platform threshold",
      "stealthy at cross-platform threshold",
  ]
  perturb_1 = next(r for r in csv_rows if r[3:5] == ["perturb", "1"])
  assert float(perturb_1[5]) == 5e-8 and perturb_1[8:12] == ["true", "true", "1e-07", "5e-05"]

  report = tmp_path / "REPORT.md"
  report_lib.write_report([str(root)], str(tmp_path / "report"), str(report))
  for name in ("fig7.png", "fig7.pdf", "fig7_table.md", "fig7_table.tex", "fig7_table.csv"):
    assert (tmp_path / "report" / name).stat().st_size > 0
  text = report.read_text()
  section = text[text.index("## Forging against a distinctness margin (Figure 7)") :]
  assert "D = 0 is Definition 1" in section and "at D = 1 grey level" in section
  assert "(report/fig7.png)" in section and "hollow: caught" in section
  assert "LeNet / MNIST, b = 100 (T = 1200): early = step 120, middle = step 600." in section
  # The findings: per attack and D, the settings stealthy at each threshold.
  assert "perturb D = 1: 1 / 1 of 1; perturb D = 16: 0 / 1 of 2; perturb D = 64: 0 / 1 of 1" in text
  # Without a search against a margin, no panel: write_report leaves the section out.
  paper = saved_results.paper_attacks(found.attacks)
  assert sorted(r["folder"] for r in paper) == [
      "thudi_D0",
      "thudi_late",
      "thudi_other_trace",
      "zhang_D0",
  ]
  assert margin_figure.margin_panels(found.reproduction, paper) == []


def test_searches_against_a_margin_leave_table3_and_the_paper_figures_unchanged(
    fingerprints, tmp_path, monkeypatch
):
  """Table III, Figures 2, 3, 6 and R, the findings and "Choosing epsilon" read the paper's
  attacks only: perturb and gradmatch records, and Thudi's at a margin, saved beside them change
  nothing; forging-calibrate counts them as families of their own."""
  # Numbers only: the figures' series are compared below, their drawing is not needed.
  monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda *args, **kwargs: None)
  monkeypatch.setattr(matplotlib.figure.Figure, "tight_layout", lambda *args, **kwargs: None)
  a, c = fingerprints["a"], fingerprints["c"]
  root = tmp_path / "results"
  same, cross = _summary([1e-7] * 20, recorded=True), _summary([3e-5] * 20, recorded=True)
  _write_result(root, "repro/same", _record("", "lenet", 100, a, a, 1e-7, steps=20), same)
  _write_result(root, "repro/cross", _record("", "lenet", 100, a, c, 3e-5, steps=20), cross)
  both = (1, 100)  # fractions 1/b and 1
  paper = {
      "thudi": _margin_attack(
          "thudi", 0, {1: [2e-5, 4e-3], 10: [5e-5, 6e-3], 18: [4e-5, 5e-3]}, both
      ),
      "zhang": _margin_attack("zhang", 0, {10: [4e-4]}),  # 1/b only: a record may miss one
  }
  searches = {
      "perturb_D1": _margin_attack(
          "perturb", 1, {1: [1e-9, 1e-8], 10: [1e-9, 1e-8], 18: [0.0, 0.0]}, both
      ),
      "gradmatch_D1": _margin_attack("gradmatch", 1, {10: [1e-8, 1e-7]}, both),
      "thudi_D16": _margin_attack("thudi", 16, {1: [1e-9, 1e-9], 10: [1e-9, 1e-9]}, both),
  }
  for records in (paper, searches):
    for record in records.values():
      record["trace"] |= {"steps": 20, "manifest_sha256": "lenet-b100-T20"}

  def rendered(out: str) -> dict:
    found = saved_results.find_results([str(root)])
    report_lib.write_report([str(root)], str(tmp_path / out), str(tmp_path / f"{out}.md"))
    text = (tmp_path / f"{out}.md").read_text().replace(f"]({out}/", "](report/")
    findings = text[text.index("## Findings") : text.index("## Platforms")].split("\n- ")
    return {
        "table3": (tmp_path / out / "table3.csv").read_text(),
        "figures": [
            panels(found.reproduction, found.paper_attacks)
            for panels in (
                figure_panels.figure2_panels,
                figure_panels.figure3_panels,
                figure_panels.figure6_panels,
            )
        ]
        + [figure_panels.reproduction_steps_rows(found.reproduction, found.paper_attacks)],
        "findings": [line for line in findings if not line.startswith("**Forging against")],
        "choosing epsilon": text[
            text.index("## Choosing epsilon") : text.index("## Exact forging")
        ].split("## Forging against")[
            0
        ],  # Figure 7's section, if any, follows it
        "tables": sorted(name for name in os.listdir(tmp_path / out) if name.endswith(".csv")),
    }

  for name, record in paper.items():
    _write_attack(root, name, record | {"platform": a})
  before = rendered("before")
  for name, record in searches.items():
    _write_attack(root, name, record | {"platform": a})
    np.save(root / name / "approximation_error.npy", np.full((len(record["steps"]), 2, 3), 1e-9))
  after = rendered("after")

  assert after.pop("tables") == sorted([*before.pop("tables"), "fig7_table.csv"])
  assert after == before
  table3 = list(csv.reader(io.StringIO(before["table3"])))
  assert table3[1][1:5] == ["2e-05", "0.004", "4e-05", "0.005"]  # Thudi's, early and late
  (model,) = calibrate_lib.calibrate([str(root)]).models
  assert {a.attack for a in model.attacks} == {
      "thudi",
      "zhang",
      "perturb D=1",
      "gradmatch D=1",
      "thudi D=16",
  }
  (paper_only,) = calibrate_lib.calibrate([str(root)], paper_attacks_only=True).models
  assert {a.attack for a in paper_only.attacks} == {"thudi", "zhang"}
  for every, only in zip(model.evaluations, paper_only.evaluations):
    assert {k: v for k, v in every.forged.by_attack().items() if k in ("thudi", "zhang")} == (
        only.forged.by_attack()
    )


def _ranged_attack(attack, batch, steps_errors, trace_steps=1200, b=100, runs=3, model="lenet"):
  """An attack summary of forging-attack with settings.batch = batch (None: a record written
  before the setting, which forged the trace's batches) on LeNet (or `model`) b = `b` at eta =
  0.01: steps_errors[step] = (min error at 1/b, min error at 1); mean 2x, max 3x the min."""
  record = _attack("", attack, model, b, sorted(steps_errors), [1, b], steps_errors)
  del record["folder"]
  record["settings"] |= {"runs": runs} | ({} if batch is None else {"batch": batch})
  record["trace"] |= {
      "steps": trace_steps,
      "learning_rate": 0.01,
      "dataset": "mnist" if model == "lenet" else "cifar10",
      "manifest_sha256": f"{model}-b{b}-T{trace_steps}",
  }
  record["forging_fractions"] = [
      {"label": "1/b", "num_replaced": 1, "forging_fraction": 1 / b},
      {"label": "1", "num_replaced": b, "forging_fraction": 1.0},
  ]
  for entry in record["results"]:
    entry["label"] = "1/b" if entry["num_replaced"] == 1 else "1"
  return record


def test_table3_ranges_are_the_first_and_last_tenth_of_training_over_both_batch_modes(
    fingerprints, tmp_path
):
  """Early: steps i < T/10; late: i >= T - T/10; each cell the smallest over every step attacked
  in its range, every run and both batch modes, naming the attack and mode that reached it."""
  assert table_builders.training_ranges(2500) == {
      "early": range(0, 250),
      "late": range(2250, 2500),
  }
  assert table_builders.training_ranges(20) == {"early": range(0, 2), "late": range(18, 20)}
  assert table_builders.training_ranges(6) == {"early": range(0, 1), "late": range(5, 6)}
  a = fingerprints["a"]
  root = tmp_path / "results"
  _write_result(root, "repro", _record("", "lenet", 100, a, a, 1e-7), None)
  records = {
      # T/10 = 120 is not early, 1079 is not late: their tiny errors must not win.
      "thudi_trace": _ranged_attack(
          "thudi",
          None,
          {
              0: [4e-5, 3e-3],
              119: [3e-5, 5e-3],
              120: [1e-12, 1e-12],
              600: [1e-12, 1e-12],
              1079: [1e-12, 1e-12],
              1080: [2e-6, 6e-3],
              1199: [5e-6, 7e-3],
          },
      ),
      "zhang_random": _ranged_attack(
          "zhang", "random", {60: [5e-5, 2e-3], 1150: [8e-8, 9e-3]}, runs=4
      ),
      # Another trace length: a row of its own.
      "thudi_T20": _ranged_attack("thudi", "trace", {1: [1e-4, 1e-2], 10: [1e-12, 1e-12]}, 20),
      # Nothing attacked in either range: no row.
      "thudi_T1000": _ranged_attack("thudi", "trace", {500: [1e-4, 1e-2]}, 1000),
  }
  for name, record in records.items():
    _write_attack(root, name, record | {"platform": a})
  found = saved_results.find_results([str(root)])
  table = table_builders.table3(found.reproduction, found.paper_attacks)

  labels = [label for label, _ in table.rows]
  assert labels == ["lenet / mnist, b = 100, T = 20", "lenet / mnist, b = 100, T = 1200"]
  cells = dict(zip(table.columns, table.rows[1][1]))
  assert {column: cell.value for column, cell in cells.items()} == {
      "early, 1/b": 3e-5,
      "early, 1": 2e-3,
      "late, 1/b": 8e-8,
      "late, 1": 6e-3,
  }
  assert [(cell.attack, cell.batch) for cell in cells.values()] == [
      ("thudi", "trace"),
      ("zhang", "random"),
      ("zhang", "random"),
      ("thudi", "trace"),
  ]
  assert cells["late, 1/b"].stealthy and cells["late, 1/b"].sources == (
      "thudi_trace",
      "zhang_random",
  )
  assert cells["early, 1"].text() == "2.00e-03 (1e-03), caught (zhang, random)"
  short = dict(zip(table.columns, table.rows[0][1]))
  assert short["early, 1/b"].value == 1e-4 and short["late, 1/b"].value is None
  markdown = render.to_markdown(table)
  assert (
      "lenet / mnist, b = 100, T = 1200: early = steps 0..119 (attacked: 0, 60, 119), late = "
      "steps 1080..1199 (attacked: 1080, 1150, 1199) of T = 1200; threshold" in markdown
  )
  assert "early = steps 0..1 (attacked: 1), late = steps 18..19 (attacked: none) of T = 20" in (
      markdown
  )
  assert "early (the first 10% of the training steps) and late (the last 10%)" in table.title


def test_figure3_is_a_grid_of_batch_modes_with_a_line_per_true_batch(fingerprints, tmp_path):
  """A row per batch mode (random first), a column per (model, b, T) shared by both modes where
  both reached it at 3+ steps; each run of approximation_error.npy is one line; a record without
  the array draws its mean and band. Figures 2 and 6 read the trace-mode records only."""
  a = fingerprints["a"]
  root = tmp_path / "results"
  same = _summary([1e-7] * 20, recorded=True)
  _write_result(root, "repro", _record("", "lenet", 100, a, a, 1e-7, steps=20), same)
  steps = {0: [1e-5, 1e-3], 5: [2e-5, 2e-3], 10: [3e-5, 3e-3], 19: [4e-5, 4e-3]}
  records = {
      "random": _ranged_attack("thudi", "random", steps, trace_steps=20, runs=3),
      "trace": _ranged_attack("thudi", "trace", {s: steps[s] for s in (0, 10, 19)}, 20, runs=2),
      # A larger b reached by the trace mode alone: not the shared column.
      "trace_b1000": _ranged_attack("thudi", "trace", steps, trace_steps=20, b=1000),
      "vgg_trace": _ranged_attack("thudi", "trace", steps, trace_steps=20, model="vggmini"),
      "zhang_random": _ranged_attack("zhang", "random", steps, trace_steps=20),
  }
  arrays = {}
  for name, record in records.items():
    _write_attack(root, name, record | {"platform": a})
    if name in ("random", "trace"):
      runs = record["settings"]["runs"]
      arrays[name] = (
          np.arange(len(record["steps"]) * 2 * runs, dtype=np.float64).reshape(
              len(record["steps"]), 2, runs
          )
          * 1e-6
          + 1e-6
      )
      np.save(root / name / "approximation_error.npy", arrays[name])
  found = saved_results.find_results([str(root)])

  grid = figure_panels.figure3_panels(found.reproduction, found.paper_attacks)
  assert grid.row_titles[0].startswith("random batches: the paper's design")
  assert grid.row_titles[1].startswith("trace batches: the trace's own B_i")
  (random_lenet, random_vgg), (trace_lenet, trace_vgg) = grid.panels
  assert random_vgg is None and trace_vgg.title == "VGGmini / CIFAR-10, b = 100, T = 20"
  assert random_lenet.title == trace_lenet.title == "LeNet / MNIST, b = 100, T = 20"
  assert random_lenet.threshold == 1e-7
  one_over_b, whole = random_lenet.series
  assert (one_over_b.label, whole.label) == ("fraction 1/b", "fraction 1")
  assert one_over_b.x == (0, 5, 10, 19) and len(one_over_b.runs) == 3
  for r, run in enumerate(whole.runs):  # run r of the true batch B_r, over the attacked steps
    assert run == tuple(arrays["random"][:, 1, r])
  assert [len(s.runs) for s in trace_lenet.series] == [2, 2]
  assert trace_vgg.series[0].runs == () and trace_vgg.series[0].mean == (2e-5, 4e-5, 6e-5, 8e-5)

  paths = plotting.approximation_error_figure(
      grid, str(tmp_path / "fig3"), "training step", False, "caption"
  )
  assert all(os.path.getsize(path) > 0 for path in paths)
  # Figures 2 and 6 read the middle step of the trace-mode records only.
  random_only = [r for r in found.paper_attacks if saved_results.batch_mode(r) == "random"]
  assert not figure_panels.figure2_panels(found.reproduction, random_only)
  assert not figure_panels.figure6_panels(found.reproduction, random_only)
  report = tmp_path / "out" / "REPORT.md"
  report_lib.write_report([str(root)], str(tmp_path / "out"), str(report))
  assert (
      "*Figure 3: approximation error over training, one line per true batch (Thudi et al.)*"
      in report.read_text()
  )


def test_figures_2_and_6_keep_traces_of_different_lengths_apart(fingerprints):
  """VGGmini b = 100 attacked on a T = 20 and a T = 2500 trace: two lines in Figure 2 and two
  panels in Figure 6, each at its own trace's middle step."""
  a = fingerprints["a"]
  records = []
  for trace_steps in (20, 2500):
    middle = trace_steps // 2
    for attack, error in (("thudi", 1e-4), ("zhang", 2e-4)):
      record = _ranged_attack(
          attack, None, {0: [1e-5, 1e-3], middle: [error, 10 * error]}, trace_steps, model="vggmini"
      )
      records.append(record | {"folder": f"{attack}_{trace_steps}", "platform": a})
  (figure2,) = figure_panels.figure2_panels([], records).panels
  (panel,) = figure2
  assert [s.label for s in panel.series] == [
      "b = 100, T = 20 (step 10)",
      "b = 100, T = 2500 (step 1250)",
  ]
  assert all(s.x == (0.01, 1.0) for s in panel.series)
  (figure6,) = figure_panels.figure6_panels([], records).panels
  assert [p.title for p in figure6] == [
      "VGGmini / CIFAR-10, b = 100, T = 20",
      "VGGmini / CIFAR-10, b = 100, T = 2500",
  ]


def _comparison_rows(table) -> dict[str, list[dict]]:
  rows = {}
  for label, cells in table.rows:
    rows.setdefault(label, []).append(dict(zip(table.columns, cells)))
  return rows


def test_the_comparison_with_the_paper_puts_its_values_beside_ours_and_says_why(
    fingerprints, tmp_path
):
  a, c = fingerprints["a"], fingerprints["c"]
  root = tmp_path / "results"
  cross = _summary([1e-7] * 98 + [2e-6, 5e-5], recorded=True)
  bitwise = _summary([0.0] * 100, recorded=True)
  _write_result(root, "repro/same", _record("", "lenet", 100, a, a, 0.0, steps=100), bitwise)
  _write_result(root, "repro/cross", _record("", "lenet", 100, a, c, 5e-5, steps=100), cross)
  attack = _ranged_attack(
      "thudi", "random", {0: [1e-5, 1e-3], 1199: [2e-6, 6e-3]}, trace_steps=1200
  )
  _write_attack(root, "attack", attack | {"platform": a})
  report = tmp_path / "out" / "REPORT.md"
  report_lib.write_report([str(root)], str(tmp_path / "out"), str(report))
  found = saved_results.find_results([str(root)])
  table = paper_comparison.comparison(found.reproduction, found.paper_attacks)
  rows = _comparison_rows(table)
  why, orders = table.columns[-1], table.columns[-2]
  released, ours = table.columns[2], table.columns[1]

  # Ours 10x smaller than the paper's 1e-4: equal in the released code's scale (eta = 0.01).
  (early,) = rows["Table III: LeNet / MNIST, early, 1/b"]
  assert early[ours].value == 1e-5 and early[released].value == pytest.approx(1e-4)
  assert early[orders].value == pytest.approx(0.0) and early[orders].definition == pytest.approx(-1)
  assert early[orders].text() == "+0.00 (paper's definition: -1.00)"
  assert early[why].text() == (  # exactly one order in the paper's definition: not more
      "within one order of magnitude in both scales (released-code scale (x10 at eta = 0.01): "
      "+0.00 orders, paper's definition: -1.00)"
  )
  assert "thudi, random batches, b = 100, T = 1200, step 0 of early = steps 0..119" in (
      early[ours].text()
  )
  # More than one order apart: the why states the facts.
  (late,) = rows["Table III: LeNet / MNIST, late, 1/b"]
  assert late[orders].value == pytest.approx(math.log10(2e-5 / 1e-7))
  assert "does not close the gap" in late[why].text()
  assert "the paper's value lies outside it: not explained by the measured settings" in (
      late[why].text()
  )
  (across,) = rows["Table II (b): LeNet / MNIST, b = 100, across"]
  assert across[ours].value == 5e-5 and across[orders].value == pytest.approx(math.log10(50))
  assert "oneDNN on vs off" in across[why].text() and "p99 over its 100 steps" in across[why].text()
  assert "2 of the 100 steps exceed the paper's value (1e-06)" in across[why].text()
  (same,) = rows["Table I: LeNet / MNIST, b = 100"]
  assert same[orders].text() == "bitwise (ours 0)" and same[why].text().startswith("bitwise: ")
  (diagonal,) = rows["Table II (b): LeNet / MNIST, b = 100, diagonal"]
  assert diagonal[orders].text() == "0 (both bitwise)"
  # Paper cells with no result of ours.
  for label in ("Table III: VGGmini / CIFAR-10, late, 1", "Table I: VGGmini / CIFAR-10, b = 100"):
    (missing,) = rows[label]
    assert missing[ours].text() == "not measured here" and missing[why].text()
  assert all(
      len(rows[paper.label]) == 1 for paper in paper_comparison.PAPER_VALUES
  )  # one Table III row of LeNet's here

  text = report.read_text()
  assert (
      text.index("## Approximation errors of the attacks")
      < text.index("## Comparison with the paper")
      < text.index("## Choosing epsilon")
  )
  assert "(report/comparison.csv)" not in text and "(./comparison.csv)" in text
  csv_rows = list(csv.reader(io.StringIO((tmp_path / "out" / "comparison.csv").read_text())))
  assert csv_rows[0][:2] == ["paper cell", "paper value (platform)"]
  late_csv = next(r for r in csv_rows if r[0] == "Table III: LeNet / MNIST, late, 1/b")
  assert float(late_csv[1]) == 1e-7 and float(late_csv[2]) == 2e-6


def test_the_report_names_results_relative_to_itself_and_the_version_without_a_command(
    fingerprints, tmp_path
):
  a = fingerprints["a"]
  root = tmp_path / "study" / "results"
  old = _record("", "lenet", 100, a, a, 0.0) | {"package_version": "0.1.0"}
  _write_result(root, "repro/old", old, _summary([0.0] * 4, recorded=True))
  unversioned = _record("", "lenet", 500, a, a, 0.0)
  _write_result(root, "repro/unversioned", unversioned, _summary([0.0] * 4, recorded=True))
  report = tmp_path / "study" / "report" / "REPORT.md"
  report_lib.write_report([str(root)], str(report.parent), str(report))
  text = report.read_text()
  sources = text[text.index("## Where the numbers come from") :]
  assert "Results read from `../results`" in sources and str(tmp_path) not in sources
  assert "- `repro/old`: (no command recorded: written by forging_tf 0.1.0)" in sources
  assert "- `repro/unversioned`: (no command recorded)" in sources
