"""The distributed engine a run really got (DDP, FSDP2, DeepSpeed ZeRO), checked against the one launched.

``accelerate launch --config_file`` tells the training processes which engine to use through the
environment (``ACCELERATE_USE_FSDP``, ``ACCELERATE_USE_DEEPSPEED``, the ``WORLD_SIZE`` of the
launch); the Trainer's ``Accelerator`` then decides. accelerate 1.15 can decide otherwise without a
word (``accelerate/state.py``):

- FSDP is taken only when the processes run on GPUs (or NPUs, XPUs, ...). With ``use_cpu`` the
  processes are ``MULTI_CPU`` and the FSDP plugin is dropped: every rank holds and trains the whole
  model, plain DDP over gloo.
- On a machine without GPUs and without ``use_cpu``, a launch of N processes gives N separate
  one-process runs (no process group in the Trainer), all writing the same ``output_dir`` (DeepSpeed
  too: it sets up its own gloo group, but accelerate counts one process per run).

DeepSpeed launched with ``use_cpu`` does run sharded on the CPU (DeepSpeed's CPU accelerator, gloo);
the DeepSpeed check stays for a launch that asked for it and did not get it.

:func:`check_engine` stops the run before training in each case, naming the reason and what to
change (fail closed: a run that asked for sharding never trains unsharded unnoticed).
:func:`gathered_state_dict` is the final save's half of the job: under sharding no rank holds the
whole model, so its full weights are gathered (a collective: every rank calls it).
"""

from __future__ import annotations

import os


def _flag(environ, name: str) -> bool:
    return str(environ.get(name, "false")).lower() == "true"


def engine_name(accelerator) -> str:
    """``single``, ``ddp``, ``fsdp1``, ``fsdp2``, ``deepspeed-zero<stage>`` (or accelerate's type, lower case)."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        return f"fsdp{getattr(accelerator.state.fsdp_plugin, 'fsdp_version', 1)}"
    if kind == DistributedType.DEEPSPEED:
        stage = getattr(accelerator.state.deepspeed_plugin, "zero_stage", "?")
        return f"deepspeed-zero{stage}"
    if kind == DistributedType.NO:
        return "single"
    if kind in (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        return "ddp"
    return str(kind).split(".")[-1].lower()


def engine_record(accelerator) -> dict:
    """What ``training_log.json``'s ``run`` record says about the engine."""
    return {"name": engine_name(accelerator), "processes": accelerator.num_processes,
            "device": accelerator.device.type}


def engine_mismatch(accelerator, environ=None) -> str | None:
    """Why the engine accelerate chose is not the one the launch asked for, or ``None``."""
    from accelerate.utils import DistributedType

    environ = os.environ if environ is None else environ
    got = engine_name(accelerator)
    on_cpu = accelerator.device.type == "cpu"
    if _flag(environ, "ACCELERATE_USE_FSDP") and accelerator.distributed_type != DistributedType.FSDP:
        why = (" (accelerate 1.15 shards with FSDP only on GPUs and other accelerators; on the CPU it drops the "
               "FSDP plugin)") if on_cpu else ""
        return (f"the accelerate config asks for FSDP, but accelerate runs {got}{why}; every rank would hold the "
                "whole model. Launch on GPUs, or use scripts/configs/accelerate/ddp.yaml for a CPU run")
    if _flag(environ, "ACCELERATE_USE_DEEPSPEED") and accelerator.distributed_type != DistributedType.DEEPSPEED:
        return (f"the accelerate config asks for DeepSpeed, but accelerate runs {got}. Install the `deepspeed` "
                "extra and launch with use_cpu (CPU) or on GPUs, or use scripts/configs/accelerate/ddp.yaml")
    launched = int(environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and accelerator.num_processes != launched:
        return (f"{launched} processes were launched but each trains alone ({accelerator.num_processes} in the "
                "trainer's process group), all into the same output_dir. On a machine without GPUs pass "
                "--use_cpu true (the processes then train together over gloo)")
    return None


def check_engine(accelerator, model=None, environ=None) -> None:
    """Stop before training when the engine is not the one launched (see :func:`engine_mismatch`), or when
    ``model`` carries LoRA adapters under ZeRO-3, whose partitioned weights the final save cannot merge."""
    reason = engine_mismatch(accelerator, environ)
    if reason is None and model is not None and hasattr(model, "peft_config") and engine_name(accelerator) == "deepspeed-zero3":
        reason = ("LoRA under DeepSpeed ZeRO-3: the final save merges the adapters into weights that ZeRO-3 keeps "
                  "partitioned, which this project does not do; use scripts/configs/accelerate/zero2.yaml or fsdp2.yaml")
    if reason is not None:
        raise ValueError(reason)


def gathered_state_dict(trainer, model) -> dict | None:
    """The whole model's weights on the main process when they are sharded across ranks, else ``None``.

    Every rank must call it (the gathers are collectives). ``model`` is what is saved (the unwrapped,
    LoRA-merged model). FSDP2 keeps parameters as ``DTensor`` shards: each is gathered in turn
    (``full_tensor``), so a rank holds one whole tensor at a time besides the main process's copy on
    the CPU. DeepSpeed goes through accelerate (``get_state_dict``; ZeRO-3 needs
    ``zero3_save_16bit_model: true``, as ``zero3.yaml`` sets).
    """
    if trainer.is_deepspeed_enabled:
        if getattr(trainer.accelerator.state.deepspeed_plugin, "zero_stage", 0) != 3:
            return None  # ZeRO-1/2 shard the optimizer and gradients; every rank holds the whole model
        return trainer.accelerator.get_state_dict(trainer.model_wrapped)
    from torch.distributed.tensor import DTensor

    state = model.state_dict()
    if not any(isinstance(value, DTensor) for value in state.values()):
        return None
    main = trainer.accelerator.is_main_process
    whole, gathered = {}, {}
    for name, value in state.items():
        if isinstance(value, DTensor):
            # Tied weights (lm_head and the embedding) are one shard: gather it once, so the copies stay one
            # tensor and save_pretrained drops the alias as it does for an unsharded model.
            local = value.to_local()
            key = (local.untyped_storage().data_ptr(), local.storage_offset(), tuple(value.shape))
            if key not in gathered:
                full = value.full_tensor()
                gathered[key] = full.detach().cpu() if main else None
            value = gathered[key]
        elif main:
            value = value.detach().cpu()
        if main:
            whole[name] = value
    return whole if main else {}
