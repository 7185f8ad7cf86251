"""Both speed features on Qwen3-VL, dense and MoE: on and off give the same log-probs, gradients and samples.

The same checks as ``test_speed_vision.py`` and ``test_speed_prompt.py`` for Qwen2.5-VL (tiny model, fp32, CPU):
per-token log-probs and every trainable parameter's gradient within 1e-5 relative, sampled ``generate`` with a
fixed seed identical, activation checkpointing on and off, LoRA, 2-process DDP. On Qwen3-VL the image cache must
carry the DeepStack features per image, and the shared prompt's prefix pass must add them at the image positions;
on the MoE the router logits (the load-balancing loss TRL adds) must come out as on the plain path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from test_speed_prompt import COMPLETION, _assert_same, _grpo_batch, _logps_and_grads, _prompt_batch, _sample
from vlm_grpo.speed import (
    cache_stats,
    enable_group_image_cache,
    enable_shared_prompt,
    group_image_cache,
    shared_prompt_stats,
)

RTOL = 1e-5
FAMILIES = ["qwen3_vl", "qwen3_vl_moe"]


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture()
def model_and_processor(family_tiny_dir, family):
    from vlm_grpo.modeling import load_model, load_processor

    path = str(family_tiny_dir(family))
    processor = load_processor(path)
    processor.tokenizer.padding_side = "left"
    return load_model(path, device="cpu"), processor


def _moe(model) -> bool:
    return hasattr(model.config.get_text_config(), "output_router_logits")


def _logps_grads_aux(model, inputs, completion, mask):
    """Completion log-probs, and gradients of their sum plus (MoE) the router's load-balancing loss."""
    model.zero_grad()
    extra = {"output_router_logits": True} if _moe(model) else {}
    out = model(**inputs, use_cache=False, **extra)
    logps = out.logits[:, -COMPLETION - 1 : -1].log_softmax(-1).gather(-1, completion.unsqueeze(-1)).squeeze(-1)
    loss = (logps * mask).sum()
    aux = out.aux_loss if extra else None
    if aux is not None:
        loss = loss + 10.0 * aux  # weighted up so that its gradient shows
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logps.detach(), grads, None if aux is None else aux.detach()


def _assert_grads(on, off):
    assert set(on) == set(off) and off
    for name, grad in off.items():
        error = float((on[name] - grad).norm() / grad.norm().clamp_min(1e-12))
        assert error <= RTOL, (name, error)


def test_the_probes_pass(model_and_processor):
    from vlm_grpo.speed.probe import check_image_cache, check_shared_prompt

    model, processor = model_and_processor
    assert check_image_cache(model, processor) is None
    assert check_shared_prompt(model) is None


def test_the_tower_returns_deepstack_features_and_the_cache_gathers_them(model_and_processor):
    from vlm_grpo.speed import vision_tower

    model, processor = model_and_processor
    inputs, _, _ = _grpo_batch(processor)
    tower = vision_tower(model)
    with torch.no_grad():
        plain = tower(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
        with group_image_cache(model):
            cached = tower(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
            stats = cache_stats(model)
    assert len(plain.deepstack_features) == len(model.config.vision_config.deepstack_visual_indexes) >= 2
    assert (stats.requested, stats.encoded) == (16, 4)  # 3 prompts x G=4 rows, one prompt with two images
    for name in ("last_hidden_state", "pooler_output"):
        torch.testing.assert_close(cached[name], plain[name], rtol=RTOL, atol=1e-6)
    for on, off in zip(cached.deepstack_features, plain.deepstack_features, strict=True):
        torch.testing.assert_close(on, off, rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize(
    "freeze, checkpointing",
    [(False, False), (True, False), (False, True)],
    ids=["vision-trainable", "vision-frozen", "activation-checkpointing"],
)
def test_image_cache_gradients_match(model_and_processor, freeze, checkpointing):
    from vlm_grpo.modeling import freeze_vision

    model, processor = model_and_processor
    if freeze:
        freeze_vision(model)
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    inputs, completion, mask = _grpo_batch(processor)
    logps_off, off, aux_off = _logps_grads_aux(model, inputs, completion, mask)
    enable_group_image_cache(model)
    logps_on, on, aux_on = _logps_grads_aux(model, inputs, completion, mask)
    assert cache_stats(model).encoded == 4
    torch.testing.assert_close(logps_on, logps_off, rtol=RTOL, atol=1e-6)
    if aux_off is not None:
        torch.testing.assert_close(aux_on, aux_off, rtol=RTOL, atol=1e-7)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(off) == trainable
    assert any(".deepstack_merger_list." in n for n in trainable) != freeze
    _assert_grads(on, off)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "activation-checkpointing"])
def test_shared_prompt_logps_gradients_and_router_loss_match(model_and_processor, checkpointing):
    model, processor = model_and_processor
    model.train()
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    enable_group_image_cache(model)
    inputs, completion, mask = _grpo_batch(processor)
    logps_off, off, aux_off = _logps_grads_aux(model, inputs, completion, mask)
    enable_shared_prompt(model)
    logps_on, on, aux_on = _logps_grads_aux(model, inputs, completion, mask)
    stats = shared_prompt_stats(model)
    assert (stats.calls, stats.shared) == (1, 1) and stats.computed_tokens < stats.requested_tokens / 2
    torch.testing.assert_close(logps_on, logps_off, rtol=RTOL, atol=1e-6)
    if aux_off is not None:  # MoE: the load-balancing loss of every row's tokens, prefix copies included
        torch.testing.assert_close(aux_on, aux_off, rtol=RTOL, atol=1e-7)
    _assert_grads(on, off)
    assert any(".deepstack_merger_list." in n for n in off)  # the DeepStack mergers got their gradient


def test_sampled_generation_gives_identical_tokens(model_and_processor):
    model, processor = model_and_processor
    model.eval()
    inputs = _prompt_batch(processor)

    off = _sample(model, inputs)
    enable_group_image_cache(model)
    enable_shared_prompt(model)
    on = _sample(model, inputs)
    assert torch.equal(on, off)
    assert shared_prompt_stats(model).shared == 1 and cache_stats(model).encoded == 4


def test_lora_with_both_features(model_and_processor, family_tiny_dir, family):
    from peft import get_peft_model
    from trl import ModelConfig

    from vlm_grpo.modeling import family_of, lora_config

    model, processor = model_and_processor
    config = ModelConfig(model_name_or_path=str(family_tiny_dir(family)), use_peft=True, lora_r=4, lora_dropout=0.0)
    model = get_peft_model(model, lora_config(config, family_of(model.config)))
    model.train()
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    inputs, completion, mask = _grpo_batch(processor)
    off = _logps_and_grads(model, inputs, completion, mask)
    enable_group_image_cache(model)
    enable_shared_prompt(model)
    on = _logps_and_grads(model, inputs, completion, mask)
    _assert_same(on, off)
    assert off[1] and all("lora_" in name for name in off[1])
    assert not any("visual" in name or "experts" in name or ".mlp.gate." in name for name in off[1])


def test_one_grpo_step_is_the_same_with_both_features(family_tiny_dir, family, rec_data, tmp_path):
    """A real TRL step (MoE: TRL adds the router's load-balancing loss, aux_loss): same loss, same update."""
    from speed_helpers import one_grpo_step

    from vlm_grpo.speed import enable_group_image_cache as cache_on

    def both(trainer):
        cache_on(trainer.model, trainer.processing_class)
        cache_on(trainer.ref_model)
        enable_shared_prompt(trainer.model)
        enable_shared_prompt(trainer.ref_model)

    path = family_tiny_dir(family)
    config = {"per_device_train_batch_size": 8, "learning_rate": 1e-2, "optim": "sgd"}
    loss_off, params_off, plain = one_grpo_step(path, rec_data, tmp_path / "off", **config)
    loss_on, params_on, trainer = one_grpo_step(path, rec_data, tmp_path / "on", both, **config)
    assert shared_prompt_stats(trainer.model).shared == 2 and cache_stats(trainer.model).saved > 0
    assert loss_on == pytest.approx(loss_off, rel=RTOL, abs=1e-7)
    if family == "qwen3_vl_moe":
        assert plain.aux_loss_enabled and trainer.aux_loss_enabled
        aux = [h["aux_loss"] for t in (plain, trainer) for h in t.state.log_history if "aux_loss" in h]
        assert len(aux) == 2 and aux[0] == pytest.approx(aux[1], rel=RTOL)
    for name, after in params_off.items():
        assert torch.allclose(params_on[name], after, rtol=1e-4, atol=1e-6), name


def test_ddp_two_processes_gradients_match(family_tiny_dir, family, tmp_path):
    from speed_helpers import run_two_ranks
    from test_speed_prompt import DDP_WORKER as PROMPT_WORKER
    from test_speed_vision import DDP_WORKER as VISION_WORKER

    path = str(family_tiny_dir(family))
    run_two_ranks(tmp_path, VISION_WORKER, path)
    run_two_ranks(tmp_path, PROMPT_WORKER, path, str(Path(__file__).parent))
