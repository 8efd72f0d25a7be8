"""forging-reproduce --executor=ray: every stage a Ray task, placed by its platform.

Each stage runs as a Ray task in a fresh worker process (max_calls=1), which runs the stage's
command in a process of its own, exactly as the local executor does. The task asks for what the
stage's platform names (platforms.StudyPlatform.ray_resources: CPUs, GPUs, an accelerator type,
custom resources), so a heterogeneous cluster runs each platform's stages on its node type. A
stage starts once the stages whose outputs it reads are done, so trainings run side by side,
then recomputations and attacks as their traces are ready.

A task whose worker or node is lost, or whose stage process is killed by a signal, is retried
(`retries` times; a retried training continues from its last checkpoint, a recomputation from
its last finished repeat). A stage that fails on its own (a bad flag, missing data) is not: the
run stops with its one-line error and the running stages are cancelled; finished stages are kept,
and the same command resumes.

OUT must be one folder that every node sees (a shared file system): the stages write their
traces, results and logs there, and the driver reads them to render the report.
"""

import time

from forging_tf import errors
from forging_tf import ray_util
from forging_tf.reproduce import platforms as platforms_lib
from forging_tf.reproduce import stages as stages_lib


def _stage_task(
    stage: stages_lib.Stage, out: str, common: tuple[str, ...], env_vars: dict[str, str]
) -> dict:
  """A Ray task: runs one stage on this node; its progress lines go to the driver's console."""
  import ray  # pylint: disable=import-outside-toplevel

  node = ray.get_runtime_context().get_node_id()
  began = time.perf_counter()
  stages_lib.run_stage(
      stage,
      out,
      common,
      echo=lambda line: print(line, flush=True),
      env_vars=env_vars,
      where=f"Ray node {node}",
  )
  return {"seconds": time.perf_counter() - began, "node": node}


def check_platforms(platforms) -> None:
  """ConfigError, one line, if no live node of the cluster has what a platform asks for."""
  ray = ray_util.import_ray()
  nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
  for platform in platforms:
    needs = platform.ray_resources()
    if not any(all(node.get(k, 0) >= v for k, v in needs.items()) for node in nodes):
      raise errors.ConfigError(
          f"no node of the Ray cluster has what platform {platforms_lib.describe(platform)} "
          "asks for; start one that has it (ray start --num-gpus/--resources=...) or change "
          "the platform"
      )


def connect(address: str | None) -> bool:
  """Joins the Ray cluster at `address` (None: starts a local instance on 127.0.0.1), with the
  workers' output shown on this console; returns whether this call connected."""
  return ray_util.connect(address, log_to_driver=True)


def disconnect() -> None:
  ray_util.import_ray().shutdown()


def run(
    stages: list[stages_lib.Stage],
    out: str,
    common_for,
    label,
    finished,
    echo,
    retries: int = 2,
) -> None:
  """Runs `stages` (those of the plan not done yet) on the Ray cluster this process is connected
  to (connect).

  common_for(stage): the flags every stage of its program takes (data flags); label(stage): its
  "[i/n] name" for progress lines; finished(stage, seconds, where): called on the driver as each
  stage ends, in the order they end. Raises the failing stage's ForgingError.
  """
  ray = ray_util.import_ray()
  running = {}
  try:
    task = ray.remote(max_calls=1)(_stage_task)  # max_calls=1: a fresh worker for each stage
    pending = {stage.name for stage in stages}
    waiting = list(stages)
    env_vars = stages_lib.data_env()
    while waiting or running:
      for stage in [s for s in waiting if not pending.intersection(s.needs)]:
        waiting.remove(stage)
        ref = task.options(
            num_cpus=stage.platform.num_cpus,
            num_gpus=stage.platform.gpus,
            accelerator_type=stage.platform.accelerator_type,
            resources=dict(stage.platform.resources) or None,
            max_retries=retries,
            retry_exceptions=[stages_lib.StageInterrupted],
        ).remote(stage, out, common_for(stage), env_vars)
        running[ref] = stage
        echo(f"{label(stage)} ... (Ray, platform {stage.platform.name})")
      [ref], _ = ray.wait(list(running), num_returns=1)
      stage = running.pop(ref)
      try:
        done = ray.get(ref)
      except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, errors.ForgingError):
          raise type(e.cause)(str(e.cause)) from None
        raise errors.ForgingError(
            f"stage '{stage.name}' failed on the Ray cluster: {type(e.cause).__name__}: "
            f"{e.cause}; see {stages_lib.log_path(stage.name, out)}"
        ) from None
      except ray.exceptions.RayError as e:  # The worker or its node died, every try.
        raise errors.ForgingError(
            f"stage '{stage.name}' was lost on the Ray cluster {retries + 1} times "
            f"({type(e).__name__}); run the same command again, finished stages are kept"
        ) from None
      pending.discard(stage.name)
      finished(stage, done["seconds"], f"Ray node {done['node'][:8]}")
  finally:
    for ref in running:  # a failure or Ctrl-C: no stage goes on writing into OUT
      ray.cancel(ref, force=True)
