# Shared by the run_*.sh scripts: launch a vlm-grpo training command on NUM_GPUS devices.
# NUM_GPUS=0 runs on the CPU, 1 runs one process, N>1 uses accelerate (DDP unless ACCELERATE_CONFIG says otherwise).
launch() {
  local command=$1; shift
  local python=${PYTHON:-python}
  local cmd
  if [ "${NUM_GPUS}" -eq 0 ]; then
    cmd=("$python" -m vlm_grpo.cli "$command" "$@" --use_cpu true)
  elif [ "${NUM_GPUS}" -eq 1 ]; then
    cmd=("$python" -m vlm_grpo.cli "$command" "$@")
  else
    cmd=(accelerate launch --config_file "${ACCELERATE_CONFIG:-scripts/configs/accelerate/ddp.yaml}"
         --num_processes "${NUM_GPUS}" -m vlm_grpo.cli "$command" "$@")
  fi
  echo "+ ${cmd[*]}" >&2
  "${cmd[@]}"
}
