r"""The whole study in one command: traces, reproduction errors, attacks, exact forging, report.

  forging-reproduce --preset=quick --out=runs/quick       # 15 to 28 minutes on a 2-core CPU
  forging-reproduce --preset=paper --out=runs/paper       # the paper's settings, for a GPU
  forging-reproduce --preset=quick --dry_run              # list the stages and their commands
  forging-reproduce --preset=paper --platforms=gpus.toml --executor=ray --ray_address=auto \
      --out=/shared/paper                                 # on a Ray cluster, your platforms

Runs every stage of the preset (presets.PRESETS), each as a command of this package's binaries
in a process of its own (one after another here, or as Ray tasks placed by their platforms'
resources with --executor=ray), and writes OUT/REPORT.md with Tables I-IV and Figures 2-6.
Interrupted (Ctrl-C, a crash, a kill)? Run the same command again: finished stages are skipped
and the interrupted one continues.
"""

from absl import flags

from forging_tf import cli
from forging_tf import errors
from forging_tf.reproduce import presets
from forging_tf.reproduce import reproduce_lib

_PRESET = flags.DEFINE_enum(
    "preset",
    "quick",
    sorted(presets.PRESETS),
    "quick: reduced settings for a CPU; paper: the paper's, for a GPU.",
)
_OUT = flags.DEFINE_string("out", None, "Folder to write everything into.")
_DATA_DIR, _DOWNLOAD = cli.define_data_flags()
_DRY_RUN = flags.DEFINE_boolean(
    "dry_run", False, "List the stages and their commands, run nothing."
)
_PLATFORMS = flags.DEFINE_string(
    "platforms",
    None,
    "TOML or JSON file of the study's platforms (name -> platform flags and Ray resources; see "
    "forging_tf/reproduce/platforms.py), in place of the preset's; the first generates traces.",
)
# With ray, each stage runs on a node with its platform's resources; OUT must be on a file
# system every node sees.
_EXECUTOR, _RAY_ADDRESS = cli.define_executor_flags("the stages, each on its platform's nodes,")
_RETRIES = flags.DEFINE_integer(
    "retries", 2, "With --executor=ray: how often a lost or killed stage runs again.", lower_bound=0
)


def main():
  if _OUT.value is None and not _DRY_RUN.value:
    raise errors.ConfigError("--out is required: the folder to write the study into")
  reproduce_lib.reproduce(
      _PRESET.value,
      _OUT.value,
      _DATA_DIR.value,
      _DOWNLOAD.value,
      _DRY_RUN.value,
      echo=lambda line: print(line, flush=True),
      command=cli.command_line(),
      platforms_file=_PLATFORMS.value,
      executor=_EXECUTOR.value,
      ray_address=_RAY_ADDRESS.value,
      retries=_RETRIES.value,
  )


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
