"""Model families: the registry, the tiny model of each family, freeze sets and LoRA targets, and Qwen3-VL
(dense and MoE) through tiny -> prep -> train -> eval with both speed features on."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from vlm_grpo.cli import main as cli_main
from vlm_grpo.families import FAMILIES, get_family

ALL = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"]


@pytest.mark.parametrize(
    "name, model_class, box_frame, pixels_per_token, merger_prefixes",
    [
        ("qwen2_vl", "Qwen2VLForConditionalGeneration", "norm1000", 28, ("merger.",)),
        ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "model_pixels", 28, ("merger.",)),
        ("qwen3_vl", "Qwen3VLForConditionalGeneration", "norm1000", 32, ("merger.", "deepstack_merger_list.")),
        ("qwen3_vl_moe", "Qwen3VLMoeForConditionalGeneration", "norm1000", 32, ("merger.", "deepstack_merger_list.")),
        ("qwen3_5", "Qwen3_5ForConditionalGeneration", "norm1000", 32, ("merger.",)),
        ("qwen3_5_moe", "Qwen3_5MoeForConditionalGeneration", "norm1000", 32, ("merger.",)),
    ],
)
def test_family_records(name, model_class, box_frame, pixels_per_token, merger_prefixes):
    family = FAMILIES[name]
    assert (family.name, family.model_class, family.box_frame, family.pixels_per_token) == (
        name, model_class, box_frame, pixels_per_token)
    assert family.merger_prefixes == merger_prefixes
    assert family.transformers_class("model").__name__ == model_class
    assert family.transformers_class("config")().model_type == name  # the registry key is the real model_type


def test_registry_lists_the_valid_names():
    assert sorted(FAMILIES) == sorted(ALL)
    with pytest.raises(ValueError, match="qwen2_5_vl, qwen2_vl, qwen3_5, qwen3_5_moe, qwen3_vl, qwen3_vl_moe"):
        get_family("llava")


@pytest.mark.parametrize("name", ALL)
def test_tiny_model_of_each_family_loads_like_a_checkpoint(family_tiny_dir, name):
    from vlm_grpo.data import Resize
    from vlm_grpo.modeling import family_of, load_model, load_processor

    path = family_tiny_dir(name)
    family = FAMILIES[name]
    model, processor = load_model(str(path), device="cpu"), load_processor(str(path))
    assert type(model).__name__ == family.model_class and family_of(model.config) is family
    saved = json.loads((path / "processor_config.json").read_text())
    assert saved["processor_class"] == family.processor_class
    assert Resize.of(processor).factor == family.pixels_per_token
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "where?"}]}]
    text = processor.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    assert "<|vision_start|><|image_pad|><|vision_end|>where?" in text
    assert text.startswith("<|im_start|>system") == (not name.startswith("qwen3"))  # Qwen3-VL: no default system
    from PIL import Image

    inputs = processor(images=[Image.new("RGB", (96, 64))], text=[text], return_tensors="pt")
    tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert tokens == (96 // family.pixels_per_token) * (64 // family.pixels_per_token)
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


def _trainable_vision(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("model.visual.")}


QWEN3_MERGERS = {
    *(f"model.visual.merger.{m}.{p}" for m in ("norm", "linear_fc1", "linear_fc2") for p in ("weight", "bias")),
    *(f"model.visual.deepstack_merger_list.{k}.{m}.{p}" for k in (0, 1)
      for m in ("norm", "linear_fc1", "linear_fc2") for p in ("weight", "bias")),
}
QWEN2_MERGERS = {
    *(f"model.visual.merger.ln_q.{p}" for p in ("weight", "bias")),  # LayerNorm
    *(f"model.visual.merger.mlp.{k}.{p}" for k in (0, 2) for p in ("weight", "bias")),
}
QWEN2_5_MERGERS = QWEN2_MERGERS - {"model.visual.merger.ln_q.bias"}  # RMSNorm
QWEN3_5_MERGERS = {m for m in QWEN3_MERGERS if ".deepstack_merger_list." not in m}  # no DeepStack


@pytest.mark.parametrize("name, mergers", [("qwen2_vl", QWEN2_MERGERS), ("qwen2_5_vl", QWEN2_5_MERGERS),
                                           ("qwen3_vl", QWEN3_MERGERS), ("qwen3_vl_moe", QWEN3_MERGERS),
                                           ("qwen3_5", QWEN3_5_MERGERS), ("qwen3_5_moe", QWEN3_5_MERGERS)])
def test_freeze_vision_merger_false_trains_exactly_the_mergers(family_tiny_dir, name, mergers):
    from vlm_grpo.modeling import freeze_vision, load_model

    model = load_model(str(family_tiny_dir(name)), device="cpu")
    language = {n for n, p in model.named_parameters() if not n.startswith("model.visual.")}
    freeze_vision(model, merger=False)
    assert _trainable_vision(model) == mergers
    assert {n for n, p in model.named_parameters() if p.requires_grad} == language | mergers
    freeze_vision(model)
    assert _trainable_vision(model) == set()


def test_lora_targets_the_language_model_only_and_leaves_experts_and_router_to_full_fine_tuning(family_tiny_dir):
    from peft import get_peft_model
    from trl import ModelConfig

    from vlm_grpo.modeling import family_of, load_model, lora_config

    adapted = {}
    for name in ("qwen3_vl", "qwen3_vl_moe"):
        model = load_model(str(family_tiny_dir(name)), device="cpu")
        args = ModelConfig(model_name_or_path="x", use_peft=True, lora_r=4)
        peft_model = get_peft_model(model, lora_config(args, family_of(model.config)))
        adapted[name] = {n.split("base_model.model.")[-1].rsplit(".lora_A", 1)[0]
                         for n, _ in peft_model.named_parameters() if "lora_A" in n}
        assert all(n.startswith("model.language_model.layers.") for n in adapted[name]), name
        assert not any(p.requires_grad for n, p in peft_model.named_parameters() if "lora_" not in n)
    attention = {f"model.language_model.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "k_proj",
                                                                                             "v_proj", "o_proj")}
    mlp = {f"model.language_model.layers.{i}.mlp.{p}" for i in (0, 1) for p in ("gate_proj", "up_proj", "down_proj")}
    assert adapted["qwen3_vl"] == attention | mlp
    assert adapted["qwen3_vl_moe"] == attention  # fused experts (3-D parameters) and the router are not adapted


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen3_vl", "qwen3_vl_moe"])
def test_tiny_prep_train_sft_eval_offline_in_the_family_frame(name, tmp_path, caplog):
    """Qwen3-VL in norm1000 (Qwen2.5-VL, the default family, is covered by test_train.py and test_eval.py)."""
    frame = FAMILIES[name].box_frame
    model, data, run = tmp_path / "model", tmp_path / "data", tmp_path / "run"
    assert cli_main(["tiny", "--family", name, "--output", str(model)]) == 0
    assert cli_main(["prep", "--format", "synthetic", "--task", "rec", "--num", "16", "--image-size", "112",
                     "--output", str(data), "--quiet"]) == 0
    with caplog.at_level(logging.WARNING, logger="vlm_grpo"):
        code = cli_main(["train", "--config", "scripts/configs/tiny_cpu.yaml", "--model_name_or_path", str(model),
                         "--train_data", str(data), "--output_dir", str(run), "--max_steps", "2",
                         "--max_completion_length", "12", "--report_to", "none",
                         "--reward_funcs", "format", "iou", "--group_image_cache", "on",
                         "--group_shared_prompt", "on"])
    assert code == 0
    speed = [r.getMessage() for r in caplog.records if r.name.startswith("vlm_grpo.speed")]
    assert speed == []  # no feature stepped aside, no plain-path call
    log = json.loads((run / "training_log.json").read_text())
    record = log[0]["run"]
    assert (record["family"], record["box_frame"]) == (name, frame)
    assert all(f["active"] for f in record["speed_features"].values())
    if name == "qwen3_vl_moe":  # TRL adds the router's load-balancing loss and logs it
        assert any("aux_loss" in step for step in log[1:])
    assert cli_main(["eval", "--model", str(run), "--data", str(data), "--output", str(run / "eval"),
                     "--max-samples", "4"]) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert (metrics["family"], metrics["box_frame"], metrics["settings"]["box_frame"]) == (name, frame, frame)
    assert metrics["metrics"]["count"] == 4
    sft = tmp_path / "sft"
    assert cli_main(["sft", "--model_name_or_path", str(model), "--train_data", str(data), "--output_dir", str(sft),
                     "--max_steps", "1", "--per_device_train_batch_size", "4", "--report_to", "none",
                     "--use_cpu", "true"]) == 0
    assert json.loads((sft / "config.json").read_text())["model_type"] == name


def test_demo_quick_runs_on_a_qwen3_vl_moe_policy(family_tiny_dir, tmp_path):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--quick", "--policy", str(family_tiny_dir("qwen3_vl_moe")), "--output", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary and (out / "eval_after" / "metrics.json").exists()
    assert json.loads((out / "eval_after" / "metrics.json").read_text())["box_frame"] == "norm1000"


def test_qwen3_5_lora_adapts_attention_linear_attention_and_the_shared_expert(family_tiny_dir):
    from peft import get_peft_model
    from trl import ModelConfig

    from vlm_grpo.modeling import family_of, load_model, lora_config

    adapted = {}
    for name in ("qwen3_5", "qwen3_5_moe"):
        model = load_model(str(family_tiny_dir(name)), device="cpu")
        args = ModelConfig(model_name_or_path="x", use_peft=True, lora_r=4)
        peft_model = get_peft_model(model, lora_config(args, family_of(model.config)))
        adapted[name] = {n.split("base_model.model.model.language_model.layers.")[-1].rsplit(".lora_A", 1)[0]
                         for n, _ in peft_model.named_parameters() if "lora_A" in n}
    linear = {f"0.linear_attn.{p}" for p in ("in_proj_qkv", "in_proj_z", "out_proj")}
    attention = {f"1.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
    mlp = {f"{i}.mlp.{p}" for i in (0, 1) for p in ("gate_proj", "up_proj", "down_proj")}
    shared = {f"{i}.mlp.shared_expert.{p}" for i in (0, 1) for p in ("gate_proj", "up_proj", "down_proj")}
    assert adapted["qwen3_5"] == linear | attention | mlp
    assert adapted["qwen3_5_moe"] == linear | attention | shared  # fused experts and the router are not adapted


@pytest.mark.parametrize("template, generation_prompt_end", [("think", "<think>\n"),
                                                             ("nothink", "<think>\n\n</think>\n\n")])
def test_qwen3_5_tiny_has_the_released_template_flavours(family_tiny_dir, template, generation_prompt_end):
    from vlm_grpo.modeling import load_model, load_processor
    from vlm_grpo.prompts import opens_think

    path = family_tiny_dir("qwen3_5", template)
    processor = load_processor(str(path))
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "where?"}]}]
    text = processor.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n" + generation_prompt_end)
    assert opens_think(processor) == (template == "think")
    config = load_model(str(path), device="cpu").config
    assert config.text_config.layer_types == ["linear_attention", "full_attention"]
    assert config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")


def test_qwen3_5_templates_are_trls_copies_of_the_released_ones():
    """TRL maps exactly these strings to its training templates (SFT's assistant-only loss)."""
    from trl.chat_template_utils import qwen3_5_nothink_chat_template, qwen3_5_think_chat_template

    templates = FAMILIES["qwen3_5"].chat_templates
    assert templates == {"think": qwen3_5_think_chat_template, "nothink": qwen3_5_nothink_chat_template}
    assert FAMILIES["qwen3_5"].chat_template == qwen3_5_think_chat_template


def test_an_unknown_template_flavour_lists_the_known_ones():
    with pytest.raises(ValueError, match="nothink, think"):
        FAMILIES["qwen3_5"].template("fast")
    with pytest.raises(ValueError, match="none"):
        FAMILIES["qwen3_vl"].template("think")


@pytest.mark.parametrize("name, template", [("qwen3_5", "think"), ("qwen3_5", "nothink"),
                                            pytest.param("qwen3_5_moe", "think", marks=pytest.mark.slow)])
def test_qwen3_5_tiny_prep_train_sft_eval_offline_under_each_template(name, template, tmp_path, caplog):
    """Both templates: the rows know whether the prompt opened the <think>, the format reward scores SFT's
    targets as well formed, the image cache is on, and the shared prompt steps aside with exactly one warning."""
    model, data, run, sft = tmp_path / "model", tmp_path / "data", tmp_path / "run", tmp_path / "sft"
    assert cli_main(["tiny", "--family", name, "--template", template, "--output", str(model)]) == 0
    assert cli_main(["prep", "--format", "synthetic", "--task", "rec", "--num", "16", "--image-size", "112",
                     "--output", str(data), "--quiet"]) == 0
    assert cli_main(["sft", "--model_name_or_path", str(model), "--train_data", str(data), "--output_dir", str(sft),
                     "--max_steps", "1", "--per_device_train_batch_size", "4", "--report_to", "none",
                     "--use_cpu", "true"]) == 0
    with caplog.at_level(logging.WARNING, logger="vlm_grpo"):
        code = cli_main(["train", "--config", "scripts/configs/tiny_cpu.yaml", "--model_name_or_path", str(sft),
                         "--train_data", str(data), "--output_dir", str(run), "--max_steps", "2",
                         "--max_completion_length", "12", "--report_to", "none",
                         "--reward_funcs", "format", "iou", "--group_image_cache", "on",
                         "--group_shared_prompt", "on"])
    assert code == 0
    speed = [r.getMessage() for r in caplog.records if r.name.startswith("vlm_grpo.speed")]
    shared = [m for m in speed if "group_shared_prompt" in m]
    assert len(shared) == 1 and "steps aside" in shared[0] and "linear-attention" in shared[0]
    # The decode cache buffers the full-attention layers and leaves the linear-attention ones as they are: on the
    # dense model it is on and says nothing; on the MoE its probe's plain generate fails (transformers 5.24's
    # Qwen3.5-MoE computes the load-balancing loss inside generate once TRL has set output_router_logits, and the
    # decode step's shapes do not match), so there it steps aside with one warning
    others = [m for m in speed if m not in shared]
    if name == "qwen3_5_moe":
        assert len(others) == 1 and "decode_cache steps aside" in others[0], others
    else:
        assert others == [], others
    record = json.loads((run / "training_log.json").read_text())[0]["run"]
    assert (record["family"], record["box_frame"]) == (name, "norm1000")
    assert record["speed_features"]["group_image_cache"]["active"]
    assert not record["speed_features"]["group_shared_prompt"]["active"]
    assert cli_main(["eval", "--model", str(run), "--data", str(data), "--output", str(run / "eval"),
                     "--max-samples", "4"]) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert (metrics["family"], metrics["box_frame"], metrics["metrics"]["count"]) == (name, "norm1000", 4)


def test_demo_quick_runs_on_a_qwen3_5_policy(family_tiny_dir, tmp_path):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--quick", "--policy", str(family_tiny_dir("qwen3_5")), "--output", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())
    assert json.loads((out / "eval_after" / "metrics.json").read_text())["box_frame"] == "norm1000"
