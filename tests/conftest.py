"""Shared fixtures. Real data comes from FORGING_TF_DATA (CI: ../shared/data)."""

import csv
import io
import os
import subprocess
import sys

import pytest

from forging_tf import data

# realpath: under Bazel this file is a symlink in the runfiles tree to the one in the checkout.
_REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


@pytest.fixture(scope="session")
def data_dir() -> str:
  path = os.environ.get(data.DATA_DIR_ENV) or os.path.join(_REPO, "..", "shared", "data")
  if not os.path.isdir(os.path.join(path, "mnist")):
    pytest.skip(f"no real data: set {data.DATA_DIR_ENV} to a folder with mnist/ and cifar10/")
  return os.path.abspath(path)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
  """Decoded-data caches go to a fresh folder, so the decode path itself is tested."""
  os.environ[data.CACHE_DIR_ENV] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def mnist(data_dir) -> data.Dataset:
  return data.load_dataset("mnist", data_dir, download=False)


@pytest.fixture(scope="session")
def mnist_3000(mnist) -> data.Dataset:
  """The first 3,000 MNIST training images (and 10 test images): small enough for exact
  neighbours and quick attacks in a test."""
  arrays = (mnist.x_train[:3000], mnist.y_train[:3000], mnist.x_test[:10], mnist.y_test[:10])
  return data.Dataset(
      "mnist", *arrays, mnist.num_classes, "first 3000 of MNIST", data.fingerprint(*arrays)
  )


@pytest.fixture(scope="session")
def cifar10(data_dir) -> data.Dataset:
  return data.load_dataset("cifar10", data_dir, download=False)


@pytest.fixture(scope="session")
def old_smoke_run() -> str:
  """A forging-reproduce --preset=smoke run that forging_tf 0.1.0 (the flat layout) wrote, without
  its traces, logs, figures and dataset images: reproduce.json, progress.json, every result record
  and array, and the tables it rendered, as CSV, in report/."""
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "smoke_run_0.1.0")


@pytest.fixture(scope="session")
def lenet_trace(tmp_path_factory):
  """lenet_trace(dataset, batch_size, steps, k=1, seed=0) -> the path of a LeNet trace trained with
  those settings (train_lib.train_trace), trained once per session and shared: a test that
  changes a trace works on a copy."""
  from forging_tf.train import train_lib  # pylint: disable=import-outside-toplevel

  trained = {}

  def make(dataset: data.Dataset, batch_size: int, steps: int, k: int = 1, seed: int = 0) -> str:
    key = (dataset.fingerprint, batch_size, steps, k, seed)
    if key not in trained:
      path = str(tmp_path_factory.mktemp("traces") / f"lenet_b{batch_size}_T{steps}_k{k}_s{seed}")
      train_lib.train_trace(
          path, "lenet", dataset, batch_size=batch_size, steps=steps, k=k, seed=seed
      )
      trained[key] = path
    return trained[key]

  return make


@pytest.fixture(scope="session")
def other_onednn_trace(data_dir, tmp_path_factory) -> str:
  """A LeNet/MNIST trace (b = 100, T = 6) trained in a process of its own with oneDNN switched to
  the other setting than this process's: recomputing it here changes the float order."""
  from forging_tf import platform as platform_lib  # pylint: disable=import-outside-toplevel

  path = str(tmp_path_factory.mktemp("traces") / "other_onednn")
  onednn = "off" if platform_lib.onednn_enabled() else "on"
  subprocess.run(
      [
          sys.executable,
          "-m",
          "forging_tf.train.train",
          "--model=lenet",
          "--dataset=mnist",
          "--batch_size=100",
          "--steps=6",
          f"--data_dir={data_dir}",
          f"--onednn={onednn}",
          f"--out={path}",
      ],
      check=True,
      capture_output=True,
  )
  return path


@pytest.fixture(scope="session")
def verify_binary():
  """verify_binary(*flags) -> the finished forging-verify process (stdout, stderr as text)."""

  def run(*flags_):
    return subprocess.run(
        [sys.executable, "-m", "forging_tf.verify", *flags_],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

  return run


@pytest.fixture(scope="session")
def csv_without_p99():
  """csv_without_p99(text) -> the CSV table less the p99 columns Tables I and II gained after
  0.1.0, for comparing with tables that version rendered."""

  def strip(table_csv: str) -> str:
    rows = list(csv.reader(io.StringIO(table_csv)))
    keep = [i for i, column in enumerate(rows[0]) if not column.endswith(" p99")]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([[row[i] for i in keep] for row in rows])
    return out.getvalue()

  return strip


@pytest.fixture(scope="session")
def assert_old_tables(csv_without_p99):
  """assert_old_tables(old_dir, new_dir): every CSV table that forging_tf 0.1.0 rendered into
  old_dir (the smoke run's, T = 6) holds the same numbers in new_dir, less the p99 columns; Table
  III's rows now also name T and each cell the attack and batch mode that reached it."""

  def check(old_dir: str, new_dir: str) -> None:
    for name in sorted(os.listdir(old_dir)):
      with open(os.path.join(old_dir, name)) as f:
        old = f.read()
      with open(os.path.join(new_dir, name)) as f:
        new = csv_without_p99(f.read())
      if name != "table3.csv":
        assert new == old, name
        continue
      old_rows, new_rows = (list(csv.reader(io.StringIO(text))) for text in (old, new))
      assert [row[0] + ", T = 6" for row in old_rows[1:]] == [row[0] for row in new_rows[1:]]
      new_columns = {column: i for i, column in enumerate(new_rows[0])}
      for old_row, new_row in zip(old_rows[1:], new_rows[1:]):
        assert old_row[1:] == [new_row[new_columns[column]] for column in old_rows[0][1:]]
        assert new_row[new_columns["late, 1 attack"]] == "thudi"
        assert new_row[new_columns["late, 1 batch"]] == "trace"

  return check
