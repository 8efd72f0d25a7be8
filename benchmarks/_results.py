"""Writes a benchmark's JSON under benchmarks/results/ with the fields every result carries."""

import json
import os
import sys

from forging_tf import platform as platform_lib

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def write(
    name: str,
    ratio: float,
    fast_s: float,
    baseline_s: float,
    settings: dict,
    platform: platform_lib.Platform,
    **measurements,
) -> str:
  result = {
      "name": name,
      "ratio": ratio,
      "fast_s": fast_s,
      "baseline_s": baseline_s,
      **measurements,
      "settings": settings,
      "platform": platform_lib.platform_fingerprint(platform),
      "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
  }
  os.makedirs(RESULTS, exist_ok=True)
  path = os.path.join(RESULTS, f"{name}.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
  print(json.dumps({k: v for k, v in result.items() if k != "platform"}, indent=2))
  return path
