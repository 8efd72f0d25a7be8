"""Brute force for Table IV (SPEC section 6): does any other batch have the true batch's gradient?

Setting: d = 4 pixels, n = 3 classes, pixels restricted to v levels q_j = floor(255 j / (v - 1)),
j = 0..v-1 (v = 3 gives {0, 127, 255}, the paper's; v = 5 rounds 63.75, 127.5, 191.25 down), so the
pool holds N = v^4 * 3 examples (x, y). A batch is a set of b distinct examples; there are C(N, b).
The gradient of a batch is the mean of its examples' gradients, so for a true batch B the question
is a subset sum: is there a set S != B, |S| = b, with sum_S g = sum_B g?

Write S1 = B \\ S (the m examples taken out) and S2 = S \\ B (the m put in). Then the question
splits into parts m = 1..b: for each S1 in B of size m, an m-subset of the pool without B summing to
tau = sum_S1 g. The parts cover sum_m C(b, m) C(N - b, m) = C(N, b) - 1 batches (Vandermonde):
every batch but B itself, each once; reorderings never arise because subsets are enumerated as
increasing index tuples.

Each part is a meet-in-the-middle search on a 1-D projection a = g . u (u: the top principal
direction of the pool's gradients, where they spread most):
  - indices are sorted by a; an m-subset j_1 < ... < j_m splits into its ceil(m/2) lowest
    (the left tuple, enumerated) and floor(m/2) highest (looked up in a sorted table of all
    floor(m/2)-subset sums, the right table, keeping only entries above the left's last index);
  - left tuples are pruned exactly: a prefix is kept only if some completion above its last index
    can still land within the window of the target (the smallest and the largest completions are
    running sums of the sorted a);
  - for tiny windows a hashed bitmap of the right table's buckets answers most lookups with one
    memory read, and only its hits are searched;
  - candidates pass an exact lower bound on 8 principal directions, then the full float64
    distance; a distance within the tolerance is rechecked by recomputing both batch gradients
    from scratch.
Any S2 with ||sum_S2 g - tau|| <= window has |projection| <= window, so it is never missed: the
part certifies that no batch lies within `window` that it did not examine. The window is at least
b * tolerance (so collisions are always decided) and at most the nearest miss found so far (then
the part's nearest miss is exact), shrunk below that only when the expected number of lookups
would exceed the budget (then the nearest miss is bounded below by the window).

`exhaustive` is the plain cross-check: it enumerates all C(N, b) batches.
"""

import dataclasses
import itertools
import math
import os
import time

import numpy as np
from absl import logging

from forging_tf import domain
from forging_tf import errors
from forging_tf import models
from forging_tf import platform as platform_lib
from forging_tf import results
from forging_tf.exact import dense
from forging_tf.exact import settings as exact_settings

# The exact lower bound applied to candidates before their full distance is computed.
_BOUND_DIRECTIONS = 8
# log2 of the bitmap's size in bits (256 MiB): with the right table's 7.5 million pair sums of the
# largest cell, about 1% of lookups hit a bucket by chance.
_BITMAP_BITS = 31


def pixel_levels(v: int) -> np.ndarray:
  """The v pixel levels q_j = floor(255 j / (v - 1)) as int64 [v] (v = 3: 0, 127, 255)."""
  if v < 2 or v > 256:
    raise errors.ConfigError(f"pixel levels v must be in 2..256, got {v}")
  return np.arange(v, dtype=np.int64) * 255 // (v - 1)


@dataclasses.dataclass(frozen=True)
class Pool:
  """All examples with pixels on v levels: levels [N, d] int (0..255), labels [N] int,
  gradients [N, P] float64 (per-example gradients at the model's theta)."""

  v: int
  levels: np.ndarray
  labels: np.ndarray
  gradients: np.ndarray

  @property
  def size(self) -> int:
    return int(self.labels.shape[0])


def example_pool(
    v: int,
    num_pixels: int = exact_settings.NUM_PIXELS,
    num_classes: int = exact_settings.NUM_CLASSES,
):
  """(levels [N, d] int64, labels [N] int64), N = v^d * n; the label varies fastest."""
  grid = np.array(list(itertools.product(pixel_levels(v), repeat=num_pixels)), dtype=np.int64)
  return np.repeat(grid, num_classes, axis=0), np.tile(np.arange(num_classes), len(grid))


def model_inputs(levels: np.ndarray, labels: np.ndarray, num_classes: int):
  """Pixel levels [N, d] and labels [N] -> (x [N, d] float64, y [N, n] float64) as the model sees
  them (x = the float32 grid value q / 255, widened)."""
  return (domain.PIXEL_VALUES[levels].astype(np.float64), np.eye(num_classes)[labels])


def table_model(name: str, seed: int):
  """Table IV's model with fixed random weights: (keras model, theta [P] float32).

  Kernels are models.initial_parameters (Glorot uniform, PCG64(seed)). Biases are drawn uniform in
  +-1/sqrt(fan_in) (PyTorch's nn.Linear default) from PCG64(seed + 1): with Keras' zero biases every
  input whose hidden layer is entirely inactive would share the gradient of x = 0, and the three
  labels of x = 0 would sum to a zero gradient, collisions made by the initialiser rather than the
  question.
  """
  if name not in exact_settings.TABLE_MODELS:
    raise errors.ConfigError(f"Table IV models are {exact_settings.TABLE_MODELS}, got {name!r}")
  config = {"hidden": (exact_settings.HIDDEN_UNITS,)} if name == "fcn" else {}
  model = models.build_model(
      name, (exact_settings.NUM_PIXELS,), exact_settings.NUM_CLASSES, **config
  )
  layout = models.parameter_layout(model)
  theta = models.initial_parameters(layout, seed)
  rng = np.random.Generator(np.random.PCG64(seed + 1))
  fan_in = exact_settings.NUM_PIXELS
  for spec in layout:
    if spec.name.endswith("kernel"):
      fan_in = spec.shape[0]
    else:
      limit = 1.0 / math.sqrt(fan_in)
      theta[spec.offset : spec.offset + spec.size] = rng.uniform(-limit, limit, spec.size)
  return model, theta


def make_pool(layers, v: int) -> Pool:
  """The pool of all v-level examples and their per-example gradients under `layers`."""
  levels, labels = example_pool(v, layers[0].kernel.shape[0], layers[-1].kernel.shape[1])
  x, y = model_inputs(levels, labels, layers[-1].kernel.shape[1])
  return Pool(
      v=v, levels=levels, labels=labels, gradients=dense.per_example_gradients(layers, x, y)
  )


# ------------------------------------------------------------------ enumeration of subsets


class _SortedValues:
  """Values a [n] sorted ascending, with the sums of consecutive runs the pruning bounds need.

  Runs are summed directly rather than as differences of a cumulative sum, whose cancellation
  would cost more precision than the smallest window allows.
  """

  def __init__(self, a: np.ndarray):
    self.a = a
    self.n = len(a)
    self._window_sum = {}

  def window_sum(self, r: int) -> np.ndarray:
    """[n - r + 1]: window_sum[j] = a[j] + ... + a[j + r - 1], nondecreasing in j."""
    if r not in self._window_sum:
      self._window_sum[r] = np.lib.stride_tricks.sliding_window_view(self.a, r).sum(axis=1)
    return self._window_sum[r]

  def top(self, r: int) -> float:
    """The sum of the r largest values."""
    return float(self.a[self.n - r :].sum()) if r else 0.0


def _chunks(counts: np.ndarray, limit: int):
  """Splits rows with `counts` children each into consecutive (start, stop) groups of at most
  `limit` children (a single row with more stays alone)."""
  ends = np.cumsum(counts)
  start = 0
  while start < len(counts):
    before = int(ends[start - 1]) if start else 0
    stop = max(int(np.searchsorted(ends, before + limit, side="right")), start + 1)
    yield start, stop
    start = stop


def _ragged(first: np.ndarray, counts: np.ndarray):
  """Row r owns the consecutive integers first[r] .. first[r] + counts[r] - 1:
  returns (owner [total] int32, value [total] int64)."""
  total = int(counts.sum())
  owner = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
  value = np.arange(total, dtype=np.int64) + np.repeat(first - (np.cumsum(counts) - counts), counts)
  return owner, value


@dataclasses.dataclass
class _Level:
  """One level of the enumeration tree: index j chosen at this level, row of its parent."""

  j: np.ndarray  # [K] int32
  parent: np.ndarray  # [K] int32


def _tuples(values: _SortedValues, k: int, m: int, target: float, window: float, max_rows: int):
  """Yields (sums [K] float64, last [K] int, levels) for the k-subsets j_1 < ... < j_k of the
  sorted values that can still be completed, by m - k more values above j_k, to a sum within
  `window` of `target` (window = inf: all k-subsets). `levels` lets `_indices` rebuild rows."""
  a, n = values.a, values.n

  def expand(sums, last, levels):
    depth = len(levels)
    if depth == k:
      yield sums, last, levels
      return
    remaining = m - depth  # values still to choose, this one included
    lo = last + 1
    hi = np.full(len(sums), n - remaining, dtype=np.int64)
    if np.isfinite(window):
      # Smallest completion from j: a[j] + ... + a[j + remaining - 1] (nondecreasing in j).
      hi = np.minimum(
          hi,
          np.searchsorted(values.window_sum(remaining), target + window - sums, side="right") - 1,
      )
      # Largest completion from j: a[j] + the remaining - 1 largest values.
      lo = np.maximum(
          lo, np.searchsorted(a, target - window - sums - values.top(remaining - 1), side="left")
      )
    counts = np.maximum(hi - lo + 1, 0)
    for start, stop in _chunks(counts, max_rows):
      owner, j = _ragged(lo[start:stop], counts[start:stop])
      if len(j):
        parent = owner + np.int32(start)
        j = j.astype(np.int32)
        yield from expand(sums[parent] + a[j], j, levels + [_Level(j, parent)])

  yield from expand(np.zeros(1), np.full(1, -1, dtype=np.int64), [])


def _indices(levels: list[_Level], rows: np.ndarray) -> np.ndarray:
  """Rows of the deepest level -> their index tuples [len(rows), depth] int64."""
  out = np.empty((len(rows), len(levels)), dtype=np.int64)
  for depth in range(len(levels) - 1, -1, -1):
    out[:, depth] = levels[depth].j[rows]
    rows = levels[depth].parent[rows]
  return out


def all_subsets(n: int, k: int, max_rows: int):
  """Yields every k-subset of range(n) once, as increasing index rows [K, k] int64, in chunks."""
  values = _SortedValues(np.zeros(n))
  for _, _, levels in _tuples(values, k, k, 0.0, np.inf, max_rows):
    yield _indices(levels, np.arange(len(levels[-1].j)))


# ---------------------------------------------------------------------------- the search


@dataclasses.dataclass
class PartResult:
  """One part of the search: m examples swapped (distances in sum units ||sum_S2 g - tau||)."""

  m: int
  targets: int
  batches: int  # C(b, m) * C(N - b, m)
  window: float
  left_tuples: int = 0
  lookups: int = 0
  full_checks: int = 0
  min_distance: float = math.inf
  collisions: list = dataclasses.field(default_factory=list)
  seconds: float = 0.0

  @property
  def exact(self) -> bool:
    return bool(self.min_distance <= self.window)

  def lower_bound(self) -> float:
    return self.min_distance if self.exact else self.window

  def as_dict(self, b: int) -> dict:
    return {
        "m": self.m,
        "targets": self.targets,
        "batches": self.batches,
        "window": None if math.isinf(self.window) else self.window / b,
        "exact": self.exact,
        "min_distance": None if math.isinf(self.min_distance) else self.min_distance / b,
        "left_tuples": self.left_tuples,
        "lookups": self.lookups,
        "full_checks": self.full_checks,
        "seconds": round(self.seconds, 3),
    }


class _Bitmap:
  """Hashed occupancy of the right table's buckets of width 2 * window, each dilated by one
  bucket to both sides: a value within `window` of z always sets the bit of z's bucket."""

  def __init__(self, right: np.ndarray, window: float):
    self.origin = float(right[0])
    self.scale = 1.0 / (2.0 * window)
    self.mask = (1 << _BITMAP_BITS) - 1
    buckets = np.floor((right - self.origin) * self.scale).astype(np.int64)
    bits = np.concatenate([buckets - 1, buckets, buckets + 1]) & self.mask
    self.bytes = np.zeros(1 << (_BITMAP_BITS - 3), dtype=np.uint8)
    np.bitwise_or.at(self.bytes, bits >> 3, (1 << (bits & 7)).astype(np.uint8))

  def may_contain(self, z: np.ndarray) -> np.ndarray:
    bits = np.floor((z - self.origin) * self.scale).astype(np.int64) & self.mask
    return ((self.bytes[bits >> 3] >> (bits & 7).astype(np.uint8)) & 1).astype(bool)


class SubsetSumSearch:
  """The meet-in-the-middle search over the pool without the true batch (module docstring).

  gradients: [n, P] float64 of the pool without B; the search is over their m-subsets.
  """

  def __init__(self, gradients: np.ndarray, max_rows: int = 1 << 22):
    centred = gradients - gradients.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    directions = vt[:_BOUND_DIRECTIONS].T  # [P, k] orthonormal
    projected = gradients @ directions
    self.order = np.argsort(projected[:, 0], kind="stable")
    self.gradients = gradients[self.order]
    self.projected = projected[self.order]
    self.directions = directions
    self.values = _SortedValues(self.projected[:, 0].copy())
    self.n = len(gradients)
    self.max_rows = max_rows
    self._right = {}
    # Rounding error of one projected value, generously: sums of k values carry k of these.
    self.rounding = 64 * np.finfo(np.float64).eps * (float(np.abs(self.values.a).max()) + 1.0)

  def right_table(self, k: int):
    """All k-subset sums, sorted: (sums [M], first index [M], index rows [M, k]); k = 0 gives
    the empty sum with first index n (above every left tuple)."""
    if k not in self._right:
      if k == 0:
        self._right[k] = (np.zeros(1), np.array([self.n]), np.zeros((1, 0), dtype=np.int64))
      else:
        rows = np.concatenate(list(all_subsets(self.n, k, self.max_rows)))
        sums = self.values.a[rows].sum(axis=1)
        order = np.argsort(sums, kind="stable")
        self._right[k] = (sums[order], rows[order, 0], rows[order])
    return self._right[k]

  def lookups_per_unit_window(
      self, m: int, targets: np.ndarray, rng: np.random.Generator, samples: int = 4000
  ) -> float:
    """Estimated right-table entries that the lookups of all targets [T] (projected) return,
    per unit of window: C(n, left) * 2 * mean density of the right sums at the complement of a
    random left tuple. Pruning is ignored, so this overestimates."""
    left = (m + 1) // 2
    right, _, _ = self.right_table(m - left)
    half = 1e-3 * float(right[-1] - right[0])
    if half <= 0:
      return math.inf
    rows = rng.integers(0, self.n, (samples, left))
    rows = rows[(np.diff(np.sort(rows, axis=1), axis=1) > 0).all(axis=1)]
    sums = self.values.a[rows].sum(axis=1)
    density = 0.0
    for target in targets:
      z = target - sums
      counts = np.searchsorted(right, z + half, side="right") - np.searchsorted(
          right, z - half, side="left"
      )
      density += counts.mean() / (2 * half)
    return math.comb(self.n, left) * 2 * density

  def choose_window(
      self,
      m: int,
      targets: np.ndarray,
      best_so_far: float,
      floor: float,
      lookup_budget: float,
      rng: np.random.Generator,
  ) -> float:
    """The part's window (sum units): the nearest miss so far, shrunk to keep the expected lookups
    within budget, never below floor. m = 1 has at most n lookups per target: no shrinking."""
    if m == 1:
      return max(best_so_far, floor)
    per_unit = self.lookups_per_unit_window(m, targets, rng)
    budget_window = lookup_budget / per_unit if per_unit > 0 else math.inf
    return max(min(best_so_far, budget_window), floor)

  def run_part(
      self,
      part: PartResult,
      targets: np.ndarray,
      target_ids: list,
      collision_distance: float,
      deadline: float,
  ):
    """Searches part m for every target tau [T, P] (sum units) with part.window."""
    began = time.perf_counter()
    m = part.m
    left = (m + 1) // 2
    right, right_first, right_rows = self.right_table(m - left)
    window = part.window
    # The bitmap pays for its 256 MiB when lookups are many and mostly empty.
    bitmap = None
    occupancy = len(right) * 4 * window / max(float(right[-1] - right[0]), 1e-300)
    if occupancy < 0.05 and math.comb(self.n, left) * len(targets) > 1e7:
      bitmap = _Bitmap(right, window)
    bound_targets = targets @ self.directions
    for target, bound_target, target_id in zip(targets, bound_targets, target_ids):
      for sums, last, levels in _tuples(
          self.values, left, m, float(bound_target[0]), window, self.max_rows
      ):
        part.left_tuples += len(sums)
        z = bound_target[0] - sums
        rows = np.arange(len(z))
        if bitmap is not None:
          rows = rows[bitmap.may_contain(z)]
          z = z[rows]
        lo = np.searchsorted(right, z - window, side="left")
        counts = np.searchsorted(right, z + window, side="right") - lo
        part.lookups += int(counts.sum())
        for start, stop in _chunks(counts, self.max_rows):
          owner, right_at = _ragged(lo[start:stop], counts[start:stop])
          left_rows = rows[start:stop][owner]
          # A right subset must lie above the left tuple: each m-subset is met exactly once.
          keep = right_first[right_at] > last[left_rows]
          if keep.any():
            subsets = np.concatenate(
                [_indices(levels, left_rows[keep]), right_rows[right_at[keep]]], axis=1
            )
            self._check(part, subsets, target, bound_target, target_id, collision_distance)
        if time.perf_counter() > deadline:
          part.seconds += time.perf_counter() - began
          raise TimeoutError
    part.seconds += time.perf_counter() - began

  def _check(self, part, subsets, target, bound_target, target_id, collision_distance):
    """Lower bound on the principal directions, then full float64 distances."""
    bound = np.linalg.norm(self.projected[subsets].sum(axis=1) - bound_target, axis=1)
    subsets = subsets[bound <= part.window]
    part.full_checks += len(subsets)
    if not len(subsets):
      return
    distances = np.linalg.norm(self.gradients[subsets].sum(axis=1) - target, axis=1)
    part.min_distance = min(part.min_distance, float(distances.min()))
    for row in np.flatnonzero(distances <= collision_distance):
      part.collisions.append((target_id, tuple(int(r) for r in np.sort(self.order[subsets[row]]))))


@dataclasses.dataclass
class CellResult:
  """One cell of Table IV. Distances are between mean gradients, float64."""

  model: str
  v: int
  b: int
  pool_size: int
  batches: int  # C(N, b), the true batch included
  batches_covered: int  # other batches accounted for (examined or excluded by a bound)
  decided: bool
  found: bool
  nearest_miss: float | None
  nearest_miss_exact: bool
  nearest_miss_lower_bound: float
  method: str
  seconds: float
  true_batch: list
  collision: list | None = None
  collision_distance_recheck: float | None = None
  reason: str | None = None
  parts: list | None = None
  cross_check: dict | None = None

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


def sample_true_batch(pool_size: int, b: int, seed: int, model: str, v: int) -> np.ndarray:
  """The true batch of a cell: b distinct pool indices from PCG64 seeded by (seed, model, v, b)."""
  rng = np.random.Generator(np.random.PCG64([seed, exact_settings.TABLE_MODELS.index(model), v, b]))
  return np.sort(rng.choice(pool_size, b, replace=False))


def _examples(pool: Pool, rows) -> list:
  return [
      {"pool_index": int(r), "pixels": pool.levels[r].tolist(), "label": int(pool.labels[r])}
      for r in rows
  ]


def recheck(layers, pool: Pool, true_rows, forged_rows) -> float:
  """||grad L(B) - grad L(S)||_2, both batch gradients recomputed from their examples in float64
  (independently of the per-example gradients and sums the search used)."""
  num_classes = layers[-1].kernel.shape[1]
  gradients = [
      dense.batch_gradient(
          layers, *model_inputs(pool.levels[list(rows)], pool.labels[list(rows)], num_classes)
      )
      for rows in (true_rows, forged_rows)
  ]
  return float(np.linalg.norm(gradients[0] - gradients[1]))


def meet_in_the_middle(
    pool: Pool,
    model: str,
    true_rows: np.ndarray,
    tolerance: float,
    lookup_budget: float,
    time_limit_s: float,
    seed: int,
) -> CellResult:
  """Decides one cell by the part-wise meet-in-the-middle search (module docstring).

  true_rows: [b] sorted pool indices of the true batch. tolerance: a batch whose mean gradient is
  within this l2 distance (float64) of the true batch's counts as a collision. Works on
  pool.gradients alone, so pools with constructed gradients can be searched too.
  """
  began = time.perf_counter()
  deadline = began + time_limit_s
  b, total = len(true_rows), pool.size
  outside = np.setdiff1d(np.arange(total), true_rows)
  search = SubsetSumSearch(pool.gradients[outside])
  true_gradients = pool.gradients[true_rows]
  collision_distance = b * tolerance
  rng = np.random.Generator(np.random.PCG64(seed))
  parts, covered = [], 0
  best_so_far = math.inf  # sum units
  timed_out = None
  floor_window = collision_distance + 2 * b * search.rounding
  for m in range(1, b + 1):
    removed = list(itertools.combinations(range(b), m))
    targets = np.stack([true_gradients[list(s)].sum(axis=0) for s in removed])
    window = search.choose_window(
        m, targets @ search.directions[:, 0], best_so_far, floor_window, lookup_budget, rng
    )
    part = PartResult(
        m=m,
        targets=len(removed),
        window=window,
        batches=math.comb(b, m) * math.comb(len(outside), m),
    )
    try:
      search.run_part(part, targets, removed, collision_distance, deadline)
    except TimeoutError:
      timed_out = m
      parts.append(part)
      break
    parts.append(part)
    covered += part.batches
    best_so_far = min(best_so_far, part.min_distance)
    logging.info(
        "%s v=%d b=%d part m=%d: window %.3g, %d left tuples, %d lookups, min %.3g, %.1f s",
        model,
        pool.v,
        b,
        m,
        window / b,
        part.left_tuples,
        part.lookups,
        part.min_distance / b,
        part.seconds,
    )
    if part.collisions:
      break
  collisions = [c for p in parts for c in p.collisions]
  seconds = time.perf_counter() - began
  result = CellResult(
      model=model,
      v=pool.v,
      b=b,
      pool_size=total,
      batches=math.comb(total, b),
      batches_covered=covered,
      decided=timed_out is None or bool(collisions),
      found=bool(collisions),
      nearest_miss=None,
      nearest_miss_exact=False,
      nearest_miss_lower_bound=0.0,
      method="meet-in-the-middle",
      seconds=seconds,
      true_batch=_examples(pool, true_rows),
      parts=[p.as_dict(b) for p in parts],
  )
  if timed_out is not None and not collisions:
    result.reason = (
        f"time limit of {time_limit_s:.0f} s reached in part m={timed_out} "
        f"({parts[-1].left_tuples} left tuples enumerated)"
    )
  finished = parts if timed_out is None else parts[:-1]
  found_best = min((p.min_distance for p in parts), default=math.inf)
  if collisions:
    target_id, added = collisions[0]
    forged = sorted(
        set(true_rows.tolist()) - {int(true_rows[i]) for i in target_id}
        | {int(outside[r]) for r in added}
    )
    result.collision = _examples(pool, forged)
    result.nearest_miss = (
        float(np.linalg.norm(pool.gradients[forged].sum(axis=0) - true_gradients.sum(axis=0))) / b
    )
  elif finished and np.isfinite(found_best):
    lower = min(p.lower_bound() for p in finished) if timed_out is None else 0.0
    result.nearest_miss = float(found_best) / b
    result.nearest_miss_lower_bound = float(min(lower, found_best)) / b
    result.nearest_miss_exact = bool(timed_out is None and lower >= found_best)
  return result


def exhaustive(
    pool: Pool, model: str, true_rows: np.ndarray, tolerance: float, max_rows: int = 1 << 18
) -> CellResult:
  """Decides one cell by enumerating all C(N, b) batches; exact nearest miss."""
  began = time.perf_counter()
  b = len(true_rows)
  target = pool.gradients[true_rows].sum(axis=0)
  enumerated, best, collisions = 0, math.inf, []
  for rows in all_subsets(pool.size, b, max_rows):
    enumerated += len(rows)
    sums = pool.gradients[rows[:, 0]].copy()
    for column in range(1, b):
      sums += pool.gradients[rows[:, column]]
    distances = np.linalg.norm(sums - target, axis=1) / b
    is_true = np.flatnonzero((rows == true_rows).all(axis=1))
    distances[is_true] = np.inf
    best = min(best, float(distances.min()))
    collisions += [tuple(r) for r in rows[distances <= tolerance][:1]]
  seconds = time.perf_counter() - began
  found = bool(collisions)
  return CellResult(
      model=model,
      v=pool.v,
      b=b,
      pool_size=pool.size,
      batches=math.comb(pool.size, b),
      batches_covered=enumerated - 1,
      decided=True,
      found=found,
      nearest_miss=best if np.isfinite(best) else None,
      nearest_miss_exact=True,
      nearest_miss_lower_bound=best if np.isfinite(best) else 0.0,
      method="exhaustive",
      seconds=seconds,
      true_batch=_examples(pool, true_rows),
      collision=_examples(pool, collisions[0]) if found else None,
  )


def _collision_rows(result: CellResult) -> list[int]:
  return [example["pool_index"] for example in result.collision]


def decide_cell(
    layers, pool: Pool, model: str, b: int, settings: exact_settings.BruteForceSettings
) -> CellResult:
  """One cell: sample the true batch, then search it as settings.method says (BruteForceMethod).

  Args:
    layers: the model's dense layers (dense.dense_layers), for rechecking a
      collision from scratch.
    pool: every example of the cell's pixel levels and its gradient (make_pool).
    model: the model's name, which seeds the true batch.
    b: the batch size.
    settings: the seed, method, tolerance and limits of the search.

  Returns:
    The cell's result; a collision comes with its distance rechecked from scratch.

  Raises:
    ConfigError: b outside 1..N.
  """
  if not 1 <= b <= pool.size:
    raise errors.ConfigError(f"batch size must be in 1..{pool.size}, got {b}")
  true_rows = sample_true_batch(pool.size, b, settings.seed, model, pool.v)
  batches = math.comb(pool.size, b)
  small = batches <= settings.exhaustive_limit
  if settings.method == exact_settings.BruteForceMethod.EXHAUSTIVE:
    if small:
      result = exhaustive(pool, model, true_rows, settings.tolerance)
      if result.found:
        result.collision_distance_recheck = recheck(
            layers, pool, true_rows, _collision_rows(result)
        )
      return result
    return CellResult(
        model=model,
        v=pool.v,
        b=b,
        pool_size=pool.size,
        batches=batches,
        batches_covered=0,
        decided=False,
        found=False,
        nearest_miss=None,
        nearest_miss_exact=False,
        nearest_miss_lower_bound=0.0,
        method="exhaustive",
        seconds=0.0,
        true_batch=_examples(pool, true_rows),
        reason=f"C(N, b) = {batches:,} batches exceed the exhaustive limit of "
        f"{settings.exhaustive_limit:,}; use --method=mitm",
    )
  result = meet_in_the_middle(
      pool,
      model,
      true_rows,
      settings.tolerance,
      settings.lookup_budget,
      settings.time_limit_s,
      settings.seed,
  )
  if settings.method == exact_settings.BruteForceMethod.BOTH and small:
    check = exhaustive(pool, model, true_rows, settings.tolerance)

    # The exhaustive nearest miss is exact; the search's must bracket it (equal it when exact).
    def slack(value: float) -> float:
      return 1e-9 * value + 1e-15

    consistent = check.found == result.found and (
        result.found
        or (
            result.nearest_miss_lower_bound - slack(result.nearest_miss_lower_bound)
            <= check.nearest_miss
            <= result.nearest_miss + slack(result.nearest_miss)
        )
    )
    result.cross_check = {
        "method": "exhaustive",
        "found": check.found,
        "nearest_miss": check.nearest_miss,
        "seconds": check.seconds,
        "batches_enumerated": check.batches_covered + 1,
        "agree": bool(consistent),
    }
    result.method = "meet-in-the-middle + exhaustive"
  if result.found:
    result.collision_distance_recheck = recheck(layers, pool, true_rows, _collision_rows(result))
  return result


def table_iv(settings: exact_settings.BruteForceSettings, on_cell=None) -> list[CellResult]:
  """Every cell (model, v, b) of Table IV, in that order (decide_cell).

  Args:
    settings: the cells and how to decide them.
    on_cell: called with each cell's CellResult as soon as it is decided.

  Returns:
    The cells' results.
  """
  cells = []
  for name in settings.models:
    model, theta = table_model(name, settings.seed)
    layers = dense.dense_layers(model, theta)
    for v in settings.levels:
      pool = make_pool(layers, v)
      for b in settings.batch_sizes:
        result = decide_cell(layers, pool, name, b, settings)
        logging.info(
            "%s v=%d b=%d: %s batches, decided=%s found=%s nearest miss %s (%s), %.1f s",
            name,
            v,
            b,
            f"{result.batches:,}",
            result.decided,
            result.found,
            result.nearest_miss,
            "exact" if result.nearest_miss_exact else f">= {result.nearest_miss_lower_bound:.3g}",
            result.seconds,
        )
        cells.append(result)
        if on_cell is not None:
          on_cell(result)
  return cells


def write_table_iv(
    settings: exact_settings.BruteForceSettings,
    out: str,
    platform: platform_lib.Platform = platform_lib.Platform(),
    overwrite: bool = False,
    command: str | None = None,
) -> dict:
  """Decides every cell of Table IV and writes the record to the JSON file `out`.

  The file is rewritten after every cell, so that an interrupted run shows what it decided;
  `"complete": true` marks the last rewrite.

  Args:
    settings: the cells and how to decide them.
    out: the JSON file to write.
    platform: the platform to compute on, applied to this process (numpy does the work; the
      fingerprint records the machine).
    overwrite: replace a finished Table IV already at `out` (an unfinished one is replaced
      anyway: its run is started over).
    command: the command line to record (None: called from Python).

  Returns:
    The record, as last written.

  Raises:
    ConfigError: `out` is a folder, holds something else, or a finished table without overwrite.
  """
  if os.path.isdir(out):
    raise errors.ConfigError(f"{out} is a folder; --out names the JSON file to write")
  if os.path.exists(out):
    try:
      existing = results.read_record(out, results.ResultKind.TABLE_IV)
    except errors.ForgingError:
      raise errors.ConfigError(
          f"{out} exists and does not hold a Table IV result; choose another --out"
      ) from None
    if existing["complete"] and not overwrite:
      raise errors.ConfigError(
          f"{out} already holds a finished Table IV; pass --overwrite to "
          "replace it or choose another --out"
      )
  levels = {v: pixel_levels(v).tolist() for v in settings.levels}
  platform_lib.apply_platform(platform)
  began = time.perf_counter()
  record = results.header(
      results.ResultKind.TABLE_IV, command, platform_lib.platform_fingerprint(platform)
  ) | {
      "settings": settings.as_dict(),
      "method": {
          "pixel_levels": levels,
          "distances": "l2 between mean gradients (float64)",
          "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
      },
      "complete": False,
      "seconds": 0.0,
      "cells": [],
  }

  def on_cell(result: CellResult) -> None:
    record["cells"].append(result.as_dict())
    record["seconds"] = round(time.perf_counter() - began, 1)
    results.write_json(out, record)

  table_iv(settings, on_cell)
  record["complete"] = True
  results.write_json(out, record)
  return record
