# Shared by the scripts: `launch` runs a vlm-grpo training command on NUM_GPUS devices.
# NUM_GPUS=0 runs on the CPU, 1 runs one process, N>1 uses accelerate (DDP unless ACCELERATE_CONFIG says otherwise).
# PYTHON picks the interpreter; by default the project's .venv (what `make demo` / `make test` create), so the
# scripts work whether or not the venv is activated, then python3 on PATH.
default_python() {
  if [ -x .venv/bin/python ]; then echo .venv/bin/python; else echo python3; fi
}

launch() {
  local command=$1; shift
  local python=${PYTHON:-$(default_python)}
  local cmd
  if [ "${NUM_GPUS}" -eq 0 ]; then
    cmd=("$python" -m vlm_grpo.cli "$command" "$@" --use_cpu true)
  elif [ "${NUM_GPUS}" -eq 1 ]; then
    cmd=("$python" -m vlm_grpo.cli "$command" "$@")
  else
    cmd=("$python" -m accelerate.commands.launch --config_file "${ACCELERATE_CONFIG:-scripts/configs/accelerate/ddp.yaml}"
         --num_processes "${NUM_GPUS}" -m vlm_grpo.cli "$command" "$@")
  fi
  echo "+ ${cmd[*]}" >&2
  "${cmd[@]}"
}

# Run `vlm-grpo eval` in NUM_PROCS processes (torchrun when more than one).
launch_eval() {
  local python=${PYTHON:-$(default_python)}
  local cmd
  if [ "${NUM_PROCS:-1}" -gt 1 ]; then
    cmd=("$python" -m torch.distributed.run --nproc_per_node "$NUM_PROCS" -m vlm_grpo.cli eval "$@")
  else
    cmd=("$python" -m vlm_grpo.cli eval "$@")
  fi
  echo "+ ${cmd[*]}" >&2
  "${cmd[@]}"
}
