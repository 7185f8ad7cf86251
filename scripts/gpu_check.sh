#!/usr/bin/env bash
# One GPU's check (scripts/gpu_check.py): plain TRL against every speed feature on, at the published Qwen2.5-VL-3B
# and Qwen3-VL-4B shapes (random weights, bf16, sdpa, G=8, a ~1000-token image): step time, tokens/s, the training
# pass's MFU, peak GPU memory; one JSON and a table in --out (default build/gpu_check). Under 8 minutes on one H200.
#
#   scripts/gpu_check.sh --download-wheels DIR   # on a machine with PyPI: the lock's wheels for the GPU machine
#   scripts/gpu_check.sh --wheels DIR [...]      # on the GPU machine (no network): install them, then check
#   scripts/gpu_check.sh --device cpu --tiny     # the CPU suite's run of the same code, on the tiny models
#
# --wheels installs every wheel in DIR (no index, no dependencies resolved: DIR holds the lock's versions of what the
# GPU machine's Python lacks or has at another version, as --download-wheels fetches them) into a folder of its own
# (SITE, default a new temporary folder) that goes first on PYTHONPATH; the preinstalled torch stays. The check warns
# when an installed version still differs from requirements.lock. Other options go to scripts/gpu_check.py
# (--models, --pairs, --warmup, --peak-tflops, --out; --help). Variables: PYTHON [.venv/bin/python, else python3],
# SITE, and for --download-wheels PYTHON_VERSION [3.12] (the GPU machine's Python).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
# the lock's distributions the GPU machine's image lacks or holds at another version (it has torch, numpy, pyarrow,
# pandas, pillow, jinja2, pyyaml, tqdm, requests, xxhash, ... already)
GPU_WHEELS="transformers trl accelerate peft datasets huggingface-hub tokenizers safetensors hf-xet httpx2 httpcore2
truststore click dill multiprocess fsspec typer shellingham annotated-doc pydantic pydantic-core annotated-types
typing-inspection typing-extensions"
WHEELS=
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS=$2; shift 2 ;;
    --download-wheels)
      DEST=$2; mkdir -p "$DEST"
      PINS=()
      for name in $GPU_WHEELS; do
        pin=$(grep -i "^${name}==" requirements.lock || true)
        [ -n "$pin" ] || { echo "error: $name is not in requirements.lock" >&2; exit 2; }
        PINS+=("$pin")
      done
      "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$DEST" "${PINS[@]}" 2> >(grep -v "is ignored: it is neither" >&2)
      echo "$(ls "$DEST"/*.whl | wc -l) wheels, $(du -sh "$DEST" | cut -f1), in $DEST"
      exit 0 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
if [ -n "$WHEELS" ]; then
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "error: --wheels $WHEELS holds no .whl files" >&2; exit 2; }
  SITE=${SITE:-$(mktemp -d -t vlm-grpo-site.XXXXXX)}
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec "$PYTHON" scripts/gpu_check.py "${ARGS[@]}"
