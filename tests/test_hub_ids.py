"""Hub ids resolve from a Hugging Face cache the test builds, through the commands and scripts as README gives them.

`Qwen/Qwen2.5-VL-3B-Instruct` is the default of `rec.yaml`, `run_rec.sh` and README's first GPU command; here the
cache holds the tiny checkpoint under that id (offline), so the real loading path is what runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hub_cache import add_to_hub_cache, offline_env
from vlm_grpo.modeling import CheckpointError, _looks_like_path, load_config

ROOT = Path(__file__).resolve().parents[1]
HUB_ID = "Qwen/Qwen2.5-VL-3B-Instruct"


@pytest.fixture(scope="module")
def hub_cache(tiny_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf") / "hub"
    add_to_hub_cache(cache, HUB_ID, tiny_dir)
    return cache


@pytest.mark.parametrize("name, is_path", [
    ("Qwen/Qwen2.5-VL-3B-Instruct", False), ("Qwen/Qwen2-VL-2B-Instruct", False), ("org/model.v2", False),
    ("runs/tiny", False), ("./runs/tiny", True), ("/abs/model", True), ("~/model", True), ("a/b/c", True),
    ("bad name", True), ("C:\\models\\x", True),
])
def test_only_what_cannot_be_a_hub_id_is_read_as_a_path(name, is_path):
    assert _looks_like_path(name) is is_path


def _run(argv, cache, **env):
    return subprocess.run(argv, cwd=ROOT, env={**offline_env(cache), **env}, capture_output=True, text=True,
                          timeout=300)


def test_eval_resolves_the_readme_model_id_from_the_cache(hub_cache, rec_data, tmp_path):
    run = _run([sys.executable, "-m", "vlm_grpo.cli", "eval", "--model", HUB_ID, "--data", str(rec_data),
                "--output", str(tmp_path / "eval"), "--max-samples", "4", "--max-new-tokens", "4"], hub_cache)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "eval" / "metrics.json").exists()


def test_run_rec_sh_trains_its_default_model_from_the_cache(hub_cache, rec_data, tmp_path):
    """README: `MODEL=Qwen/Qwen2.5-VL-3B-Instruct DATA=... scripts/run_rec.sh` (MODEL left at its default)."""
    out = tmp_path / "rec"
    run = _run(["bash", "scripts/run_rec.sh", "--max_steps", "1", "--max_completion_length", "8",
                "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1", "--report_to", "none",
                "--save_strategy", "no"],
               hub_cache, NUM_GPUS="0", DATA=str(rec_data), OUTPUT=str(out), PYTHON=sys.executable)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"--model_name_or_path {HUB_ID}" in run.stderr and (out / "model.safetensors").exists()


def test_a_hub_id_missing_from_the_cache_says_both_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"no folder .*Qwen2\.5-VL-7B-Instruct.*not in the Hugging Face cache"):
        load_config("Qwen/Qwen2.5-VL-7B-Instruct")
