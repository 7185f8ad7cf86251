#!/usr/bin/env bash
# Evaluate on math-vision benchmarks (MathVista, Geometry3K ...), one table across them.
# Variables (defaults in brackets):
#   MODEL [runs/math]  DATA ["data/mathvista_testmini data/geometry3k_test"]  OUTPUT [$MODEL/eval_math]
#   NUM_PROCS [1; N > 1 runs N processes with torchrun]  BATCH_SIZE [16]
# Extra arguments go to `vlm-grpo eval`, e.g. `--max-samples 500`. All tasks in the data are scored.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_launch.sh
MODEL=${MODEL:-runs/math}
DATA=${DATA:-"data/mathvista_testmini data/geometry3k_test"}
OUTPUT=${OUTPUT:-$MODEL/eval_math}
NUM_PROCS=${NUM_PROCS:-1}
BATCH_SIZE=${BATCH_SIZE:-16}
launch_eval --model "$MODEL" --data $DATA --output "$OUTPUT" --batch-size "$BATCH_SIZE" "$@"
