"""Brute force for Table IV: enumeration, meet-in-the-middle, planted collisions, the binary."""

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from forging_tf import errors
from forging_tf.exact import bruteforce_lib as bf
from forging_tf.exact import dense
from forging_tf.exact import settings as exact_settings


@pytest.fixture(scope="module")
def table_layers():
  return {
      name: dense.dense_layers(*bf.table_model(name, seed=0))
      for name in exact_settings.TABLE_MODELS
  }


def test_pixel_levels_are_evenly_spaced_and_rounded_down():
  assert bf.pixel_levels(2).tolist() == [0, 255]
  assert bf.pixel_levels(3).tolist() == [0, 127, 255]
  assert bf.pixel_levels(5).tolist() == [0, 63, 127, 191, 255]
  assert bf.pixel_levels(6).tolist() == [0, 51, 102, 153, 204, 255]


def test_pool_holds_every_example_once(table_layers):
  pool = bf.make_pool(table_layers["fcn"], 3)
  assert pool.size == 3**4 * 3 == len({(tuple(x), y) for x, y in zip(pool.levels, pool.labels)})
  assert pool.gradients.shape == (243, 4 * 10 + 10 + 10 * 3 + 3)


@pytest.mark.parametrize("n, k", [(9, 1), (9, 4), (12, 5)])
def test_all_subsets_enumerates_each_subset_once_in_any_chunking(n, k):
  rows = np.concatenate(list(bf.all_subsets(n, k, max_rows=7)))
  assert [tuple(r) for r in rows] == list(itertools.combinations(range(n), k))


def test_search_and_enumeration_agree_on_every_cell_of_a_small_table(table_layers):
  for name, layers in table_layers.items():
    for v, sizes in ((2, range(1, 6)), (3, range(1, 3))):
      pool = bf.make_pool(layers, v)
      for b in sizes:
        cell = bf.decide_cell(
            layers,
            pool,
            name,
            b,
            exact_settings.BruteForceSettings(exhaustive_limit=10**7, time_limit_s=60),
        )
        assert cell.decided and cell.cross_check["agree"], (name, v, b)
        assert cell.found == cell.cross_check["found"]
        assert cell.batches == math.comb(pool.size, b)
        assert cell.cross_check["batches_enumerated"] == cell.batches
        assert cell.batches_covered == cell.batches - 1  # every batch but the true one
        assert cell.nearest_miss_exact
        assert cell.nearest_miss == pytest.approx(cell.cross_check["nearest_miss"], rel=1e-9)


def test_a_tight_lookup_budget_still_decides_and_brackets_the_nearest_miss(table_layers):
  layers = table_layers["logreg"]
  pool = bf.make_pool(layers, 2)
  rows = bf.sample_true_batch(pool.size, 5, 0, "logreg", 2)
  tight = bf.meet_in_the_middle(
      pool, "logreg", rows, 1e-10, lookup_budget=50, time_limit_s=60, seed=0
  )
  exact = bf.exhaustive(pool, "logreg", rows, 1e-10)
  assert tight.decided and not tight.found and not exact.found
  assert not tight.nearest_miss_exact
  assert tight.nearest_miss_lower_bound <= exact.nearest_miss
  assert exact.nearest_miss <= tight.nearest_miss * (1 + 1e-12)


def test_a_cell_out_of_time_is_undecided():
  pool, true_rows, _, planted = _planted_pool(np.random.default_rng(0), m=5)
  pool.gradients[planted] += 1e-3
  result = bf.meet_in_the_middle(pool, "planted", true_rows, 1e-10, 2e7, time_limit_s=0.0, seed=0)
  assert not result.decided and not result.found
  assert result.reason.startswith("time limit of 0 s reached in part m=1")
  assert result.batches_covered == 0 and result.nearest_miss is None


def _planted_pool(rng, m, n=30, dimension=12, b=5):
  """Random gradients, with m examples outside the true batch built to sum to m inside it."""
  gradients = rng.standard_normal((n, dimension))
  true_rows = np.sort(rng.choice(n, b, replace=False))
  outside = np.setdiff1d(np.arange(n), true_rows)
  taken, added = rng.choice(b, m, replace=False), rng.choice(outside, m, replace=False)
  gradients[added[-1]] = gradients[true_rows[taken]].sum(axis=0) - gradients[added[:-1]].sum(0)
  pool = bf.Pool(
      v=0, levels=np.zeros((n, 4), np.int64), labels=np.zeros(n, np.int64), gradients=gradients
  )
  forged = sorted(set(true_rows) - set(true_rows[taken]) | set(added))
  return pool, true_rows, forged, added[-1]


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_planted_collision_is_found(m):
  rng = np.random.default_rng(m)
  pool, true_rows, forged, planted = _planted_pool(rng, m)
  for result in (
      bf.meet_in_the_middle(pool, "planted", true_rows, 1e-10, 2e7, 60, seed=0),
      bf.exhaustive(pool, "planted", true_rows, 1e-10),
  ):
    assert result.decided and result.found, result.method
    assert sorted(e["pool_index"] for e in result.collision) == forged
    assert result.nearest_miss < 1e-14
  # Moved off the collision, the planted batch becomes the nearest miss, found exactly.
  pool.gradients[planted] += 1e-6
  search = bf.meet_in_the_middle(pool, "planted", true_rows, 1e-10, 2e7, 60, seed=0)
  exact = bf.exhaustive(pool, "planted", true_rows, 1e-10)
  assert not search.found and not exact.found and search.nearest_miss_exact
  assert search.nearest_miss == pytest.approx(exact.nearest_miss, rel=1e-9)
  assert search.nearest_miss == pytest.approx(1e-6 * np.sqrt(12) / 5, rel=1e-6)


def test_softmax_regression_collides_on_a_parallelogram(table_layers):
  # For L = 1 the gradient sum is sum x f(x)^T - sum_k (sum_{y = k} x) e_k^T (with x = (pixels, 1)):
  # swapping the labels of a + b = c + d between {a, b} and {c, d} keeps it, whatever W is.
  layers = table_layers["logreg"]
  pool = bf.make_pool(layers, 2)
  index = {(tuple(x), y): i for i, (x, y) in enumerate(zip(pool.levels.tolist(), pool.labels))}
  a, b_, c, d = (0, 0, 0, 0), (255, 255, 0, 0), (255, 0, 0, 0), (0, 255, 0, 0)
  true_rows = np.sort(
      [index[a, 0], index[b_, 0], index[c, 1], index[d, 1], index[(255, 255, 255, 255), 2]]
  )
  result = bf.meet_in_the_middle(pool, "logreg", true_rows, 1e-10, 2e7, 60, seed=0)
  assert result.decided and result.found
  forged = sorted(e["pool_index"] for e in result.collision)
  assert forged == sorted(
      [index[a, 1], index[b_, 1], index[c, 0], index[d, 0], index[(255, 255, 255, 255), 2]]
  )
  assert bf.recheck(layers, pool, true_rows, forged) < 1e-15


def test_binary_writes_table(tmp_path):
  out = tmp_path / "table4.json"
  completed = subprocess.run(
      [
          sys.executable,
          "-m",
          "forging_tf.exact.bruteforce",
          f"--out={out}",
          "--models=logreg,fcn",
          "--levels=2",
          "--batch_sizes=1,3",
      ],
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert completed.returncode == 0, completed.stderr[-2000:]
  table = json.loads(out.read_text())
  assert table["kind"] == "forging_tf.table4" and table["complete"]
  assert table["platform"]["id"] and table["method"]["pixel_levels"]["2"] == [0, 255]
  assert table["settings"]["models"] == ["logreg", "fcn"] and table["settings"]["pixels"] == 4
  assert table["command"].startswith("forging-bruteforce --out=")
  cells = table["cells"]
  assert [(c["model"], c["v"], c["b"]) for c in cells] == [
      ("logreg", 2, 1),
      ("logreg", 2, 3),
      ("fcn", 2, 1),
      ("fcn", 2, 3),
  ]
  for cell in cells:
    assert {
        "model",
        "v",
        "b",
        "batches",
        "decided",
        "found",
        "nearest_miss",
        "method",
        "seconds",
    } <= set(cell)
    assert cell["batches"] == math.comb(48, cell["b"]) and cell["decided"]
    assert cell["cross_check"]["agree"]


def test_cells_reject_impossible_settings(table_layers):
  with pytest.raises(errors.ConfigError, match="pixel levels v must be in 2..256"):
    bf.pixel_levels(1)
  pool = bf.make_pool(table_layers["logreg"], 2)
  with pytest.raises(errors.ConfigError, match="unknown method 'guess'"):
    exact_settings.BruteForceSettings(method="guess")
  with pytest.raises(errors.ConfigError, match="unknown Table IV models"):
    exact_settings.BruteForceSettings(models=("lenet",))
  cell = bf.decide_cell(
      table_layers["logreg"],
      pool,
      "logreg",
      5,
      exact_settings.BruteForceSettings(
          method="exhaustive", exhaustive_limit=1000, lookup_budget=1e6, time_limit_s=60
      ),
  )
  assert not cell.decided and "exceed the exhaustive limit" in cell.reason


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--levels=2", "--batch_sizes=1", "--models=logreg", "--out={file}/table4.json"],
            "File exists",
        ),
        (["--levels=2"], "flag --out=None: Flag --out must have a value other than None"),
    ],
)
def test_binary_errors_are_one_line(tmp_path, flags, message):
  (tmp_path / "file").write_text("")
  completed = subprocess.run(
      [
          sys.executable,
          "-m",
          "forging_tf.exact.bruteforce",
          *(f.format(file=tmp_path / "file") for f in flags),
      ],
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  last = completed.stderr.strip().splitlines()[-1]
  assert completed.returncode != 0 and "Traceback" not in completed.stderr
  assert last.startswith("forging-bruteforce: error:") and message in last, last
