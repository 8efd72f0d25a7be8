r"""Runs a greedy forging attack on the steps of a trace and saves the results as data.

  forging-attack --trace=runs/traces/lenet_mnist_b1000 --attack=thudi|zhang|perturb|gradmatch \
      --steps=middle|all|600,601 --forging_fraction=1/b,0.01,0.1,0.5,1 --runs=3 --M=300 \
      --n=3000 --seed=0 --out=results/attacks/NAME [--batch=trace|random] \
      [--engine=vectorised|sequential] \
      [--neighbours_k=64] [--min_distance=D] [--search_iterations=100 --grid_rounds=30 \
      --grid_moves=64] [--data_dir=...] [--overwrite] [platform flags]

--batch=random forges R = --runs seeded true batches B_r, each fixed across the steps (the paper's
Figure 3), against theta_i - eta * grad L(B_r; theta_i) recomputed on this platform; the default
--batch=trace forges the trace's own B_i against its logged theta_{i+1}.

--min_distance=D: every replacement is at least D grey levels (l2 over the pixels in 0..255
units) from every deleted example, for every attack. perturb and gradmatch search new images on
the pixel grid (forging_tf/attacks/pixel_search.py); gradmatch starts from the better of Thudi's
(M, n) and Zhang's winners for the same deletion set.

Writes OUT/summary.json and OUT/*.npy (format: forging_tf/attack_lib.py), whole or not at
all. Existing results are never replaced without --overwrite.
"""

from absl import flags

from forging_tf import cli
from forging_tf.attacks import attack_lib
from forging_tf.attacks import settings as attack_settings

_DEFAULTS = attack_settings.AttackSettings()
_TRACE = flags.DEFINE_string(
    "trace", None, "Trace directory (or object-store URL: s3://...) to attack."
)
_ATTACK = flags.DEFINE_enum_class(
    "attack",
    _DEFAULTS.attack,
    attack_settings.Attack,
    "thudi: greedy search over M random candidates; zhang: class-wise nearest neighbours; "
    "perturb: each deleted example moved by at least the margin where the gradient barely sees "
    "it; gradmatch: Thudi's or Zhang's winner optimised to match the gradient.",
    case_sensitive=False,
)
_BATCH = flags.DEFINE_enum_class(
    "batch",
    _DEFAULTS.batch,
    attack_settings.BatchMode,
    "trace: forge each step's logged batch B_i against the logged theta_i+1 (what a verifier of "
    "this trace sees); random: the paper's Figure 3, R=--runs seeded true batches, each forged at "
    "every step against its update recomputed here.",
    case_sensitive=False,
)
_STEPS = flags.DEFINE_string(
    "steps", _DEFAULTS.steps, "Steps to attack: middle, all, or a comma list."
)
_FRACTIONS = flags.DEFINE_list(
    "forging_fraction",
    list(_DEFAULTS.forging_fractions),
    "Forging fractions |B_i ∩ U| / b: 1/b, N/b or numbers in (0, 1].",
)
_RUNS = flags.DEFINE_integer(
    "runs", _DEFAULTS.runs, "Runs (deletion sets and draws) per step and fraction."
)
_M = flags.DEFINE_integer("M", _DEFAULTS.M, "Thudi: candidates per attack.")
_N = flags.DEFINE_integer(
    "n", _DEFAULTS.n, "Thudi: pool of examples sampled from D \\ B_i for the candidates."
)
_ENGINE = flags.DEFINE_enum_class(
    "engine",
    _DEFAULTS.engine,
    attack_settings.Engine,
    "Thudi: score candidates with the vectorised engine or the sequential SGDStep loop.",
    case_sensitive=False,
)
_NEIGHBOURS_K = flags.DEFINE_integer(
    "neighbours_k", _DEFAULTS.neighbours_k, "Zhang: nearest neighbours kept per example."
)
_NEIGHBOURS_DIR = flags.DEFINE_string(
    "neighbours_dir", None, "Zhang: neighbour cache folder (default: OUT's parent/neighbours)."
)
_MEMORY_MB = flags.DEFINE_integer(
    "memory_budget_mb",
    _DEFAULTS.memory_budget_bytes // 2**20,
    "Vectorised engine: memory for gradients, in MiB.",
)
_MIN_DISTANCE = flags.DEFINE_float(
    "min_distance",
    _DEFAULTS.min_distance,
    "Margin D in grey levels: every replacement at least D (l2, pixels in 0..255) from every "
    "deleted example (0: the paper's Definition 1).",
)
_SEARCH_ITERATIONS = flags.DEFINE_integer(
    "search_iterations",
    _DEFAULTS.search_iterations,
    "perturb, gradmatch: projected Adam steps on the continuous pixels.",
)
_GRID_ROUNDS = flags.DEFINE_integer(
    "grid_rounds", _DEFAULTS.grid_rounds, "perturb, gradmatch: rounds of the exact grid search."
)
_GRID_MOVES = flags.DEFINE_integer(
    "grid_moves", _DEFAULTS.grid_moves, "perturb, gradmatch: single-pixel moves scored per round."
)
_SEED = flags.DEFINE_integer(
    "seed", _DEFAULTS.seed, "Seed of the deletion sets and candidate draws."
)
_OUT = flags.DEFINE_string(
    "out", None, "Results folder (or object-store URL) to write, e.g. results/attacks/NAME."
)
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace results already at --out.")
_MODEL_FN = cli.define_model_fn_flag()
_DATA_DIR, _DOWNLOAD = cli.define_data_flags()
_PLATFORM = cli.define_platform_flags()
flags.mark_flags_as_required(["trace", "out"])


def main():
  platform = _PLATFORM.requested()
  _, dataset = cli.trace_and_dataset(_TRACE.value, _DATA_DIR.value, _DOWNLOAD.value)
  settings = attack_settings.AttackSettings(
      attack=_ATTACK.value,
      steps=_STEPS.value,
      forging_fractions=tuple(_FRACTIONS.value),
      runs=_RUNS.value,
      M=_M.value,
      n=_N.value,
      seed=_SEED.value,
      engine=_ENGINE.value,
      neighbours_k=_NEIGHBOURS_K.value,
      memory_budget_bytes=_MEMORY_MB.value * 2**20,
      min_distance=_MIN_DISTANCE.value,
      search_iterations=_SEARCH_ITERATIONS.value,
      grid_rounds=_GRID_ROUNDS.value,
      grid_moves=_GRID_MOVES.value,
      batch=_BATCH.value,
  )
  summary = attack_lib.run_attacks(
      _TRACE.value,
      dataset,
      settings,
      _OUT.value,
      neighbours_dir=_NEIGHBOURS_DIR.value,
      platform=platform,
      overwrite=_OVERWRITE.value,
      command=cli.command_line(),
      model_fn=_MODEL_FN.value,
  )
  print(
      f"{settings.attack} attack on {settings.batch} batches of {summary['trace']['path']}: "
      f"{len(summary['steps'])} "
      f"step(s) x {len(summary['forging_fractions'])} fraction(s) x "
      f"{summary['settings']['runs']} run(s) in {summary['seconds']:.1f} s -> {_OUT.value}"
  )
  for row in summary["results"]:
    print(
        f"  step {row['step']:>5}  fraction {row['label']:>5} (m={row['num_replaced']}): "
        f"approximation error min {row['min_approximation_error']:.6g}  mean "
        f"{row['mean_approximation_error']:.6g}  float64 "
        f"{_number(row['min_approximation_error_float64'])}  margin "
        f"{_number(row['min_margin'])}  (reproduction {row['reproduction_error']:.3g})"
    )


def _number(value) -> str:
  return "-" if value is None else f"{value:.6g}"


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
