"""The decode cache: generation with buffered key/value layers gives the plain path's logits and tokens, bit for bit.

Every family's tiny model, greedy and sampled with a fixed seed, prompts of different lengths (left padding), EOS
allowed, with the group-shared prompt's prefill and without, a buffer forced to grow every step; then the places
where it must keep the caller's cache (gradients on, layer kinds it does not know) and the user's path: a training
run records it and TRL's generation goes through it.
"""

from __future__ import annotations

import logging

import pytest
import torch
from test_speed_prompt import _prompt_batch
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

from vlm_grpo.speed import decode_cache
from vlm_grpo.speed.decode_cache import (
    BufferedLayer,
    decode_cache_stats,
    disable_decode_cache,
    enable_decode_cache,
)
from vlm_grpo.speed.shared_prompt import disable_shared_prompt, enable_shared_prompt

FAMILIES = ["qwen2_5_vl", "qwen2_vl", "qwen3_vl", "qwen3_vl_moe"]
HYBRID = ["qwen3_5"]  # full-attention layers buffered, linear-attention layers kept as they are
PROMPTS = [("where is the red square", [(56, 56)]), ("and here? name the larger of the two blue shapes", [(84, 56)])]


@pytest.fixture(params=FAMILIES)
def model_and_processor(request, family_tiny_dir):
    from vlm_grpo.modeling import load_model, load_processor

    path = str(family_tiny_dir(request.param))
    processor = load_processor(path)
    processor.tokenizer.padding_side = "left"
    return load_model(path, device="cpu"), processor


@pytest.mark.parametrize("seed", [None, 5], ids=["greedy", "sampled"])
@pytest.mark.parametrize("family", HYBRID)
def test_a_hybrid_model_buffers_its_attention_layers_only(family_tiny_dir, family, seed):
    from transformers.cache_utils import LinearAttentionLayer

    from vlm_grpo.modeling import load_model, load_processor

    path = str(family_tiny_dir(family))
    processor = load_processor(path)
    processor.tokenizer.padding_side = "left"
    model = load_model(path, device="cpu")
    inputs = _prompt_batch(processor, PROMPTS, group=3)
    plain = _generate(model, inputs, seed)
    seen = []
    enable_decode_cache(model)
    handle = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append({type(layer) for layer in kwargs["cache"].layers}), with_kwargs=True)
    try:
        buffered = _generate(model, inputs, seed)
    finally:
        handle.remove()
        disable_decode_cache(model)
    _assert_identical(buffered, plain)
    assert seen[-1] == {BufferedLayer, LinearAttentionLayer}
    assert decode_cache_stats(model) is None  # disabled again


def _generate(model, inputs, seed: int | None, new_tokens: int = 12):
    sampling = {"do_sample": False} if seed is None else {"do_sample": True, "top_k": 0, "top_p": 1.0,
                                                           "temperature": 1.0}
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=new_tokens, output_logits=True, return_dict_in_generate=True,
                              **sampling)


def _assert_identical(buffered, plain):
    assert torch.equal(buffered.sequences, plain.sequences)
    assert len(buffered.logits) == len(plain.logits)
    for on, off in zip(buffered.logits, plain.logits):
        assert torch.equal(on, off)


@pytest.mark.parametrize("seed", [None, 0, 7], ids=["greedy", "sampled-0", "sampled-7"])
@pytest.mark.parametrize("shared", [False, True], ids=["plain-prefill", "shared-prefill"])
def test_generation_is_bit_identical(model_and_processor, seed, shared, monkeypatch):
    model, processor = model_and_processor
    inputs = _prompt_batch(processor, PROMPTS, group=3)
    if shared:
        enable_shared_prompt(model)
    try:
        plain = _generate(model, inputs, seed)
        monkeypatch.setattr(decode_cache, "MIN_HEADROOM", 1)  # a buffer that has to grow on most steps
        enable_decode_cache(model)
        try:
            buffered = _generate(model, inputs, seed)
            assert decode_cache_stats(model).calls == 1
        finally:
            disable_decode_cache(model)
    finally:
        disable_shared_prompt(model)
    _assert_identical(buffered, plain)


def test_rows_that_stop_early_keep_the_plain_tokens(model_and_processor):
    """EOS allowed: the most likely tokens of the plain run's early steps are made EOS for some rows' sampling."""
    model, processor = model_and_processor
    inputs = _prompt_batch(processor, PROMPTS, group=4)
    plain = _generate(model, inputs, seed=3, new_tokens=16)
    eos = int(plain.sequences[0, inputs["input_ids"].shape[1] + 2])  # a token row 0 samples at its third step
    model.generation_config.eos_token_id = eos
    try:
        plain = _generate(model, inputs, seed=3, new_tokens=16)
        enable_decode_cache(model)
        try:
            buffered = _generate(model, inputs, seed=3, new_tokens=16)
        finally:
            disable_decode_cache(model)
    finally:
        model.generation_config.eos_token_id = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    _assert_identical(buffered, plain)
    assert (plain.sequences == eos).any()


def test_the_layer_behaves_as_a_dynamic_layer_through_crops_and_batch_edits():
    generator = torch.Generator().manual_seed(0)

    def states(batch, length):
        return (torch.randn(batch, 2, length, 8, generator=generator), torch.randn(batch, 2, length, 8,
                                                                                   generator=generator))

    plain, buffered = DynamicLayer(), BufferedLayer()
    steps = [("update", states(3, 5)), ("update", states(3, 1)), ("crop", -2), ("update", states(3, 1)),
             ("select", torch.tensor([2, 0])), ("update", states(2, 1)), ("repeat", 2), ("update", states(4, 3))]
    for op, arg in steps:
        for layer in (plain, buffered):
            if op == "update":
                out = layer.update(*arg)
            elif op == "crop":
                layer.crop(arg)
            elif op == "select":
                layer.batch_select_indices(arg)
            else:
                layer.batch_repeat_interleave(arg)
        assert torch.equal(buffered.keys, plain.keys) and torch.equal(buffered.values, plain.values)
        assert buffered.get_seq_length() == plain.get_seq_length()
        if op == "update":
            assert torch.equal(out[0], plain.keys)
    buffered.reset()
    assert buffered.get_seq_length() == 0


def test_with_gradients_on_the_cache_is_left_alone_and_said_once(model_and_processor, caplog):
    model, processor = model_and_processor
    inputs = _prompt_batch(processor, PROMPTS, group=2)
    enable_decode_cache(model)
    try:
        with caplog.at_level(logging.WARNING, logger="vlm_grpo.speed"):
            for _ in range(2):
                cache = DynamicCache(config=model.config)
                model(**inputs, use_cache=True, **{_cache_name(model): cache})
                assert all(type(layer) is DynamicLayer for layer in cache.layers)
        assert decode_cache_stats(model).calls == 0
        assert [r.getMessage() for r in caplog.records].count(
            "decode_cache: plain cache (same results) for a cache filled with gradients on") == 1
    finally:
        disable_decode_cache(model)


def test_layer_kinds_it_does_not_know_are_left_alone(model_and_processor):
    """A sliding-window layer (or Qwen3.5's linear-attention states) stores what a buffer would not: untouched."""
    model, processor = model_and_processor
    inputs = _prompt_batch(processor, PROMPTS, group=2)
    enable_decode_cache(model)
    try:
        layers = model.config.get_text_config().num_hidden_layers
        cache = DynamicCache()
        cache.layers = [DynamicSlidingWindowLayer(sliding_window=4096)] + [DynamicLayer() for _ in range(layers - 1)]
        with torch.no_grad():
            model(**inputs, use_cache=True, **{_cache_name(model): cache})
        assert not any(isinstance(layer, BufferedLayer) for layer in cache.layers)
        assert decode_cache_stats(model).plain_reasons == ["cache layers of kind DynamicSlidingWindowLayer"]
    finally:
        disable_decode_cache(model)


def test_disable_restores_transformers_own_layers(model_and_processor):
    model, processor = model_and_processor
    enable_decode_cache(model)
    enable_decode_cache(model)  # idempotent: one hook
    backbone = model.model
    assert sum(isinstance(h, decode_cache.DecodeCacheHook) for h in backbone._forward_pre_hooks.values()) == 1
    disable_decode_cache(model)
    assert decode_cache_stats(model) is None and not backbone._forward_pre_hooks
    out = _generate(model, _prompt_batch(processor, PROMPTS, group=1), seed=None, new_tokens=2)
    assert out.sequences.shape[1] > 2


def test_the_probe_finds_it_exact_and_names_what_breaks_it(tiny_model_and_processor, monkeypatch):
    from vlm_grpo.speed.probe import check_decode_cache

    assert check_decode_cache(tiny_model_and_processor[0]) is None
    original = BufferedLayer.update

    def off_by_a_little(self, keys, values, *args, **kwargs):
        k, v = original(self, keys, values, *args, **kwargs)
        return k * (1 + 1e-6), v

    monkeypatch.setattr(BufferedLayer, "update", off_by_a_little)
    reason = check_decode_cache(tiny_model_and_processor[0])
    assert reason is not None and reason.startswith("greedy generation: logits differ from the plain path")


def test_grpo_training_generates_through_it_and_records_it(tiny_dir, rec_data, tmp_path):
    """TRL's own generation in a real step: the policy's caches are buffered, and the result is the plain run's."""
    from speed_helpers import one_grpo_step

    from vlm_grpo.speed.features import enable_speed_features

    def all_on(trainer):
        statuses = enable_speed_features(trainer, decode_cache="require")
        assert [s.name for s in statuses if s.active] == ["group_image_cache", "group_shared_prompt", "decode_cache"]

    loss_on, params_on, trainer = one_grpo_step(tiny_dir, rec_data, tmp_path / "on", switch_on=all_on)
    assert decode_cache_stats(trainer.model).calls >= 1
    loss_off, params_off, _ = one_grpo_step(
        tiny_dir, rec_data, tmp_path / "off",
        switch_on=lambda t: enable_speed_features(t, decode_cache="off"))
    assert loss_on == pytest.approx(loss_off, rel=1e-6)
    for name, value in params_off.items():
        assert torch.allclose(params_on[name], value, rtol=1e-5, atol=1e-7), name


def _cache_name(model) -> str:
    from vlm_grpo.speed.shared_prompt import cache_argument

    return cache_argument(type(model).forward)


def test_vlm_grpo_eval_decodes_through_it_with_the_same_predictions(tiny_dir, rec_data, tmp_path, monkeypatch):
    """`vlm-grpo eval` as a user runs it (greedy, the default): the same completions with and without."""
    import json

    from vlm_grpo import eval_run
    from vlm_grpo.cli import main as cli_main

    buffered = []
    real = eval_run.enable_decode_speed

    def recorded(model, mode="on"):
        status = real(model, mode)
        buffered.append((status, model))
        return status

    def run(name):
        out = tmp_path / name
        argv = ["eval", "--model", str(tiny_dir), "--data", str(rec_data), "--output", str(out), "--batch-size", "8",
                "--max-new-tokens", "12", "--max-samples", "16"]
        assert cli_main(argv) == 0
        return [json.loads(line)["completion"] for line in (out / "predictions.jsonl").read_text().splitlines()]

    monkeypatch.setattr(eval_run, "enable_decode_speed", recorded)
    with_cache = run("on")
    (status, model), = buffered
    assert status.active and decode_cache_stats(model).calls == 2  # two batches of 8
    monkeypatch.setattr(eval_run, "enable_decode_speed", lambda model, mode="on": None)
    assert run("off") == with_cache
