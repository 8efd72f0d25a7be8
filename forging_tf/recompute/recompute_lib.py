"""Recomputing a trace: the benign reproduction error (SPEC section 2; binary: recompute.py,
forging-recompute).

For every recomputed update i -> i + k of a trace (k = 1 for a full or sparse trace), load theta_i
and the batches B_i .. B_{i+k-1}, take the k steps with the one SGD step on the recomputing
platform, and measure the l2 and l-infinity distances to the logged theta_{i+k}. With R repeats,
the reproduction error eps_repr is the largest l2 distance over all steps and repeats.

Repeats are independent. By default each runs in a fresh Python process (worker.py), as
a separate verifier would, so GPU auto-tuning and every other per-process state start anew. With
the Ray executor, the steps of each repeat are split into shards, each a Ray task in a fresh
worker process (max_calls=1) that opens the trace and the dataset itself; only step numbers and
distances travel through the driver. Every update starts from a logged checkpoint, so how steps
are sharded cannot change a distance.

Result folder (documented in docs/RESULTS_FORMAT.md):
  summary.json     eps_repr, steps, max_l2_per_step, repeats, ... (plain JSON, no package needed)
  result.json      the full record: trace identity, both platform fingerprints, command line
  distances.npz    steps int64 [S], l2 float64 [R, S], linf float64 [R, S]
  request.json     what was asked; a rerun of the same request resumes
  repeats/NNN.npz  each repeat as soon as it has finished (a rerun skips these)

The trace and the result folder may be object-store URLs (storage.py). A trace URL goes to every
worker as it is, so that each reads the trace itself. A result URL is written through a local
temporary folder (results.ResultFolder): a rerun first downloads its request and finished
repeats, each repeat is uploaded as soon as it has finished, and result.json last.
"""

import collections
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from absl import logging

from forging_tf import data
from forging_tf import errors
from forging_tf import platform as platform_lib
from forging_tf import ray_util
from forging_tf import results
from forging_tf import sgd_step
from forging_tf import storage
from forging_tf import trace as trace_lib
from forging_tf.recompute import distribution
from forging_tf.train import train_lib

# Where repeats run: local, on this machine; ray, as shards on a Ray cluster.
Executor = ray_util.Executor


@dataclasses.dataclass(frozen=True)
class RayOptions:
  """Where and how Ray runs the shards. address None starts (or joins) a local instance."""

  address: str | None = None
  num_cpus_per_task: float = 1.0
  num_gpus_per_task: float = 0.0
  accelerator_type: str | None = None
  shards: int = 0  # Shards per repeat; 0: one per CPU (or GPU) slot of the cluster.


@dataclasses.dataclass(frozen=True)
class RepeatResult:
  """One repeat: distances at the recomputed steps and the platform they were computed on."""

  steps: np.ndarray  # int64 [S]: update i -> i + k starts at step steps[s]
  l2: np.ndarray  # float64 [S]
  linf: np.ndarray  # float64 [S]
  platform: dict
  seconds: float
  # float64 [S, V]: l2 restricted to each variable of the trace's layout (None: a repeat saved
  # by an earlier version, which did not measure it).
  variable_l2: np.ndarray | None = None
  update_l2: np.ndarray | None = None  # float64 [S]: ||theta_{i+k} - theta_i|| as logged


@dataclasses.dataclass(frozen=True)
class RecomputeSummary:
  out: str
  eps_repr: float
  worst_step: int
  worst_repeat: int
  largest: list  # [(step, max l2 over repeats)], the largest few, largest first
  steps_recomputed: int
  repeats: int
  repeats_run_now: int
  generator_platform: str
  recomputer_platform: str
  seconds: float
  distribution: dict  # distribution.step_distribution of each step's largest distance
  top_q: str = ""  # which updates proof-of-learning's verifier chose, if it chose

  def describe(self) -> str:
    where = ", ".join(f"step {step}: {l2:.3e}" for step, l2 in self.largest if l2 > 0)
    spread = self.distribution
    return (
        f"reproduction error {self.out}: eps_repr = {self.eps_repr:.6e} (step "
        f"{self.worst_step}, repeat {self.worst_repeat}) over {self.steps_recomputed} steps"
        f"{self.top_q} x {self.repeats} repeats ({self.repeats_run_now} run now, "
        f"{self.seconds:.1f} s); per step: median {spread['median']:.3e}, p99 "
        f"{spread['p99']:.3e}, {spread['above']['1e-06']} above 1e-6; "
        f"generator platform {self.generator_platform}, recomputer platform "
        f"{self.recomputer_platform}"
        + (f"; largest: {where}" if where else "; every step reproduced bitwise")
    )


def recomputed_steps(trace: trace_lib.Trace, start: int = 0, stop: int | None = None) -> np.ndarray:
  """Start steps i (int64 [S]) of the updates i -> i + k whose checkpoints both are stored, with
  start <= i < stop (stop None: the trace's T)."""
  stop = trace.steps if stop is None else stop
  if not 0 <= start < stop <= trace.steps:
    raise errors.ConfigError(
        f"step range {start}:{stop} is outside the trace's steps "
        f"0:{trace.steps}; use --steps=START:END with 0 <= START < END <= "
        f"{trace.steps}"
    )
  stored = trace.checkpoint_steps
  starts = stored[np.isin(stored + trace.k, stored)]
  steps = starts[(starts >= start) & (starts < stop)]
  if not steps.size:
    raise errors.ConfigError(
        f"no stored checkpoint pair (i, i + {trace.k}) starts in {start}:{stop} of {trace.path}"
    )
  return steps


@dataclasses.dataclass(frozen=True)
class TopQSelection:
  """Proof-of-learning's verifier (Jia et al., SPEC section 7): per epoch of the trace, only the
  Q updates with the largest ||theta_{i+k} - theta_i|| are recomputed.

  candidates: int64 [C], every stored update in the step range; update_l2: float64 [C], their
  sizes as logged; steps: int64 [S], the ones selected, in step order.
  """

  top_q: int
  steps_per_epoch: int
  candidates: np.ndarray
  update_l2: np.ndarray
  steps: np.ndarray


# How many stages of training proof-of-learning's coverage is reported for (tenths of the steps).
STAGES = 10


def select_top_q(trace: trace_lib.Trace, candidates: np.ndarray, top_q: int) -> TopQSelection:
  """The Q largest logged updates of each epoch among `candidates` (recomputed_steps).

  An epoch is floor(n / b) steps, as training cuts its shuffles (train_lib.batch_schedule); a
  sparse trace offers only its stored pairs. Ties are broken towards the earlier step.
  """
  if top_q < 1:
    raise errors.ConfigError(f"--top_q must be >= 1 updates per epoch, got {top_q}")
  steps_per_epoch = trace.manifest["dataset"]["num_examples"] // trace.batch_size
  update_l2, cached = np.empty(len(candidates)), {}
  for c, i in enumerate(candidates):
    start = cached.pop(int(i), None)
    start = trace.checkpoint(int(i)) if start is None else start
    cached = {int(i) + trace.k: trace.checkpoint(int(i) + trace.k)}
    update_l2[c] = sgd_step.l2_distance(cached[int(i) + trace.k], start)
  epoch = candidates // steps_per_epoch
  chosen = [
      candidates[members][np.argsort(-update_l2[members], kind="stable")[:top_q]]
      for members in (epoch == e for e in np.unique(epoch))
  ]
  return TopQSelection(
      top_q, steps_per_epoch, candidates, update_l2, np.sort(np.concatenate(chosen))
  )


def recompute_repeat(
    trace_path: str,
    platform: platform_lib.Platform,
    steps: np.ndarray,
    data_dir: str | None = None,
    download: bool = True,
    progress_every_s: float = 10.0,
    model_fn: str | None = None,
    model_fn_paths: list[str] | None = None,
) -> RepeatResult:
  """Recomputes the updates starting at `steps` in this process, on `platform`.

  Args:
    trace_path: the trace.
    platform: the recomputing platform, applied to this process.
    steps: int64 [S], the first step i of each update i -> i + k (recomputed_steps).
    data_dir, download: where the trace's dataset comes from (data.load_described).
    progress_every_s: seconds between progress lines in the log.
    model_fn: for a trace of keras.Model.fit, "module:function" that builds its model.
    model_fn_paths: the folders model_fn's module is looked for in when it is not installed
      (default: the working folder).

  Returns:
    The l2 and l-infinity distances of every update to the logged checkpoint, and this
    process's platform fingerprint (RepeatResult).
  """
  platform_lib.apply_platform(platform)
  trace = trace_lib.Trace(trace_path)
  dataset = data.load_described(trace.manifest["dataset"], data_dir, download)
  step_fn = sgd_step.step_for_trace(trace, dataset, model_fn, model_fn_paths)
  source = sgd_step.BatchSource(dataset.x_train, dataset.y_train, dataset.num_classes)
  steps = np.asarray(steps, np.int64)
  l2, linf, update_l2 = np.empty(len(steps)), np.empty(len(steps)), np.empty(len(steps))
  variable_l2 = np.empty((len(steps), len(trace.layout)))
  reader = _CheckpointPrefetcher(trace, steps)
  began = last_report = time.perf_counter()
  try:
    for s, i in enumerate(steps):
      start, logged = reader.get(i), reader.get(i + trace.k)
      recomputed = train_lib.run_sgd(
          step_fn,
          source,
          start,
          trace.batches,
          int(i),
          int(i) + trace.k,
          progress_every_s=math.inf,
          velocity=trace.optimizer_state(int(i)),
      )
      l2[s], linf[s] = sgd_step.distances(recomputed, logged)
      variable_l2[s] = sgd_step.variable_distances(recomputed, logged, trace.layout)
      update_l2[s] = sgd_step.l2_distance(logged, start)
      now = time.perf_counter()
      if now - last_report >= progress_every_s:
        last_report, rate = now, (s + 1) / (now - began)
        logging.info(
            "recomputed %d/%d updates  %.1f updates/s  ETA %.0f s  max l2 so far %.3e",
            s + 1,
            len(steps),
            rate,
            (len(steps) - s - 1) / rate,
            l2[: s + 1].max(),
        )
  finally:
    reader.close()
  return RepeatResult(
      steps,
      l2,
      linf,
      platform_lib.platform_fingerprint(platform),
      time.perf_counter() - began,
      variable_l2,
      update_l2,
  )


class _CheckpointPrefetcher:
  """Reads (and sha256-checks) the checkpoints the loop needs next, in a thread, in order.

  Each checkpoint is read once and kept until its last use: the end of update i is often the
  start of the next update. At most `ahead` checkpoints wait in memory.
  """

  def __init__(self, trace: trace_lib.Trace, steps: np.ndarray, ahead: int = 4):
    requests = [int(s) for i in steps for s in (i, i + trace.k)]
    self._uses_left = collections.Counter(requests)
    self._trace = trace
    self._ready: dict[int, np.ndarray | BaseException] = {}
    self._room = threading.Semaphore(ahead)
    self._changed = threading.Condition()
    self._closed = False
    self._thread = threading.Thread(
        target=self._read_all, args=(list(dict.fromkeys(requests)),), daemon=True
    )
    self._thread.start()

  def _read_all(self, order: list[int]) -> None:
    for step in order:
      self._room.acquire()
      if self._closed:
        return
      try:
        value = self._trace.checkpoint(step)
      except BaseException as e:  # Handed to the loop, which raises it.
        value = e
      with self._changed:
        self._ready[step] = value
        self._changed.notify_all()

  def get(self, step: int) -> np.ndarray:
    step = int(step)
    with self._changed:
      self._changed.wait_for(lambda: step in self._ready)
      value = self._ready[step]
      self._uses_left[step] -= 1
      if not self._uses_left[step]:
        del self._ready[step]
        self._room.release()
    if isinstance(value, BaseException):
      raise value
    return value

  def close(self) -> None:
    self._closed = True
    self._room.release()


def recompute(
    trace_path: str,
    out: str,
    repeats: int = 5,
    platform: platform_lib.Platform = platform_lib.Platform(),
    start: int = 0,
    stop: int | None = None,
    executor: Executor = Executor.LOCAL,
    fresh_process: bool = True,
    data_dir: str | None = None,
    download: bool = True,
    ray_options: RayOptions = RayOptions(),
    overwrite: bool = False,
    command: str | None = None,
    model_fn: str | None = None,
    top_q: int | None = None,
) -> RecomputeSummary:
  """Recomputes a trace `repeats` times on `platform` and writes the result folder `out`.

  Args:
    trace_path: a finished trace (a folder or a URL).
    out: the result folder, or a URL (module docstring). A rerun of the same request resumes
      it (finished repeats are kept); another request there is refused unless overwrite.
    repeats: R, independent recomputations of every update.
    platform: the recomputing platform. Each repeat applies it in its own process (fresh_process
      or Ray), else in this one.
    start, stop: recompute the updates i -> i + k with start <= i < stop (stop None: T).
    executor: LOCAL, or RAY to run each repeat as shards on a Ray cluster.
    fresh_process: run each local repeat in a new Python process, as a separate verifier would.
    data_dir: local data directory (None: $FORGING_TF_DATA, then tensorflow-datasets).
    download: let tensorflow-datasets download a dataset it does not have.
    ray_options: where and how the Ray executor runs its shards.
    overwrite: replace a result of another request at `out`.
    command: the command line to record (None: called from Python).
    model_fn: for a trace written by keras.Model.fit, "module:function" that builds its model
      (recorded with the result); looked up from the working folder when not installed.
    top_q: recompute only the Q largest logged updates of each epoch in the step range, as
      proof-of-learning's verifier does (select_top_q); None: every update.

  Returns:
    eps_repr, where it occurred and on which platforms (RecomputeSummary).

  Raises:
    ConfigError: bad settings, or `out` holds something else.
    TraceError: the trace is missing, unfinished or damaged (a checkpoint failing its sha256 is
      named by its step).
    DatasetError: the data are not the trace's.
    PlatformError: the repeats ran on different platforms.
  """
  if repeats < 1:
    raise errors.ConfigError(f"repeats must be >= 1, got {repeats}")
  if top_q is not None and top_q < 1:
    raise errors.ConfigError(f"--top_q must be >= 1 updates per epoch, got {top_q}")
  executor = results.choice(Executor, executor, "executor")
  began = time.perf_counter()
  trace = trace_lib.Trace(trace_path)
  if not trace.complete:
    raise errors.TraceError(
        f"{trace.path} is unfinished ({trace.num_written} of "
        f"{len(trace.checkpoint_steps)} checkpoints); finish it with "
        "forging-train first"
    )
  steps = recomputed_steps(trace, start, stop)
  selection = None
  if top_q is not None:
    selection = select_top_q(trace, steps, top_q)
    steps = selection.steps
  request = (
      {
          "kind": results.ResultKind.REPRODUCTION_ERROR.value,
          "trace": trace.path,
          "manifest_sha256": trace.manifest["manifest_sha256"],
          "step_range": [start, trace.steps if stop is None else stop],
          "platform": dataclasses.asdict(platform),
      }
      | ({"model_fn": model_fn} if model_fn else {})
      | ({"top_q": top_q} if top_q else {})
  )
  # Checked before any folder is written: a wrong or missing --model_fn is one line.
  if model_fn or trace.manifest["model"]["name"] == trace_lib.KERAS_MODEL:
    sgd_step.step_for_trace(
        trace, data.load_described(trace.manifest["dataset"], data_dir, download), model_fn
    )
  with results.ResultFolder(out) as folder:
    _prepare_out(folder, request, overwrite)
    _remove_leftovers(folder.path)
    done = _finished_repeats(folder.path, repeats, steps)
    missing = [r for r in range(repeats) if r not in done]
    logging.info(
        "recomputing %d updates of %s x %d repeats (%d finished before) on %s with the "
        "%s executor -> %s",
        len(steps),
        trace.path,
        repeats,
        len(done),
        platform,
        executor,
        folder.out,
    )
    # Paths are made absolute: workers may start elsewhere (Ray workers run in their own folder).
    # A trace URL stays as it is: every worker reads the trace from the store itself.
    data_dir = data_dir or os.environ.get(data.DATA_DIR_ENV) or None
    spec = {
        "trace": trace.path,
        "platform": dataclasses.asdict(platform),
        "steps": steps.tolist(),
        "data_dir": data_dir and os.path.abspath(data_dir),
        "download": download,
        "model_fn": model_fn,
        # Where this process finds model_fn's module, for workers that start elsewhere.
        "model_fn_paths": [os.getcwd()] + [os.path.abspath(p) for p in sys.path if p],
    }

    def run(repeat: int) -> RepeatResult:
      if executor == Executor.RAY:
        return _ray_repeat(spec, ray_options)
      if fresh_process:
        return _fresh_process_repeat(spec, folder.path, repeat)
      return recompute_repeat(
          trace.path, platform, steps, spec["data_dir"], download, model_fn=model_fn
      )

    for r in missing:
      result = run(r)
      save_repeat(_repeat_path(folder.path, r), result)
      folder.upload(f"repeats/{r:03d}.npz")
      done[r] = result
      logging.info(
          "repeat %d/%d: max l2 %.6e in %.1f s on platform %s",
          r + 1,
          repeats,
          result.l2.max(),
          result.seconds,
          result.platform["id"],
      )
    return _write_result(
        folder,
        trace,
        steps,
        [done[r] for r in range(repeats)],
        platform,
        executor,
        fresh_process,
        request,
        command,
        len(missing),
        time.perf_counter() - began,
        selection,
    )


def _prepare_out(folder: results.ResultFolder, request: dict, overwrite: bool) -> None:
  """Creates the result folder, resumes the same request there, or refuses to touch other
  data; for a URL, brings its request and finished repeats into the local folder."""
  out = folder.out
  if results.claimed_folder(out, "request.json", results.ResultKind.REPRODUCTION_ERROR):
    if overwrite:
      results.remove(out, "result.json")
    elif (
        results.read_json(storage.join(out, "request.json"), "reproduction-error request")
        != request
    ):
      raise errors.ConfigError(
          f"{out} holds the result of another recomputation (other trace, "
          "steps or platform); pass --overwrite to replace it or choose "
          "another --out"
      )
  folder.download("request.json")
  folder.download("repeats")
  request_path = os.path.join(folder.path, "request.json")
  if not os.path.exists(request_path):
    results.write_json(request_path, request)
    folder.upload("request.json")


def _remove_leftovers(out: str) -> None:
  """Removes what a killed run left: its worker folders and unfinished temporary files, all
  hidden (results.py and _fresh_process_repeat name them with a leading dot)."""
  for folder in (out, os.path.join(out, "repeats")):
    if os.path.isdir(folder):
      for name in os.listdir(folder):
        if name.startswith("."):
          path = os.path.join(folder, name)
          if os.path.isdir(path):
            shutil.rmtree(path)
          else:
            os.remove(path)


def _repeat_path(out: str, repeat: int) -> str:
  return os.path.join(out, "repeats", f"{repeat:03d}.npz")


def save_repeat(path: str, result: RepeatResult) -> None:
  measured = {"variable_l2": result.variable_l2, "update_l2": result.update_l2}
  results.write_npz(
      path,
      steps=result.steps,
      l2=result.l2,
      linf=result.linf,
      seconds=np.float64(result.seconds),
      platform=np.str_(json.dumps(result.platform)),
      **{name: value for name, value in measured.items() if value is not None},
  )


def load_repeat(path: str, what: str) -> RepeatResult:
  """A saved repeat; one saved by an earlier version has no variable_l2 and update_l2."""
  arrays = results.read_npz(path, what, ("steps", "l2", "linf", "seconds", "platform"))
  with np.load(path, allow_pickle=False) as saved:
    measured_later = {name: saved[name] for name in ("variable_l2", "update_l2") if name in saved}
  return RepeatResult(
      arrays["steps"],
      arrays["l2"],
      arrays["linf"],
      json.loads(str(arrays["platform"])),
      float(arrays["seconds"]),
      **measured_later,
  )


def _finished_repeats(out: str, repeats: int, steps: np.ndarray) -> dict[int, RepeatResult]:
  done = {}
  for r in range(repeats):
    path = _repeat_path(out, r)
    if os.path.exists(path):
      done[r] = load_repeat(path, f"repeat {r}")
      if not np.array_equal(done[r].steps, steps):
        raise errors.ConfigError(
            f"{path} covers other steps than this request; pass "
            "--overwrite to start the result again"
        )
  return done


def _fresh_process_repeat(spec: dict, out: str, repeat: int) -> RepeatResult:
  """Runs one repeat in a new Python process (worker.py) and reads back its result."""
  env = dict(os.environ)
  if spec["platform"]["onednn"] is not None:
    env[platform_lib.ONEDNN_ENV] = "1" if spec["platform"]["onednn"] else "0"
  with tempfile.TemporaryDirectory(dir=out, prefix=".worker.") as work:
    spec_path = os.path.join(work, "spec.json")
    result_path = os.path.join(work, "result.npz")
    results.write_json(spec_path, spec)
    # The worker holds the read end of a pipe whose write end only this process has: if this
    # process dies (even by SIGKILL) the worker reads end-of-file and stops too.
    worker = subprocess.Popen(
        [sys.executable, "-m", "forging_tf.recompute.worker", spec_path, result_path],
        env=env,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    last_line = ""
    for line in worker.stderr:  # Passed through, so the worker's progress stays visible.
      if not line.startswith("error: "):  # The worker's own error is raised here, once.
        sys.stderr.write(line)
      last_line = line.strip() or last_line
    worker.stdin.close()
    if worker.wait() != 0:
      message = (
          last_line.removeprefix("error: ")
          if last_line.startswith("error: ")
          else (
              f"the worker process of repeat {repeat} failed (exit {worker.returncode}): "
              f"{last_line}"
          )
      )
      raise errors.ForgingError(message)
    return load_repeat(result_path, f"repeat {repeat}")


def _ray_shard(spec: dict, steps: list[int]) -> dict:
  """A Ray task: one shard of one repeat, in its own worker process."""
  result = recompute_repeat(
      spec["trace"],
      platform_lib.Platform(**spec["platform"]),
      np.asarray(steps, np.int64),
      spec["data_dir"],
      spec["download"],
      model_fn=spec["model_fn"],
      model_fn_paths=spec["model_fn_paths"],
  )
  return dataclasses.asdict(result)


def _ray_repeat(spec: dict, options: RayOptions) -> RepeatResult:
  ray = ray_util.import_ray()
  began = time.perf_counter()
  ray_util.connect(options.address)  # left connected: later repeats run on the same instance
  slots = ray.cluster_resources().get("GPU" if options.num_gpus_per_task else "CPU", 1)
  per_task = options.num_gpus_per_task or options.num_cpus_per_task
  shards = options.shards or max(1, int(slots // per_task))
  env_vars = {}
  if spec["platform"]["onednn"] is not None:
    env_vars[platform_lib.ONEDNN_ENV] = "1" if spec["platform"]["onednn"] else "0"
  # max_calls=1: each shard gets a fresh worker process (it cannot be set in .options()).
  task = ray.remote(max_calls=1)(_ray_shard).options(
      num_cpus=options.num_cpus_per_task,
      num_gpus=options.num_gpus_per_task,
      accelerator_type=options.accelerator_type,
      runtime_env={"env_vars": env_vars} if env_vars else None,
  )
  pieces = [
      piece.tolist() for piece in np.array_split(np.asarray(spec["steps"]), shards) if piece.size
  ]
  shard_results = ray.get([task.remote(spec, piece) for piece in pieces])
  ids = sorted({shard["platform"]["id"] for shard in shard_results})
  if len(ids) > 1:
    raise errors.PlatformError(
        f"the shards ran on {len(ids)} different platforms ({', '.join(ids)}"
        "); pin one with --accelerator_type so that each result names one "
        "recomputing platform"
    )
  joined = {
      name: np.concatenate([shard[name] for shard in shard_results])
      for name in ("steps", "l2", "linf", "variable_l2", "update_l2")
  }
  return RepeatResult(
      platform=shard_results[0]["platform"], seconds=time.perf_counter() - began, **joined
  )


def _write_result(
    folder: results.ResultFolder,
    trace: trace_lib.Trace,
    steps: np.ndarray,
    repeats: list[RepeatResult],
    platform: platform_lib.Platform,
    executor: Executor,
    fresh_process: bool,
    request: dict,
    command: str | None,
    run_now: int,
    seconds: float,
    selection: TopQSelection | None,
) -> RecomputeSummary:
  ids = sorted({result.platform["id"] for result in repeats})
  if len(ids) > 1:
    raise errors.PlatformError(
        f"the repeats in {folder.out} ran on different platforms ({', '.join(ids)})"
        "; pass --overwrite to recompute them all on this one"
    )
  l2 = np.stack([result.l2 for result in repeats])
  linf = np.stack([result.linf for result in repeats])
  worst_repeat, worst = np.unravel_index(int(np.argmax(l2)), l2.shape)
  max_l2 = l2.max(axis=0)
  largest = [(int(steps[s]), float(max_l2[s])) for s in np.argsort(-max_l2, kind="stable")[:5]]
  generator, recomputer = trace.manifest["platform"], repeats[0].platform
  trace_identity = trace.identity()
  summary = {
      "eps_repr": float(l2.max()),
      "steps": steps.tolist(),
      "max_l2_per_step": max_l2.tolist(),
      "max_linf_per_step": linf.max(axis=0).tolist(),
      "repeats": len(repeats),
      "model": trace_identity["model"],
      "dataset": trace_identity["dataset"],
      "batch_size": trace.batch_size,
      "trace_steps": trace.steps,
      "k": trace.k,
      "generator_platform": generator["id"],
      "recomputer_platform": recomputer["id"],
      "same_platform": generator["id"] == recomputer["id"],
      "distribution": {
          "over_repeats": distribution.step_distribution(max_l2),
          "per_repeat": [distribution.step_distribution(result.l2) for result in repeats],
      },
  }
  arrays = {"steps": steps, "l2": l2, "linf": linf}
  # Repeats saved by an earlier version (resumed here) did not split distances by variable.
  if all(result.variable_l2 is not None for result in repeats):
    variable_l2 = np.stack([result.variable_l2 for result in repeats])  # [R, S, V]
    worst_parts = np.square(variable_l2[worst_repeat, worst])
    arrays |= {"update_l2": repeats[0].update_l2, "variable_l2": variable_l2}
    summary |= {
        "update_l2_per_step": repeats[0].update_l2.tolist(),
        "variables": [spec.name for spec in trace.layout],
        "max_l2_per_variable": variable_l2.max(axis=(0, 1)).tolist(),
        "worst_step_variable_share": (
            worst_parts / worst_parts.sum() if worst_parts.sum() else worst_parts
        ).tolist(),
    }
  if selection is not None:
    arrays |= {"candidate_steps": selection.candidates, "candidate_update_l2": selection.update_l2}
    stages = np.array_split(selection.candidates, STAGES)
    summary |= {
        "top_q": selection.top_q,
        "steps_per_epoch": selection.steps_per_epoch,
        "candidate_updates": len(selection.candidates),
        # The chance that a step drawn at random from each tenth of training (a forged one, whose
        # update the forger made as large as the honest one) is among those recomputed.
        "stages": [[int(stage[0]), int(stage[-1]) + 1] for stage in stages if stage.size],
        "recomputed_share_by_stage": [
            float(np.isin(stage, selection.steps).mean()) for stage in stages if stage.size
        ],
    }
  record = results.header(results.ResultKind.REPRODUCTION_ERROR, command, recomputer) | {
      "trace": trace_identity,
      "model_fn": request.get("model_fn"),
      "step_range": request["step_range"],
      "updates": len(steps),
      "repeats": len(repeats),
      "executor": executor.value,
      "fresh_process": fresh_process if executor == Executor.LOCAL else True,
      "eps_repr": summary["eps_repr"],
      "worst": {
          "step": int(steps[worst]),
          "repeat": int(worst_repeat),
          "l2": float(l2[worst_repeat, worst]),
          "linf": float(linf[worst_repeat, worst]),
      },
      "exact_steps": int(np.sum(max_l2 == 0)),
      "top_q": selection and selection.top_q,
      "repeat_seconds": [result.seconds for result in repeats],
      "generator_platform": generator,
      "recomputer_settings": dataclasses.asdict(platform),
  }
  results.write_npz(os.path.join(folder.path, "distances.npz"), **arrays)
  results.write_json(os.path.join(folder.path, "result.json"), record)
  results.write_json(os.path.join(folder.path, "summary.json"), summary)
  folder.upload("distances.npz", "summary.json", "result.json")  # the record last
  return RecomputeSummary(
      out=folder.out,
      eps_repr=summary["eps_repr"],
      worst_step=int(steps[worst]),
      worst_repeat=int(worst_repeat),
      largest=largest,
      steps_recomputed=len(steps),
      repeats=len(repeats),
      repeats_run_now=run_now,
      generator_platform=generator["id"],
      recomputer_platform=recomputer["id"],
      seconds=seconds,
      distribution=summary["distribution"]["over_repeats"],
      top_q=selection
      and (
          f" (the top {selection.top_q} of each {selection.steps_per_epoch}-step epoch among "
          f"{len(selection.candidates)} updates)"
      )
      or "",
  )
