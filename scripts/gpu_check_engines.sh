#!/usr/bin/env bash
# The distributed engines end to end: DDP, FSDP2, DeepSpeed ZeRO-2 and ZeRO-3, each through its accelerate config
# of scripts/configs/accelerate/, on the tiny model and synthetic REC data, 2 steps with both speed features on.
# Per engine: the run record names the engine, every checkpoint has its completion marker, the final model loads
# in plain transformers, and its weights equal the DDP run's (exactly-same-samples runs; see the tolerance below).
# FSDP2 is also resumed from checkpoint-1, and its final model evaluated with `vlm-grpo eval`.
#
#   scripts/gpu_check_engines.sh                   # on a GPU machine: NUM_GPUS GPUs (default 2), the configs' bf16
#   scripts/gpu_check_engines.sh --device cpu      # the reduced CPU mode the test suite runs (2 processes, gloo, fp32)
#   scripts/gpu_check_engines.sh --dry-run [...]   # print the commands only
#
# CPU mode: FSDP2 goes through tests/fsdp_on_cpu.py (accelerate 1.15 shards with FSDP only on GPUs; that launcher
# lifts that one check) and ZeRO-2/3 are skipped, saying so, when the optional `deepspeed` extra is not installed.
# Tolerance on the weights vs DDP: 1e-7 in fp32 (a few float32 ulps of |w| <= 0.1: reduction order and rounding
# only); on GPUs in bf16 the largest difference is printed, not judged. ZeRO-3 with the speed features on is
# compared with a DDP run without them (the features step aside under ZeRO-3: the probe's twin model is built
# partitioned), and its difference is printed only (on the CPU ZeRO-3 was not reproducible run to run; README).
# Variables: NUM_GPUS [2], OUT [a new temporary folder], PYTHON [.venv/bin/python].
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    *) echo "usage: $0 [--device cuda|cpu] [--dry-run]" >&2; exit 2 ;;
  esac
done
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
# a fresh folder in the system's temp dir (a dry run only names one, and creates nothing)
if [ "$DRY" = 1 ]; then OUT=${OUT:-$(mktemp -u -d -t vlm-grpo-engines.XXXXXX)}; else OUT=${OUT:-$(mktemp -d -t vlm-grpo-engines.XXXXXX)}; fi
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ "$DEVICE" = cpu ]; then
  NUM=2; PRECISION=(--mixed_precision no); DEVICE_ARGS=(--use_cpu true); ATOL=1e-7
else
  NUM=${NUM_GPUS:-2}; PRECISION=(); DEVICE_ARGS=(--use_cpu false --bf16 true); ATOL=
fi
PORT=$(( 29700 + RANDOM % 200 ))

step() { echo "+ $*" >&2; [ "$DRY" = 1 ] || "$@"; }

has_deepspeed() { [ "$DRY" = 1 ] || "$PYTHON" -c "import deepspeed" >/dev/null 2>&1; }

train() {  # train ENGINE OUTPUT [extra keys...]
  local engine=$1 out=$2; shift 2
  local script=(-m vlm_grpo.cli)
  if [ "$DEVICE" = cpu ] && [ "$engine" = fsdp2 ]; then script=(tests/fsdp_on_cpu.py); fi
  PORT=$((PORT + 1))
  step "$PYTHON" -m accelerate.commands.launch --config_file "scripts/configs/accelerate/$engine.yaml" \
    --num_processes "$NUM" "${PRECISION[@]}" --main_process_port "$PORT" "${script[@]}" train \
    --config scripts/configs/tiny_cpu.yaml --model_name_or_path "$OUT/tiny" --train_data "$OUT/rec" \
    --output_dir "$out" --max_steps 2 --save_steps 1 --max_completion_length 8 --per_device_train_batch_size 4 \
    --num_generations 4 --report_to none --reward_funcs tests/speed_helpers.py:variety --optim sgd \
    --learning_rate 0.01 --seed 0 "${DEVICE_ARGS[@]}" "$@"
}

check() {  # check ENGINE OUTPUT REFERENCE [ATOL]: run record, markers, plain-transformers load, weights vs REFERENCE
  step "$PYTHON" - "$@" <<'EOF'
import json, sys
from pathlib import Path
from transformers import AutoModelForImageTextToText as Model
engine, out, reference = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
atol = float(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else None
run = json.loads((out / "training_log.json").read_text())[0]["run"]
assert run["engine"]["name"] == {"ddp": "ddp", "fsdp2": "fsdp2", "zero2": "deepspeed-zero2",
                                 "zero3": "deepspeed-zero3"}[engine], run["engine"]
markers = [json.loads((out / f"checkpoint-{s}" / "checkpoint_complete.json").read_text()) for s in (1, 2)]
assert len({m["run_id"] for m in markers}) == 1, markers
model, info = Model.from_pretrained(str(out), output_loading_info=True)
assert not any(info.values()), info
mine, theirs = dict(model.named_parameters()), dict(Model.from_pretrained(str(reference)).named_parameters())
worst = max(float((mine[n].float() - theirs[n].float()).abs().max()) for n in theirs)
features = {k: v["active"] for k, v in run["speed_features"].items()}
print(f"{engine}: engine {run['engine']}, speed features {features}, largest weight difference vs "
      f"{reference.name} {worst:.2e}" + (f" (tolerance {atol:g})" if atol else ""))
assert atol is None or worst <= atol, f"{engine} differs from {reference.name} by {worst:.2e} > {atol:g}"
EOF
}

step "$PYTHON" -m vlm_grpo.cli tiny --output "$OUT/tiny" --overwrite
step "$PYTHON" -m vlm_grpo.cli prep --format synthetic --task rec --num 24 --output "$OUT/rec" --quiet
train ddp "$OUT/ddp"
check ddp "$OUT/ddp" "$OUT/ddp" "$ATOL"
train fsdp2 "$OUT/fsdp2"
check fsdp2 "$OUT/fsdp2" "$OUT/ddp" "$ATOL"
step mkdir -p "$OUT/fsdp2_resumed"
step cp -r "$OUT/fsdp2/checkpoint-1" "$OUT/fsdp2_resumed/"
train fsdp2 "$OUT/fsdp2_resumed" --resume_from_checkpoint true
check fsdp2 "$OUT/fsdp2_resumed" "$OUT/fsdp2" "$ATOL"
step "$PYTHON" -m vlm_grpo.cli eval --model "$OUT/fsdp2" --data "$OUT/rec" --output "$OUT/fsdp2_eval" --max-samples 4
if has_deepspeed; then
  train zero2 "$OUT/zero2"
  check zero2 "$OUT/zero2" "$OUT/ddp" "$ATOL"
  train ddp "$OUT/ddp_plain" --group_image_cache off --group_shared_prompt off
  train zero3 "$OUT/zero3"
  check zero3 "$OUT/zero3" "$OUT/ddp_plain" ""
else
  echo "skipped ZeRO-2 and ZeRO-3: deepspeed is not installed (the optional extra: DS_BUILD_OPS=0 pip install" \
       "deepspeed==0.18.6)" >&2
fi
echo "engines checked in $OUT" >&2
