#!/usr/bin/env bash
# Evaluate on REC benchmarks (RefCOCO val / RefCOCO+ val / RefCOCOg val / LISA test ...), one table across them.
# Variables (defaults in brackets):
#   MODEL [runs/rec]  DATA ["data/refcoco_val data/refcocop_val data/refcocog_val"]  OUTPUT [$MODEL/eval_rec]
#   NUM_PROCS [1; N > 1 runs N processes with torchrun]  BATCH_SIZE [16]
# Extra arguments go to `vlm-grpo eval`, e.g. `--max-samples 500`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_launch.sh
MODEL=${MODEL:-runs/rec}
DATA=${DATA:-"data/refcoco_val data/refcocop_val data/refcocog_val"}
OUTPUT=${OUTPUT:-$MODEL/eval_rec}
NUM_PROCS=${NUM_PROCS:-1}
BATCH_SIZE=${BATCH_SIZE:-16}
launch_eval --model "$MODEL" --data $DATA --output "$OUTPUT" --task rec --batch-size "$BATCH_SIZE" "$@"
