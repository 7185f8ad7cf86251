#!/usr/bin/env bash
# GRPO on math-vision problems. Variables (defaults in brackets):
#   MODEL [Qwen/Qwen2.5-VL-3B-Instruct]  DATA [data/math_train]  OUTPUT [runs/math]
#   NUM_GPUS [1; 0 = CPU]  CONFIG [scripts/configs/math.yaml]
# Extra arguments are passed on as --key value overrides, e.g. `scripts/run_rec.sh --max_steps 100`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_launch.sh
MODEL=${MODEL:-Qwen/Qwen2.5-VL-3B-Instruct}
DATA=${DATA:-data/math_train}
OUTPUT=${OUTPUT:-runs/math}
NUM_GPUS=${NUM_GPUS:-1}
CONFIG=${CONFIG:-scripts/configs/math.yaml}
launch train --config "$CONFIG" --model_name_or_path "$MODEL" --train_data $DATA --output_dir "$OUTPUT" "$@"
