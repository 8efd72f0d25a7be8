"""The forging game's domain (SPEC section 4): pixels in {q/255 : q = 0..255}, one-hot labels.

A pixel is in the domain iff it equals, as a number, the float32 value PIXEL_VALUES[q] the model is
fed for level q; a float64 pixel holding the exact real q / 255 is therefore outside (by ~1e-10).

One definition of "in the domain", and one of "the same batch" (`same_examples`), used by the
verifier's game, the attacks and the exact forgeries. numpy only (no TensorFlow), so that the
linear-algebra code can use it without loading TF.
"""

import dataclasses

import numpy as np

# q / 255 for q = 0..255, correctly rounded to float32: the exact grid the model sees. TensorFlow's
# x / 255 becomes x * (1 / 255), which is one ulp off for some q, so inputs are looked up here.
PIXEL_VALUES = np.arange(256, dtype=np.float32) / np.float32(255)


@dataclasses.dataclass(frozen=True)
class DomainDistance:
  """How far a batch lies from the domain; all zero iff it is inside.

  box: largest distance of a pixel outside [0, 1]; grid: largest distance of a pixel (clipped to
  [0, 1]) from the nearest q / 255; label: largest l-infinity distance of a label row from the
  nearest one-hot row.
  """

  box: float
  grid: float
  label: float

  @property
  def in_domain(self) -> bool:
    return self.box == 0.0 and self.grid == 0.0 and self.label == 0.0


def pixel_levels(x: np.ndarray) -> np.ndarray:
  """x float [...] -> nearest level q int64 [...] (clipped to 0..255); not a domain check."""
  clipped = np.clip(np.nan_to_num(np.asarray(x, np.float64), nan=0.0), 0.0, 1.0)
  return np.rint(clipped * 255.0).astype(np.int64)


def distance_to_domain(x: np.ndarray, y: np.ndarray) -> DomainDistance:
  """x [b, ...] float pixels, y [b, n] float labels -> DomainDistance (float64 arithmetic)."""
  x = np.asarray(x)
  y = np.asarray(y, np.float64)
  if not np.all(np.isfinite(x)) or not np.all(np.isfinite(y)):
    return DomainDistance(np.inf, np.inf, np.inf)
  x64 = x.astype(np.float64)
  box = float(np.max(np.maximum(np.maximum(-x64, x64 - 1.0), 0.0), initial=0.0))
  # Grid membership is bitwise in float32: a pixel is in the domain iff it equals PIXEL_VALUES[q].
  nearest = PIXEL_VALUES[pixel_levels(x)].astype(np.float64)
  grid = float(np.max(np.abs(np.clip(x64, 0.0, 1.0) - nearest), initial=0.0))
  one_hot = np.eye(y.shape[-1])[np.argmax(y, axis=-1)] if y.size else y
  label = float(np.max(np.abs(y - one_hot), initial=0.0))
  return DomainDistance(box, grid, label)


def domain_violation(x: np.ndarray, y: np.ndarray, num_classes: int) -> str | None:
  """Why the batch (x [b, ...] float, y [b, n] float) is outside the domain, or None if inside."""
  x = np.asarray(x)
  y = np.asarray(y)
  if y.ndim != 2 or y.shape[1] != num_classes or y.shape[0] != x.shape[0]:
    return f"labels have shape {y.shape}, expected ({x.shape[0]}, {num_classes})"
  flat = x.reshape(x.shape[0], -1)
  bad = ~np.isfinite(flat) | (flat < 0) | (flat > 1)
  if not bad.any():
    bad = flat.astype(np.float32) != PIXEL_VALUES[pixel_levels(flat)]
    bad |= flat != flat.astype(np.float32)
  if bad.any():
    example, pixel = (int(i) for i in np.argwhere(bad)[0])
    return (
        f"pixel {pixel} of example {example} is {float(flat[example, pixel])!r}, "
        f"not one of q/255 (q = 0..255); {int(bad.sum())} pixels are off the grid"
    )
  not_one_hot = ~(np.isin(y, (0.0, 1.0)).all(axis=1) & (y.sum(axis=1) == 1))
  if not_one_hot.any():
    example = int(np.argmax(not_one_hot))
    return f"label of example {example} is {y[example].tolist()}, not a one-hot row"
  return None


def same_examples(x: np.ndarray, y: np.ndarray, other_x: np.ndarray, other_y: np.ndarray) -> bool:
  """Whether two batches hold the same examples (x_j, y_j) as multisets, compared by value.

  x, other_x: [b, ...] pixels; y, other_y: [b, n] labels. Both are taken as the float32 values
  the model is fed, so reordering a batch, or writing a pixel 0 as -0.0, gives the same batch:
  the SGD step cannot tell them apart, and neither does the forging game. Comparing bytes would
  count -0.0 as a new pixel and let the true batch pass for a forgery. A NaN equals nothing
  (such a batch is outside the domain anyway).
  """

  def sorted_rows(xs, ys) -> np.ndarray:
    rows = np.concatenate(
        [
            np.asarray(xs, np.float32).reshape(len(xs), -1),
            np.asarray(ys, np.float32).reshape(len(ys), -1),
        ],
        axis=1,
    )
    # lexsort compares values, so -0.0 and 0.0 tie and land where equal values land.
    return rows[np.lexsort(rows.T[::-1])]

  a, b = sorted_rows(x, y), sorted_rows(other_x, other_y)
  return a.shape == b.shape and bool(np.array_equal(a, b))


def pixel_distances(images_a: np.ndarray, images_b: np.ndarray) -> np.ndarray:
  """l2 distances [len a, len b] float64 between images, in grey levels (pixels in 0..255 units).

  images_a, images_b: [n, ...] uint8 levels or float pixels q / 255 (taken to their nearest level:
  the distinctness margin judges examples already in the domain). Exact: integer levels below 2^8
  over at most ~2^12 pixels keep every term an integer below 2^53.
  """

  def levels(images) -> np.ndarray:
    images = np.asarray(images)
    flat = images.reshape(len(images), -1)
    if flat.dtype == np.uint8:
      return flat.astype(np.float64)
    return pixel_levels(flat).astype(np.float64)

  a, b = levels(images_a), levels(images_b)
  squared = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
  return np.sqrt(np.maximum(squared, 0.0))


@dataclasses.dataclass(frozen=True)
class MarginViolation:
  """An added example closer than the margin to a removed one: their rows and distance."""

  added: int
  removed: int
  distance: float
  min_distance: float


def margin_violation(
    added: np.ndarray, removed: np.ndarray, min_distance: float
) -> MarginViolation | None:
  """The closest (added, removed) pair if it is nearer than min_distance grey levels, else None.

  added: [a, ...], removed: [r, ...] images (uint8 levels or pixels q / 255). The distinctness
  margin D: every example a forged batch adds must be at least D (l2, grey levels) from every
  example it removes; D = 0 is the paper's Definition 1 (any change counts).
  """
  if min_distance <= 0 or not len(added) or not len(removed):
    return None
  distances = pixel_distances(added, removed)
  i, j = np.unravel_index(int(np.argmin(distances)), distances.shape)
  if distances[i, j] >= min_distance:
    return None
  return MarginViolation(int(i), int(j), float(distances[i, j]), float(min_distance))
