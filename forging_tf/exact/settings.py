"""What the exact-forging experiments and the Table IV search are asked to do (SPEC section 6).

The closed choices and the settings each result records. No TensorFlow here: forging-reproduce's
presets name experiments with these too, and must not load it.
"""

import dataclasses
import enum

from forging_tf import errors
from forging_tf import results


class ExactExperiment(enum.StrEnum):
  """fig4: mini-batch perturbation (Prop. 2) on MNIST with an L = 2 ReLU network; fig5:
  error-matrix sampling (Prop. 3) with softmax regression on MNIST and CIFAR-10; domain: the
  search for a forgery inside the domain on the fig4 setting; dead_units: the training examples
  whose first-layer ReLU units are all inactive at checkpoints of a trace, and the exact in-domain
  forgery that swapping two of one class is (SPEC section 8)."""

  FIG4 = "fig4"
  FIG5 = "fig5"
  DOMAIN = "domain"
  DEAD_UNITS = "dead_units"


@dataclasses.dataclass(frozen=True)
class ExactSettings:
  """One forging-exact run; its fields are the `settings` block of the experiment's record.

  batch_size: b; hidden: hidden units of the L = 2 network (fig4, domain); seed: of theta_0, the
  batch and the random draws; learning_rate: eta of the SGD step that scores forgeries;
  perturbation_scale: fig4's largest pixel change; error_matrix_scale: how far fig5's sampled
  error matrix D' moves from D; use_bias: fig5's softmax regression has a bias; rounding_scales:
  the fractions s of the domain search's LP perturbation p rounded to the grid (x + s p);
  milp_examples, milp_pixels: the examples and the pixels per example its MILP may change;
  milp_max_levels: the largest change of one pixel, in levels of 1/255; milp_time_limit_s:
  HiGHS's time limit; trace: a forging-train trace whose stored checkpoints give theta (domain:
  its model must be fcn with `hidden` units; dead_units: any model whose first layer is Dense or
  Conv2D with ReLU), None: theta_0 = models.initial_parameters(seed); checkpoints: the steps of
  the trace to use (domain: one; dead_units: one or more, each counted, and the swap searched
  from it to the next).
  """

  experiment: ExactExperiment = ExactExperiment.FIG4
  batch_size: int = 32
  hidden: int = 8
  seed: int = 0
  learning_rate: float = 0.01
  perturbation_scale: float = 0.5
  error_matrix_scale: float = 0.5
  use_bias: bool = True
  rounding_scales: tuple[float, ...] = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005)
  milp_examples: int = 4
  milp_pixels: int = 8
  milp_max_levels: int = 4
  milp_time_limit_s: float = 60.0
  trace: str | None = None
  checkpoints: tuple[int, ...] = ()

  def __post_init__(self):
    object.__setattr__(
        self, "experiment", results.choice(ExactExperiment, self.experiment, "experiment")
    )
    object.__setattr__(self, "rounding_scales", tuple(float(s) for s in self.rounding_scales))
    object.__setattr__(self, "checkpoints", tuple(int(s) for s in self.checkpoints))
    if self.batch_size < 1 or self.hidden < 1:
      raise errors.ConfigError("batch_size and hidden must be at least 1")
    if not all(s > 0 for s in self.rounding_scales):
      raise errors.ConfigError(f"rounding scales must be positive, got {self.rounding_scales}")
    self._check_checkpoints()

  def _check_checkpoints(self) -> None:
    experiment, steps = self.experiment, self.checkpoints
    if experiment in (ExactExperiment.FIG4, ExactExperiment.FIG5) and (self.trace or steps):
      raise errors.ConfigError(
          f"{experiment} runs at theta_0; --trace and --checkpoints are for domain and dead_units"
      )
    if experiment == ExactExperiment.DEAD_UNITS and not (self.trace and steps):
      raise errors.ConfigError(
          "dead_units counts at checkpoints of a trace: give --trace and --checkpoints"
      )
    if experiment == ExactExperiment.DOMAIN and bool(self.trace) != (len(steps) == 1):
      raise errors.ConfigError(
          "domain with a trace searches at one of its checkpoints: give --trace with one "
          f"--checkpoints step, or neither (theta_0); got trace {self.trace!r}, checkpoints "
          f"{list(steps)}"
      )
    if any(s < 0 for s in steps) or list(steps) != sorted(set(steps)):
      raise errors.ConfigError(
          f"checkpoints must be distinct steps >= 0 in increasing order, got {list(steps)}"
      )

  def as_dict(self) -> dict:
    """The settings as JSON values (the experiment as its string)."""
    return results.json_values(dataclasses.asdict(self))


class BruteForceMethod(enum.StrEnum):
  """How Table IV's cells are decided: meet-in-the-middle (mitm), plain enumeration
  (exhaustive), or both: meet-in-the-middle, cross-checked by enumeration where the cell is
  small enough."""

  BOTH = "both"
  MITM = "mitm"
  EXHAUSTIVE = "exhaustive"


TABLE_MODELS = ("logreg", "fcn")
# The paper's Table IV setting: d pixels, n classes, and the hidden ReLU units of its L = 2 FCN.
NUM_PIXELS = 4
NUM_CLASSES = 3
HIDDEN_UNITS = 10


@dataclasses.dataclass(frozen=True)
class BruteForceSettings:
  """One forging-bruteforce run (Table IV); its fields are the `settings` block of the record.

  models: among TABLE_MODELS; levels: pixel levels v (2..256); batch_sizes: b; seed: of the
  weights and of the true batches; method: BruteForceMethod; tolerance: the mean-gradient l2
  distance (float64) up to which two batches count as having the same gradient;
  exhaustive_limit: the largest C(N, b) that is enumerated; lookup_budget: expected table
  lookups per part of the search, which bounds the window in which nearest misses are exact;
  time_limit_s: seconds per cell before it is reported undecided; pixels, classes,
  fcn_hidden_units: the paper's setting, fixed (recorded, not chosen).
  """

  models: tuple[str, ...] = TABLE_MODELS
  levels: tuple[int, ...] = (2, 3, 4, 5, 6)
  batch_sizes: tuple[int, ...] = (1, 2, 3, 4, 5)
  seed: int = 0
  method: BruteForceMethod = BruteForceMethod.BOTH
  tolerance: float = 1e-10
  exhaustive_limit: int = 10_000_000
  lookup_budget: float = 2e7
  time_limit_s: float = 1800.0
  pixels: int = dataclasses.field(default=NUM_PIXELS, init=False)
  classes: int = dataclasses.field(default=NUM_CLASSES, init=False)
  fcn_hidden_units: int = dataclasses.field(default=HIDDEN_UNITS, init=False)

  def __post_init__(self):
    object.__setattr__(self, "method", results.choice(BruteForceMethod, self.method, "method"))
    for name in ("models", "levels", "batch_sizes"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    unknown = sorted(set(self.models) - set(TABLE_MODELS))
    if unknown:
      raise errors.ConfigError(
          f"unknown Table IV models {unknown}; choose among {list(TABLE_MODELS)}"
      )

  def as_dict(self) -> dict:
    """The settings as JSON values (the method as its string)."""
    return results.json_values(dataclasses.asdict(self))
