"""What a study is: the presets (quick, paper, smoke) and the platforms they run on.

A platform (platforms.py) is the flags every binary takes and what its stages ask of a Ray
cluster; a preset names platforms of platforms.BUILT_IN and says which traces
are trained, on which platforms they are recomputed, which attacks and exact experiments run, and
which part of Table IV is searched. stages.plan turns a preset into the commands that do it.
"""

import dataclasses

from forging_tf import results
from forging_tf.attacks import settings as attack_settings
from forging_tf.exact import settings as exact_settings


@dataclasses.dataclass(frozen=True)
class AttackPlan:
  """forging-attack on the primary platform's trace of (model, b); min_distance: the margin D in
  grey levels, batch: the trace's batches or random ones (attack_settings.AttackSettings)."""

  model: str
  batch_size: int
  attack: attack_settings.Attack
  steps: str  # "middle" or "stages:N" (N evenly spaced steps, first and last included)
  fractions: tuple[str, ...]
  runs: int
  M: int = attack_settings.DEFAULT_M  # noqa: N815 (the paper's name)
  n: int = attack_settings.DEFAULT_POOL_SIZE
  engine: attack_settings.Engine = attack_settings.Engine.VECTORISED
  min_distance: float = 0.0
  batch: attack_settings.BatchMode = attack_settings.BatchMode.TRACE


@dataclasses.dataclass(frozen=True)
class Preset:
  """What a study trains, recomputes, attacks and forges exactly.

  steps: (model, dataset, b, T) of every trace. Table I trains each on platforms[0] and recomputes
  it there; Table II (b) trains LeNet b=100 and (c) LeNet b=1000 on every deterministic platform
  and (a) LeNet b=100 on every other one, and recomputes each on all platforms of its kind; the
  other models' smallest b is also recomputed on every deterministic platform.
  """

  name: str
  purpose: str
  platforms: tuple[str, ...]
  steps: tuple[tuple[str, str, int, int], ...]
  repeats_same: int
  repeats_cross: int
  attacks: tuple[AttackPlan, ...]
  exact: tuple[tuple[exact_settings.ExactExperiment, tuple[str, ...]], ...]  # (experiment, flags)
  bruteforce: tuple[str, ...]
  recompute_flags: tuple[str, ...] = ()
  learning_rate: float = 0.01
  seed: int = 0

  def settings(self) -> dict:
    """The preset as reproduce.json records it (JSON values): a run resumes only the same.

    An attack's min_distance and batch, added in 0.2, are left out at their defaults (0, trace):
    a run recorded before them had no margin and forged the trace's batches, and is the same run.
    """
    settings = results.json_values(dataclasses.asdict(self))
    for attack in settings["attacks"]:
      if not attack["min_distance"]:
        del attack["min_distance"]
      if attack["batch"] == attack_settings.BatchMode.TRACE:
        del attack["batch"]
    return settings


_FRACTIONS = ("1/b", "0.01", "0.1", "0.5", "1")


_THUDI, _ZHANG, _PERTURB, _GRADMATCH = attack_settings.Attack
_RANDOM = attack_settings.BatchMode.RANDOM


_FIG4, _FIG5, _DOMAIN = (
    exact_settings.ExactExperiment.FIG4,
    exact_settings.ExactExperiment.FIG5,
    exact_settings.ExactExperiment.DOMAIN,
)


PRESETS = {
    "quick": Preset(
        name="quick",
        purpose=(
            "a reduced study for a 2-core CPU (15 to 28 minutes): LeNet T=300 at b=100 and T=100 "
            "at b=500 and 1000, VGGmini T=10 at b=100 only; 2 repeats on the generating platform "
            "and 2 across; Thudi with M=300 and 3 runs (VGGmini: M=100 at 1/b, M=30 at 1, 1 "
            "run; LeNet b=1000 also on 3 fixed random batches, Figure 3), Zhang with 3 runs; "
            "perturb and gradmatch at margins of 1, 64 and 1024 grey levels (Figure 7, 1 run); "
            "Table IV for v <= 4 and b <= 4. The paper's settings are --preset=paper"
        ),
        platforms=("cpu", "cpu-nodnn", "cpu-nodet", "cpu-nodnn-nodet"),
        steps=(
            ("lenet", "mnist", 100, 300),
            ("lenet", "mnist", 500, 100),
            ("lenet", "mnist", 1000, 100),
            ("vggmini", "cifar10", 100, 10),
        ),
        repeats_same=2,
        repeats_cross=2,
        attacks=(
            AttackPlan("lenet", 100, _THUDI, "middle", ("1/b", "0.1", "0.5", "1"), 3),
            AttackPlan("lenet", 100, _ZHANG, "middle", ("1/b", "0.1", "0.5", "1"), 3),
            AttackPlan("lenet", 1000, _THUDI, "stages:3", ("1/b", "1"), 3),
            # Figure 3 as the paper drew it: 3 fixed random batches forged at the same steps.
            AttackPlan("lenet", 1000, _THUDI, "stages:3", ("1/b", "1"), 3, batch=_RANDOM),
            AttackPlan("vggmini", 100, _THUDI, "stages:2", ("1/b",), 1, M=100),
            AttackPlan(
                "vggmini",
                100,
                _THUDI,
                "stages:2",
                ("1",),
                1,
                M=30,
                engine=attack_settings.Engine.SEQUENTIAL,
            ),
        )
        # Figure 7, small: the pixel-searching forgers against margins of 1, 64 and 1024 grey
        # levels at the middle step.
        + tuple(
            AttackPlan("lenet", 100, attack, "middle", ("1/b", "0.1"), 1, min_distance=margin)
            for attack in (_PERTURB, _GRADMATCH)
            for margin in (1.0, 64.0, 1024.0)
        ),
        exact=((_FIG4, ()), (_FIG5, ()), (_DOMAIN, ("--milp_time_limit=30",))),
        bruteforce=("--levels=2,3,4", "--batch_sizes=1,2,3,4", "--time_limit=120"),
    ),
    "smoke": Preset(
        name="smoke",
        purpose=(
            "toy sizes that run every stage end to end in a few minutes, to check an "
            "installation (and in the tests); its numbers say nothing about forging"
        ),
        platforms=("cpu", "cpu-nodnn"),
        steps=(("lenet", "mnist", 100, 6),),
        repeats_same=1,
        repeats_cross=1,
        attacks=(AttackPlan("lenet", 100, _THUDI, "stages:3", ("1/b", "1"), 1, M=8, n=300),),
        exact=((_FIG5, ("--batch_size=8",)),),
        bruteforce=("--models=logreg", "--levels=2", "--batch_sizes=1,2"),
        recompute_flags=("--nofresh_process",),
    ),
    "paper": Preset(
        name="paper",
        purpose=(
            "the paper's settings, for a GPU: LeNet T=1200 at b in {100, 500, 1000}, VGGmini "
            "T=2500, k=1; 5 repeats on the generating platform and 3 across; Thudi with M=300, "
            "n=3000 and Zhang, 5 runs at the middle step and 3 runs at 20 steps, on the trace's "
            "batches and on 3 fixed random ones (Figure 3); the full Table IV. VGGmini traces "
            "take 23 MB per step (57 GB each)"
        ),
        platforms=("gpu", "cpu", "gpu-nodet", "cpu-nodet"),
        steps=tuple(
            (model, dataset, b, steps)
            for model, dataset, steps in (("lenet", "mnist", 1200), ("vggmini", "cifar10", 2500))
            for b in (100, 500, 1000)
        ),
        repeats_same=5,
        repeats_cross=3,
        attacks=tuple(
            AttackPlan(model, b, attack, "middle", _FRACTIONS, 5)
            for model in ("lenet", "vggmini")
            for b in (100, 500, 1000)
            for attack in attack_settings.PAPER_ATTACKS
        )
        + (
            AttackPlan("lenet", 1000, _THUDI, "stages:20", ("1/b", "1"), 3),
            AttackPlan("vggmini", 100, _THUDI, "stages:20", ("1/b", "1"), 3),
        )
        + tuple(
            AttackPlan(model, b, _THUDI, "stages:20", ("1/b", "1"), 3, batch=_RANDOM)
            for model, b in (("lenet", 1000), ("vggmini", 100))
        ),
        exact=((_FIG4, ()), (_FIG5, ()), (_DOMAIN, ())),
        bruteforce=(),
    ),
}
