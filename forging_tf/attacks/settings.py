"""What a forging attack is asked to do: the closed choices and the settings an attack records.

No TensorFlow here: forging-reproduce's presets name attacks with these too, and must not load it.
"""

import dataclasses
import enum

from forging_tf import errors
from forging_tf import results

DEFAULT_M = 300
DEFAULT_POOL_SIZE = 3000
DEFAULT_NEIGHBOURS = 64
DEFAULT_MEMORY_BUDGET = 2**30
DEFAULT_SEARCH_ITERATIONS = 100
DEFAULT_GRID_ROUNDS = 30
DEFAULT_GRID_MOVES = 64


class Attack(enum.StrEnum):
  """thudi: Thudi et al.'s greedy search over M random candidates; zhang: Zhang et al.'s
  class-wise nearest neighbours (SPEC section 5); perturb: each deleted example moved on the
  pixel grid by at least the margin D where the gradient barely sees it; gradmatch: the better
  of thudi's and zhang's replacements, optimised pixel by pixel to match the deleted examples'
  gradient (pixel_search.py)."""

  THUDI = "thudi"
  ZHANG = "zhang"
  PERTURB = "perturb"
  GRADMATCH = "gradmatch"

  @property
  def searches_pixels(self) -> bool:
    """Whether the replacements are new images (pixel_search.py), not training examples."""
    return self in (Attack.PERTURB, Attack.GRADMATCH)


# The greedy attacks of the paper, which replace examples by other training examples.
PAPER_ATTACKS = (Attack.THUDI, Attack.ZHANG)


class Engine(enum.StrEnum):
  """How Thudi's candidates are scored: the vectorised engine, or one SGD step per candidate."""

  VECTORISED = "vectorised"
  SEQUENTIAL = "sequential"


class BatchMode(enum.StrEnum):
  """Which true batch B is forged at step i, against which theta_{i+1}.

  trace: the trace's own B_i against its logged theta_{i+1} (what a verifier of this trace sees;
  the error includes the benign reproduction error of the step). random: the paper's Figure 3
  design: R seeded true batches B_r of b distinct training examples, each kept fixed (with its
  deletion set) across the requested steps and forged at each against theta_i - eta * grad
  L(B_r; theta_i) computed on the attacking platform, so the error is eta * ||grad L(B_r) -
  grad L(B')|| with no reproduction noise in it.
  """

  TRACE = "trace"
  RANDOM = "random"


@dataclasses.dataclass(frozen=True)
class AttackSettings:
  """One forging-attack run; its fields are the `settings` block of the attack's record.

  attack: which attack; steps: 'middle', 'all' or 'i,j,...' (as asked; the record lists the
  steps it resolved to); forging_fractions: labels '1/b', 'N/b' or numbers in (0, 1]; runs:
  deletion sets and draws per step and fraction; M, n: Thudi's candidates and the pool they are
  drawn from; seed: of the deletion sets and the draws; engine: how Thudi's candidates are
  scored; neighbours_k: Zhang's nearest neighbours kept per example; memory_budget_bytes: the
  vectorised engine's gradient buffers. M, n and engine are Thudi's; neighbours_k is Zhang's;
  gradmatch uses both (it starts from the better of their winners).
  min_distance: the distinctness margin D in grey levels (l2 over the pixels in 0..255 units):
  every replacement is at least D from every deleted example, for every attack (0: the paper's
  Definition 1). search_iterations, grid_rounds, grid_moves: perturb's and gradmatch's
  projected-gradient steps on the continuous pixels, rounds of the grid search that re-scores
  moves exactly, and the moves scored per round (pixel_search.py). batch: which true batch is
  forged at each step (BatchMode; run r forges the r-th random batch in `random` mode).
  """

  attack: Attack = Attack.THUDI
  steps: str = "middle"
  forging_fractions: tuple[str, ...] = ("1/b", "1")
  runs: int = 3
  M: int = DEFAULT_M  # noqa: N815 (the paper's name)
  n: int = DEFAULT_POOL_SIZE
  seed: int = 0
  engine: Engine = Engine.VECTORISED
  neighbours_k: int = DEFAULT_NEIGHBOURS
  memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET
  min_distance: float = 0.0
  search_iterations: int = DEFAULT_SEARCH_ITERATIONS
  grid_rounds: int = DEFAULT_GRID_ROUNDS
  grid_moves: int = DEFAULT_GRID_MOVES
  batch: BatchMode = BatchMode.TRACE

  def __post_init__(self):
    object.__setattr__(self, "attack", results.choice(Attack, self.attack, "attack"))
    object.__setattr__(self, "engine", results.choice(Engine, self.engine, "engine"))
    object.__setattr__(self, "batch", results.choice(BatchMode, self.batch, "batch"))
    object.__setattr__(
        self, "forging_fractions", tuple(str(label).strip() for label in self.forging_fractions)
    )
    if self.runs < 1:
      raise errors.ConfigError(f"runs={self.runs}: at least one run is needed")
    object.__setattr__(self, "min_distance", float(self.min_distance))
    if not self.min_distance >= 0 or self.min_distance == float("inf"):
      raise errors.ConfigError(
          f"min_distance={self.min_distance}: the margin is a finite number of grey levels >= 0"
      )
    if self.search_iterations < 0 or self.grid_rounds < 0 or self.grid_moves < 1:
      raise errors.ConfigError("search_iterations and grid_rounds must be >= 0 and grid_moves >= 1")

  def as_dict(self) -> dict:
    """The settings as JSON values (enums as their strings)."""
    return results.json_values(dataclasses.asdict(self))
