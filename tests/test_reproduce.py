"""forging-reproduce: the plans of the presets, the whole pipeline end to end, and its resume."""

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import forging_tf
from forging_tf import errors
from forging_tf import trace as trace_lib
from forging_tf.reproduce import platforms
from forging_tf.reproduce import presets
from forging_tf.reproduce import reproduce_lib
from forging_tf.reproduce import stages


def _command(out, data_dir, *extra):
  return [
      sys.executable,
      "-m",
      "forging_tf.reproduce.reproduce",
      "--preset=smoke",
      f"--out={out}",
      f"--data_dir={data_dir}",
      "--nodownload",
      *extra,
  ]


_PLATFORMS_TOML = """
[cpu]
onednn = "on"
resources = { platform_cpu = 1 }

[cpu-nodnn]
onednn = "off"
num_cpus = 1
resources = { platform_nodnn = 1 }
"""


def _flag(stage, name):
  return next(f.split("=", 1)[1] for f in stage.flags if f.startswith(f"--{name}="))


def test_paper_preset_has_the_papers_settings():
  planned = stages.plan(presets.PRESETS["paper"])
  trains = [s for s in planned if s.program == "forging-train"]
  lengths = {
      (_flag(s, "model"), int(_flag(s, "batch_size"))): int(_flag(s, "steps")) for s in trains
  }
  assert lengths == {
      ("lenet", 100): 1200,
      ("lenet", 500): 1200,
      ("lenet", 1000): 1200,
      ("vggmini", 100): 2500,
      ("vggmini", 500): 2500,
      ("vggmini", 1000): 2500,
  }
  assert all("--k=" not in " ".join(s.flags) for s in trains)  # k = 1, the default
  thudi = [s for s in planned if "--attack=thudi" in s.flags]
  assert thudi and all("--M=300" in s.flags and "--n=3000" in s.flags for s in thudi)
  # Figure 3 both ways: the trace's own batches, and fixed random batches (the paper's figure).
  random = [s for s in thudi if "--batch=random" in s.flags]
  assert sorted(_flag(s, "trace") for s in random) == [
      "traces/lenet_b1000_T1200_gpu",
      "traces/vggmini_b100_T2500_gpu",
  ]
  assert all(s.output.endswith("_random") and _flag(s, "steps").count(",") == 19 for s in random)
  # Attacks added in 0.2 settings (margin, batch) are recorded only where they are not the
  # defaults, so a run an older forging_tf recorded resumes.
  recorded = presets.PRESETS["paper"].settings()["attacks"]
  assert sum("batch" in a for a in recorded) == 2 and not any("min_distance" in a for a in recorded)
  assert all(
      "--device=gpu:0" in s.flags
      for s in trains
      if "--deterministic" in s.flags and s.output.endswith("_gpu")
  )


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_every_stage_runs_after_what_it_reads(name):
  planned = stages.plan(presets.PRESETS[name])
  outputs = [s.output for s in planned]
  assert len(set(outputs)) == len(outputs)
  written = set()
  for stage in planned:
    trace = next((f.split("=", 1)[1] for f in stage.flags if f.startswith("--trace=")), None)
    assert trace is None or trace in written, f"{stage.name} reads {trace} before it is trained"
    # The Ray executor starts a stage once the stages it needs are done.
    assert stage.needs == (() if trace is None else (f"train {trace.removeprefix('traces/')}",))
    written.add(stage.output)
  # Table II: every deterministic platform's LeNet b=100 trace is recomputed on every one of them.
  preset = presets.PRESETS[name]
  deterministic = [p for p in preset.platforms if platforms.BUILT_IN[p].deterministic]
  t = next(steps for model, _, b, steps in preset.steps if (model, b) == ("lenet", 100))
  for generator in deterministic:
    for recomputer in deterministic:
      assert f"results/repro/lenet_b100_T{t}_{generator}__on__{recomputer}" in outputs


def test_every_stage_is_a_command_and_every_command_a_module_with_run():
  """forging_tf.COMMANDS is setup.py's console scripts and the stages' modules: one list."""
  for command, module in forging_tf.COMMANDS.items():
    spec = importlib.util.find_spec(module)
    assert spec is not None, (command, module)
    with open(spec.origin) as f:
      assert "\ndef run():" in f.read(), module
  programs = {stage.program for preset in presets.PRESETS.values() for stage in stages.plan(preset)}
  assert programs == set(forging_tf.COMMANDS) - {
      "forging-verify",
      "forging-tables",
      "forging-calibrate",
      "forging-near-ties",
      "forging-explain-outliers",
      "forging-reproduce",
  }


def test_progress_lines_of_every_module_of_the_package_are_echoed():
  """forging-reproduce echoes a stage's own log lines, by the file that logged them: every
  module of every subpackage, and nothing of TensorFlow's."""
  modules = [
      name
      for _, _, names in os.walk(os.path.dirname(forging_tf.__file__))
      for name in names
      if name.endswith(".py")
  ]
  assert len(modules) > 20
  for name in modules:
    line = f"I1121 21:04:56.240002 139850930547584 {name}:141] training lenet on mnist"
    assert stages.echoed(line), name
  assert not stages.echoed(
      "I0000 00:00:1796137405.382970    3917 cpu_feature_guard.cc:227] This TensorFlow binary"
  )


def test_bad_requests_are_one_line_errors(tmp_path):
  with pytest.raises(errors.ConfigError, match="unknown preset"):
    reproduce_lib.reproduce("fast", str(tmp_path / "a"))
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "notes.txt").write_text("mine")
  with pytest.raises(errors.ConfigError, match="does not hold a forging-reproduce run"):
    reproduce_lib.reproduce("smoke", str(tmp_path / "other"))
  assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
  bad = presets.Preset("bad", "", ("cpu", "tpu"), (("lenet", "mnist", 100, 2),), 1, 1, (), (), ())
  with pytest.raises(errors.ConfigError, match="unknown platform 'tpu'"):
    reproduce_lib.reproduce(bad, str(tmp_path / "b"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
  """The smoke preset run once, uninterrupted."""
  out = tmp_path_factory.mktemp("reference") / "study"
  result = subprocess.run(_command(out, data_dir), capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stdout[-3000:]
  return out, result.stdout


def test_smoke_preset_writes_the_whole_report(reference, data_dir):
  out, stdout = reference
  assert "[9/9] bruteforce table4: done" in stdout
  report = (out / "REPORT.md").read_text()
  for heading in (
      "## Findings",
      "## Platforms",
      "**Table I:",
      "**Table II (b)",
      "**Table III:",
      "**Table IV:",
      "Figure 3",
      "Figure 5",
      "## Where the numbers come from",
  ):
    assert heading in report, heading
  # The numbers in it are the saved results' own.
  same = json.loads((out / "results/repro/lenet_b100_T6_cpu__on__cpu/result.json").read_text())
  cross = json.loads(
      (out / "results/repro/lenet_b100_T6_cpu__on__cpu-nodnn/result.json").read_text()
  )
  assert same["eps_repr"] == 0 and "0 (bitwise)" in report
  assert f"{cross['eps_repr']:.2e}" in report
  for name in ("table1", "table2b", "table3", "table4"):
    for extension in ("md", "tex", "csv"):
      assert (out / "report" / f"{name}.{extension}").stat().st_size > 0
  assert (out / "report" / "fig5.png").stat().st_size > 0
  # Run again: every stage is skipped, the report is rendered again.
  again = subprocess.run(_command(out, data_dir), capture_output=True, text=True, check=False)
  assert again.returncode == 0, again.stdout[-3000:]
  assert again.stdout.count("done before, skipped") == 9


def test_sigkill_then_resume_equals_an_uninterrupted_run(reference, tmp_path, data_dir):
  expected, _ = reference
  out = tmp_path / "study"
  process = subprocess.Popen(
      _command(out, data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  # Kill it inside the first recomputation, after both traces are trained.
  started = out / "results/repro/lenet_b100_T6_cpu__on__cpu/request.json"
  deadline = time.time() + 300
  while not started.exists() and process.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert process.poll() is None, "the run ended before it could be killed"
  process.send_signal(signal.SIGKILL)
  process.wait()
  for name in ("lenet_b100_T6_cpu", "lenet_b100_T6_cpu-nodnn"):  # no checkpoint half-written
    trace = trace_lib.Trace(str(out / "traces" / name))
    for step in trace.checkpoint_steps[: trace.num_written]:
      trace.checkpoint(int(step))
  resumed = subprocess.run(_command(out, data_dir), capture_output=True, text=True, check=False)
  assert resumed.returncode == 0, resumed.stdout[-3000:]
  assert resumed.stdout.count("done before, skipped") == 2
  _assert_same_study(expected, out)


def _assert_same_study(expected, out):
  """The traces, distances, attack results and tables of two smoke runs are bitwise the same."""
  for name in ("lenet_b100_T6_cpu", "lenet_b100_T6_cpu-nodnn"):
    a, b = (trace_lib.Trace(str(root / "traces" / name)) for root in (expected, out))
    assert a.complete and b.complete
    np.testing.assert_array_equal(a.batches, b.batches)
    for step in a.checkpoint_steps:
      assert a.checkpoint(int(step)).tobytes() == b.checkpoint(int(step)).tobytes()
  for folder in sorted(os.listdir(expected / "results/repro")):
    with (
        np.load(expected / "results/repro" / folder / "distances.npz") as a,
        np.load(out / "results/repro" / folder / "distances.npz") as b,
    ):
      for key in a.files:
        if key != "seconds":
          assert a[key].tobytes() == b[key].tobytes(), (folder, key)
  attack = "results/attacks/lenet_b100_T6_cpu_thudi_stages3_1overb_1"
  for name in ("approximation_error", "forged_batches", "deleted_mask", "candidate_errors"):
    assert (
        np.load(expected / attack / f"{name}.npy").tobytes()
        == np.load(out / attack / f"{name}.npy").tobytes()
    ), name
  for name in ("table1.csv", "table2b.csv", "table3.csv"):
    assert (expected / "report" / name).read_text() == (out / "report" / name).read_text()


def test_a_failing_stage_is_one_line_and_keeps_what_was_done(tmp_path):
  empty = tmp_path / "no_data"
  empty.mkdir()
  out = tmp_path / "study"
  result = subprocess.run(_command(out, empty), capture_output=True, text=True, check=False)
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith("forging-reproduce: error: stage 'train lenet_b100_T6_cpu' failed:")
  assert "mnist" in lines[-1] and "logs/" in lines[-1] and "Traceback" not in result.stderr
  assert (out / "reproduce.json").exists()
  other = subprocess.run(
      [sys.executable, "-m", "forging_tf.reproduce.reproduce", "--preset=quick", f"--out={out}"],
      capture_output=True,
      text=True,
      check=False,
  )
  assert other.returncode != 0
  assert other.stderr.strip().splitlines()[-1].startswith("forging-reproduce: error: ")
  assert "preset 'smoke'" in other.stderr
  toml = tmp_path / "platforms.toml"
  toml.write_text(_PLATFORMS_TOML)
  with pytest.raises(errors.ConfigError, match="run on other platforms .the built-in ones."):
    reproduce_lib.reproduce("smoke", str(out), platforms_file=str(toml), echo=_quiet)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--preset=fast", "--out=x"], "flag --preset=fast: value should be one of"),
        (["--preset=quick"], "--out is required"),
        (["--preset=quick", "--out=x", "extra"], "unexpected arguments: extra"),
        (["--preset=quick", "--out=x", "--device=cpu"], "Unknown command line flag 'device'"),
    ],
)
def test_binary_flag_errors_are_one_line(tmp_path, flags, message):
  result = subprocess.run(
      [sys.executable, "-m", "forging_tf.reproduce.reproduce", *flags],
      capture_output=True,
      text=True,
      cwd=tmp_path,
      check=False,
  )
  last = result.stderr.strip().splitlines()[-1]
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert last.startswith("forging-reproduce: error:") and message in last, last
  assert not os.path.exists(tmp_path / "x")


def test_a_run_of_version_0_1_0_resumes(old_smoke_run, data_dir, tmp_path, assert_old_tables):
  """The run's reproduce.json, progress and results from before the package was split into
  stages are the same run: its finished stages are skipped, its missing traces trained, and its
  report rendered from its own results."""
  out = tmp_path / "study"
  shutil.copytree(old_smoke_run, out)
  resumed = subprocess.run(_command(out, data_dir), capture_output=True, text=True, check=False)
  assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
  assert resumed.stdout.count("done before, skipped") == 7
  assert "[1/9] train lenet_b100_T6_cpu ..." in resumed.stdout
  assert_old_tables(os.path.join(old_smoke_run, "report"), str(out / "report"))
  assert json.loads((out / "reproduce.json").read_text())["format_version"] == 1  # not rewritten


def test_a_platforms_file_gives_the_built_in_platforms_flags(tmp_path):
  toml = tmp_path / "platforms.toml"
  toml.write_text(_PLATFORMS_TOML)
  as_json = tmp_path / "platforms.json"
  as_json.write_text(
      json.dumps(
          {
              "cpu": {"onednn": "on", "resources": {"platform_cpu": 1}},
              "cpu-nodnn": {"onednn": "off", "num_cpus": 1, "resources": {"platform_nodnn": 1}},
              "a100": {"device": "gpu:0", "accelerator_type": "A100", "deterministic": False},
          }
      )
  )
  for path in (toml, as_json):
    loaded = platforms.load(str(path))
    assert list(loaded)[:2] == ["cpu", "cpu-nodnn"]  # the file's order: cpu generates traces
    for name in ("cpu", "cpu-nodnn"):
      assert loaded[name].flags == platforms.BUILT_IN[name].flags
    assert loaded["cpu"].ray_resources() == {"CPU": 1.0, "platform_cpu": 1.0}
  with pytest.raises(errors.ConfigError, match="name it .toml or .json"):
    platforms.load(str(tmp_path / "platforms.yaml"))
  with pytest.raises(errors.ConfigError, match="cannot read the platforms file"):
    platforms.load(str(tmp_path / "missing.toml"))
  a100 = platforms.load(str(as_json))["a100"]
  assert a100.flags == ("--device=gpu:0", "--notf32", "--nodeterministic")
  assert a100.ray_resources() == {"CPU": 1.0, "GPU": 1.0, "accelerator_type:A100": 0.001}
  # The study runs on the file's platforms, under their names.
  preset = presets.PRESETS["smoke"]
  planned = stages.plan(
      dataclasses.replace(preset, platforms=("a100", "cpu")),
      platforms.load(str(as_json)),
  )
  assert planned[0].output == "traces/lenet_b100_T6_a100" and planned[0].platform == a100


@pytest.mark.parametrize(
    "text, message",
    [
        ('[cpu]\ndevice = "tpu"\n', "platform 'cpu': device = 'tpu' is not cpu or gpu:N"),
        ("[cpu]\nthreads = 2\n", "platform 'cpu': unknown key 'threads'"),
        ('[cpu]\nonednn = "yes"\n', "onednn = 'yes' is not 'on', 'off' or 'default'"),
        ("[cpu]\nresources = { a = -1 }\n", "resources = {'a': -1} is not a table"),
        ("[cpu]\nnum_cpus = 0\n", "must ask for some resource"),
        ("[cpu]\ntf32 = true\n", "tf32 is a GPU setting"),
        ('["../x"]\n', "a name is 1-64 letters"),
        ("cpu = 1\n", "expected a table of settings"),
        ("[cpu\n", "is not valid"),
        ("", "expected one table per platform"),
    ],
)
def test_a_bad_platforms_file_is_one_line(tmp_path, text, message):
  path = tmp_path / "platforms.toml"
  path.write_text(text)
  with pytest.raises(errors.ConfigError, match=re.escape(message)) as raised:
    reproduce_lib.reproduce("smoke", str(tmp_path / "out"), platforms_file=str(path))
  assert "\n" not in str(raised.value) and str(path) in str(raised.value)
  assert not (tmp_path / "out").exists()


def _quiet(line):
  del line


@pytest.fixture
def ray_cluster(monkeypatch):
  """A Ray cluster of four nodes on this machine, every one on 127.0.0.1: a head without CPUs
  (the driver's), two nodes with resource platform_cpu and one with platform_nodnn, as nodes of
  two kinds of hardware would be. Yields (cluster, {name: node})."""
  ray = pytest.importorskip("ray")
  from ray import cluster_utils  # pylint: disable=import-outside-toplevel
  from ray._private import ray_constants  # pylint: disable=import-outside-toplevel

  # ray.init(address=127.0.0.1:port) replaces a loopback address by the machine's own address
  # unless Ray's multi-machine mode is off: it is, here and in every process the nodes start.
  monkeypatch.setenv(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, "0")
  monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
  loopback = {"node_ip_address": "127.0.0.1"}
  cluster = cluster_utils.Cluster(
      initialize_head=True,
      head_node_args={
          "num_cpus": 0,
          "include_dashboard": False,
          # A killed node is noticed within seconds.
          "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3},
          **loopback,
      },
  )
  try:
    nodes = {
        name: cluster.add_node(num_cpus=1, resources=resources, **loopback)
        for name, resources in (
            ("cpu-a", {"platform_cpu": 1}),
            ("cpu-b", {"platform_cpu": 1}),
            ("nodnn", {"platform_nodnn": 1}),
        )
    }
    ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield cluster, nodes
  finally:
    ray.shutdown()
    cluster.shutdown()


def _stage_nodes(out, stage_name):
  """The Ray node ids a stage ran on, every attempt, from its log's header lines."""
  with open(stages.log_path(stage_name, str(out))) as f:
    return re.findall(r"^# \S+ on Ray node (\w+): ", f.read(), re.MULTILINE)


def test_smoke_preset_on_a_ray_cluster_with_a_node_killed(
    reference, ray_cluster, tmp_path, data_dir
):
  """Each stage runs on a node with its platform's resource; a node killed during a stage costs
  a retry on another node and changes no bit of the study."""
  cluster, nodes = ray_cluster
  toml = tmp_path / "platforms.toml"
  toml.write_text(_PLATFORMS_TOML)
  tpu = tmp_path / "tpu.toml"
  tpu.write_text("[cpu]\nresources = { platform_tpu = 1 }\n")
  with pytest.raises(errors.ConfigError, match="no node of the Ray cluster has what platform cpu"):
    reproduce_lib.reproduce(
        "smoke", str(tmp_path / "never"), platforms_file=str(tpu), executor="ray", echo=_quiet
    )
  assert not (tmp_path / "never").exists()  # refused before anything was written

  out = tmp_path / "study"
  killed = []

  def kill_the_node_training_on_cpu():
    deadline = time.time() + 300
    while time.time() < deadline:
      try:
        started = _stage_nodes(out, "train lenet_b100_T6_cpu")
      except OSError:
        started = []
      if started:
        time.sleep(2)  # inside the stage: its process is loading TensorFlow
        node = next(n for n in nodes.values() if n.node_id == started[0])
        cluster.remove_node(node, allow_graceful=False)
        killed.append(node.node_id)
        return
      time.sleep(0.05)

  killer = threading.Thread(target=kill_the_node_training_on_cpu)
  killer.start()
  lines = []
  try:
    began = time.perf_counter()
    reproduce_lib.reproduce(
        "smoke",
        str(out),
        data_dir,
        False,
        echo=lines.append,
        platforms_file=str(toml),
        executor="ray",
    )
    seconds = time.perf_counter() - began
  finally:
    killer.join()
  print(f"smoke preset on the Ray cluster, one node killed: {seconds:.0f} s")
  assert killed, "no node was killed"
  assert sum(": done in " in line for line in lines) == 9, lines
  resources = {node.node_id: name for name, node in nodes.items()}
  for stage in stages.plan(presets.PRESETS["smoke"]):
    ran_on = [resources[node] for node in _stage_nodes(out, stage.name)]
    wanted = {"cpu": ("cpu-a", "cpu-b"), "cpu-nodnn": ("nodnn",)}[stage.platform.name]
    assert ran_on and set(ran_on) <= set(wanted), (stage.name, ran_on)
  trained = _stage_nodes(out, "train lenet_b100_T6_cpu")
  assert trained[0] == killed[0] and len(trained) == 2 and trained[1] != killed[0], trained
  _assert_same_study(reference[0], out)
  # The run resumes only on its own platforms.
  with pytest.raises(errors.ConfigError, match="run on other platforms .from a file."):
    reproduce_lib.reproduce("smoke", str(out), echo=_quiet)
  toml.write_text(_PLATFORMS_TOML.replace("num_cpus = 1", "num_cpus = 2"))
  with pytest.raises(errors.ConfigError, match="resume it with its own --platforms"):
    reproduce_lib.reproduce("smoke", str(out), platforms_file=str(toml), echo=_quiet)
