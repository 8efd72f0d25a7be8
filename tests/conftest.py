"""Shared fixtures. Real data comes from FORGING_TF_DATA (CI: ../shared/data)."""

import os

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
def cifar10(data_dir) -> data.Dataset:
  return data.load_dataset("cifar10", data_dir, download=False)


@pytest.fixture(scope="session")
def old_smoke_run() -> str:
  """A forging-reproduce --preset=smoke run that forging_tf 0.1.0 (the flat layout) wrote, without
  its traces, logs, figures and dataset images: reproduce.json, progress.json, every result record
  and array, and the tables it rendered, as CSV, in report/."""
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "smoke_run_0.1.0")
