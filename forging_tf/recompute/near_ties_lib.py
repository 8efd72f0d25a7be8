"""Why a recomputed step jumps: near-ties in the forward pass, seen from one platform.

Another platform sums in another order, so every pre-activation of a recomputed step differs from
the logged one by a few float32 roundings. That moves the update by about as much, except where
the step's derivative is discontinuous within those roundings:
- a ReLU pre-activation z within rounding of 0: the unit's gradient is switched on on one
  platform and off on the other;
- a max-pool window whose two largest inputs are within rounding of each other: the gradient is
  routed to another element.
Either changes the example's gradient by a finite amount, so the update jumps by
eta / b * (that difference), orders of magnitude above the rounding of a sum.

For a step i, its logged batch B_i and theta_i, `near_ties` runs the model's forward pass layer by
layer (the model's own Keras layers, in float32 on this platform, and again in float64) and
measures every such margin in units of its own rounding scale: a ReLU pre-activation's margin is
|z| / (u S), where S = |W| |x| + |b| is the sum of the magnitudes of the terms that make z (any
order of summing n terms lands within gamma_n S of the exact sum; u = 2^-24, float32's unit
roundoff), and a max-pool window's is (top1 - top2) / (u S_max), S_max the larger S of the two.
A window whose largest input is 0 (every input a dead ReLU) has no margin: its gradient is zero
whichever element it is routed to. A margin of S = 0 (z = 0 from all-zero terms) is exact on every
platform, so infinite.

A verifier sees the margins of its own platform only; the masks (ReLU signs, pool choices) are
kept too, so that the same step on two platforms can be compared (`compare`): the units and
windows that flip between them are what actually differs. The float64 pass gives a third
opinion: where float32 disagrees with it, this platform is within rounding of a discontinuity.

Result folder (`forging-near-ties --out=DIR`):
  summary.json  record (kind forging_tf.near_ties): trace, platform, steps, layers, tolerances,
                how many steps have a near-tie at each tolerance, and how many a unit whose
                float32 choice differs from float64
  margins.npz   steps int64 [S]; for every ReLU layer L: count_L int64 [S, C] (margins <= each
                tolerance), min_margin_L float64 [S], relu_mask_L uint8 [S, *] (np.packbits of
                z > 0), flips64_L int64 [S] (units whose float32 sign differs from float64); for
                every max-pool layer the same with pool_argmax_L uint8 [S, windows] (each
                window's argmax) in place of the mask, and exact_ties_L int64 [S]
"""

import contextlib
import dataclasses
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from forging_tf import data
from forging_tf import errors
from forging_tf import platform as platform_lib
from forging_tf import results
from forging_tf import sgd_step
from forging_tf import trace as trace_lib

UNIT_ROUNDOFF = 2.0**-24
# Margins, in units of u S, at or below which a ReLU unit or a pool window counts as a near-tie.
TOLERANCES = (1.0, 4.0, 16.0, 64.0, 256.0)


@dataclasses.dataclass(frozen=True)
class LayerMargins:
  """One ReLU layer's units or one max-pool layer's windows for a batch.

  kind: "relu" or "maxpool"; margin float64 [units] (inf: no tie possible); mask: bool [units]
  (z > 0) for a ReLU, uint8 [units] (the window's argmax) for a pool. A pool window whose two
  largest inputs are exactly equal is an exact tie, not a near one (margin inf): on MNIST's
  blank background every conv1 output is its bias, exactly, on any platform, and its patch of
  zeros gives the kernel no gradient wherever the pool routes it; exact ties are counted apart.
  """

  kind: str
  margin: np.ndarray
  mask: np.ndarray
  exact_ties: int = 0  # pool windows whose two largest inputs are equal (and not 0)


@contextlib.contextmanager
def _linear(layer: keras.layers.Layer):
  """The layer with its activation switched off, so that its pre-activation can be read."""
  activation = layer.activation
  layer.activation = keras.activations.linear
  try:
    yield activation
  finally:
    layer.activation = activation


def _pool_windows(x: np.ndarray, pool: int) -> np.ndarray:
  """[b, h, w, c] -> [b, h', w', c, pool * pool]: the non-overlapping windows of a 'valid' pool."""
  b, h, w, c = x.shape
  h, w = h // pool * pool, w // pool * pool
  windows = x[:, :h, :w].reshape(b, h // pool, pool, w // pool, pool, c)
  return windows.transpose(0, 1, 3, 5, 2, 4).reshape(b, h // pool, w // pool, c, pool * pool)


def _check_supported(model: keras.Model) -> None:
  for layer in model.layers:
    if isinstance(layer, keras.layers.MaxPooling2D) and (
        layer.pool_size[0] != layer.pool_size[1]
        or tuple(layer.strides) != tuple(layer.pool_size)
        or layer.padding != "valid"
    ):
      raise errors.ConfigError(
          f"near-ties are measured for square, non-overlapping 'valid' max-pools; layer "
          f"{layer.name} is not one"
      )


def forward_margins(model: keras.Model, variables: list, x) -> dict[str, LayerMargins]:
  """Margins of every ReLU layer and max-pool layer of `model` for the inputs x.

  Args:
    model: a Sequential Keras model (the package's models; keras.Model.fit models built the same
      way), whose dtype sets the precision of the pass.
    variables: the model's trainable variables in layout order, as tensors of its dtype.
    x: [b, h, w, c] inputs of the model's dtype.

  Returns:
    layer name -> LayerMargins, in layer order.
  """
  _check_supported(model)
  by_layer, offset = {}, 0
  for layer in model.layers:
    count = len(layer.trainable_variables)
    by_layer[layer.name], offset = variables[offset : offset + count], offset + count
  margins, h, scale = {}, x, None
  for layer in model.layers:
    weights = by_layer[layer.name]
    if weights and hasattr(layer, "activation"):
      with _linear(layer) as activation:
        z, _ = layer.stateless_call(weights, [], h)
        scale, _ = layer.stateless_call([tf.abs(w) for w in weights], [], tf.abs(h))
      if activation is keras.activations.relu:
        z_np, s_np = z.numpy().astype(np.float64), scale.numpy().astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
          margin = np.where(s_np > 0, np.abs(z_np) / (UNIT_ROUNDOFF * s_np), np.inf)
        margins[layer.name] = LayerMargins("relu", margin.ravel(), (z_np > 0).ravel())
      h = activation(z)
    elif isinstance(layer, keras.layers.MaxPooling2D):
      pool = int(layer.pool_size[0])
      windows = _pool_windows(h.numpy().astype(np.float64), pool)
      # The largest input of each window (the first of equal ones) and the next largest: where
      # two platforms order them differently, their pools route the gradient differently.
      first = windows.argmax(axis=-1)[..., None]
      rest = windows.copy()
      np.put_along_axis(rest, first, -np.inf, axis=-1)
      second = rest.argmax(axis=-1)[..., None]
      ranked = np.concatenate(
          [np.take_along_axis(windows, i, axis=-1) for i in (first, second)], axis=-1
      )
      if scale is None:
        scale_max = np.abs(ranked).max(axis=-1)
      else:
        scales = _pool_windows(scale.numpy().astype(np.float64), pool)
        scale_max = np.maximum(
            np.take_along_axis(scales, first, axis=-1), np.take_along_axis(scales, second, axis=-1)
        )[..., 0]
      gap = ranked[..., 0] - ranked[..., 1]
      with np.errstate(divide="ignore", invalid="ignore"):
        margin = np.where(
            (ranked[..., 0] != 0) & (gap > 0) & (scale_max > 0),
            gap / (UNIT_ROUNDOFF * scale_max),
            np.inf,
        )
      margins[layer.name] = LayerMargins(
          "maxpool",
          margin.ravel(),
          first[..., 0].astype(np.uint8).ravel(),
          int(np.sum((ranked[..., 0] != 0) & (gap == 0))),
      )
      h = layer(h)
      scale = None if scale is None else layer(scale)
    else:
      h = layer(h)
      scale = None if scale is None else layer(scale)
  return margins


def near_ties(
    trace_path: str,
    out: str,
    steps: np.ndarray | None = None,
    platform: platform_lib.Platform = platform_lib.Platform(),
    data_dir: str | None = None,
    download: bool = True,
    overwrite: bool = False,
    command: str | None = None,
) -> dict:
  """Measures the forward-pass margins of the logged batches at `steps` and writes `out`.

  Args:
    trace_path: a finished trace with the checkpoints theta_i of the steps.
    out: the result folder (module docstring); another result there is refused unless overwrite.
    steps: int64, the steps i (default: every step whose checkpoint is stored).
    platform: this process's platform (applied by the binary before TensorFlow runs).
    data_dir, download: where the trace's dataset comes from.
    overwrite: replace a result at `out`.
    command: the command line to record.

  Returns:
    The record written to out/summary.json.
  """
  results.check_out(out, "summary.json", results.ResultKind.NEAR_TIES, overwrite)
  trace = trace_lib.Trace(trace_path)
  dataset = data.load_described(trace.manifest["dataset"], data_dir, download)
  step_fn = sgd_step.step_for_trace(trace, dataset)
  model64 = sgd_step.float64_model(trace, dataset)
  stored = trace.checkpoint_steps[trace.checkpoint_steps < trace.steps]
  steps = stored if steps is None else np.asarray(steps, np.int64)
  if not np.isin(steps, stored).all():
    raise errors.ConfigError(
        f"steps {sorted(set(steps.tolist()) - set(stored.tolist()))[:5]} have no stored "
        f"checkpoint in {trace.path}; choose steps the trace keeps"
    )
  source = sgd_step.BatchSource(dataset.x_train, dataset.y_train, dataset.num_classes)
  arrays: dict[str, list] = {}
  began = time.perf_counter()
  for s, i in enumerate(steps):
    theta = trace.checkpoint(int(i))
    x, _ = source(trace.batch(int(i)))
    float32 = forward_margins(step_fn.model, step_fn.variables(theta), x)
    variables64 = [tf.cast(v, tf.float64) for v in step_fn.variables(theta)]
    float64 = forward_margins(model64, variables64, tf.cast(x, tf.float64))
    for name, layer in float32.items():
      counts = [int(np.sum(layer.margin <= t)) for t in TOLERANCES]
      mask = (
          (f"relu_mask_{name}", np.packbits(layer.mask))
          if layer.kind == "relu"
          else (f"pool_argmax_{name}", layer.mask)
      )
      for key, value in (
          (f"count_{name}", counts),
          (f"min_margin_{name}", layer.margin.min()),
          mask,
          (f"flips64_{name}", int(np.sum(layer.mask != float64[name].mask))),
          (f"exact_ties_{name}", layer.exact_ties),
      ):
        arrays.setdefault(key, []).append(value)
    if s % 100 == 99:
      logging.info("near-ties: %d/%d steps, %.1f s", s + 1, len(steps), time.perf_counter() - began)
  layers = {name: layer.kind for name, layer in float32.items()}
  saved = {"steps": steps} | {key: np.asarray(values) for key, values in arrays.items()}
  tied_steps = {
      str(tolerance): int(
          np.sum(np.sum([saved[f"count_{name}"][:, t] for name in layers], axis=0) > 0)
      )
      for t, tolerance in enumerate(TOLERANCES)
  }
  flipped_steps = int(np.sum(np.sum([saved[f"flips64_{name}"] for name in layers], axis=0) > 0))
  record = results.header(
      results.ResultKind.NEAR_TIES, command, platform_lib.platform_fingerprint(platform)
  ) | {
      "trace": trace.identity(),
      "steps": steps.tolist(),
      "layers": layers,
      "tolerances": list(TOLERANCES),
      "unit_roundoff": UNIT_ROUNDOFF,
      "steps_with_near_ties": tied_steps,
      "steps_with_float64_flips": flipped_steps,
      "seconds": time.perf_counter() - began,
  }

  def fill(folder: str) -> None:
    np.savez_compressed(os.path.join(folder, "margins.npz"), **saved)
    results.write_json(os.path.join(folder, "summary.json"), record)

  results.write_folder(out, "summary.json", results.ResultKind.NEAR_TIES, fill, overwrite)
  return record


def compare(margins_a: str, margins_b: str) -> dict[str, np.ndarray]:
  """Per step and layer, the ReLU units or pool windows whose choice differs between two
  near-ties results of the same trace and steps (their margins.npz): layer -> int64 [S]."""
  with np.load(margins_a, allow_pickle=False) as a, np.load(margins_b, allow_pickle=False) as b:
    if not np.array_equal(a["steps"], b["steps"]) or set(a.files) != set(b.files):
      raise errors.ConfigError(
          f"{margins_a} and {margins_b} cover different steps or layers; measure the same "
          "steps of the same trace on both platforms"
      )
    flips = {}
    for key in a.files:
      if key.startswith("relu_mask_"):
        differs = np.unpackbits(a[key] ^ b[key], axis=-1)
        flips[key.removeprefix("relu_mask_")] = differs.sum(axis=-1, dtype=np.int64)
      elif key.startswith("pool_argmax_"):
        flips[key.removeprefix("pool_argmax_")] = np.sum(a[key] != b[key], axis=-1, dtype=np.int64)
    return flips


# A recomputed step is an outlier when its distance exceeds this multiple of the median step's.
OUTLIER_FACTOR = 10.0


def _near_ties_counts(margins, layers: dict) -> dict[str, np.ndarray]:
  return {name: margins[f"count_{name}"] for name in layers}


def explain_outliers(
    repro_dir: str,
    near_ties_generator: str,
    near_ties_recomputer: str,
    out: str,
    overwrite: bool = False,
    command: str | None = None,
) -> dict:
  """What makes the outlier steps of a reproduction error jump, from measurements.

  Args:
    repro_dir: a forging-recompute result (local folder): the pair's per-step distances.
    near_ties_generator, near_ties_recomputer: forging-near-ties results of the same trace and
      steps, measured on the trace's generating platform and on the recomputing platform.
    out: the result folder to write: summary.json (kind forging_tf.outlier_causes) and
      per_step.npz (steps, distance, outlier, and per layer flips_L, flips64_L and the near-tie
      counts near_ties_{generator,recomputer}_L [S, tolerances]).
    overwrite: replace a result at `out`.
    command: the command line to record.

  Returns:
    The record: for every outlier step and every step with a flip, its distance, the ReLU units
    and pool windows whose choice differs between the two platforms (and from float64), and the
    variable that carries most of its distance; and the table of outliers against flips and the
    near-ties each platform sees on its own.
  """
  results.check_out(out, "summary.json", results.ResultKind.OUTLIER_CAUSES, overwrite)
  repro = results.read_record(
      os.path.join(repro_dir, "result.json"), results.ResultKind.REPRODUCTION_ERROR
  )
  summary = results.read_json(os.path.join(repro_dir, "summary.json"), "reproduction summary")
  sides = {}
  for side, folder, platform_id in (
      ("generator", near_ties_generator, repro["generator_platform"]["id"]),
      ("recomputer", near_ties_recomputer, repro["platform"]["id"]),
  ):
    record = results.read_record(os.path.join(folder, "summary.json"), results.ResultKind.NEAR_TIES)
    if record["trace"]["manifest_sha256"] != repro["trace"]["manifest_sha256"]:
      raise errors.ConfigError(f"{folder} measured another trace than {repro_dir}'s")
    if record["platform"]["id"] != platform_id:
      raise errors.ConfigError(
          f"{folder} was measured on platform {record['platform']['id']}, not on the pair's "
          f"{side} platform {platform_id}; run forging-near-ties there with its flags"
      )
    sides[side] = record
  steps = np.asarray(summary["steps"])
  measured = np.asarray(sides["recomputer"]["steps"])
  keep = np.isin(steps, measured)
  if not keep.any():
    raise errors.ConfigError(f"the near-ties results cover none of {repro_dir}'s steps")
  steps, distance = steps[keep], np.asarray(summary["max_l2_per_step"])[keep]
  layers = sides["recomputer"]["layers"]
  at = np.searchsorted(measured, steps)
  flips = {
      name: values[at]
      for name, values in compare(
          os.path.join(near_ties_generator, "margins.npz"),
          os.path.join(near_ties_recomputer, "margins.npz"),
      ).items()
  }
  counts = {}
  for side, folder in (("generator", near_ties_generator), ("recomputer", near_ties_recomputer)):
    with np.load(os.path.join(folder, "margins.npz"), allow_pickle=False) as margins:
      counts[side] = {name: c[at] for name, c in _near_ties_counts(margins, layers).items()}
      if side == "recomputer":
        flips64 = {name: margins[f"flips64_{name}"][at] for name in layers}
  median = float(np.median(distance))
  outlier = distance > OUTLIER_FACTOR * median
  flipped = np.sum([flips[name] for name in layers], axis=0) > 0
  carrier = [None] * len(steps)
  distances_file = os.path.join(repro_dir, "distances.npz")
  if "variables" in summary and os.path.exists(distances_file):
    with np.load(distances_file, allow_pickle=False) as saved:
      parts = saved["variable_l2"].max(axis=0)[keep]  # [S, V], the largest repeat per variable
    carrier = [summary["variables"][v] for v in parts.argmax(axis=1)]
  tolerances = sides["recomputer"]["tolerances"]
  predictor = []
  for t, tolerance in enumerate(tolerances):
    for side in ("recomputer", "generator"):
      tied = np.sum([counts[side][name][:, t] for name in layers], axis=0) > 0
      predictor.append(
          {
              "platform": side,
              "tolerance": tolerance,
              "outliers_with_near_ties": int(np.sum(outlier & tied)),
              "outliers_without": int(np.sum(outlier & ~tied)),
              "others_with_near_ties": int(np.sum(~outlier & tied)),
              "others_without": int(np.sum(~outlier & ~tied)),
          }
      )
  flips64_any = np.sum([flips64[name] for name in layers], axis=0) > 0
  explained = [
      {
          "step": int(steps[s]),
          "distance": float(distance[s]),
          "outlier": bool(outlier[s]),
          "flips": {name: int(flips[name][s]) for name in layers if flips[name][s]},
          "flips_vs_float64": {name: int(flips64[name][s]) for name in layers if flips64[name][s]},
          "largest_variable": carrier[s],
      }
      for s in np.flatnonzero(outlier | flipped | flips64_any)
  ]
  per_step = (
      {"steps": steps, "distance": distance, "outlier": outlier}
      | {f"flips_{name}": values for name, values in flips.items()}
      | {f"flips64_{name}": values for name, values in flips64.items()}
      | {
          f"near_ties_{side}_{name}": values
          for side, by_layer in counts.items()
          for name, values in by_layer.items()
      }
  )
  record = results.header(results.ResultKind.OUTLIER_CAUSES, command, None) | {
      "reproduction": {
          "path": repro_dir,
          "trace": repro["trace"],
          "generator_platform": repro["generator_platform"]["id"],
          "recomputer_platform": repro["platform"]["id"],
      },
      "near_ties_platforms": {side: record["platform"]["id"] for side, record in sides.items()},
      "outlier_factor": OUTLIER_FACTOR,
      "median_distance": median,
      "steps": len(steps),
      "tolerances": tolerances,
      "explained_steps": explained,
      "table": {
          "outliers": int(outlier.sum()),
          "others": int((~outlier).sum()),
          "outliers_with_flips": int(np.sum(outlier & flipped)),
          "others_with_flips": int(np.sum(~outlier & flipped)),
          "flips_by_layer_at_outliers": {
              name: int(np.sum(flips[name][outlier] > 0)) for name in layers
          },
          "near_ties_predictor": predictor,
      },
  }

  def fill(folder: str) -> None:
    results.write_npz(os.path.join(folder, "per_step.npz"), **per_step)
    results.write_json(os.path.join(folder, "summary.json"), record)

  results.write_folder(out, "summary.json", results.ResultKind.OUTLIER_CAUSES, fill, overwrite)
  return record
