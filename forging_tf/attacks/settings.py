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


class Attack(enum.StrEnum):
  """thudi: Thudi et al.'s greedy search over M random candidates; zhang: Zhang et al.'s
  class-wise nearest neighbours (SPEC section 5)."""

  THUDI = "thudi"
  ZHANG = "zhang"


class Engine(enum.StrEnum):
  """How Thudi's candidates are scored: the vectorised engine, or one SGD step per candidate."""

  VECTORISED = "vectorised"
  SEQUENTIAL = "sequential"


@dataclasses.dataclass(frozen=True)
class AttackSettings:
  """One forging-attack run; its fields are the `settings` block of the attack's record.

  attack: which attack; steps: 'middle', 'all' or 'i,j,...' (as asked; the record lists the
  steps it resolved to); forging_fractions: labels '1/b', 'N/b' or numbers in (0, 1]; runs:
  deletion sets and draws per step and fraction; M, n: Thudi's candidates and the pool they are
  drawn from; seed: of the deletion sets and the draws; engine: how Thudi's candidates are
  scored; neighbours_k: Zhang's nearest neighbours kept per example; memory_budget_bytes: the
  vectorised engine's gradient buffers. M, n and engine are Thudi's; neighbours_k is Zhang's.
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

  def __post_init__(self):
    object.__setattr__(self, "attack", results.choice(Attack, self.attack, "attack"))
    object.__setattr__(self, "engine", results.choice(Engine, self.engine, "engine"))
    object.__setattr__(
        self, "forging_fractions", tuple(str(label).strip() for label in self.forging_fractions)
    )
    if self.runs < 1:
      raise errors.ConfigError(f"runs={self.runs}: at least one run is needed")

  def as_dict(self) -> dict:
    """The settings as JSON values (enums as their strings)."""
    return results.json_values(dataclasses.asdict(self))
