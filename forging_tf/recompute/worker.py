"""One repeat of a recomputation in a fresh process; started by recompute_lib, not by users.

  python -m forging_tf.recompute.worker SPEC.json RESULT.npz

A ForgingError is printed as a last line `error: ...` and exits with status 2, which the parent
turns back into its own one-line error. The parent holds the other end of this process's stdin
(a pipe) while it waits: end-of-file there means the parent is gone, and the worker stops
instead of computing a result nobody will read.
"""

import json
import os
import stat
import sys
import threading

import numpy as np

from forging_tf import errors
from forging_tf import platform as platform_lib
from forging_tf.recompute import recompute_lib


def main(spec_path: str, result_path: str) -> None:
  with open(spec_path, encoding="utf-8") as f:
    spec = json.load(f)
  result = recompute_lib.recompute_repeat(
      spec["trace"],
      platform_lib.Platform(**spec["platform"]),
      np.asarray(spec["steps"], np.int64),
      spec["data_dir"],
      spec["download"],
      model_fn=spec["model_fn"],
      model_fn_paths=spec["model_fn_paths"],
  )
  recompute_lib.save_repeat(result_path, result)


def _exit_when_orphaned() -> None:
  sys.stdin.read()
  os._exit(1)


if __name__ == "__main__":
  if stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):
    threading.Thread(target=_exit_when_orphaned, daemon=True).start()
  try:
    main(*sys.argv[1:])
  except errors.ForgingError as e:
    sys.exit(f"error: {e}")
