#!/usr/bin/env bash
# GRPO on REC with LoRA (vision frozen). Variables (defaults in brackets):
#   MODEL [Qwen/Qwen2.5-VL-3B-Instruct]  DATA [data/rec_train]  OUTPUT [runs/rec_lora]
#   NUM_GPUS [1; 0 = CPU]  CONFIG [scripts/configs/rec_lora.yaml]
# Extra arguments are passed on as --key value overrides, e.g. `scripts/run_rec.sh --max_steps 100`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_launch.sh
MODEL=${MODEL:-Qwen/Qwen2.5-VL-3B-Instruct}
DATA=${DATA:-data/rec_train}
OUTPUT=${OUTPUT:-runs/rec_lora}
NUM_GPUS=${NUM_GPUS:-1}
CONFIG=${CONFIG:-scripts/configs/rec_lora.yaml}
launch train --config "$CONFIG" --model_name_or_path "$MODEL" --train_data $DATA --output_dir "$OUTPUT" "$@"
