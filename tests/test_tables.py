"""Tables I and II rendered from saved result records."""

import copy
import csv
import io
import json
import os
import subprocess
import sys

import pytest

from forging_tf import errors
from forging_tf import platform as platform_lib
from forging_tf import results
from forging_tf.report import figure_panels
from forging_tf.report import platforms
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
  assert [t.name for t in tables] == ["table1", "table2b"]  # nothing measured for 2a, 2c
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
      "trace": {"model": model, "dataset": "mnist", "batch_size": b, "steps": 1200},
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
  assert label == "lenet / mnist, b = 1000"
  assert [c.value for c in cells] == [1e-5, 1e-3, 2e-6, 6e-3]
  assert [c.stealthy for c in cells] == [True, False, True, False]
  assert all(c.threshold == 5e-5 for c in cells)
  assert "stealthy (thudi)" in render.to_markdown(table)
  assert "early = step 0, late = step 1199" in render.to_markdown(table)
  rows = list(csv.reader(io.StringIO(render.to_csv(table))))
  assert rows[0][5:7] == ["early, 1/b threshold", "early, 1/b stealthy"]
  assert rows[1][5:7] == [repr(5e-5), "true"]

  fig2 = figure_panels.figure2_panels(reproduction, records)
  (series,) = fig2[0].series
  assert series.x == (0.001, 1.0) and series.minimum == (1e-6, 2e-3) and fig2[0].threshold == 5e-5
  (fig3,) = figure_panels.figure3_panels(reproduction, records)
  assert [s.x for s in fig3.series] == [(0, 600, 1199)] * 2
  (fig6,) = figure_panels.figure6_panels(reproduction, records)
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
    old_smoke_run, tmp_path
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
  old_tables = os.path.join(old_smoke_run, "report")
  for name in sorted(os.listdir(old_tables)):
    with open(os.path.join(old_tables, name)) as f:
      assert (out / name).read_text() == f.read(), name
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
