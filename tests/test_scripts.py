"""The shell entry points and config files users run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "scripts" / "configs").glob("*.yaml"))
ACCELERATE = sorted((ROOT / "scripts" / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_training_config_parses(path):
    from trl import GRPOConfig, SFTConfig

    from vlm_grpo.config import GRPO_DEFAULTS, SFT_DEFAULTS, parse

    config_cls, defaults = (SFTConfig, SFT_DEFAULTS) if path.name.startswith("sft") else (GRPOConfig, GRPO_DEFAULTS)
    args, model_args, data_args, vision_args, reward_args = parse(
        config_cls, defaults, ["--config", str(path), "--output_dir", "/tmp/unused"]
    )
    assert args.output_dir == "/tmp/unused"
    assert reward_args.reward_funcs


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_every_accelerate_config_is_valid_yaml(path):
    config = yaml.safe_load(path.read_text())
    assert config["distributed_type"] in {"NO", "MULTI_GPU", "DEEPSPEED", "FSDP"}
    assert config["num_processes"] >= 1


def test_run_rec_sh_trains_the_tiny_model_on_cpu(tiny_dir, rec_data, tmp_path):
    out = tmp_path / "rec_run"
    env = {**os.environ, "NUM_GPUS": "0", "MODEL": str(tiny_dir), "DATA": str(rec_data), "OUTPUT": str(out),
           "PYTHON": sys.executable, "CONFIG": "scripts/configs/tiny_cpu.yaml"}
    run = subprocess.run(
        ["bash", "scripts/run_rec.sh", "--max_steps", "1", "--max_completion_length", "8", "--report_to", "none"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "+ " in run.stderr and "vlm_grpo.cli train" in run.stderr  # prints what it runs
    assert "GRPO done: 1 steps" in run.stdout
    assert (out / "model.safetensors").exists()


def test_eval_rec_sh_evaluates_the_tiny_model(tiny_dir, rec_data, tmp_path):
    out = tmp_path / "eval"
    env = {**os.environ, "MODEL": str(tiny_dir), "DATA": str(rec_data), "OUTPUT": str(out), "PYTHON": sys.executable}
    run = subprocess.run(["bash", "scripts/eval_rec.sh", "--max-new-tokens", "4", "--max-samples", "8"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "vlm_grpo.cli eval" in run.stderr
    assert (out / "metrics.json").exists() and (out / "report.html").exists()
