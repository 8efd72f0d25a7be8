"""forging-calibrate: threshold policies fitted to saved reproduction errors, their false-reject
rate with one platform pair left out, the forged steps they accept; forging-verify
--epsilon_from."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from forging_tf import errors
from forging_tf import results
from forging_tf import trace as trace_lib
from forging_tf.calibrate import calibrate_lib
from forging_tf.calibrate import policies

# Not realpath: under Bazel the study's files are data in the runfiles tree beside this file.
_CPU_STUDY = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "benchmarks",
    "results",
    "cpu_study",
)


def _fingerprint(platform_id: str, threads: int) -> dict:
  return {
      "id": platform_id,
      "settings": {"device": "cpu"},
      "in_force": {
          "device": "cpu",
          "intra_op_threads": threads,
          "inter_op_threads": 0,
          "onednn": True,
          "op_determinism": True,
      },
  }


_PLATFORMS = {name: _fingerprint(name * 12, i + 1) for i, name in enumerate("abcdef")}


def _trace(manifest: str, batch_size: int = 100, model: str = "lenet") -> dict:
  return {
      "path": f"traces/{manifest}",
      "manifest_sha256": manifest * 64,
      "model": model,
      "dataset": "mnist",
      "batch_size": batch_size,
      "steps": 1200,
      "k": 1,
  }


def _write_reproduction(
    root, generator: str, recomputer: str, distances, update_l2=None, manifest="t", steps=None
) -> str:
  """A forging-recompute result folder (result.json + summary.json) of lenet/mnist b=100;
  update_l2 None: as written before update norms were recorded."""
  folder = os.path.join(root, "repro", f"{manifest}_{generator}__on__{recomputer}")
  os.makedirs(folder)
  steps = list(range(len(distances))) if steps is None else steps
  summary = {
      "eps_repr": max(distances),
      "steps": steps,
      "max_l2_per_step": list(distances),
      "max_linf_per_step": list(distances),
      "repeats": 2,
      "model": "lenet",
      "dataset": "mnist",
      "batch_size": 100,
      "trace_steps": 1200,
      "k": 1,
      "generator_platform": generator * 12,
      "recomputer_platform": recomputer * 12,
      "same_platform": generator == recomputer,
  } | ({} if update_l2 is None else {"update_l2_per_step": list(update_l2)})
  record = results.header(results.ResultKind.REPRODUCTION_ERROR, None, _PLATFORMS[recomputer]) | {
      "trace": _trace(manifest),
      "eps_repr": max(distances),
      "updates": len(distances),
      "repeats": 2,
      "generator_platform": _PLATFORMS[generator],
  }
  results.write_json(os.path.join(folder, "summary.json"), summary)
  results.write_json(os.path.join(folder, "result.json"), record)
  return os.path.join(folder, "result.json")


def _write_attack(
    root,
    name: str,
    attack: str,
    steps,
    fractions,
    errors_,
    manifest="t",
    update_l2=None,
    arrays=True,
) -> str:
  """A forging-attack result folder: summary.json, approximation_error.npy [S, F, R] (unless not
  `arrays`: then only the summary's min/mean/max over runs) and update_l2.npy [S] if given."""
  folder = os.path.join(root, "attacks", name)
  os.makedirs(folder)
  errors_ = np.asarray(errors_, np.float64)
  fraction_entries = [
      {"label": label, "num_replaced": m, "forging_fraction": m / 100} for label, m in fractions
  ]
  record = results.header(results.ResultKind.ATTACK, None, _PLATFORMS["a"]) | {
      "settings": {"attack": attack, "runs": errors_.shape[2], "M": 300, "n": 3000},
      "trace": _trace(manifest),
      "steps": list(steps),
      "forging_fractions": fraction_entries,
      "results": [
          {
              "step": step,
              "label": fraction["label"],
              "num_replaced": fraction["num_replaced"],
              "forging_fraction": fraction["forging_fraction"],
              "min_approximation_error": float(errors_[s, f].min()),
              "mean_approximation_error": float(errors_[s, f].mean()),
              "max_approximation_error": float(errors_[s, f].max()),
          }
          for s, step in enumerate(steps)
          for f, fraction in enumerate(fraction_entries)
      ],
  }
  results.write_json(os.path.join(folder, "summary.json"), record)
  if arrays:
    np.save(os.path.join(folder, "approximation_error.npy"), errors_)
  if update_l2 is not None:
    np.save(os.path.join(folder, "update_l2.npy"), np.asarray(update_l2, np.float64))
  return os.path.join(folder, "summary.json")


def _evaluation(model: calibrate_lib.ModelCalibration, policy) -> calibrate_lib.PolicyEvaluation:
  return next(e for e in model.evaluations if e.policy == policy)


def _held_out(evaluation) -> dict[str, tuple[float, float, float]]:
  """generator letter -> (threshold fitted without the pair, its own max, false reject)."""
  return {
      h.pair.generator[0]: (h.threshold, h.own_max, h.false_reject) for h in evaluation.held_out
  }


def test_lopo_false_reject_of_the_max_and_a_quantile_matches_a_hand_computation(tmp_path):
  _write_reproduction(tmp_path, "a", "b", [0, 1, 2, 3])
  _write_reproduction(tmp_path, "b", "c", [0, 0, 5, 1])
  _write_reproduction(tmp_path, "c", "a", [4, 4, 4, 4])
  sweep = (policies.MaxDistance(), policies.QuantileDistance(0.5))
  calibration = calibrate_lib.calibrate([str(tmp_path)], 0.25, sweep)
  (model,) = calibration.models
  assert model.key == calibrate_lib.ModelKey("lenet", "mnist", 100) and len(model.pairs) == 3
  # max: without a -> max(b, c) = 5; without b -> max(a, c) = 4, which rejects b's 5;
  # without c -> max(a, b) = 5.
  maximum = _evaluation(model, policies.MaxDistance())
  assert maximum.value == 5
  assert _held_out(maximum) == {"a": (5, 3, 0), "b": (4, 5, 0.25), "c": (5, 4, 0)}
  assert maximum.false_reject_mean == pytest.approx(0.25 / 3) and maximum.false_reject_max == 0.25
  # quantile 0.5 ("higher"): of 8 pooled values, the 5th smallest. Without a: b+c sorted
  # 0 0 1 4 [4] 4 4 5 -> 4; without b: a+c 0 1 2 3 [4] 4 4 4 -> 4, rejecting b's 5; without c:
  # a+b 0 0 0 1 [1] 2 3 5 -> 1, rejecting all of c's 4s. On all 12: the 7th smallest, 3.
  median = _evaluation(model, policies.QuantileDistance(0.5))
  assert median.value == 3
  assert _held_out(median) == {"a": (4, 3, 0), "b": (4, 5, 0.25), "c": (1, 4, 1)}
  assert median.false_reject_mean == pytest.approx(1.25 / 3) and median.false_reject_max == 1
  # Only the max keeps every held-out pair within 25 %.
  assert model.recommended is maximum
  model_json = calibrate_lib.record(calibration)["models"][0]
  assert model_json["recommended"]["policy"] == "max"
  assert model_json["recommended"]["lopo_false_reject_max"] == 0.25
  assert model_json["verifier_threshold"] | {"basis": ""} == {
      "policy": "max",
      "parameter": None,
      "relative": False,
      "value": 5.0,
      "basis": "",
  }
  # A stricter target than any policy meets: nothing recommended, the verifier uses the max.
  (strict,) = calibrate_lib.calibrate([str(tmp_path)], 0.2, sweep).models
  assert strict.recommended is None and "no policy kept" in strict.note
  assert strict.verifier_threshold.policy == policies.MaxDistance()


def test_relative_policy_judges_by_update_norms_and_skips_results_without_them(tmp_path):
  # Ratios distance / update: a .1 .2, b .3, c .01; d was written before update norms were kept.
  _write_reproduction(tmp_path, "a", "b", [1, 2], [10, 10], manifest="m", steps=[0, 1])
  _write_reproduction(tmp_path, "b", "c", [3], [10])
  _write_reproduction(tmp_path, "c", "a", [1], [100])
  old = _write_reproduction(tmp_path, "d", "a", [7])
  # Norms from the attack's own update_l2.npy; from the reproduction of its trace (manifest m,
  # step 1: norm 10); from nowhere (its cells are not judged).
  _write_attack(tmp_path, "own", "thudi", [5], [("1", 100)], [[[2.0, 4.0]]], update_l2=[10.0])
  _write_attack(tmp_path, "from_repro", "thudi", [1], [("1", 100)], [[[1.0, 5.0]]], manifest="m")
  unknown = _write_attack(tmp_path, "unknown", "zhang", [3], [("1", 100)], [[[0.1, 0.2]]])
  relative = policies.RelativeToUpdate(1.0)
  (model,) = calibrate_lib.calibrate(
      [str(tmp_path)], 0.0, (relative, policies.MaxDistance())
  ).models
  fitted = _evaluation(model, relative)
  assert fitted.pairs == 3 and fitted.value == pytest.approx(0.3)
  # Without a: c = .3; without b: c = .2, which rejects b's .3; without c: c = .3.
  held_out = _held_out(fitted)
  assert {name: value[2] for name, value in held_out.items()} == {"a": 0, "b": 1, "c": 0}
  assert held_out["b"][:2] == pytest.approx((0.2, 0.3))
  assert fitted.false_reject_mean == pytest.approx(1 / 3) and fitted.false_reject_max == 1
  assert model.notes[calibrate_lib._NO_PAIR_NORMS] == (old,)
  assert model.notes[calibrate_lib._NO_ATTACK_NORMS] == (unknown,)
  assert {a.path.split(os.sep)[-2]: a.update_l2_from for a in model.attacks} == {
      "own": "attack",
      "from_repro": "reproduction",
      "unknown": None,
  }
  # At c = .3: own accepts 2 (<= 3) not 4; from_repro accepts 1 (<= 3) not 5; unknown: 2 cells
  # not judged, which the worst case counts as accepted.
  assert fitted.forged.by_attack() == {
      "thudi": calibrate_lib.ForgedCount(4, 4, 2, 2),
      "zhang": calibrate_lib.ForgedCount(2, 0, 0, 0),
  }
  assert fitted.forged.total.worst_case == pytest.approx(4 / 6)
  # The max uses the old result too (epsilon 7) and accepts every forged cell.
  maximum = _evaluation(model, policies.MaxDistance())
  assert maximum.value == 7 and maximum.pairs == 4
  assert maximum.forged.total == calibrate_lib.ForgedCount(6, 6, 6, 6)
  record = calibrate_lib.record(calibrate_lib.calibrate([str(tmp_path)]))
  notes = {note["reason"]: note["results"] for note in record["models"][0]["notes"]}
  assert notes[calibrate_lib._NO_PAIR_NORMS] == [old]


def test_a_forgery_accepted_at_the_max_is_rejected_at_the_calibrated_threshold(tmp_path):
  # Four pairs: the same 100 small distances and one outlier step each (a max-pool near-tie).
  regular = list(np.linspace(0, 1e-8, 100))
  for generator, outlier in zip("abcd", (1.0e-6, 0.9e-6, 0.8e-6, 0.7e-6)):
    _write_reproduction(tmp_path, generator, "e", regular + [outlier])
  # Thudi with every run saved; Zhang with only min and max over 5 runs.
  _write_attack(
      tmp_path, "thudi", "thudi", [600], [("1/b", 1), ("1", 100)], [[[5e-7, 2e-6], [1e-3, 2e-3]]]
  )
  zhang_errors = [[[5e-7, 6e-7, 8e-7, 3e-6, 2e-6]]]
  _write_attack(tmp_path, "zhang", "zhang", [600], [("1/b", 1)], zhang_errors, arrays=False)
  calibration = calibrate_lib.calibrate([str(tmp_path)], 0.01)
  (model,) = calibration.models
  maximum = model.paper_max
  assert maximum.value == 1e-6
  assert maximum.forged.by_fraction[("thudi", "1/b", 0.01)] == calibrate_lib.ForgedCount(2, 2, 1, 1)
  assert maximum.forged.by_fraction[("thudi", "1", 1.0)] == calibrate_lib.ForgedCount(2, 2, 0, 0)
  # min 5e-7 <= 1e-6 < max 3e-6: between 1 and 4 of Zhang's 5 runs were accepted.
  assert maximum.forged.by_attack()["zhang"] == calibrate_lib.ForgedCount(5, 5, 1, 4)
  # q = 0.99 of the 303 values without a pair is the largest regular distance, 1e-8: each held-out
  # pair loses its outlier, 1 step of 101 (<= 1 %); a lower q also rejects regular steps.
  chosen = model.recommended
  assert chosen.policy == policies.QuantileDistance(0.99) and chosen.value == pytest.approx(1e-8)
  assert chosen.false_reject_max == pytest.approx(1 / 101) and 1 / 101 <= 0.01
  assert chosen.forged.total == calibrate_lib.ForgedCount(9, 9, 0, 0)
  assert _evaluation(model, policies.QuantileDistance(0.98)).false_reject_max == pytest.approx(
      2 / 101
  )
  written = calibrate_lib.write(calibration, str(tmp_path / "out"))
  assert written == ["calibration.json", "calibration.md", "tradeoff.png", "tradeoff.pdf"]
  table = (tmp_path / "out" / "calibration.md").read_text()
  assert "| thudi | 1/b (0.01) | 0/2 | 1/2 |" in table
  assert "| zhang | 1/b (0.01) | 0/5 | 1..4/5 |" in table


def test_the_saved_cpu_study(tmp_path):
  """The real LeNet and VGGmini results of Tables I-III (written by forging_tf 0.1): checked
  against the summaries read here directly. (repro/vgg_long, VGGmini at T = 2500, was written by
  0.2 with the update norms: not read here.)"""
  written_by_0_1 = sorted(
      folder
      for folder in glob.glob(os.path.join(_CPU_STUDY, "repro", "*"))
      if os.path.basename(folder) != "vgg_long"
  )
  calibration = calibrate_lib.calibrate([*written_by_0_1, os.path.join(_CPU_STUDY, "attacks")], 0.0)
  summaries: dict[tuple, list[dict]] = {}
  for path in (p for folder in written_by_0_1 for p in glob.glob(f"{folder}/*/summary.json")):
    with open(path) as f:
      summary = json.load(f)
    summaries.setdefault((summary["model"], summary["dataset"], summary["batch_size"]), []).append(
        summary
    )
  by_key = {(m.key.model, m.key.dataset, m.key.batch_size): m for m in calibration.models}
  assert set(by_key) == set(summaries)
  for key, model in by_key.items():
    pairs = {(s["generator_platform"], s["recomputer_platform"]) for s in summaries[key]}
    assert {(p.generator, p.recomputer) for p in model.pairs} == pairs
    assert model.paper_max.value == max(s["eps_repr"] for s in summaries[key])
    # Saved before update norms were recorded: no relative policy is fitted, and it says why.
    assert all(e.value is None for e in model.evaluations if e.policy.relative)
    assert len(model.notes[calibrate_lib._NO_PAIR_NORMS]) == len(summaries[key])
    if len(pairs) == 1:
      assert not model.lopo_possible and model.recommended is None
      assert "LOPO is impossible" in model.note and "LOPO impossible" in model.paper_max.lopo_note
      continue
    # LOPO of the max by hand: each pair against the largest distance of the others.
    steps = {
        pair: np.concatenate(
            [
                s["max_l2_per_step"]
                for s in summaries[key]
                if (s["generator_platform"], s["recomputer_platform"]) == pair
            ]
        )
        for pair in pairs
    }
    for held in model.paper_max.held_out:
      mine = steps[(held.pair.generator, held.pair.recomputer)]
      others = max(d.max() for pair, d in steps.items() if d is not mine)
      assert held.threshold == others and held.own_max == mine.max()
      assert held.false_reject == np.mean(mine > others)
  # LeNet b=100: Thudi and Zhang at step 600, saved without their per-run arrays.
  lenet = by_key[("lenet", "mnist", 100)]
  assert len(lenet.pairs) >= 10 and all(a.errors is None for a in lenet.attacks)
  epsilon = lenet.paper_max.value
  for attack in lenet.attacks:
    with open(attack.path) as f:
      entries = json.load(f)["results"]
    for entry in entries:
      low, high = entry["min_approximation_error"], entry["max_approximation_error"]
      if high <= epsilon:
        expected = (attack.runs, attack.runs)
      elif low <= epsilon:
        expected = (1, attack.runs - 1)
      else:
        expected = (0, 0)
      count = lenet.paper_max.forged.by_fraction[
          (attack.attack, entry["label"], entry["forging_fraction"])
      ]
      assert (count.accepted_low, count.accepted_high) == expected
  whole_batch = [e for e in lenet.paper_max.forged.by_fraction.items() if e[0][2] == 1.0]
  assert whole_batch and all(count.accepted_high == 0 for _, count in whole_batch)
  # The record round-trips, and forging-verify's reader finds the paper's max for LeNet b=100.
  out = str(tmp_path / "study")
  calibrate_lib.write(calibration, out)
  assert results.read_record(os.path.join(out, "calibration.json"), results.ResultKind.CALIBRATION)
  threshold = calibrate_lib.verifier_threshold(
      os.path.join(out, "calibration.json"), "lenet", "mnist", 100
  )
  assert (threshold.policy, threshold.relative, threshold.value) == ("max", False, epsilon)
  assert threshold.basis.startswith("the paper's max rule (none recommended: ")


def test_the_saved_calibration_runs_with_update_sizes_and_per_run_errors():
  """The real LeNet results of experiments/calibration.sh (forging_tf 0.2): every policy fitted,
  forged cells counted run by run, and real forgeries that the paper's max accepts and a
  calibrated quantile rejects."""
  folder = os.path.join(_CPU_STUDY, "calibration")
  calibration = calibrate_lib.calibrate([folder], 0.0)
  summaries = {}
  for path in glob.glob(os.path.join(folder, "repro", "*", "summary.json")):
    with open(path) as f:
      summary = json.load(f)
    if not summary.get("top_q"):
      summaries.setdefault(summary["batch_size"], []).append(summary)
  assert calibration.top_q  # the proof-of-learning subset is left out
  for model in calibration.models:
    own = summaries[model.key.batch_size]
    ratio = max(
        np.max(np.asarray(s["max_l2_per_step"]) / np.asarray(s["update_l2_per_step"])) for s in own
    )
    relative = _evaluation(model, policies.RelativeToUpdate(1.0))
    assert relative.value == pytest.approx(ratio, rel=1e-12) and relative.held_out
    assert all(
        attack.errors is not None and attack.update_l2_from == "attack" for attack in model.attacks
    )
    epsilon = model.paper_max.value
    assert epsilon == max(s["eps_repr"] for s in own)
    errors_ = np.concatenate([attack.errors.ravel() for attack in model.attacks])
    accepted = model.paper_max.forged.total
    assert accepted.accepted_low == accepted.accepted_high == np.sum(errors_ <= epsilon)
  lenet = next(m for m in calibration.models if m.key.batch_size == 100)
  tight = _evaluation(lenet, policies.QuantileDistance(0.995))
  epsilon = lenet.paper_max.value
  caught = [e for a in lenet.attacks for e in a.errors.ravel() if tight.value < e <= epsilon]
  assert caught and tight.forged.total.accepted_high < lenet.paper_max.forged.total.accepted_high


def test_an_existing_calibration_is_replaced_only_with_the_same_numbers_or_overwrite(tmp_path):
  _write_reproduction(tmp_path, "a", "b", [1e-7, 2e-7])
  _write_reproduction(tmp_path, "b", "a", [3e-7])
  out = str(tmp_path / "out")
  calibrate_lib.write(calibrate_lib.calibrate([str(tmp_path / "repro")], 0.0), out)
  first = (tmp_path / "out" / "calibration.json").read_text()
  calibrate_lib.write(calibrate_lib.calibrate([str(tmp_path / "repro")], 0.0), out)
  other = calibrate_lib.calibrate([str(tmp_path / "repro")], 0.5)
  with pytest.raises(errors.ConfigError, match="already holds a calibration; pass --overwrite"):
    calibrate_lib.write(other, out)
  assert json.loads(first)["target_false_reject"] == 0.0
  assert json.loads((tmp_path / "out" / "calibration.json").read_text())["target_false_reject"] == 0
  calibrate_lib.write(other, out, overwrite=True)
  assert (
      json.loads((tmp_path / "out" / "calibration.json").read_text())["target_false_reject"] == 0.5
  )
  someone_elses = tmp_path / "notes"
  someone_elses.mkdir()
  (someone_elses / "mine.txt").write_text("keep")
  with pytest.raises(errors.ConfigError, match="does not hold a calibration"):
    calibrate_lib.write(other, str(someone_elses), overwrite=True)
  assert (someone_elses / "mine.txt").read_text() == "keep"


def test_missing_or_unusable_results_are_one_line_errors(tmp_path):
  with pytest.raises(errors.ConfigError, match="no results folder at"):
    calibrate_lib.calibrate([str(tmp_path / "nowhere")])
  _write_attack(tmp_path, "alone", "thudi", [0], [("1", 100)], [[[1.0]]])
  with pytest.raises(
      errors.ConfigError, match=r"no reproduction-error results .* \(found 1 attack"
  ):
    calibrate_lib.calibrate([str(tmp_path)])
  with pytest.raises(errors.ConfigError, match="must lie in"):
    calibrate_lib.calibrate([str(tmp_path)], 1.5)
  with pytest.raises(ValueError, match="quantile"):
    policies.QuantileDistance(0)


def test_records_without_per_step_distances_and_top_q_subsets_are_left_out(tmp_path):
  _write_reproduction(tmp_path, "a", "b", [1e-7, 2e-7])
  _write_reproduction(tmp_path, "b", "a", [3e-7])
  bare = _write_reproduction(tmp_path, "a", "a", [5.0])
  os.remove(os.path.join(os.path.dirname(bare), "summary.json"))  # a copied record alone
  subset = _write_reproduction(tmp_path, "a", "b", [4.0], manifest="pol")
  summary_path = os.path.join(os.path.dirname(subset), "summary.json")
  with open(summary_path) as f:
    results.write_json(summary_path, json.load(f) | {"top_q": 1})
  calibration = calibrate_lib.calibrate([str(tmp_path)])
  assert calibration.without_steps == (bare,) and calibration.top_q == (subset,)
  (model,) = calibration.models
  assert model.paper_max.value == 3e-7  # neither the 5.0 nor the 4.0 was pooled
  text = calibrate_lib.markdown(calibration)
  assert "without their summary.json" in text and "--top_q" in text
  os.remove(os.path.join(tmp_path, "repro", "t_a__on__b", "summary.json"))
  os.remove(os.path.join(tmp_path, "repro", "t_b__on__a", "summary.json"))
  os.remove(summary_path)
  with pytest.raises(errors.ConfigError, match="has its summary.json"):
    calibrate_lib.calibrate([str(tmp_path)])


def _calibrate_binary(*flags_):
  return subprocess.run(
      [sys.executable, "-m", "forging_tf.calibrate.calibrate", *flags_],
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
  )


def test_calibrate_binary(tmp_path):
  _write_reproduction(tmp_path, "a", "b", [1e-7, 2e-7])
  _write_reproduction(tmp_path, "b", "a", [3e-7])
  out = tmp_path / "calibration"
  done = _calibrate_binary(f"--results={tmp_path / 'repro'}", f"--out={out}")
  assert done.returncode == 0, done.stderr[-2000:]
  lines = done.stdout.strip().splitlines()
  assert lines[0].startswith("LeNet / MNIST, b = 100: 2 platform pairs; recommended: none (")
  assert lines[-1] == (
      f"written to {out}/: calibration.json, calibration.md, tradeoff.png, tradeoff.pdf"
  )
  record = results.read_record(str(out / "calibration.json"), results.ResultKind.CALIBRATION)
  assert record["command"].startswith("forging-calibrate --results=")
  failed = _calibrate_binary(f"--results={tmp_path / 'nowhere'}", f"--out={tmp_path / 'x'}")
  assert failed.returncode == 1 and "Traceback" not in failed.stderr
  assert failed.stderr.strip().splitlines()[-1] == (
      f"forging-calibrate: error: no results folder at {tmp_path / 'nowhere'}; run the "
      "experiments first or pass --results"
  )
  assert not (tmp_path / "x").exists()


def test_verify_with_epsilon_from_a_relative_calibration(
    mnist, lenet_trace, data_dir, tmp_path, verify_binary
):
  path = lenet_trace(mnist, 20, 4, seed=2)
  trace = trace_lib.Trace(path)
  # Every honest ratio is 2^-10, so the relative policy keeps every held-out step; the max,
  # fitted without pair a, rejects a's 2^-17.
  pairs = tuple(
      calibrate_lib.PlatformPair(g * 12, "e" * 12, (f"{g}.json",), np.array(d), np.array(u))
      for g, d, u in (
          ("a", [2.0**-20, 2.0**-17], [2.0**-10, 2.0**-7]),
          ("b", [2.0**-19], [2.0**-9]),
          ("c", [2.0**-21], [2.0**-11]),
      )
  )
  key = calibrate_lib.ModelKey("lenet", "mnist", 20)
  sweep = (policies.MaxDistance(), policies.RelativeToUpdate(1.0))
  model = calibrate_lib.calibrate_model(key, pairs, (), 0.0, sweep)
  assert model.recommended.policy == policies.RelativeToUpdate(1.0)
  out = str(tmp_path / "calibration")
  calibrate_lib.write(calibrate_lib.Calibration(("synthetic",), 0.0, sweep, (model,), ()), out)
  batch = trace.batch(1).copy()
  batch[0] = next(i for i in range(1000) if i not in set(batch.tolist()))
  common = [
      f"--trace={path}",
      "--step=1",
      f"--data_dir={data_dir}",
      f"--forged_indices={','.join(map(str, batch))}",
  ]
  done = verify_binary(*common, f"--epsilon_from={out}/calibration.json")
  assert done.returncode in (0, 3), done.stderr[-2000:]
  line = done.stdout.strip()
  update = np.linalg.norm(
      trace.checkpoint(2).astype(np.float64) - trace.checkpoint(1).astype(np.float64)
  )
  used = f"policy relative(q=1), epsilon {2.0**-10:.6g} x update norm "
  assert used in line, line
  epsilon = float(line.split(used)[1].split(" = ")[1].rstrip(")"))
  assert epsilon == pytest.approx(2.0**-10 * update, rel=1e-5)
  error = float(line.split("error ")[1].split()[0])
  assert (done.returncode == 0) == (error <= epsilon)
  # No entry for b=20 in a calibration of b=100.
  other = calibrate_lib.calibrate_model(
      calibrate_lib.ModelKey("lenet", "mnist", 100), pairs, (), 0.0, sweep
  )
  wrong = str(tmp_path / "b100")
  calibrate_lib.write(calibrate_lib.Calibration((), 0.0, sweep, (other,), ()), wrong)
  missing = verify_binary(*common, f"--epsilon_from={wrong}/calibration.json")
  assert missing.returncode == 1
  assert missing.stderr.strip().splitlines()[-1] == (
      f"forging-verify: error: {wrong}/calibration.json has no threshold for lenet/mnist b=20 "
      "(it has: lenet/mnist b=100); calibrate on reproduction errors of that model or pass "
      "--epsilon"
  )
