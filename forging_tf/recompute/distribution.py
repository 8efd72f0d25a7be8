"""The per-step distribution of a reproduction error (no TensorFlow: the report reads it).

eps_repr, the paper's reproduction error, is the largest distance over every recomputed step and
repeat, so a handful of outlier steps set it. A verifier choosing a threshold needs the whole
distribution: its quantiles and how many steps exceed each order of magnitude.
"""

import numpy as np

# The orders of magnitude whose exceedances are counted (keys as written in summary.json).
LEVELS = (1e-8, 1e-7, 1e-6, 1e-5)
QUANTILES = {"median": 0.5, "p90": 0.9, "p99": 0.99}


def level_key(level: float) -> str:
  return f"{level:.0e}"


def step_distribution(distances) -> dict:
  """Quantiles of per-step distances, their max, and how many steps exceed each level.

  Args:
    distances: float [S], one l2 distance per recomputed update.

  Returns:
    {"steps": S, "median", "p90", "p99", "max": float, "above": {"1e-08": count, ...}}; the
    quantiles are numpy's default (linear interpolation between order statistics).
  """
  values = np.asarray(distances, np.float64).ravel()
  if not values.size:
    raise ValueError("a distribution needs at least one step")
  return (
      {"steps": int(values.size)}
      | {name: float(np.quantile(values, q)) for name, q in QUANTILES.items()}
      | {"max": float(values.max())}
      | {"above": {level_key(level): int(np.sum(values > level)) for level in LEVELS}}
  )


def summary_distribution(summary: dict) -> dict:
  """The distribution over repeats (each step's largest distance) of a recompute summary.json.

  Results written before distributions were recorded are read from their max_l2_per_step.
  """
  recorded = summary.get("distribution")
  if recorded:
    return recorded["over_repeats"]
  return step_distribution(summary["max_l2_per_step"])
