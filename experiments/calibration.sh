#!/usr/bin/env bash
# The verifier's threshold from data ("Choosing epsilon" in REPORT.md): LeNet/MNIST traces trained
# on two CPU platforms (oneDNN on / off, op determinism off: the Table II (a) and (c) designs),
# each recomputed on both with the per-step distributions, per-variable parts and update sizes;
# Thudi and Zhang attacks at steps spread over training; proof-of-learning's top-Q verifier;
# near-ties of every trace on both platforms and the outlier steps of each cross pair explained;
# forging-calibrate over the results. Resumable: a finished trace or result is skipped.
#
#   FORGING_TF_DATA=../shared/data bash experiments/calibration.sh [RUNS_DIR] [RESULTS_DIR]
#
# Settings of the saved study (benchmarks/results/cpu_study/calibration): the defaults below.
set -euo pipefail
RUNS=${1:-runs/calibration}
RESULTS=${2:-results/calibration}
T_100=${T_100:-1200}
T_1000=${T_1000:-300}
R=${R:-2}
ATTACK_STEPS=${ATTACK_STEPS:-0,100,200,300,400,500,600,700,800,900,1000,1100,1199}
ATTACK_STEPS_1000=${ATTACK_STEPS_1000:-0,30,60,90,120,150,180,210,240,270,299}
TOP_Q=${TOP_Q:-6}

flags_of() {  # platform name -> forging_tf platform flags
  case $1 in
    dnn) echo "--onednn=on --nodeterministic" ;;
    nodnn) echo "--onednn=off --nodeterministic" ;;
  esac
}

train() {  # b T platform -> trace path (prints it)
  local out="$RUNS/traces/lenet_mnist_b$1_T$2_$3"
  if ! python3 -c "import sys; from forging_tf import trace; sys.exit(0 if trace.is_trace('$out') and trace.Trace('$out').complete else 1)" 2>/dev/null; then
    forging-train --model=lenet --dataset=mnist --batch_size="$1" --steps="$2" --out="$out" $(flags_of "$3") >&2
  fi
  echo "$out"
}

recompute() {  # trace platform [extra flags] -> results/repro/TRACE__on__PLATFORM[suffix]
  local out="$RESULTS/repro/$(basename "$1")__on__$2${4:-}"
  [[ -f "$out/result.json" ]] || forging-recompute --trace="$1" --repeats="$R" --out="$out" $(flags_of "$2") ${3:-} >&2
}

near_ties() {  # trace platform -> results/near_ties/TRACE__on__PLATFORM
  local out="$RESULTS/near_ties/$(basename "$1")__on__$2"
  [[ -f "$out/summary.json" ]] || forging-near-ties --trace="$1" --out="$out" $(flags_of "$2") >&2
}

explain() {  # trace generator recomputer: the outlier steps of that pair, from both near-ties
  local name; name=$(basename "$1")
  local out="$RESULTS/outliers/${name}__on__$3"
  [[ -f "$out/summary.json" ]] || forging-explain-outliers --out="$out" \
    --reproduction="$RESULTS/repro/${name}__on__$3" \
    --near_ties="$RESULTS/near_ties/${name}__on__$2,$RESULTS/near_ties/${name}__on__$3" >&2
}

attack() {  # trace name steps attack [flags]
  local out="$RESULTS/attacks/$2_$4"
  [[ -f "$out/summary.json" ]] || forging-attack --trace="$1" --attack="$4" --steps="$3" --out="$out" ${5:-} >&2
}

for b in 100 1000; do
  T=$T_100; steps=$ATTACK_STEPS
  [[ $b == 1000 ]] && T=$T_1000 && steps=$ATTACK_STEPS_1000
  for gen in dnn nodnn; do
    trace=$(train "$b" "$T" "$gen")
    for rec in dnn nodnn; do recompute "$trace" "$rec"; done
  done
  trace=$(train "$b" "$T" dnn)
  attack "$trace" "lenet_b${b}" "$steps" thudi "--forging_fraction=1/b,0.1,1 --runs=2 --M=300 --n=3000"
  attack "$trace" "lenet_b${b}" "$steps" zhang "--forging_fraction=1/b,0.1,1 --runs=2"
  # Proof-of-learning's verifier: only the TOP_Q largest updates of each epoch, on the other
  # platform.
  recompute "$trace" nodnn "--top_q=$TOP_Q" "_top$TOP_Q"
done
# Why the outlier steps jump: near-ties of each trace on both platforms, and each cross pair.
for b in 100 1000; do
  T=$T_100
  [[ $b == 1000 ]] && T=$T_1000
  for gen in dnn nodnn; do
    trace="$RUNS/traces/lenet_mnist_b${b}_T${T}_$gen"
    for platform in dnn nodnn; do near_ties "$trace" "$platform"; done
    other=nodnn
    [[ $gen == nodnn ]] && other=dnn
    explain "$trace" "$gen" "$other"
  done
done
forging-calibrate --results="$RESULTS" --out="$RESULTS/calibration" --overwrite
