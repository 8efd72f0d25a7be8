#!/usr/bin/env bash
# The strongest forgers against the distinctness margin D (Figure 7 in REPORT.md): perturb and
# gradmatch at D = 1, 16, 64, 256, 1024 grey levels, beside Thudi's and Zhang's attacks (D = 0,
# other real images), on LeNet/MNIST b = 100 and b = 1000 at fraction 1/b early, middle and late
# in training and at fractions 0.01 (b = 1000), 0.1 and 1 at the middle step, and on VGGmini/
# CIFAR-10 b = 100 at 1/b at its middle step. The LeNet traces are the calibration study's
# (experiments/calibration.sh, oneDNN on); the VGGmini trace is trained here (T = 20, as the CPU
# study's). Resumable: a finished result is skipped.
#
#   FORGING_TF_DATA=../shared/data bash experiments/forger_margin.sh [RUNS_DIR] [RESULTS_DIR] [PART]
#
# PART: lenet100, lenet1000, vggmini or all (default). Settings of the saved study
# (benchmarks/results/cpu_study/margin): the defaults below.
set -euo pipefail
RUNS=${1:-runs/calibration}
RESULTS=${2:-results/margin}
PART=${3:-all}
MARGINS=${MARGINS:-1 16 64 256 1024}
SEARCH=${SEARCH:---search_iterations=100 --grid_rounds=30 --grid_moves=64}
PLATFORM="--onednn=on --nodeterministic"
NEIGHBOURS="--neighbours_dir=$RESULTS/neighbours"

attack() {  # trace name attack steps fractions runs D [flags]
  local out="$RESULTS/$2_$3_D$7"
  [[ -f "$out/summary.json" ]] || forging-attack --trace="$1" --attack="$3" --steps="$4" \
    --forging_fraction="$5" --runs="$6" --min_distance="$7" --out="$out" $NEIGHBOURS \
    $PLATFORM ${8:-} >&2
}

family() {  # trace name steps fractions runs [flags]: Thudi and Zhang at D = 0, then the searches
  attack "$1" "$2" thudi "$3" "$4" "$5" 0 "--M=300 --n=3000 ${6:-}"
  [[ -n "${NO_ZHANG_AT_0:-}" ]] || attack "$1" "$2" zhang "$3" "$4" "$5" 0 "${6:-}"
  for D in $MARGINS; do
    attack "$1" "$2" perturb "$3" "$4" "$5" "$D" "$SEARCH ${6:-}"
    attack "$1" "$2" gradmatch "$3" "$4" "$5" "$D" "--M=300 --n=3000 $SEARCH ${6:-}"
  done
}

if [[ $PART == all || $PART == lenet100 ]]; then
  trace="$RUNS/traces/lenet_mnist_b100_T1200_dnn"
  family "$trace" lenet_b100_stages 120,600,1080 1/b 2
  family "$trace" lenet_b100_fractions 600 0.1,1 2
fi
if [[ $PART == all || $PART == lenet1000 ]]; then
  trace="$RUNS/traces/lenet_mnist_b1000_T300_dnn"
  family "$trace" lenet_b1000_stages 30,150,270 1/b 2
  family "$trace" lenet_b1000_fractions 150 0.01,0.1,1 1
fi
if [[ $PART == all || $PART == vggmini ]]; then
  trace="$RUNS/traces/vggmini_cifar10_b100_T20_dnn"
  python3 -c "import sys; from forging_tf import trace; sys.exit(0 if trace.is_trace('$trace') and trace.Trace('$trace').complete else 1)" 2>/dev/null ||
    forging-train --model=vggmini --dataset=cifar10 --batch_size=100 --steps=20 --out="$trace" $PLATFORM >&2
  # Zhang's D = 0 needs CIFAR-10's neighbour table (minutes on 2 cores): left out; the margins
  # pick Zhang's starts for gradmatch exactly, without it. A VGGmini search cell took 7.5 minutes
  # here (per-example conv filter gradients run a loop in pfor), so the saved study has three
  # margins for it.
  MARGINS=${VGG_MARGINS:-1 64 1024} NO_ZHANG_AT_0=1 family "$trace" vggmini_b100_middle 10 1/b 1
fi
