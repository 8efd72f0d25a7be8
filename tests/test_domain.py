"""The domain check of the forging game: the grid {q/255} bitwise, one-hot labels."""

import numpy as np
import pytest

from forging_tf import domain


def _batch(seed=0):
  levels = np.random.default_rng(seed).integers(0, 256, (3, 4, 4, 1))
  return domain.PIXEL_VALUES[levels], np.eye(3, dtype=np.float32)


def test_grid_batch_is_in_domain():
  x, y = _batch()
  assert domain.domain_violation(x, y, 3) is None
  assert domain.distance_to_domain(x, y).in_domain
  np.testing.assert_array_equal(domain.PIXEL_VALUES[domain.pixel_levels(x)], x)


def test_one_ulp_off_the_grid_is_outside():
  x, y = _batch()
  x[1, 2, 3, 0] = np.nextafter(x[1, 2, 3, 0], np.float32(2))
  assert "pixel 11 of example 1" in domain.domain_violation(x, y, 3)
  distance = domain.distance_to_domain(x, y)
  assert 0 < distance.grid < 1e-7 and distance.box == 0 and not distance.in_domain


def test_float64_exact_fraction_is_outside_but_float32_table_value_inside():
  x, y = _batch()
  assert domain.domain_violation(x.astype(np.float64), y, 3) is None
  x64 = x.astype(np.float64)
  x64[0, 0, 0, 0] = 7 / 255
  assert domain.domain_violation(x64, y, 3) is not None


@pytest.mark.parametrize("value, field", [(1.25, "box"), (-0.5, "box"), (np.nan, "grid")])
def test_pixels_outside_the_box(value, field):
  x, y = _batch()
  x[2, 0, 0, 0] = value
  assert domain.domain_violation(x, y, 3).startswith("pixel 0 of example 2")
  assert getattr(domain.distance_to_domain(x, y), field) > 0


def test_labels_must_be_one_hot_rows_of_the_right_width():
  x, y = _batch()
  soft = y.copy()
  soft[2] = [0.1, 0.2, 0.7]
  assert "label of example 2" in domain.domain_violation(x, soft, 3)
  assert domain.distance_to_domain(x, soft).label == pytest.approx(0.3)
  assert "shape" in domain.domain_violation(x, y[:, :2], 3)
  double = y.copy()
  double[0] = [1, 1, 0]
  assert domain.domain_violation(x, double, 3) is not None


def test_same_examples_compares_values_as_multisets():
  x, y = _batch()
  assert domain.same_examples(x, y, x[::-1], y[::-1])
  negative_zero = np.where(x == 0, np.float32(-0.0), x)
  assert np.signbit(negative_zero).any()
  assert domain.same_examples(x, y, negative_zero, y)
  assert domain.same_examples(x, y, x.astype(np.float64), y.astype(np.float64))
  changed = x.copy()
  changed[0, 0, 0, 0] = domain.PIXEL_VALUES[17] if x[0, 0, 0, 0] != domain.PIXEL_VALUES[17] else 0
  assert not domain.same_examples(x, y, changed, y)
  assert not domain.same_examples(x, y, x, y[[1, 0, 2]])
  assert not domain.same_examples(x, y, x[:2], y[:2])
