"""Greedy data-forging attacks in the deletion setting (SPEC section 5).

Deletion setting. At step i the adversary must produce B'_i holding no example of the deletion set
U; the examples of B_i outside U are kept in their places. The forging fraction is
|B_i ∩ U| / b, from 1/b to 1. For a fraction f the deletion set at a step is drawn here:
U = m = round(f * b) positions of B_i chosen uniformly without replacement (`deletion_positions`,
seeded by the caller). Only B_i ∩ U matters at step i, so U is that subset of B_i.

Replacements are drawn from D \\ B_i: that excludes U (no forged batch can contain an example of
U, by construction) and also the kept examples, so that a forged batch never repeats an example
(sampling without replacement inside a batch).

- Thudi et al. (USENIX Security 2022), greedy search: sample a pool of n examples uniformly
  without replacement from D \\ B_i, draw M candidates of m replacements each, every candidate
  without replacement from the pool (at fraction 1: M whole batches) and independently of the
  others; keep the candidate with the smallest approximation error. Defaults M = 300 (public
  implementations use 300-400) and n = 3,000: at least M, so that the M single-example candidates
  at fraction 1/b are drawn from 10x as many points and are almost all distinct, and at least 3b
  for every paper batch size (b <= 1000), so that whole batches at fraction 1 differ.
- Zhang et al. (ICML 2024), class-wise nearest neighbour: each example of U, in batch order, is
  replaced by its nearest neighbour of the same class that is in D \\ B_i and not already chosen.
  Metric: squared Euclidean distance between the uint8 pixel vectors (the l2 distance of the
  model inputs q/255, times 255^2), computed exactly in float64, equal distances ordered by
  index. The top-K neighbours of every example are computed once per dataset
  (`nearest_neighbours`, one class at a time, by blocks of rows, keeping K per row with
  argpartition: never a full argsort) and cached as an npz (`load_or_compute_neighbours`).

Every attack re-scores its forged batch with the one SGD step (AttackEngine.approximation_error)
and reports that number as the approximation error.
"""

import dataclasses
import os

import numpy as np

from forging_tf import data
from forging_tf import domain
from forging_tf import errors
from forging_tf import results
from forging_tf.attacks import engine as engine_lib

NEIGHBOUR_METRIC = "squared euclidean distance of the uint8 pixel vectors, exact, ties by index"
# Rows of a class scored per block in nearest_neighbours: a [rows, class size] float64 block.
_NEIGHBOUR_BLOCK = 1024


@dataclasses.dataclass(frozen=True)
class Forgery:
  """A forged batch for step `step` and how close it comes.

  forged_batch: [b] int32 dataset indices (B_i with the deleted positions replaced);
  deleted_positions: [m] positions in B_i of the deleted examples U;
  approximation_error: re-scored with SGDStep (what the verifier computes on this platform);
  engine_error: the search's own number for the winner (nan where there is no search);
  candidate_errors: [M] float64 the search's numbers for every candidate (None for Zhang).
  """

  step: int
  forged_batch: np.ndarray
  deleted_positions: np.ndarray
  approximation_error: float
  engine_error: float
  candidate_errors: np.ndarray | None


def num_replaced(forging_fraction: float, batch_size: int) -> int:
  """m = round(f * b) examples of B_i to replace; ConfigError unless 1 <= m <= b."""
  if not 0 < forging_fraction <= 1:
    raise errors.ConfigError(
        f"forging fraction {forging_fraction} is outside (0, 1]; use 1/b ... 1"
    )
  m = int(round(forging_fraction * batch_size))
  if m < 1:
    raise errors.ConfigError(
        f"forging fraction {forging_fraction} replaces no example at "
        f"b={batch_size}; use at least 1/b"
    )
  return m


def deletion_positions(batch_size: int, m: int, rng: np.random.Generator) -> np.ndarray:
  """U at a step: m positions of B_i [m] int64, uniform without replacement, increasing."""
  return np.sort(rng.choice(batch_size, size=m, replace=False))


def replacement_pool(batch: np.ndarray, num_examples: int) -> np.ndarray:
  """D \\ B_i: the dataset indices [N - |B_i|] int64 a replacement may come from."""
  allowed = np.ones(num_examples, bool)
  allowed[batch] = False
  return np.flatnonzero(allowed)


def margin_distances(images: np.ndarray, batch: np.ndarray, positions: np.ndarray) -> np.ndarray:
  """[m, N] float64: the l2 distance in grey levels from each deleted example batch[positions]
  to every example of images [N, h, w, c] uint8 (domain.pixel_distances, exact)."""
  return domain.pixel_distances(images[np.asarray(batch)[positions]], images)


def thudi_candidates(
    batch: np.ndarray,
    positions: np.ndarray,
    num_examples: int,
    M: int,
    n: int,
    rng: np.random.Generator,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
  """M candidates [M, m] int32 of dataset indices (module docstring); row c replaces U.

  allowed: [N] bool, the examples a replacement may be (the margin D); None: all of them.
  """
  m = len(positions)
  pool_allowed = replacement_pool(batch, num_examples)
  if allowed is not None:
    pool_allowed = pool_allowed[allowed[pool_allowed]]
  allowed = pool_allowed
  check_thudi_settings(M, n, m, len(allowed))
  pool = rng.choice(allowed, size=n, replace=False)
  # Independent uniform m-subsets of the pool: the first m of a random permutation per row.
  picks = np.argsort(rng.random((M, n)), axis=1)[:, :m]
  return pool[picks].astype(np.int32)


def check_thudi_settings(M: int, n: int, m: int, available: int) -> None:
  """ConfigError unless 1 <= M and m <= n <= available (|D \\ B_i|)."""
  if M < 1:
    raise errors.ConfigError(f"M={M}: the greedy search needs at least one candidate (M >= 1)")
  if n < m:
    raise errors.ConfigError(
        f"n={n} pool points cannot fill a candidate of {m} replacements; use n >= {m}"
    )
  if n > available:
    raise errors.ConfigError(
        f"n={n} is more than the {available} examples outside the batch (and at least the "
        f"margin from every deleted example); use n <= {available} or a smaller --min_distance"
    )


def thudi_attack(
    engine: engine_lib.AttackEngine,
    step: int,
    theta: np.ndarray,
    theta_next: np.ndarray,
    batch: np.ndarray,
    positions: np.ndarray,
    M: int,
    n: int,
    rng: np.random.Generator,
    sequential: bool = False,
    velocity: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
) -> Forgery:
  """Thudi et al.'s greedy search at step `step` (theta, theta_next: [P] float32; batch: [b];
  velocity: the optimizer's [P] at step `step` for momentum SGD, else None).

  sequential: score the candidates with the reference loop instead of the vectorised engine;
  allowed: [N] bool, the examples at least the margin from every deleted one (None: all).
  """
  candidates = thudi_candidates(batch, positions, engine.source.num_examples, M, n, rng, allowed)
  score = engine.sequential_errors if sequential else engine.candidate_errors
  candidate_errors = score(theta, theta_next, batch, positions, candidates, velocity)
  winner = int(np.argmin(candidate_errors))
  forged = engine_lib.replace(batch, positions, candidates[winner])
  return Forgery(
      step,
      forged,
      np.asarray(positions),
      engine.approximation_error(theta, theta_next, forged, velocity),
      float(candidate_errors[winner]),
      candidate_errors,
  )


def zhang_replacements(
    batch: np.ndarray, positions: np.ndarray, neighbours: np.ndarray
) -> np.ndarray:
  """Replacements [m] int32: for each deleted example, in batch order, its nearest same-class
  neighbour (neighbours: [N, K] indices, nearest first) not in B_i and not chosen before."""
  taken = set(int(j) for j in batch)
  replacements = []
  for position in positions:
    example = int(batch[position])
    choice = next((int(j) for j in neighbours[example] if int(j) not in taken), None)
    if choice is None:
      raise errors.ConfigError(
          f"all {neighbours.shape[1]} nearest neighbours of example "
          f"{example} are in the batch or taken; use more neighbours "
          "(--neighbours_k)"
      )
    taken.add(choice)
    replacements.append(choice)
  return np.array(replacements, np.int32)


def zhang_margin_replacements(
    batch: np.ndarray,
    positions: np.ndarray,
    labels: np.ndarray,
    distances: np.ndarray,
    min_distance: float,
) -> np.ndarray:
  """zhang_replacements with the margin D: each deleted example's nearest same-class example that
  is at least D from every deleted example, not in B_i and not chosen before (ties by index).

  labels: [N] the training labels; distances: [m, N] margin_distances of the deleted examples.
  """
  allowed = distances.min(axis=0) >= min_distance
  allowed[np.asarray(batch)] = False
  replacements = []
  for row, position in enumerate(positions):
    example = int(batch[position])
    candidates = np.flatnonzero(allowed & (labels == labels[example]))
    if not candidates.size:
      raise errors.ConfigError(
          f"no example of class {labels[example]} is {min_distance:g} grey levels from every "
          "deleted example; use a smaller --min_distance"
      )
    choice = int(candidates[np.argmin(distances[row, candidates])])  # argmin: lowest index ties
    allowed[choice] = False
    replacements.append(choice)
  return np.array(replacements, np.int32)


def zhang_attack(
    engine: engine_lib.AttackEngine,
    step: int,
    theta: np.ndarray,
    theta_next: np.ndarray,
    batch: np.ndarray,
    positions: np.ndarray,
    neighbours: np.ndarray,
    velocity: np.ndarray | None = None,
    replacements: np.ndarray | None = None,
) -> Forgery:
  """Zhang et al.'s class-wise nearest-neighbour forgery at step `step` (replacements: [m] chosen
  with a margin by zhang_margin_replacements; None: from the neighbour cache)."""
  if replacements is None:
    replacements = zhang_replacements(batch, positions, neighbours)
  forged = engine_lib.replace(batch, positions, replacements)
  return Forgery(
      step,
      forged,
      np.asarray(positions),
      engine.approximation_error(theta, theta_next, forged, velocity),
      float("nan"),
      None,
  )


# Nearest neighbours --------------------------------------------------------------------------


def nearest_neighbours(
    images: np.ndarray, labels: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
  """Top-k same-class neighbours of every example (NEIGHBOUR_METRIC), the example excluded.

  images: [N, h, w, c] uint8; labels: [N] int. Returns (indices [N, k] int32, nearest first;
  distances [N, k] float64, squared uint8 distances). ConfigError if a class has <= k examples.
  """
  images, labels = np.asarray(images), np.asarray(labels)
  indices = np.empty((len(images), k), np.int32)
  distances = np.empty((len(images), k), np.float64)
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    if len(members) <= k:
      raise errors.ConfigError(
          f"class {label} has {len(members)} examples, not more than the "
          f"{k} neighbours asked for; use fewer neighbours"
      )
    vectors = images[members].reshape(len(members), -1).astype(np.float64)
    norms = np.einsum("ij,ij->i", vectors, vectors)
    for start in range(0, len(members), _NEIGHBOUR_BLOCK):
      rows = slice(start, start + _NEIGHBOUR_BLOCK)
      # Integer pixels below 2^8 over at most ~2^12 dimensions: every term is an integer below
      # 2^53, so these float64 distances are exact and ties are real ties.
      block = norms[rows, None] + norms[None, :] - 2.0 * vectors[rows] @ vectors.T
      block[np.arange(block.shape[0]), np.arange(start, start + block.shape[0])] = np.inf
      nearest = np.argpartition(block, k, axis=1)[:, : k + 1]
      # argpartition does not order ties; sort the k + 1 kept by (distance, index), keep k. The
      # (k+1)-th bounds the rest, so a tie at the boundary is resolved by index among the kept.
      kept = np.take_along_axis(block, nearest, axis=1)
      order = np.lexsort((members[nearest], kept), axis=1)[:, :k]
      indices[members[rows]] = members[np.take_along_axis(nearest, order, axis=1)]
      distances[members[rows]] = np.take_along_axis(kept, order, axis=1)
  return indices, distances


def neighbours_path(directory: str, dataset: data.Dataset, k: int) -> str:
  return os.path.join(directory, f"{dataset.name}-{dataset.fingerprint[:16]}-top{k}.npz")


def load_or_compute_neighbours(
    dataset: data.Dataset, k: int, directory: str
) -> tuple[np.ndarray, str]:
  """The top-k neighbour indices [N, k] int32 of the training split, cached in `directory`.

  Returns (indices, path of the npz). The npz holds indices, distances, the metric and the
  dataset fingerprint; a cached file that does not match the dataset or k is recomputed.
  """
  if k < 1:
    raise errors.ConfigError(f"neighbours_k={k}: Zhang's attack needs at least one neighbour")
  path = neighbours_path(directory, dataset, k)
  if os.path.isfile(path):
    try:
      with np.load(path, allow_pickle=False) as cached:
        if str(cached["fingerprint"]) == dataset.fingerprint and cached["indices"].shape == (
            dataset.x_train.shape[0],
            k,
        ):
          return cached["indices"].astype(np.int32), path
    except (OSError, ValueError, KeyError, EOFError):
      pass  # A damaged cache is recomputed below.
  indices, distances = nearest_neighbours(dataset.x_train, dataset.y_train, k)
  results.write_npz(
      path,
      indices=indices,
      distances=distances,
      metric=NEIGHBOUR_METRIC,
      fingerprint=dataset.fingerprint,
      dataset=dataset.name,
  )
  return indices, path
