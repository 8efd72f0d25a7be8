#!/usr/bin/env bash
# The exact in-domain question ("The exact in-domain question" in REPORT.md): the dead-unit case
# (training examples whose first-layer ReLU units are all inactive) counted at the initialisation
# and at trained checkpoints of the 784-8-10 network of the exact experiments and of LeNet on
# MNIST, the exact swap of two of one class played by forging-verify at epsilon = 0, and the
# in-domain search at theta_0 and at trained checkpoints of the 784-8-10 network (same batch).
# Resumable: a finished trace or result is skipped.
#
#   FORGING_TF_DATA=../shared/data bash experiments/exact_question.sh [RUNS_DIR] [RESULTS_DIR]
#
# Settings of the saved study (benchmarks/results/cpu_study/exact/question): the defaults below,
# with RESULTS_DIR=runs/exact_question/results; only the summary.json files are kept.
set -euo pipefail
RUNS=${1:-runs/exact_question}
RESULTS=${2:-results/exact_question}
FCN_T=${FCN_T:-3000}
FCN_CHECKPOINTS=${FCN_CHECKPOINTS:-0,50,100,200,1000,3000}
LENET_T=${LENET_T:-1200}
LENET_K=${LENET_K:-100}
LENET_CHECKPOINTS=${LENET_CHECKPOINTS:-0,100,600,1200}
DOMAIN_CHECKPOINTS=${DOMAIN_CHECKPOINTS:-50 200 3000}
MILP_TIME_LIMIT=${MILP_TIME_LIMIT:-60}

train() {  # out forging-train flags...
  local out=$1
  shift
  if ! python3 -c "import sys; from forging_tf import trace; sys.exit(0 if trace.is_trace('$out') and trace.Trace('$out').complete else 1)" 2>/dev/null; then
    forging-train --dataset=mnist --out="$out" "$@" >&2
  fi
}

exact() {  # name forging-exact flags...: results/NAME
  local out="$RESULTS/$1"
  shift
  [[ -f "$out/summary.json" ]] || forging-exact --out="$out" "$@" >&2
}

FCN="$RUNS/traces/fcn8_mnist_b32_T$FCN_T"
LENET="$RUNS/traces/lenet_mnist_b100_T${LENET_T}_k$LENET_K"
train "$FCN" --model=fcn --hidden=8 --batch_size=32 --steps="$FCN_T"
train "$LENET" --model=lenet --batch_size=100 --steps="$LENET_T" --k="$LENET_K"

# Dead first layers at theta_0 and trained checkpoints; the swap searched from each checkpoint to
# the next, scored, and played at epsilon = 0 (forging_game.play, what forging-verify calls).
exact dead_units_fcn8 --experiment=dead_units --trace="$FCN" --checkpoints="$FCN_CHECKPOINTS"
exact dead_units_lenet --experiment=dead_units --trace="$LENET" --checkpoints="$LENET_CHECKPOINTS"
# The same swaps, from the command line: forging-verify must ACCEPT each at --epsilon=0.
for name in dead_units_fcn8 dead_units_lenet; do
  python3 -c "import json, sys; [print(c['swap']['verify_command']) for c in json.load(open(sys.argv[1]))['checkpoints'] if c['swap']['found']]" \
    "$RESULTS/$name/summary.json" | while read -r command; do
    echo "$command" >&2
    $command
  done
done

# The in-domain search on one batch (b = 32, seed 0): at theta_0 (zero biases) and at trained
# checkpoints (nonzero biases).
exact domain_init --experiment=domain --milp_time_limit="$MILP_TIME_LIMIT"
for step in $DOMAIN_CHECKPOINTS; do
  exact "domain_fcn8_step$step" --experiment=domain --trace="$FCN" --checkpoints="$step" \
    --milp_time_limit="$MILP_TIME_LIMIT"
done
