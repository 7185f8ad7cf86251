#!/usr/bin/env bash
# Cold-start SFT (format and boxes) before GRPO. Variables (defaults in brackets):
#   MODEL [Qwen/Qwen2.5-VL-3B-Instruct]  DATA [data/rec_train]  OUTPUT [runs/sft_rec]
#   NUM_GPUS [1; 0 = CPU]  CONFIG [scripts/configs/sft_rec.yaml]
# Extra arguments are passed on as --key value overrides, e.g. `scripts/run_rec.sh --max_steps 100`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_launch.sh
MODEL=${MODEL:-Qwen/Qwen2.5-VL-3B-Instruct}
DATA=${DATA:-data/rec_train}
OUTPUT=${OUTPUT:-runs/sft_rec}
NUM_GPUS=${NUM_GPUS:-1}
CONFIG=${CONFIG:-scripts/configs/sft_rec.yaml}
launch sft --config "$CONFIG" --model_name_or_path "$MODEL" --train_data $DATA --output_dir "$OUTPUT" "$@"
