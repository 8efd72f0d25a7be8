import numpy as np
import pytest

from forging_tf import errors
from forging_tf import models


def _output_shapes(model):
  return [tuple(layer.output.shape[1:]) for layer in model.layers]


def test_lenet_matches_the_paper():
  model = models.build_model("lenet", (28, 28, 1), 10)
  assert model.count_params() == 61_706
  assert _output_shapes(model) == [
      (28, 28, 6),
      (14, 14, 6),
      (10, 10, 16),
      (5, 5, 16),
      (400,),
      (120,),
      (84,),
      (10,),
  ]
  assert [type(layer).__name__ for layer in model.layers] == [
      "Conv2D",
      "MaxPooling2D",
      "Conv2D",
      "MaxPooling2D",
      "Flatten",
      "Dense",
      "Dense",
      "Dense",
  ]


def test_vggmini_matches_the_paper():
  model = models.build_model("vggmini", (32, 32, 3), 10)
  assert model.count_params() == 5_742_986
  shapes = _output_shapes(model)
  assert shapes[:3] == [(32, 32, 64), (32, 32, 64), (16, 16, 64)]
  assert shapes[-5:] == [(4, 4, 512), (8192,), (128,), (64,), (10,)]
  convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
  assert [c.filters for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
  assert all(c.padding == "same" and c.activation.__name__ == "elu" for c in convs)


@pytest.mark.parametrize(
    "name, config, expected",
    [
        ("logreg", {}, 4 * 3 + 3),
        ("logreg", {"use_bias": False}, 4 * 3),
        ("fcn", {"hidden": (10,)}, 4 * 10 + 10 + 10 * 3 + 3),
        ("fcn", {"hidden": (8, 5), "use_bias": False}, 4 * 8 + 8 * 5 + 5 * 3),
    ],
)
def test_small_models_have_the_stated_parameters(name, config, expected):
  assert models.build_model(name, (2, 2, 1), 3, **config).count_params() == expected


def test_layout_is_contiguous_and_complete():
  model = models.build_model("lenet", (28, 28, 1), 10)
  layout = models.parameter_layout(model)
  assert [spec.offset for spec in layout] == list(np.cumsum([0] + [s.size for s in layout[:-1]]))
  assert models.num_parameters(layout) == model.count_params()
  assert layout[0].name.endswith("conv1/kernel") and layout[0].shape == (5, 5, 1, 6)
  assert len({spec.name for spec in layout}) == len(layout)


def test_initial_parameters_are_seeded_glorot_with_zero_biases():
  layout = models.parameter_layout(models.build_model("lenet", (28, 28, 1), 10))
  theta = models.initial_parameters(layout, seed=3)
  assert theta.dtype == np.float32 and theta.shape == (61_706,)
  np.testing.assert_array_equal(theta, models.initial_parameters(layout, seed=3))
  assert not np.array_equal(theta, models.initial_parameters(layout, seed=4))
  for spec in layout:
    values = theta[spec.offset : spec.offset + spec.size]
    if spec.name.endswith("bias"):
      assert not values.any()
    else:
      fan_in = int(np.prod(spec.shape[:-1]))
      fan_out = spec.shape[-1] * int(np.prod(spec.shape[:-2]))
      limit = np.sqrt(6.0 / (fan_in + fan_out))
      assert np.abs(values).max() <= limit and values.std() > limit / 3


def test_unknown_model_is_a_clear_error():
  with pytest.raises(errors.ConfigError, match="unknown model 'resnet'"):
    models.build_model("resnet", (28, 28, 1), 10)
