"""Shared pieces of the speed-feature tests: one real GRPO step on the tiny model, and two DDP ranks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def variety(completions, **columns):
    """Distinct characters per character: a reward with variance inside every group."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [len(set(t)) / (1.0 + len(t)) for t in texts]


def one_grpo_step(tiny_dir, rec_data, output_dir, switch_on=None, dtype=None, **config):
    """One TRL GRPO step on the tiny model (``dtype``: its weights', default fp32; ``max_steps`` in
    ``config`` for more steps); ``switch_on(trainer)`` turns features on before training.

    Returns ``(loss, parameters after the step, trainer)``.
    """
    from trl import GRPOConfig, GRPOTrainer

    from vlm_grpo.data import build_rows
    from vlm_grpo.modeling import load_model, load_processor

    model, processor = load_model(str(tiny_dir), device="cpu", dtype=dtype), load_processor(str(tiny_dir))
    rows = build_rows([str(rec_data)], processor, box_frame="model_pixels", seed=0)
    settings = {
        "per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 8, "max_steps": 1,
        "learning_rate": 1e-3, "beta": 0.04, "use_cpu": True, "bf16": False, "report_to": "none",
        "save_strategy": "no", "dataloader_num_workers": 0, "seed": 0, "disable_tqdm": True, "logging_steps": 1,
        **config,
    }
    trainer = GRPOTrainer(model=model, reward_funcs=[variety], args=GRPOConfig(output_dir=str(output_dir), **settings),
                          train_dataset=rows.to_hf(), processing_class=processor)
    if switch_on is not None:
        switch_on(trainer)
    trainer.train()
    loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    return loss, {n: p.detach().clone() for n, p in trainer.model.named_parameters()}, trainer


def run_two_ranks(tmp_path: Path, worker_source: str, *argv: str) -> str:
    """Write ``worker_source`` to a file, run it on 2 CPU ranks (gloo, free port) with ``argv``; both must say ok."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = tmp_path / "ddp_worker.py"
    script.write_text(worker_source)
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         str(script), *argv],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "rank 0 ok" in run.stdout and "rank 1 ok" in run.stdout, run.stdout
    return run.stdout
