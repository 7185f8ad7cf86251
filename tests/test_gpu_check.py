"""The benchmark scripts as a user runs them: ``scripts/gpu_check.sh --device cpu --tiny`` (the GPU check's code on
the tiny models) and ``scripts/bench_step.py --feature all`` (every speed feature on against plain TRL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*argv, timeout=600):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    return subprocess.run(list(argv), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_gpu_check_runs_on_the_cpu_with_the_tiny_models(tmp_path):
    run = _run("bash", "scripts/gpu_check.sh", "--device", "cpu", "--tiny", "--pairs", "1", "--warmup", "0",
               "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report == json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["device"] == "cpu" and report["lock_differs"] == {}
    assert [r["model"] for r in report["results"]] == ["qwen2_5_vl_3b", "qwen3_vl_4b"]
    for result in report["results"]:
        assert result["features_probed_exact"] == {"group_image_cache": True, "group_shared_prompt": True,
                                                   "decode_cache": True}
        assert result["rows_per_step"] == 16 and result["image_tokens"] == 16
        assert 0 < result["lm_tokens_computed"] < result["lm_tokens_requested"]  # the prompts were shared
        for mode in ("plain", "features_on"):
            figures = result[mode]
            assert figures["step_s"] > figures["generation_s"] > 0
            assert figures["training_pass_tflops"] > 0 and figures["training_pass_mfu"] is None  # no peak on a CPU
            assert figures["peak_memory_gib"] > 0
    table = (tmp_path / "gpu_check.txt").read_text()
    assert "qwen3_vl_4b" in table and "features_on" in table and "speedup" in table
    assert table in run.stdout


def test_gpu_check_without_a_gpu_says_what_to_run_instead(tmp_path):
    run = _run("bash", "scripts/gpu_check.sh", "--out", str(tmp_path))
    if run.returncode == 0:
        pytest.skip("this machine has a GPU")
    assert run.returncode == 2
    assert "torch sees no GPU" in run.stderr and "--device cpu --tiny" in run.stderr


def test_gpu_check_refuses_a_wheel_folder_without_wheels(tmp_path):
    run = _run("bash", "scripts/gpu_check.sh", "--wheels", str(tmp_path), "--device", "cpu", "--tiny")
    assert run.returncode == 2 and f"--wheels {tmp_path} holds no .whl files" in run.stderr


def test_the_published_3b_sizes_are_the_shared_shape():
    from vlm_grpo.families import get_family

    shape = ROOT.parent / "shared" / "qwen2_5_vl_3b_shape.json"
    if not shape.exists():
        pytest.skip("../shared/qwen2_5_vl_3b_shape.json is not beside this checkout")
    published = json.loads(shape.read_text())
    ours = get_family("qwen2_5_vl").published["Qwen/Qwen2.5-VL-3B-Instruct"]
    for part in ("text_config", "vision_config"):
        for key, value in ours[part].items():
            if key == "rope_parameters":
                assert value["mrope_section"] == published[part]["mrope_section"]
                assert value["rope_theta"] == published[part]["rope_theta"]
            else:
                assert value == published[part][key], (part, key)


def test_bench_step_all_against_plain_trl_prints_the_table_and_json():
    run = _run(sys.executable, "scripts/bench_step.py", "--feature", "all", "--shapes", "tiny", "--pairs", "1",
               "--warmup", "0", "--settings", "trainable", "--completion-tokens", "8")
    assert run.returncode == 0, run.stderr[-4000:]
    lines = run.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["features"] == ["all"] and figures["baselines"] == {"all": "plain"}
    rows = {r["completions"]: r for r in figures["results"]}
    assert set(rows) == {"forced", "sampled"}
    for row in rows.values():
        assert row["prompts_per_step"] == 2 and row["steps_each"] == 1
        for key in ("speedup", "speedup_outside_generation", "speedup_generation", "off_generation_median_s",
                    "on_generation_median_s", "off_peak_mib", "on_peak_mib"):
            assert row[key] > 0, key
        assert row["lm_tokens_computed"] < row["lm_tokens_requested"]
    assert rows["forced"]["on_mean_completion_tokens"] == 8.0
    assert rows["sampled"]["on_mean_completion_tokens"] <= 8.0
    assert any(line.startswith("all ") and "sampled" in line for line in lines[:-1])  # the table's rows
