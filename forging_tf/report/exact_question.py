"""REPORT.md's section "The exact in-domain question", from forging-exact's saved records.

Does a distinct batch inside the domain (pixels on the 8-bit grid, one-hot labels) with exactly
the true batch's gradient exist (SPEC sections 6 and 8)? Two kinds of record answer: dead_units
(training examples whose first-layer units are all inactive, at checkpoints of a trace, and the
exact swap of two of one class, played by the verifier at epsilon 0) and domain (the in-domain
search, at theta_0 or at a trained checkpoint). Every number comes from a record; exactness is the
float64 error, since the float32 SGD step rounds theta at ~6e-8 |theta|. No TensorFlow here.
"""

import os
from collections.abc import Sequence

from forging_tf import errors
from forging_tf import results
from forging_tf.report import platforms

_KIND = results.ResultKind.EXACT_FORGING
# What this section reads of each experiment's record, beyond the header.
_FIELDS = {
    "dead_units": ("model", "dataset", "trace.path", "trace.batch_size", "checkpoints"),
    "domain": (
        "model",
        "dataset",
        "batch_size",
        "seed",
        "learning_rate",
        "theta",
        "attempts",
        "best",
    ),
}
_CHECKPOINT_FIELDS = (
    "step",
    "examples",
    "dead",
    "certainly_dead",
    "classes_with_two",
    "units_never_active",
    "first_layer.name",
    "first_layer.bias_min",
    "first_layer.bias_max",
    "swap.found",
)


def _load(record: dict | str) -> dict:
  """A record given as a loaded dict, its summary.json or its folder; checked for what this
  section reads (a ForgingError that names the record and the field otherwise)."""
  if isinstance(record, str):
    path = os.path.join(record, "summary.json") if os.path.isdir(record) else record
    loaded = results.read_record(path, _KIND)
    loaded.setdefault("path", path)
  elif isinstance(record, dict):
    path = record.get("path", "a record")
    loaded = results.checked_record(record, path, _KIND)
  else:
    raise errors.ConfigError(
        f"an exact-forging record is a dict or a path, not {type(record).__name__}"
    )
  fields = _FIELDS.get(loaded["experiment"], ())
  missing = results.missing_field(loaded, fields)
  if missing is None and loaded["experiment"] == "dead_units":
    missing = next(
        (
            f"checkpoints[].{field}"
            for checkpoint in loaded["checkpoints"]
            for field in [results.missing_field(checkpoint, _CHECKPOINT_FIELDS)]
            if field
        ),
        None,
    )
  if missing:
    raise errors.ForgingError(
        f"{path} has no {missing}: it was written by another version of forging-exact; run "
        "its experiment again or move it out of the way"
    )
  return loaded


def _error(value: float | None) -> str:
  if value is None:
    return "n/a"
  return "0 (exactly)" if value == 0 else f"{value:.2e}"


def _closest(value: float | None) -> str:
  return "n/a" if value is None else f"{value:.3g}"


def _model(record: dict) -> str:
  hidden = record.get("hidden")
  return f"{record['model']} (hidden {hidden})" if hidden else record["model"]


def _trace(identity: dict) -> str:
  return (
      f"`{os.path.basename(identity['path'])}` (b = {identity['batch_size']}, eta = "
      f"{identity.get('learning_rate')}, seed {identity.get('seed')}, T = {identity.get('steps')}"
      f", k = {identity.get('k')})"
  )


def _theta(record: dict) -> str:
  if "checkpoint" in record and "trace" in record:
    return f"checkpoint {record['checkpoint']} of {_trace(record['trace'])}"
  return f"theta_0 (`{record['theta']}`, zero biases)"


def _dead_units_lines(records: list[dict]) -> list[str]:
  lines = [
      "### Dead first layers",
      "",
      "An example whose first-layer ReLU units are all inactive (pre-activation <= 0, where "
      "TensorFlow's ReLU has gradient 0; for a convolution every unit at every position) has "
      "first-layer error delta_1 = 0: its gradient depends on its label only, so two such "
      "examples of one class have the same gradient bit for bit. Proposition 1 (b = 1: equal "
      "gradients imply the same example) needs delta_1 != 0, as its proof assumes. Counted over "
      "the training set: dead in float64, and certainly dead in float32 (the rounding bound of a "
      "float32 sum in any order keeps every unit <= 0). Closest to dead: the smallest, over the "
      "examples, of an example's largest pre-activation.",
      "",
      "| model / data | trace | checkpoint | first-layer biases | dead (float64) | certainly dead "
      "(float32) | classes with two | units never active | closest to dead |",
      "| --- | --- | ---: | --- | ---: | ---: | --- | ---: | ---: |",
  ]
  for record in records:
    for checkpoint in record["checkpoints"]:
      layer = checkpoint["first_layer"]
      lines.append(
          f"| {_model(record)} / {record['dataset']} | {_trace(record['trace'])} | "
          f"{checkpoint['step']} | {layer['name']}: {layer['bias_min']:.3g} .. "
          f"{layer['bias_max']:.3g} | {checkpoint['dead']} of {checkpoint['examples']} | "
          f"{checkpoint['certainly_dead']} | "
          f"{', '.join(map(str, checkpoint['classes_with_two'])) or 'none'} | "
          f"{checkpoint['units_never_active']} | {_closest(checkpoint.get('closest_to_dead'))} |"
      )
  lines += [
      "",
      "### The exact swap, played at epsilon = 0",
      "",
      "From each checkpoint to the next, the first stored step whose batch holds a certainly "
      "dead example with a certainly dead example of its class outside the batch; the one is "
      "swapped for the other, the forgery scored at that step (float32 SGD step; float64 "
      "gradient for a fully connected model) and played by the verifier (forging_game.play, "
      "what forging-verify calls) at epsilon = 0.",
      "",
      "| model / data | steps searched | swap at step | removed -> added (class) | float32 "
      "one-step error | float64 error | in domain, distinct | verifier at epsilon = 0 |",
      "| --- | --- | ---: | --- | ---: | ---: | --- | --- |",
  ]
  for record in records:
    listed = [c["step"] for c in record["checkpoints"]]
    end = record["trace"].get("steps")
    for i, checkpoint in enumerate(record["checkpoints"]):
      swap = checkpoint["swap"]
      stop = listed[i + 1] if i + 1 < len(listed) else end
      if stop is not None and stop <= checkpoint["step"]:
        continue  # The last checkpoint is the end of the trace: no step after it.
      window = f"{checkpoint['step']} .. {stop - 1}" if stop is not None else "?"
      if not swap["found"]:
        searched = swap["steps_searched"]
        lines.append(
            f"| {_model(record)} / {record['dataset']} | {window} | none | no batch held a "
            f"certainly dead example with a partner ({searched} stored "
            f"step{'' if searched == 1 else 's'}) | | | | |"
        )
        continue
      verifier = swap["verifier"]
      lines.append(
          f"| {_model(record)} / {record['dataset']} | {window} | {swap['step']} | "
          f"{swap['removed']} -> {swap['added']} ({swap['label']}) | "
          f"{_error(swap['approximation_error'])} | "
          f"{_error(swap['approximation_error_float64'])} | {swap['in_domain']}, "
          f"{swap['distinct']} | {verifier['decision']}: recomputed theta_"
          f"{verifier['recomputed_to']} from theta_{verifier['recomputed_from']}, error "
          f"{_error(verifier['error'])} |"
      )
  return lines + [""]


def _smallest_float64(record: dict) -> dict | None:
  """The distinct in-domain attempt of smallest float64 error (records before best_float64 was
  written hold every attempt)."""
  if record.get("best_float64") is not None:
    return record["best_float64"]
  valid = [a for a in record["attempts"] if a.get("distinct") and a.get("in_domain")]
  return min(valid, key=lambda a: a["approximation_error_float64"], default=None)


def _attempt(attempt: dict | None) -> str:
  if attempt is None:
    return "none | | "
  changed = attempt.get("pixels_changed")
  what = attempt["method"] + (f" (scale {attempt['scale']:g})" if "scale" in attempt else "")
  what += f", {changed} pixel{'' if changed == 1 else 's'} changed" if changed is not None else ""
  return (
      f"{what} | {_error(attempt['approximation_error'])} | "
      f"{_error(attempt['approximation_error_float64'])}"
  )


def _domain_lines(records: list[dict]) -> list[str]:
  lines = [
      "### The in-domain search at theta_0 and at trained checkpoints",
      "",
      "The same sampled batch at each theta: the LP perturbation of the Prop. 2 space (real "
      "pixels in [0, 1], off the grid), its roundings to the grid, and the MILP over a few "
      "examples and pixels (in the domain). The best in-domain attempt by float32 error and by "
      "float64 error side by side: float32 cannot tell an error of 1e-8 from 0, float64 can.",
      "",
      "| model / data, b | theta | largest bias | LP, off the grid: float32 | float64 | best "
      "in domain by float32 | float32 | float64 | best in domain by float64 | float32 | "
      "float64 |",
      "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: |",
  ]
  for record in records:
    lp = next((a for a in record["attempts"] if a["method"] == "lp_box"), None)
    lp_errors = (
        "none | "
        if lp is None
        else f"{_error(lp['approximation_error'])} | {_error(lp['approximation_error_float64'])}"
    )
    biases = record.get("biases_max_abs")
    lines.append(
        f"| {_model(record)} / {record['dataset']}, b = {record['batch_size']} | "
        f"{_theta(record)} | {'n/a' if biases is None else f'{biases:.3g}'} | {lp_errors} | "
        f"{_attempt(record['best'])} | {_attempt(_smallest_float64(record))} |"
    )
  return lines + [""]


def _settings_lines(records: list[dict]) -> list[str]:
  lines = ["Settings and platforms:", ""]
  for record in records:
    # Records of forging_tf 0.1 have no settings block: what they say at the top level.
    settings = record.get("settings") or {}
    where = record.get("folder") or os.path.dirname(record.get("path", "")) or "a record"
    if record["experiment"] == "domain":
      what = (
          f"domain search, b = {record['batch_size']}, seed {record['seed']}, eta "
          f"{record['learning_rate']}"
      )
      if "milp_examples" in settings:
        what += (
            f", rounding scales {settings['rounding_scales']}, MILP "
            f"{settings['milp_examples']} examples x {settings['milp_pixels']} pixels, "
            f"+-{settings['milp_max_levels']} levels, {settings['milp_time_limit_s']:g} s"
        )
    else:
      what = f"dead units at checkpoints {[c['step'] for c in record['checkpoints']]} of the trace"
    platform = record.get("platform") or {}
    label = platforms.platform_label(platform) if "in_force" in platform else "unknown"
    lines.append(
        f"- `{where}`: {what}; platform `{label}` (id {platform.get('id', '?')}); "
        f"command `{record.get('command')}`."
    )
  fingerprints = [r["platform"] for r in records if (r.get("platform") or {}).get("hardware")]
  lines += [""] + [
      f"- `{label}` (id {platform_id}): {description}."
      for label, platform_id, description in platforms.described_platforms(fingerprints)
  ]
  return lines + [""]


def _conclusion(dead: list[dict], domain: list[dict]) -> list[str]:
  swaps = [
      (record, c["swap"]) for record in dead for c in record["checkpoints"] if c["swap"]["found"]
  ]
  accepted = [s for _, s in swaps if s["verifier"]["decision"] == "ACCEPT"]
  exact = [s for _, s in swaps if s["approximation_error_float64"] == 0]
  lines = []
  for record in dead:
    counts = ", ".join(f"{c['certainly_dead']} at {c['step']}" for c in record["checkpoints"])
    closest = [c["closest_to_dead"] for c in record["checkpoints"] if "closest_to_dead" in c]
    nearest = (
        f"; none at any checkpoint: the nearest example's largest pre-activation is "
        f"{min(closest):.3g}"
        if closest and min(closest) > 0
        else ""
    )
    lines.append(
        f"- Dead first layers, {_model(record)} / {record['dataset']}: certainly dead training "
        f"examples (of {record['checkpoints'][0]['examples']}) at checkpoints: {counts}{nearest}."
    )
  if dead:
    steps = ", ".join(f"{_model(r)} step {s['step']}" for r, s in swaps) or "none"
    lines.append(
        f"- Exact in-domain forgeries by the dead-unit swap: {len(swaps)} found ({steps}); "
        f"{len(exact)} with float64 error exactly 0, {len(accepted)} accepted by the verifier "
        "at epsilon = 0."
    )
  for record in domain:
    smallest = _smallest_float64(record)
    found = (
        "none found."
        if smallest is None
        else f"{_error(smallest['approximation_error_float64'])} ({smallest['method']})."
    )
    lines.append(
        f"- In-domain search at {_theta(record)}: smallest float64 error of a distinct in-domain "
        f"batch: {found}"
    )
  return lines + [""]


def exact_question_lines(records: Sequence[dict | str]) -> list[str]:
  """The Markdown lines of REPORT.md's section "The exact in-domain question".

  Args:
    records: exact-forging records (forging-exact's summary.json), each a loaded dict (as
      saved_results.find_results(...).exact holds them, with "folder" and "path") or the path of
      its summary.json or its folder. Only dead_units and domain records are read; fig4 and fig5
      ones are passed over.

  Returns:
    The section, heading first, ending with an empty line; [] when no dead_units or domain
    record is among `records`.

  Raises:
    ForgingError: a record cannot be read, is not an exact-forging record, or lacks a field this
      section reads (one line, naming it).
  """
  loaded = [_load(record) for record in records]
  dead = sorted(
      (r for r in loaded if r["experiment"] == "dead_units"),
      key=lambda r: (r["model"], r["trace"]["path"]),
  )
  domain = sorted(
      (r for r in loaded if r["experiment"] == "domain"),
      key=lambda r: ("checkpoint" in r, r.get("checkpoint", 0), r.get("path", "")),
  )
  if not dead and not domain:
    return []
  lines = [
      "## The exact in-domain question",
      "",
      "Is there a batch, distinct from the true one and inside the domain (pixels on the 8-bit "
      "grid, one-hot labels), with exactly the true batch's gradient? Exactness is measured by the "
      "float64 error eta ||grad L(B) - grad L(B')||_2 on the batches as constructed: the float32 "
      "SGD step rounds theta at ~6e-8 |theta| and cannot tell an error of 1e-8 from 0.",
      "",
  ]
  lines += _conclusion(dead, domain)
  if dead:
    lines += _dead_units_lines(dead)
  if domain:
    lines += _domain_lines(domain)
  return lines + _settings_lines(dead + domain)
