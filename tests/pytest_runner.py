"""The main of every py_test in tests/BUILD: runs pytest on one test file.

  pytest_runner.py tests/test_models.py

Bazel gives each test a private TEST_TMPDIR. pytest's tmp_path, Python's tempfile, HOME (keras
and matplotlib write under ~) and Hypothesis's example database all point there, in this process
and in the binaries the tests start, so a test writes nothing outside its sandbox. Ray is the
exception: its AF_UNIX sockets need a path of at most 107 bytes, which TEST_TMPDIR is too deep
for, so it gets a private folder in /tmp, removed afterwards.
"""

import os
import shutil
import sys
import tempfile

import pytest

import forging_tf


def main(test_file: str) -> int:
  scratch = os.environ["TEST_TMPDIR"]
  os.environ["TMPDIR"] = scratch
  os.environ["HOME"] = scratch
  os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = os.path.join(scratch, "hypothesis")
  # The editable pip install would also satisfy `import forging_tf`; a test must exercise the
  # copy in its runfiles, whose missing modules then show as missing BUILD deps.
  if not os.path.abspath(forging_tf.__file__).startswith(os.environ["TEST_SRCDIR"] + os.sep):
    sys.exit(f"forging_tf comes from {forging_tf.__file__}, not from this test's runfiles")
  os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
  try:
    return pytest.main(
        [test_file, f"--basetemp={os.path.join(scratch, 'pytest')}", "-p", "no:cacheprovider"]
    )
  finally:
    shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)


if __name__ == "__main__":
  sys.exit(main(*sys.argv[1:]))
