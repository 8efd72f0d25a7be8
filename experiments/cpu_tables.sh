#!/usr/bin/env bash
# Tables I and II on this machine's CPU: trains LeNet/MNIST (T=1200) and VGGmini/CIFAR-10 traces on
# several CPU platforms and recomputes each on every platform of its matrix. Resumable: a finished
# trace or result is skipped, an unfinished one continues.
#
#   FORGING_TF_DATA=../shared/data bash experiments/cpu_tables.sh [RUNS_DIR] [RESULTS_DIR] [PART]
#
# PART: tables (Tables I and II), paper (the paper's Figure 3 and Table III designs, and VGGmini at
# T=2500) or all (default).
#
# Platforms (all CPU, XLA off): threads t2 (TensorFlow's default here: 2 intra-op threads) or t1,
# i1 (1 inter-op thread), oneDNN on (dnn) or off (nodnn), op determinism on (det) or off (nodet).
# Settings used for the committed tables (benchmarks/results/cpu_study): R_SAME=3 R_CROSS=2
# R_CROSS_C=2 R_VGG=2 VGG_T=20 (LeNet b=100 same-platform Table I cell: R=5).
set -euo pipefail
RUNS=${1:-runs/cpu_tables}
RESULTS=${2:-results}
PART=${3:-all}
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

train() {  # model dataset b T platform [flags] -> trace path (prints it)
  local out="$RUNS/traces/$1_$2_b$3_T$4_$5"
  if ! python3 -c "import sys; from forging_tf import trace; sys.exit(0 if trace.is_trace('$out') and trace.Trace('$out').complete else 1)" 2>/dev/null; then
    forging-train --model="$1" --dataset="$2" --batch_size="$3" --steps="$4" --out="$out" $(flags_of "$5") ${6:-} >&2
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

if [[ $PART == all || $PART == tables ]]; then
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
fi

[[ $PART == all || $PART == paper ]] || exit 0
# The paper's experiment designs (Figure 3, Table III over the first and last 10 % of training), in
# both --batch modes: the trace's own batches, and 3 fixed random true batches forged at every
# attacked step (the paper's Figure 3). Attacks run on the platform that trained the trace.
PAPER_RUNS=${PAPER_RUNS:-3}
attack() {  # trace name attack steps fractions batch [flags]
  local out="$RESULTS/paper_design/$2_$3_$6"
  [[ -f "$out/summary.json" ]] || forging-attack --trace="$1" --attack="$3" --steps="$4" \
    --forging_fraction="$5" --runs="$PAPER_RUNS" --batch="$6" --out="$out" \
    --neighbours_dir="$RESULTS/paper_design/neighbours" $(flags_of cpu-t2-dnn-det) ${7:-} >&2
}
# VGGmini b=100 at the paper's length, T=2500, as a sparse trace of 41 pairs (i, i+1) 62-63 steps
# apart (0, 62, 125, 187 | ... 1250 ... | 2312, 2374, 2437, 2499): 2 s a step on an AVX2-only
# CPU, 0.37 s with AVX-512 (1145 s for the 2500 steps, other work sharing the 2 cores at times).
# Its pairs are recomputed on both oneDNN settings.
VGG_LONG_T=${VGG_LONG_T:-2500}
t=$(train vggmini cifar10 100 "$VGG_LONG_T" cpu-t2-dnn-det "--keep_pairs=${VGG_PAIRS:-41}")
recompute "$t" vgg_long "$R_SAME" cpu-t2-dnn-det
recompute "$t" vgg_long "$R_CROSS" cpu-t2-nodnn-det
# Thudi (M=300, n=3000) at 1/b on the 9 steps of the first and last 10 % and the middle
# (vectorised engine: 12 s an attack with AVX-512), and at 1 early, at the middle and late (one
# SGD step per candidate, 126 s an attack: with 5.7 M parameters, per-example gradients of m > 1
# replacements cost more); with the trace's batches also at 0.1 and 0.5 at the middle step
# (Figures 2 and 6 read that mode). Zhang at every fraction and step.
VGG_STEPS=${VGG_STEPS:-0,62,125,187,1250,2312,2374,2437,2499}
SEQUENTIAL="--M=300 --n=3000 --engine=sequential"
name=vggmini_b100_T$VGG_LONG_T
for batch in trace random; do
  attack "$t" ${name}_1overb thudi "$VGG_STEPS" 1/b $batch "--M=300 --n=3000"
  if [[ $batch == trace ]]; then
    attack "$t" ${name}_middle thudi middle 0.1,0.5,1 $batch "$SEQUENTIAL"
    attack "$t" ${name}_whole thudi 125,2374 1 $batch "$SEQUENTIAL"
  else
    attack "$t" ${name}_whole thudi 125,1250,2374 1 $batch "$SEQUENTIAL"
  fi
  attack "$t" $name zhang "$VGG_STEPS" 1/b,0.1,0.5,1 $batch
done
# LeNet b=1000, T=1200 (the Table I trace): 20 steps 63 apart, fractions 1/b and 1.
LENET_STEPS=0,63,126,189,252,316,379,442,505,568,631,694,757,820,883,947,1010,1073,1136,1199
t=$(train lenet mnist 1000 "$LENET_T" cpu-t2-dnn-det)
for batch in trace random; do
  attack "$t" lenet_b1000_T$LENET_T thudi "$LENET_STEPS" 1/b,1 $batch "--M=300 --n=3000"
  attack "$t" lenet_b1000_T$LENET_T zhang "$LENET_STEPS" 1/b,1 $batch
done
