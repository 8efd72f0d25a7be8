"""The exact-forging experiments, run and saved as data (binary: exact.py).

fig4: mini-batch perturbation (Prop. 2) on MNIST with an L = 2 ReLU network; fig5: error-matrix
sampling (Prop. 3) with softmax regression on MNIST and CIFAR-10; domain: the in-domain search on
the fig4 setting. Each samples a batch of training examples and takes theta_0 of its model
(models.initial_parameters), or for domain a checkpoint of a trace that forging-train wrote,
forges, and scores the forgery (scoring.py). dead_units counts the training examples whose
first-layer units are all inactive at checkpoints of a trace and has the verifier play the exact
swap of two of one class (dead_units.py, forging_game.play). `run_experiment` writes the result
folder whole: the record (summary.json), the batches (data.npz) and the figure.
"""

import dataclasses
import os

import keras
import numpy as np

from forging_tf import data as data_lib
from forging_tf import domain
from forging_tf import errors
from forging_tf import forging_game
from forging_tf import models
from forging_tf import platform as platform_lib
from forging_tf import results
from forging_tf import sgd_step
from forging_tf import trace as trace_lib
from forging_tf.exact import dead_units
from forging_tf.exact import in_domain
from forging_tf.exact import propositions
from forging_tf.exact import scoring
from forging_tf.exact import settings as exact_settings
from forging_tf.report import plotting


@dataclasses.dataclass(frozen=True)
class ExperimentResult:
  """A forging experiment's result: JSON-able summary and the arrays to redraw its figure."""

  summary: dict
  arrays: dict[str, np.ndarray]


def sample_batch(dataset: data_lib.Dataset, batch_size: int, seed: int):
  """A batch of distinct training examples: (images [b, h, w, c] uint8, labels [b] int, indices).

  The indices are the first b of a PCG64(seed) permutation of the training set.
  """
  if not 0 < batch_size <= dataset.x_train.shape[0]:
    raise errors.ConfigError(
        f"batch size must be in 1..{dataset.x_train.shape[0]}, got {batch_size}"
    )
  rng = np.random.Generator(np.random.PCG64(seed))
  indices = np.sort(rng.permutation(dataset.x_train.shape[0])[:batch_size])
  return dataset.x_train[indices], dataset.y_train[indices], indices


def _trace_theta(trace: trace_lib.Trace, dataset, model: keras.Model, step: int):
  """theta [P] float32 stored for `step` in `trace`, whose model must be `model` (by name and
  parameter layout) and whose data `dataset`; with what the record says of where it came from."""
  data_lib.check_described(dataset, trace.manifest["dataset"])
  entry = trace.manifest["model"]
  if entry["name"] != model.name or trace.layout != models.parameter_layout(model):
    raise errors.ConfigError(
        f"{trace.path} trains {entry['name']} with {entry['config']}; this experiment needs "
        f"{model.name} with the layout of {[list(s.shape) for s in models.parameter_layout(model)]}"
    )
  theta = trace.checkpoint(step)
  return theta, {
      "theta": f"checkpoint {step} of trace {trace.path}",
      "trace": trace.identity(),
      "checkpoint": step,
      "checkpoint_sha256": trace_lib.sha256_hex(theta),
  }


def _setting(
    dataset,
    model_name: str,
    model_config: dict,
    settings: exact_settings.ExactSettings,
    trace: trace_lib.Trace | None = None,
):
  """The set-up every experiment shares: theta of the model (theta_0, or the checkpoint
  settings.checkpoints[0] of `trace`), its scorer, and the sampled batch (x [b, d] float64 on the
  grid, y [b, n] one-hot, class ids), with what the record says of it."""
  batch_size, seed, learning_rate = settings.batch_size, settings.seed, settings.learning_rate
  model = models.build_model(
      model_name, dataset.x_train.shape[1:], dataset.num_classes, **model_config
  )
  if trace is None:
    theta = models.initial_parameters(models.parameter_layout(model), seed)
    source = {"theta": f"models.initial_parameters(seed={seed})"}
  else:
    theta, source = _trace_theta(trace, dataset, model, settings.checkpoints[0])
  scorer = scoring.ForgeryScorer(model, theta, learning_rate)
  images, labels, indices = sample_batch(dataset, batch_size, seed)
  x = domain.PIXEL_VALUES[images].reshape(batch_size, -1).astype(np.float64)
  y = np.eye(dataset.num_classes)[labels]
  setting = {
      "dataset": dataset.name,
      "dataset_fingerprint": dataset.fingerprint,
      "model": model_name,
      **model_config,
      "num_parameters": scorer.step.num_parameters,
      "batch_size": batch_size,
      "seed": seed,
      "learning_rate": learning_rate,
      **source,
      # theta_0's biases are 0; a trained checkpoint's are not (the dead-unit case depends on it).
      "biases_max_abs": max(
          (float(np.abs(layer.bias).max()) for layer in scorer.layers if layer.bias is not None),
          default=0.0,
      ),
      "batch_indices": indices.tolist(),
  }
  return scorer, x, y, labels, setting


def fig4_experiment(
    dataset: data_lib.Dataset, settings: exact_settings.ExactSettings
) -> ExperimentResult:
  """Fig. 4: Prop. 2 on a ReLU network with one hidden layer of settings.hidden units (L = 2)."""
  scorer, x, y, labels, setting = _setting(dataset, "fcn", {"hidden": [settings.hidden]}, settings)
  rng = np.random.Generator(np.random.PCG64(settings.seed))
  p, space = propositions.mini_batch_perturbation(
      scorer.layers, x, y, rng, settings.perturbation_scale
  )
  score = scorer.score(x, y, x + p, y)
  shape = dataset.x_train.shape[1:]
  summary = {
      "experiment": "fig4",
      "method": "mini-batch perturbation (Prop. 2)",
      **setting,
      "perturbation_scale": settings.perturbation_scale,
      "solution_space": space.as_dict(),
      **score.as_dict(),
  }
  arrays = {
      "original": x.reshape((-1,) + shape).astype(np.float32),
      "forged": (x + p).reshape((-1,) + shape).astype(np.float32),
      "labels": labels.astype(np.int32),
      "forged_labels": labels.astype(np.int32),
  }
  return ExperimentResult(summary, arrays)


def fig5_experiment(datasets, settings: exact_settings.ExactSettings) -> ExperimentResult:
  """Fig. 5: Prop. 3 (error-matrix sampling) with softmax regression on each dataset."""
  per_dataset, arrays = {}, {}
  for dataset in datasets:
    scorer, x, y, labels, setting = _setting(
        dataset, "logreg", {"use_bias": settings.use_bias}, settings
    )
    rng = np.random.Generator(np.random.PCG64(settings.seed))
    forgery = propositions.error_matrix_sampling(
        scorer.layers, x, y, rng, settings.error_matrix_scale
    )
    score = scorer.score(x, y, forgery.x, forgery.y)
    per_dataset[dataset.name] = {
        **setting,
        "rank_gradient": forgery.rank_gradient,
        "rank_forged_errors": forgery.rank_forged_errors,
        "solve_residual": forgery.residual,
        "forged_label_rows_sum": [
            float(forgery.y.sum(axis=1).min()),
            float(forgery.y.sum(axis=1).max()),
        ],
        **score.as_dict(),
    }
    shape = dataset.x_train.shape[1:]
    arrays[f"{dataset.name}_original"] = x.reshape((-1,) + shape).astype(np.float32)
    arrays[f"{dataset.name}_forged"] = forgery.x.reshape((-1,) + shape).astype(np.float32)
    arrays[f"{dataset.name}_labels"] = labels.astype(np.int32)
    arrays[f"{dataset.name}_forged_labels"] = forgery.y.astype(np.float32)
  summary = {
      "experiment": "fig5",
      "method": "error-matrix sampling (Prop. 3)",
      "error_matrix_scale": settings.error_matrix_scale,
      "datasets": per_dataset,
      "approximation_error": max(d["approximation_error"] for d in per_dataset.values()),
      "approximation_error_float64": max(
          d["approximation_error_float64"] for d in per_dataset.values()
      ),
      "distinct": all(d["distinct"] for d in per_dataset.values()),
  }
  return ExperimentResult(summary, arrays)


def domain_experiment(
    dataset: data_lib.Dataset,
    settings: exact_settings.ExactSettings,
    trace: trace_lib.Trace | None = None,
) -> ExperimentResult:
  """The in-domain question on the Fig. 4 setting (in_domain_search), at theta_0 or, with
  `trace` (an fcn with settings.hidden units on MNIST), at its checkpoint settings.checkpoints[0];
  the batch is the sampled one either way, so that the two compare on the same examples."""
  scorer, x, y, labels, setting = _setting(
      dataset, "fcn", {"hidden": [settings.hidden]}, settings, trace
  )
  rng = np.random.Generator(np.random.PCG64(settings.seed))
  report = in_domain.in_domain_search(
      scorer,
      x,
      y,
      rng,
      settings.rounding_scales,
      settings.milp_examples,
      settings.milp_pixels,
      settings.milp_max_levels,
      settings.milp_time_limit_s,
  )
  best, best_float64 = report.best, report.best_float64
  summary = {
      "experiment": "domain",
      "method": "in-domain search (LP box, grid rounding, MILP)",
      **setting,
      **report.as_dict(),
      "approximation_error": None if best is None else best.score.approximation_error,
      # The measure of exactness; best_float64 may be another attempt than best.
      "approximation_error_float64": (
          None if best_float64 is None else best_float64.score.approximation_error_float64
      ),
      "distinct": best is not None,
  }
  shape = dataset.x_train.shape[1:]
  arrays = {
      "original": x.reshape((-1,) + shape).astype(np.float32),
      "labels": labels.astype(np.int32),
  }
  if best is not None:
    arrays["forged"] = best.forged.reshape((-1,) + shape).astype(np.float32)
  return ExperimentResult(summary, arrays)


def _swap_score(step_fn: sgd_step.SGDStep, theta: np.ndarray, x, y, forged_x, forged_y) -> dict:
  """scoring.ForgeryScore of a swap for a fully connected model (float32 and float64 errors);
  for another (LeNet) the same fields, the float64 error None: forging_tf has no float64
  convolution, and the swap's equality rests on the first layer's zero error, not on its algebra."""
  if step_fn.model.name in ("fcn", "logreg"):
    return (
        scoring.ForgeryScorer(step_fn.model, theta, step_fn.learning_rate)
        .score(x, y, forged_x, forged_y)
        .as_dict()
    )
  distance = domain.distance_to_domain(forged_x, forged_y)
  return {
      "approximation_error": sgd_step.l2_distance(
          step_fn(theta, x, y).numpy(), step_fn(theta, forged_x, forged_y).numpy()
      ),
      "approximation_error_float64": None,
      "distinct": not domain.same_examples(x, y, forged_x, forged_y),
      "domain_box": distance.box,
      "domain_grid": distance.grid,
      "domain_label": distance.label,
      "in_domain": distance.in_domain,
      "max_pixel_change": float(np.abs(forged_x - x).max()),
  }


def _search_swap(
    trace: trace_lib.Trace,
    dataset: data_lib.Dataset,
    step_fn: sgd_step.SGDStep,
    first: int,
    stop: int,
) -> tuple[dict, dict[str, np.ndarray]]:
  """The first stored step t in [first, stop) whose batch B_t holds a certainly dead example with
  a partner (dead_units.find_swap), the swap scored at theta_t and played at epsilon 0; with the
  two batches as arrays. Not found: what was searched."""
  steps = trace.checkpoint_steps[
      (trace.checkpoint_steps >= first) & (trace.checkpoint_steps < min(stop, trace.steps))
  ]
  for searched, step in enumerate(steps, start=1):
    theta = trace.checkpoint(int(step))
    layer = dead_units.first_layer(step_fn.model, theta)
    swap = dead_units.find_swap(layer, dataset.x_train, dataset.y_train, trace.batch(int(step)))
    if swap is None:
      continue
    x, y = forging_game.examples_from_indices(dataset, swap.batch)
    forged_x, forged_y = forging_game.examples_from_indices(dataset, swap.forged)
    game = forging_game.play(trace, int(step), forged_x, forged_y, dataset, 0.0, step_fn)
    indices = ",".join(str(i) for i in swap.forged)
    entry = {
        "found": True,
        "step": int(step),
        "steps_searched": searched,
        **swap.as_dict(),
        **_swap_score(step_fn, theta, x, y, forged_x, forged_y),
        "verifier": dataclasses.asdict(game) | {"accepted": game.accepted},
        "verify_command": (
            f"forging-verify --trace={trace.path} --step={int(step)} --epsilon=0 "
            f"--forged_indices={indices}"
        ),
    }
    return entry, {f"step{int(step)}_original": x, f"step{int(step)}_forged": forged_x}
  return {"found": False, "steps_searched": len(steps), "searched": [first, stop]}, {}


def dead_units_experiment(
    dataset: data_lib.Dataset, trace: trace_lib.Trace, settings: exact_settings.ExactSettings
) -> ExperimentResult:
  """The dead-unit case (SPEC section 8) at the checkpoints settings.checkpoints of `trace`.

  At each checkpoint s: every training example's first layer (dead_units.count_dead: dead in
  float64, certainly dead in float32, per class), and the exact swap searched from s to the next
  listed checkpoint (or the end of the trace): scored (float32 SGD step, float64 gradient for a
  fully connected model) and played by the verifier at epsilon 0 (forging_game.play, what
  forging-verify calls), with the trace's own SGD step (its learning rate). `settings.seed`,
  `batch_size` and `learning_rate` play no part: the batches and eta are the trace's.
  """
  step_fn = sgd_step.step_for_trace(trace, dataset)
  listed = settings.checkpoints
  checkpoints, arrays = [], {}
  for i, step in enumerate(listed):
    layer = dead_units.first_layer(step_fn.model, trace.checkpoint(step))
    count = dead_units.count_dead(
        dead_units.preactivations(layer, dataset.x_train), dataset.y_train, dataset.num_classes
    )
    stop = listed[i + 1] if i + 1 < len(listed) else trace.steps
    swap, swap_arrays = _search_swap(trace, dataset, step_fn, step, stop)
    arrays |= swap_arrays
    checkpoints.append(
        {"step": step, "first_layer": layer.as_dict(), **count.as_dict(), "swap": swap}
    )
  found = [c["swap"] for c in checkpoints if c["swap"]["found"]]
  float64_errors = [s["approximation_error_float64"] for s in found]
  summary = {
      "experiment": "dead_units",
      "method": (
          "training examples whose first-layer ReLU units are all inactive (pre-activation <= 0), "
          "counted in float64 and certainly in float32 (the rounding bound of a float32 sum in "
          "any order); two of one class swapped in a batch of the trace, played at epsilon 0"
      ),
      "trace": trace.identity(),
      "model": trace.manifest["model"]["name"],
      **trace.manifest["model"]["config"],
      "dataset": dataset.name,
      "dataset_fingerprint": dataset.fingerprint,
      "num_parameters": step_fn.num_parameters,
      "batch_size": trace.batch_size,
      "learning_rate": trace.learning_rate,
      "checkpoints": checkpoints,
      "approximation_error": max((s["approximation_error"] for s in found), default=None),
      "approximation_error_float64": (
          None if None in float64_errors else max(float64_errors, default=None)
      ),
      "distinct": bool(found) and all(s["distinct"] for s in found),
      "swaps_found": len(found),
      "swaps_accepted_at_epsilon_0": sum(s["verifier"]["accepted"] for s in found),
  }
  return ExperimentResult(summary, arrays)


SUMMARY = results.RECORDS[results.ResultKind.EXACT_FORGING].file_name


def run_experiment(
    settings: exact_settings.ExactSettings,
    out: str,
    data_dir: str | None = None,
    download: bool = True,
    platform: platform_lib.Platform = platform_lib.Platform(),
    overwrite: bool = False,
    command: str | None = None,
) -> dict:
  """Runs an exact-forging experiment and writes its result folder `out`, whole or not at all.

  OUT holds summary.json (the record: header, settings, and the experiment's approximation
  errors, distinctness, domain distances and set-up), data.npz (the original and forged batches)
  and, for fig4 and fig5, the figure as fig4.{png,pdf} or fig5.{png,pdf}.

  Args:
    settings: the experiment and its parameters (domain and dead_units: settings.trace, a
      forging-train trace, is opened here).
    out: the result folder.
    data_dir: local data directory (None: $FORGING_TF_DATA, then tensorflow-datasets).
    download: let tensorflow-datasets download a dataset it does not have.
    platform: the platform of the SGD step that scores forgeries, applied to this process.
    overwrite: replace an exact-forging result already at `out`.
    command: the command line to record (None: called from Python).

  Returns:
    The record, as written to OUT/summary.json.

  Raises:
    ConfigError: OUT holds other data (or a result, without overwrite), or the experiment has
      no solution for these settings.
    DatasetError: a dataset cannot be loaded, or is not the trace's.
    TraceError: the trace cannot be read, or has no checkpoint stored at a requested step.
  """
  out = os.path.abspath(out)
  results.check_out(out, SUMMARY, results.ResultKind.EXACT_FORGING, overwrite)
  platform_lib.apply_platform(platform)

  def load(name: str) -> data_lib.Dataset:
    return data_lib.load_dataset(name, data_dir, download)

  experiment = settings.experiment
  trace = None if settings.trace is None else trace_lib.Trace(settings.trace)
  if experiment == exact_settings.ExactExperiment.FIG4:
    result = fig4_experiment(load("mnist"), settings)
  elif experiment == exact_settings.ExactExperiment.FIG5:
    result = fig5_experiment([load("mnist"), load("cifar10")], settings)
  elif experiment == exact_settings.ExactExperiment.DOMAIN:
    result = domain_experiment(load("mnist"), settings, trace)
  else:
    result = dead_units_experiment(load(trace.manifest["dataset"]["name"]), trace, settings)
  summary = results.header(
      results.ResultKind.EXACT_FORGING, command, platform_lib.platform_fingerprint(platform)
  ) | {"settings": settings.as_dict(), **result.summary}

  def fill(folder: str) -> None:
    results.write_npz(os.path.join(folder, "data.npz"), **result.arrays)
    plotting.draw_exact(summary, result.arrays, os.path.join(folder, experiment.value))
    results.write_json(os.path.join(folder, SUMMARY), summary)

  results.write_folder(out, SUMMARY, results.ResultKind.EXACT_FORGING, fill, overwrite)
  return summary
