"""Both speed features on Qwen3.5, dense and MoE: on and off give the same log-probs, gradients and samples.

The checks of ``test_speed_qwen3.py`` (tiny model, fp32, CPU: per-token log-probs and every trainable
parameter's gradient within 1e-5 relative, sampled ``generate`` with a fixed seed identical, activation
checkpointing on and off, LoRA, a real TRL step), on the hybrid language model: the shared prompt's completion
pass starts every row from its group's full-attention keys/values *and* its linear-attention convolution and
recurrent states. The vision tower has no DeepStack: the image cache carries two fields.

The shared prompt's forward is checked here, but the family does not vouch for it (it steps aside in training,
``SHARED_PROMPT_BLOCKER``): every log-prob and every gradient agrees within 1e-5 except the gradients of the
Gated DeltaNet decay parameters, which transformers' fp32 chunked kernel does not reproduce within 1e-5 on the
plain path either (the last test measures that).
"""

from __future__ import annotations

import pytest
import torch

from test_speed_prompt import _grpo_batch, _prompt_batch, _sample
from test_speed_qwen3 import RTOL, _assert_grads, _logps_grads_aux
from vlm_grpo.speed import cache_stats, enable_group_image_cache, enable_shared_prompt, group_image_cache
from vlm_grpo.speed import shared_prompt_stats

FAMILIES = ["qwen3_5", "qwen3_5_moe"]


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


# The linear-attention decay parameters: their gradients are sums of many cancelling terms (see the last test).
DECAY = (".linear_attn.A_log", ".linear_attn.dt_bias", ".linear_attn.in_proj_a.weight")
DECAY_RTOL = 1e-3


def test_the_image_cache_probe_passes_and_the_shared_prompt_steps_aside_once(model_and_processor, caplog):
    import logging

    from vlm_grpo.families.qwen3_5 import SHARED_PROMPT_BLOCKER
    from vlm_grpo.speed.features import decide
    from vlm_grpo.speed.probe import check_image_cache, check_shared_prompt

    model, processor = model_and_processor
    assert check_image_cache(model, processor) is None
    with caplog.at_level(logging.WARNING, logger="vlm_grpo"):
        status = decide("group_shared_prompt", "on", lambda: check_shared_prompt(model))
    assert not status.active and status.reason == SHARED_PROMPT_BLOCKER
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("vlm_grpo")]
    assert len(warnings) == 1 and "group_shared_prompt steps aside" in warnings[0] and "A_log" in warnings[0]


def _assert_grads_decay_apart(on, off):
    """Every gradient within RTOL, the decay parameters' within DECAY_RTOL (and there are some)."""
    decay = {n for n in off if n.endswith(DECAY)}
    assert decay
    _assert_grads({n: g for n, g in on.items() if n not in decay}, {n: g for n, g in off.items() if n not in decay})
    for name in decay:
        assert float((on[name] - off[name]).norm() / off[name].norm()) <= DECAY_RTOL, name


def test_the_tower_returns_two_fields_and_the_cache_gathers_them(model_and_processor):
    from vlm_grpo.speed import vision_tower

    model, processor = model_and_processor
    inputs, _, _ = _grpo_batch(processor)
    tower = vision_tower(model)
    with torch.no_grad():
        plain = tower(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
        with group_image_cache(model):
            cached = tower(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
            stats = cache_stats(model)
    assert getattr(plain, "deepstack_features", None) is None  # Qwen3-VL's tower without DeepStack
    assert (stats.requested, stats.encoded) == (16, 4)  # 3 prompts x G=4 rows, one prompt with two images
    for name in ("last_hidden_state", "pooler_output"):
        torch.testing.assert_close(cached[name], plain[name], rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("freeze, checkpointing", [(False, False), (True, False), (False, True)],
                         ids=["vision-trainable", "vision-frozen", "activation-checkpointing"])
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
    assert set(off) == {n for n, p in model.named_parameters() if p.requires_grad}
    _assert_grads(on, off)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "activation-checkpointing"])
def test_shared_prompt_carries_linear_attention_states_exactly(model_and_processor, checkpointing):
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
    _assert_grads_decay_apart(on, off)
    assert any(".linear_attn.conv1d." in n for n in off) and any(".self_attn." in n for n in off)


def test_with_moderate_decays_every_gradient_is_within_1e_5(model_and_processor):
    """The states are carried right: where the delta rule's decays are moderate (A drawn from 0.01..1 instead of
    transformers' 0.01..16), the decay gradients are well conditioned and agree within 1e-5 too."""
    model, processor = model_and_processor
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            if hasattr(layer, "linear_attn"):
                decay = layer.linear_attn.A_log
                decay.copy_(torch.empty(decay.shape).uniform_(0.01, 1.0, generator=generator).log())
    model.train()
    inputs, completion, mask = _grpo_batch(processor)
    logps_off, off, _ = _logps_grads_aux(model, inputs, completion, mask)
    enable_shared_prompt(model)
    logps_on, on, _ = _logps_grads_aux(model, inputs, completion, mask)
    assert shared_prompt_stats(model).shared == 1
    torch.testing.assert_close(logps_on, logps_off, rtol=RTOL, atol=1e-6)
    _assert_grads(on, off)
    assert any(n.endswith(DECAY) for n in off)


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


def test_the_plain_path_does_not_reproduce_the_decay_gradients_within_1e_5_itself(model_and_processor, family):
    """The blocker, measured: the plain path with only the delta rule's chunk size changed (64 -> 32, the same
    function) moves the decay parameters' gradients by more than 1e-5, and nothing else by more than 1e-6."""
    import functools
    import importlib

    kernel = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    model, processor = model_and_processor
    model.train()
    inputs, completion, mask = _grpo_batch(processor)
    _, chunk64, _ = _logps_grads_aux(model, inputs, completion, mask)
    original = kernel.torch_chunk_gated_delta_rule
    kernel.torch_chunk_gated_delta_rule = functools.partial(original, chunk_size=32)
    try:
        _, chunk32, _ = _logps_grads_aux(model, inputs, completion, mask)
    finally:
        kernel.torch_chunk_gated_delta_rule = original
    error = {n: float((chunk32[n] - g).norm() / g.norm()) for n, g in chunk64.items()}
    assert max(e for n, e in error.items() if n.endswith(DECAY)) > RTOL
    assert max(e for n, e in error.items() if not n.endswith(DECAY)) < 1e-6


@pytest.mark.slow  # ~25 s on 2 shared cores
def test_one_grpo_step_is_the_same_with_the_image_cache(family_tiny_dir, family, rec_data, tmp_path):
    """A real TRL step with the feature that training turns on for Qwen3.5: same loss, same update."""
    from speed_helpers import one_grpo_step

    def cache_on(trainer):
        enable_group_image_cache(trainer.model, trainer.processing_class)
        enable_group_image_cache(trainer.ref_model)

    path = family_tiny_dir(family)
    config = {"per_device_train_batch_size": 8, "learning_rate": 1e-2, "optim": "sgd"}
    loss_off, params_off, _ = one_grpo_step(path, rec_data, tmp_path / "off", **config)
    loss_on, params_on, trainer = one_grpo_step(path, rec_data, tmp_path / "on", cache_on, **config)
    assert cache_stats(trainer.model).saved > 0
    assert loss_on == pytest.approx(loss_off, rel=RTOL, abs=1e-7)
    for name, after in params_off.items():
        assert torch.allclose(params_on[name], after, rtol=1e-4, atol=1e-6), name
