"""Model loading: errors, attention and dtype choices, what trains under LoRA and freeze_vision."""

from __future__ import annotations

import json

import pytest
import torch
from trl import ModelConfig

from vlm_grpo.modeling import (
    CheckpointError,
    default_attention,
    freeze_vision,
    load_model,
    load_processor,
    lora_config,
    resolve_dtype,
)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(str(tmp_path / "nope"))


def test_folder_without_config_is_not_a_checkpoint(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_processor(str(tmp_path))


def test_text_only_model_is_rejected_with_supported_families(tmp_path):
    from transformers import Qwen2Config

    Qwen2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="not a vision-language checkpoint.*qwen2_5_vl"):
        load_model(str(tmp_path))


def test_unsupported_vision_family_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(CheckpointError, match="'llava'.*unsupported family.*qwen2_5_vl, qwen2_vl"):
        load_model(str(tmp_path))


def test_unknown_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="there is no folder .* not in the Hugging Face cache"):
        load_model("no-such-org/no-such-model")


def test_attention_and_dtype_defaults_on_cpu():
    assert default_attention("cpu") == "sdpa"
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype(None, "cuda") == torch.bfloat16
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("float13", "cpu")


def test_explicit_attention_and_dtype_are_honoured(tiny_dir):
    model = load_model(str(tiny_dir), attn_implementation="eager", dtype="bfloat16")
    assert model.config._attn_implementation == "eager"
    assert model.dtype == torch.bfloat16
    assert model.device.type == "cpu"


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_freeze_vision_tower_and_merger(tiny_dir):
    model = load_model(str(tiny_dir))
    assert freeze_vision(model, merger=True) > 0
    trainable = _trainable(model)
    assert not any(".visual." in n for n in trainable)
    assert any("language_model" in n for n in trainable)


def test_freeze_vision_tower_only_keeps_merger_trainable(tiny_dir):
    model = load_model(str(tiny_dir))
    freeze_vision(model, merger=False)
    visual = {n for n in _trainable(model) if ".visual." in n}
    assert visual and all(".visual.merger." in n for n in visual)


def test_lora_targets_the_language_model_only(tiny_dir):
    from peft import get_peft_model

    model = load_model(str(tiny_dir))
    config = lora_config(ModelConfig(model_name_or_path=str(tiny_dir), use_peft=True, lora_r=4))
    peft_model = get_peft_model(model, config)
    trainable = _trainable(peft_model)
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("visual" in n for n in trainable)
    projections = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert projections == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert lora_config(ModelConfig(model_name_or_path=str(tiny_dir))) is None
