"""The exact-forging experiments, run and saved as data (binary: exact.py).

fig4: mini-batch perturbation (Prop. 2) on MNIST with an L = 2 ReLU network; fig5: error-matrix
sampling (Prop. 3) with softmax regression on MNIST and CIFAR-10; domain: the in-domain search on
the fig4 setting. Each samples a batch of training examples and takes theta_0 of its model
(models.initial_parameters), forges, and scores the forgery (scoring.py). `run_experiment` writes
the result folder whole: the record (summary.json), the batches (data.npz) and the figure.
"""

import dataclasses
import os

import numpy as np

from forging_tf import data as data_lib
from forging_tf import domain
from forging_tf import errors
from forging_tf import models
from forging_tf import platform as platform_lib
from forging_tf import results
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


def _setting(dataset, model_name: str, model_config: dict, settings: exact_settings.ExactSettings):
  """The set-up every experiment shares: theta_0 of the model, its scorer, and the sampled batch
  (x [b, d] float64 on the grid, y [b, n] one-hot, class ids), with what the record says of it."""
  batch_size, seed, learning_rate = settings.batch_size, settings.seed, settings.learning_rate
  model = models.build_model(
      model_name, dataset.x_train.shape[1:], dataset.num_classes, **model_config
  )
  theta = models.initial_parameters(models.parameter_layout(model), seed)
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
      "theta": f"models.initial_parameters(seed={seed})",
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
    dataset: data_lib.Dataset, settings: exact_settings.ExactSettings
) -> ExperimentResult:
  """The in-domain question on the Fig. 4 setting (in_domain_search)."""
  scorer, x, y, labels, setting = _setting(dataset, "fcn", {"hidden": [settings.hidden]}, settings)
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
  best = report.best
  summary = {
      "experiment": "domain",
      "method": "in-domain search (LP box, grid rounding, MILP)",
      **setting,
      **report.as_dict(),
      "approximation_error": None if best is None else best.score.approximation_error,
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
    settings: the experiment and its parameters.
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
    DatasetError: a dataset cannot be loaded.
  """
  out = os.path.abspath(out)
  results.check_out(out, SUMMARY, results.ResultKind.EXACT_FORGING, overwrite)
  platform_lib.apply_platform(platform)

  def load(name: str) -> data_lib.Dataset:
    return data_lib.load_dataset(name, data_dir, download)

  experiment = settings.experiment
  if experiment == exact_settings.ExactExperiment.FIG4:
    result = fig4_experiment(load("mnist"), settings)
  elif experiment == exact_settings.ExactExperiment.FIG5:
    result = fig5_experiment([load("mnist"), load("cifar10")], settings)
  else:
    result = domain_experiment(load("mnist"), settings)
  summary = results.header(
      results.ResultKind.EXACT_FORGING, command, platform_lib.platform_fingerprint(platform)
  ) | {"settings": settings.as_dict(), **result.summary}

  def fill(folder: str) -> None:
    results.write_npz(os.path.join(folder, "data.npz"), **result.arrays)
    plotting.draw_exact(summary, result.arrays, os.path.join(folder, experiment.value))
    results.write_json(os.path.join(folder, SUMMARY), summary)

  results.write_folder(out, SUMMARY, results.ResultKind.EXACT_FORGING, fill, overwrite)
  return summary
