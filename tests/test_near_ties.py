"""Near-ties of the forward pass and the outlier steps of a reproduction error."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from forging_tf import errors
from forging_tf import models
from forging_tf import platform as platform_lib
from forging_tf import trace as trace_lib
from forging_tf.recompute import near_ties_lib
from forging_tf.recompute import recompute_lib

_U = near_ties_lib.UNIT_ROUNDOFF


def test_relu_margins_are_the_pre_activation_in_units_of_its_rounding_scale(mnist):
  model = models.build_model("fcn", mnist.x_train.shape[1:], 10, hidden=[16])
  rng = np.random.default_rng(0)
  variables = [rng.normal(0, 0.1, v.shape).astype(np.float32) for v in model.trainable_variables]
  x = (mnist.x_train[:20] / 255.0).astype(np.float32)
  margins = near_ties_lib.forward_margins(model, [tf.constant(v) for v in variables], x)
  assert list(margins) == ["dense1"] and margins["dense1"].kind == "relu"
  flat = x.reshape(20, -1).astype(np.float64)
  kernel, bias = (v.astype(np.float64) for v in variables[:2])
  z, scale = flat @ kernel + bias, np.abs(flat) @ np.abs(kernel) + np.abs(bias)
  np.testing.assert_allclose(
      margins["dense1"].margin, (np.abs(z) / (_U * scale)).ravel(), rtol=1e-3
  )
  decided = (np.abs(z) / (_U * scale)).ravel() > 1e3  # away from a tie, float32 agrees on signs
  np.testing.assert_array_equal(margins["dense1"].mask[decided], (z.ravel() > 0)[decided])


def test_pool_margins_tell_exact_near_and_no_ties():
  model = keras.Sequential(
      [
          keras.Input((2, 8, 1)),
          keras.layers.Conv2D(1, 1, activation="relu", name="identity"),
          keras.layers.MaxPooling2D(2, name="pool"),
      ]
  )
  one_ulp = np.float32(1 + 2.0**-23)
  windows = [
      [[1, 1], [0, 0]],  # an exact tie between two ones
      [[1, 0], [one_ulp, 0]],  # a near tie: one ulp apart
      [[0, 0], [0, 0]],  # dead ReLUs: no tie that matters
      [[0, 3], [1, 0]],  # decided
  ]
  x = np.concatenate([np.float32(w) for w in windows], axis=1)[None, :, :, None]
  identity = [tf.ones((1, 1, 1, 1)), tf.zeros((1,))]
  pool = near_ties_lib.forward_margins(model, identity, x)["pool"]
  assert pool.kind == "maxpool" and pool.exact_ties == 1
  assert pool.margin[0] == np.inf and pool.margin[2] == np.inf
  np.testing.assert_allclose(pool.margin[1], 2.0**-23 / (_U * float(one_ulp)), rtol=1e-12)
  assert pool.margin[3] == pytest.approx(2 / (_U * 3))
  assert pool.mask.tolist()[1:] == [2, 0, 1]  # each window's argmax, row-major in the window


def test_outliers_are_explained_from_both_platforms_near_ties(
    other_onednn_trace, data_dir, tmp_path
):
  repro = str(tmp_path / "repro")
  recompute_lib.recompute(
      other_onednn_trace, repro, repeats=1, fresh_process=False, data_dir=data_dir, download=False
  )
  here = near_ties_lib.near_ties(other_onednn_trace, str(tmp_path / "here"), data_dir=data_dir)
  onednn = "off" if platform_lib.onednn_enabled() else "on"
  binary = subprocess.run(
      [
          sys.executable,
          "-m",
          "forging_tf.recompute.near_ties",
          f"--trace={other_onednn_trace}",
          f"--out={tmp_path / 'there'}",
          f"--data_dir={data_dir}",
          f"--onednn={onednn}",
      ],
      capture_output=True,
      text=True,
      check=False,
  )
  assert binary.returncode == 0, binary.stderr[-2000:]
  trace = trace_lib.Trace(other_onednn_trace)
  assert here["steps"] == list(range(6)) and "pool1" in here["layers"]
  # A platform compared with itself flips nothing.
  margins_here = str(tmp_path / "here" / "margins.npz")
  assert all(not f.any() for f in near_ties_lib.compare(margins_here, margins_here).values())
  record = near_ties_lib.explain_outliers(
      repro, str(tmp_path / "there"), str(tmp_path / "here"), str(tmp_path / "outliers")
  )
  with open(tmp_path / "repro" / "summary.json") as f:
    distance = np.asarray(json.load(f)["max_l2_per_step"])
  outlier = distance > near_ties_lib.OUTLIER_FACTOR * np.median(distance)
  per_step = np.load(tmp_path / "outliers" / "per_step.npz")
  assert per_step["outlier"].tolist() == outlier.tolist()
  np.testing.assert_array_equal(per_step["distance"], distance)
  with (
      np.load(tmp_path / "here" / "margins.npz") as a,
      np.load(tmp_path / "there" / "margins.npz") as b,
  ):
    conv1 = np.unpackbits(a["relu_mask_conv1"] ^ b["relu_mask_conv1"], axis=-1).sum(axis=-1)
    pool1 = (a["pool_argmax_pool1"] != b["pool_argmax_pool1"]).sum(axis=-1)
  np.testing.assert_array_equal(per_step["flips_conv1"], conv1)
  np.testing.assert_array_equal(per_step["flips_pool1"], pool1)
  flipped = {
      int(i) for i in np.flatnonzero(outlier | (conv1 > 0) | (pool1 > 0))
  }  # every outlier and every step with a conv1 or pool1 flip is listed with its flips
  listed = {entry["step"]: entry for entry in record["explained_steps"]}
  assert flipped <= set(listed)
  for i in flipped - {i for i in flipped if outlier[i]}:
    assert listed[i]["flips"]
  table = record["table"]
  assert table["outliers"] + table["others"] == trace.steps
  for row in table["near_ties_predictor"]:
    assert sum(v for k, v in row.items() if k.startswith(("outliers_", "others_"))) == 6
  with pytest.raises(errors.ConfigError, match="not on the pair's generator platform"):
    near_ties_lib.explain_outliers(
        repro, str(tmp_path / "here"), str(tmp_path / "here"), str(tmp_path / "wrong")
    )
  assert not os.path.exists(tmp_path / "wrong")
  with pytest.raises(errors.ConfigError, match="already holds"):
    near_ties_lib.near_ties(other_onednn_trace, str(tmp_path / "here"), data_dir=data_dir)
