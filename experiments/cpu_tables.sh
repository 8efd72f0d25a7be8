#!/usr/bin/env bash
# Tables I and II on this machine's CPU: trains LeNet/MNIST (T=1200) and VGGmini/CIFAR-10 traces on
# several CPU platforms and recomputes each on every platform of its matrix. Resumable: a finished
# trace or result is skipped, an unfinished one continues.
#
#   FORGING_TF_DATA=../shared/data bash experiments/cpu_tables.sh [RUNS_DIR] [RESULTS_DIR]
#
# Platforms (all CPU, XLA off): threads t2 (TensorFlow's default here: 2 intra-op threads) or t1,
# i1 (1 inter-op thread), oneDNN on (dnn) or off (nodnn), op determinism on (det) or off (nodet).
# Settings used for the committed tables (benchmarks/results/cpu_study): R_SAME=3 R_CROSS=2
# R_CROSS_C=2 R_VGG=2 VGG_T=20 (LeNet b=100 same-platform Table I cell: R=5).
set -euo pipefail
RUNS=${1:-runs/cpu_tables}
RESULTS=${2:-results}
LENET_T=${LENET_T:-1200}
VGG_T=${VGG_T:-30}
R_SAME=${R_SAME:-5}
R_CROSS=${R_CROSS:-3}
R_VGG=${R_VGG:-3}

flags_of() {  # platform name -> forging_tf platform flags
  local f=""
  [[ $1 == *-t1-* ]] && f+=" --intra_op_threads=1"
  [[ $1 == *-i1-* ]] && f+=" --inter_op_threads=1"
  [[ $1 == *-nodnn-* ]] && f+=" --onednn=off" || f+=" --onednn=on"
  [[ $1 == *-nodet ]] && f+=" --nodeterministic" || f+=" --deterministic"
  echo "$f"
}

train() {  # model dataset b T platform -> trace path (prints it)
  local out="$RUNS/traces/$1_$2_b$3_T$4_$5"
  if ! python3 -c "import sys; from forging_tf import trace; sys.exit(0 if trace.is_trace('$out') and trace.Trace('$out').complete else 1)" 2>/dev/null; then
    forging-train --model="$1" --dataset="$2" --batch_size="$3" --steps="$4" --out="$out" $(flags_of "$5") >&2
  fi
  echo "$out"
}

recompute() {  # trace table repeats platform
  local out="$RESULTS/repro/$2/$(basename "$1")__on__$4"
  if [[ ! -f "$out/summary.json" ]] || ! python3 -c "import json,sys; sys.exit(0 if json.load(open('$out/summary.json'))['repeats'] >= $3 else 1)"; then
    forging-recompute --trace="$1" --repeats="$3" --out="$out" $(flags_of "$4") >&2
  fi
}

matrix() {  # table b platforms...
  local table=$1 b=$2; shift 2
  for gen in "$@"; do
    local t; t=$(train lenet mnist "$b" "$LENET_T" "$gen")
    for rec in "$@"; do
      if [[ $gen == "$rec" ]]; then recompute "$t" "$table" "$R_SAME" "$rec"
      else recompute "$t" "$table" "$R_CROSS" "$rec"; fi
    done
  done
}

# Table I, LeNet rows: same platform (the default one), b in {100, 500, 1000}.
for b in 100 500 1000; do
  recompute "$(train lenet mnist $b "$LENET_T" cpu-t2-dnn-det)" table1 "$R_SAME" cpu-t2-dnn-det
done
# Table II (b): LeNet b=100 with op determinism.
matrix table2b 100 cpu-t2-dnn-det cpu-t1-dnn-det cpu-t2-nodnn-det cpu-t1-nodnn-det
# Table I, VGGmini rows (T=$VGG_T on this CPU).
for b in 100 500 1000; do
  recompute "$(train vggmini cifar10 $b "$VGG_T" cpu-t2-dnn-det)" table1 "$R_VGG" cpu-t2-dnn-det
done
# Table II (a): LeNet b=100, op determinism off.
matrix table2a 100 cpu-t2-dnn-nodet cpu-t2-nodnn-nodet
# Table II (c): LeNet b=1000, op determinism off.
R_CROSS=${R_CROSS_C:-2} matrix table2c 1000 cpu-t2-dnn-nodet cpu-t2-nodnn-nodet
# Inter-op threads (no change) and op determinism off on a det trace; VGGmini across oneDNN.
recompute "$(train lenet mnist 100 "$LENET_T" cpu-t2-dnn-det)" platforms 2 cpu-t2-i1-dnn-det
recompute "$(train lenet mnist 100 "$LENET_T" cpu-t2-dnn-det)" platforms 2 cpu-t2-dnn-nodet
recompute "$(train vggmini cifar10 100 "$VGG_T" cpu-t2-dnn-det)" vgg_cross 1 cpu-t2-nodnn-det
