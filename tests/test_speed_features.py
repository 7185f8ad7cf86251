"""Speed features fail closed: each is probed before training and steps aside, visibly, where it is not exact.

The incompatible releases are simulated the way they happen: a backbone whose forward takes its cache under
another name, and one that accepts the cache argument but drops it (what transformers 5.24's rename shim did
to the old name).
"""

from __future__ import annotations

import functools
import json

import pytest
import torch
from transformers import Qwen2_5_VLModel

from vlm_grpo.cli import main as cli_main
from vlm_grpo.speed.features import FeatureStatus, SpeedFeatureError, decide, speed_mode
from vlm_grpo.speed.probe import check_image_cache, check_shared_prompt
from vlm_grpo.speed.shared_prompt import cache_argument

PLAIN_FORWARD = Qwen2_5_VLModel.forward
CACHE = cache_argument(PLAIN_FORWARD)


def renamed_cache(self, input_ids=None, attention_mask=None, position_ids=None, kv_state=None, **kwargs):
    """A release whose backbone takes the cache as ``kv_state`` (the old name still arrives among ``kwargs``)."""
    kv_state = kwargs.pop(CACHE, kv_state)
    return PLAIN_FORWARD(self, input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         **{CACHE: kv_state}, **kwargs)


@functools.wraps(PLAIN_FORWARD)
def dropped_cache(self, *args, **kwargs):
    """A release that keeps the argument's name but ignores a cache that has not been written yet."""
    cache = kwargs.get(CACHE)
    if cache is not None and cache.get_seq_length() == 0:
        kwargs[CACHE] = None
    return PLAIN_FORWARD(self, *args, **kwargs)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    from vlm_grpo.modeling import load_model, load_processor

    return load_model(str(tiny_dir), device="cpu"), load_processor(str(tiny_dir))


def test_both_features_are_exact_on_the_installed_transformers(tiny):
    model, processor = tiny
    assert check_shared_prompt(model) is None
    assert check_image_cache(model, processor) is None


@pytest.mark.parametrize("forward, reason", [
    (renamed_cache, "takes its cache under neither"),
    (dropped_cache, "differ|Error"),
])
def test_an_incompatible_backbone_is_found_by_the_probe(tiny, monkeypatch, forward, reason):
    import re

    monkeypatch.setattr(Qwen2_5_VLModel, "forward", forward)
    found = check_shared_prompt(tiny[0])
    assert found is not None and re.search(reason, found), found
    assert check_image_cache(*tiny) is None  # the vision tower is untouched


def test_a_probe_that_raises_is_a_reason_not_a_crash():
    def broken():
        raise RuntimeError("new release")

    status = decide("group_shared_prompt", "on", lambda: __import__("vlm_grpo.speed.probe").speed.probe._guarded(broken))
    assert status == FeatureStatus("group_shared_prompt", "on", False, status.reason)
    assert "RuntimeError: new release" in status.reason


@pytest.mark.parametrize("value, mode", [
    (True, "on"), (False, "off"), ("true", "on"), ("False", "off"), ("on", "on"), ("off", "off"),
    ("require", "require"), ("REQUIRE", "require"),
])
def test_modes_from_yaml_and_the_command_line(value, mode):
    assert speed_mode(value, "group_shared_prompt") == mode


def test_an_unknown_mode_names_the_key_and_the_choices():
    with pytest.raises(ValueError, match="group_image_cache: 'fast' is not one of on, off, require"):
        speed_mode("fast", "group_image_cache")


def _train(tiny_dir, rec_data, out, *extra):
    return cli_main(["train", "--config", "scripts/configs/tiny_cpu.yaml", "--model_name_or_path", str(tiny_dir),
                     "--train_data", str(rec_data), "--output_dir", str(out), "--max_steps", "2",
                     "--save_strategy", "no", "--report_to", "none", *extra])


def _run(log_dir) -> dict:
    return json.loads((log_dir / "training_log.json").read_text())[0]["run"]


def test_training_on_an_incompatible_release_finishes_with_one_warning(tiny_dir, rec_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Qwen2_5_VLModel, "forward", renamed_cache)
    assert _train(tiny_dir, rec_data, tmp_path / "run") == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning: group_shared_prompt steps aside")]
    assert len(warnings) == 1, err
    assert "transformers" in warnings[0] and "takes its cache under neither" in warnings[0]
    features = _run(tmp_path / "run")["speed_features"]
    assert features["group_shared_prompt"]["active"] is False and "kv_state" not in features["group_shared_prompt"]
    assert features["group_image_cache"] == {"mode": "on", "active": True, "reason": None}
    assert (tmp_path / "run" / "model.safetensors").exists()


def test_require_stops_before_training_with_the_reason(tiny_dir, rec_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Qwen2_5_VLModel, "forward", renamed_cache)
    assert _train(tiny_dir, rec_data, tmp_path / "run", "--group_shared_prompt", "require") == 2
    err = capsys.readouterr().err
    assert "error: group_shared_prompt: require, but it is not exact with transformers" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "model.safetensors").exists()


def test_a_compatible_run_records_both_features_active_and_warns_nothing(tiny_dir, rec_data, tmp_path, capsys):
    assert _train(tiny_dir, rec_data, tmp_path / "run", "--group_image_cache", "require",
                  "--group_shared_prompt", "require", "--decode_cache", "require") == 0
    assert "steps aside" not in capsys.readouterr().err
    run = _run(tmp_path / "run")
    assert run["family"] == "qwen2_5_vl" and run["box_frame"] == "model_pixels"
    assert set(run["speed_features"]) == {"group_image_cache", "group_shared_prompt", "decode_cache"}
    assert all(f["active"] for f in run["speed_features"].values())


def test_off_probes_nothing_and_says_so_in_the_log(tiny_dir, rec_data, tmp_path):
    assert _train(tiny_dir, rec_data, tmp_path / "run", "--group_image_cache", "false",
                  "--group_shared_prompt", "off", "--decode_cache", "no") == 0
    features = _run(tmp_path / "run")["speed_features"]
    assert {f["reason"] for f in features.values()} == {"off in the config"}


def test_a_dropout_run_says_once_why_prompts_are_not_shared(tiny_dir, rec_data, tmp_path, capsys):
    """The LoRA recipe's situation: active dropout makes sharing inexact, and the console says so once."""
    assert _train(tiny_dir, rec_data, tmp_path / "run", "--use_peft", "true", "--lora_r", "4",
                  "--lora_dropout", "0.1") == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "active dropout" in line]
    assert len(lines) == 1 and "warning: group-shared prompt: plain forward" in lines[0], err


def test_the_decision_is_the_same_on_a_second_call(tiny):
    """Probing leaves no state behind on the policy (a second probe, and the real model, are unaffected)."""
    model, processor = tiny
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert check_shared_prompt(model) is None and check_shared_prompt(model) is None
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert "forward" not in vars(model.model)


def test_require_error_is_a_value_error_the_cli_reports():
    assert issubclass(SpeedFeatureError, ValueError)


def test_the_lora_recipe_shares_prompts(tiny_dir, rec_data, tmp_path):
    """scripts/run_rec_lora.sh with rec_lora.yaml as shipped: LoRA, and no dropout that would stop sharing."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "NUM_GPUS": "0", "MODEL": str(tiny_dir), "DATA": str(rec_data),
           "OUTPUT": str(tmp_path / "lora"), "PYTHON": sys.executable}
    run = subprocess.run(["bash", "scripts/run_rec_lora.sh", "--max_steps", "1", "--max_completion_length", "8",
                          "--report_to", "none", "--save_strategy", "no", "--lora_r", "4"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "plain forward" not in run.stderr and "steps aside" not in run.stderr, run.stderr[-3000:]
    features = _run(tmp_path / "lora")["speed_features"]
    assert all(f["active"] for f in features.values())


def test_the_probe_runs_on_the_published_3b_shape_without_its_weights():
    """scripts/bench_probe.py: the twin needs only the config, so a Qwen2.5-VL-3B built on the meta device (no
    memory, no weights) probes as exact, and the benchmark's JSON line says so."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root.parent / "shared" / "qwen2_5_vl_3b_shape.json").exists():
        pytest.skip("../shared/qwen2_5_vl_3b_shape.json is not beside this checkout")
    run = subprocess.run([sys.executable, "scripts/bench_probe.py", "--repeats", "1"], cwd=root, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])["figures"]
    assert {k for k, v in figures.items() if v["exact"]} == {
        f"{model}/{feature}" for model in ("tiny", "qwen2_5_vl_3b (meta)")
        for feature in ("group_image_cache", "group_shared_prompt")}


def test_the_twin_is_built_plain_inside_a_zero3_run(tiny):
    """Under DeepSpeed ZeRO-3 transformers partitions every model it builds; the probe's twin must not be
    (it failed with 'Padding_idx must be within num_embeddings'), and the run's DeepSpeed config stays set."""
    from transformers.integrations import deepspeed

    from vlm_grpo.speed.probe import twin_of

    class ZeroThree:  # what HfDeepSpeedConfig answers
        config: dict = {}

        def is_zero3(self):
            return True

    held = ZeroThree()
    deepspeed.set_hf_deepspeed_config(held)
    try:
        twin = twin_of(tiny[0])
        assert deepspeed.is_deepspeed_zero3_enabled()  # restored for the run
    finally:
        deepspeed.unset_hf_deepspeed_config()
    assert all(p.numel() > 0 for p in twin.parameters())


def test_under_zero3_both_features_step_aside_saying_why(tiny, monkeypatch):
    from transformers.integrations import deepspeed

    from vlm_grpo.speed.features import decide, engine_reason

    monkeypatch.setattr(deepspeed, "is_deepspeed_zero3_enabled", lambda: True)
    status = decide("group_shared_prompt", "on", lambda: engine_reason() or check_shared_prompt(tiny[0]))
    assert not status.active and "ZeRO-3" in status.reason
