"""Group-shared prompt: on and off give the same log-probs, gradients and samples (tiny model, fp32, CPU)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from vlm_grpo.speed import (
    disable_shared_prompt,
    enable_group_image_cache,
    enable_shared_prompt,
    shared_prompt_stats,
)
from vlm_grpo.speed.prompt_plan import plan_sharing
from vlm_grpo.speed.shared_prompt import language_backbone

RTOL = 1e-5
G = 4
COMPLETION = 7


def _noise(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


# Three prompts of different lengths (so left padding differs), one with two images, all images of other sizes.
PROMPTS = [
    ("where is the red circle?", [(112, 84)]),
    ("which image is larger?", [(56, 56), (84, 112)]),
    ("find the small green square near the top of the picture", [(140, 112)]),
]


@pytest.fixture()
def model_and_processor(tiny_dir):
    from vlm_grpo.modeling import load_model, load_processor

    processor = load_processor(str(tiny_dir))
    processor.tokenizer.padding_side = "left"  # as TRL pads prompts
    return load_model(str(tiny_dir), device="cpu"), processor


def _prompt_batch(processor, prompts=PROMPTS, group=G):
    texts, images = [], []
    for k, (question, sizes) in enumerate(prompts):
        content = [{"type": "image"} for _ in sizes] + [{"type": "text", "text": question}]
        text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                             tokenize=False)
        pictures = [_noise(w, h, 10 * k + i) for i, (w, h) in enumerate(sizes)]
        texts += [text] * group
        images += [pictures] * group
    return processor(images=images, text=texts, padding=True, return_tensors="pt")


def _grpo_batch(processor, seed: int = 0):
    """Prompt + G completions per prompt, completions right-padded to different lengths, as TRL builds it."""
    prompt = _prompt_batch(processor)
    batch = prompt["input_ids"].shape[0]
    generator = torch.Generator().manual_seed(seed)
    completion = torch.randint(10, 300, (batch, COMPLETION), generator=generator)
    completion_mask = torch.ones(batch, COMPLETION, dtype=torch.long)
    for row in range(batch):
        completion_mask[row, COMPLETION - row % 4 :] = 0
    inputs = {
        "input_ids": torch.cat([prompt["input_ids"], completion], 1),
        "attention_mask": torch.cat([prompt["attention_mask"], completion_mask], 1),
        "mm_token_type_ids": torch.cat([prompt["mm_token_type_ids"], torch.zeros_like(completion)], 1),
        "pixel_values": prompt["pixel_values"],
        "image_grid_thw": prompt["image_grid_thw"],
    }
    return inputs, completion, completion_mask


def _logps_and_grads(model, inputs, completion, completion_mask):
    model.zero_grad()
    logits = model(**inputs, use_cache=False).logits[:, -COMPLETION - 1 : -1]
    logps = logits.log_softmax(-1).gather(-1, completion.unsqueeze(-1)).squeeze(-1)
    (logps * completion_mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logps.detach(), grads


def _assert_same(on, off):
    (logps_on, grads_on), (logps_off, grads_off) = on, off
    assert torch.allclose(logps_on, logps_off, rtol=RTOL, atol=1e-6)
    assert set(grads_on) == set(grads_off) and grads_off
    for name, grad in grads_off.items():
        assert float((grads_on[name] - grad).norm() / grad.norm().clamp_min(1e-12)) <= RTOL, name


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "activation-checkpointing"])
def test_logps_and_gradients_match(model_and_processor, checkpointing):
    model, processor = model_and_processor
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable({"use_reentrant": False})
    inputs, completion, completion_mask = _grpo_batch(processor)
    off = _logps_and_grads(model, inputs, completion, completion_mask)
    enable_shared_prompt(model)
    on = _logps_and_grads(model, inputs, completion, completion_mask)
    _assert_same(on, off)
    stats = shared_prompt_stats(model)
    batch, length = inputs["input_ids"].shape
    prompt = length - COMPLETION
    assert (stats.calls, stats.shared) == (1, 1)
    assert stats.computed_tokens == 3 * prompt + batch * COMPLETION < stats.requested_tokens == batch * length


def test_rows_in_any_order_and_a_prompt_without_copies(model_and_processor):
    model, processor = model_and_processor
    inputs, completion, completion_mask = _grpo_batch(processor)
    order = torch.tensor([5, 0, 9, 1, 6, 2, 10, 3])  # prompts interleaved; prompt 1 keeps two rows, 2 one
    inputs = {k: v[order] if k not in ("pixel_values", "image_grid_thw") else v for k, v in inputs.items()}
    prompts = _prompt_batch(processor)
    rows_per_image = prompts["image_grid_thw"].prod(-1)
    counts = [len(sizes) for _, sizes in PROMPTS for _ in range(G)]  # images per row, in the original order
    firsts = np.cumsum([0] + counts[:-1])
    images = [int(firsts[row]) + k for row in order.tolist() for k in range(counts[row])]
    starts = torch.cat([torch.zeros(1, dtype=torch.long), rows_per_image.cumsum(0)[:-1]])
    inputs["pixel_values"] = torch.cat([prompts["pixel_values"][starts[i] : starts[i] + rows_per_image[i]] for i in images])
    inputs["image_grid_thw"] = prompts["image_grid_thw"][images]
    off = _logps_and_grads(model, inputs, completion[order], completion_mask[order])
    enable_shared_prompt(model)
    on = _logps_and_grads(model, inputs, completion[order], completion_mask[order])
    _assert_same(on, off)
    assert shared_prompt_stats(model).shared == 1


def _sample(model, inputs):
    """16 tokens sampled at temperature 1 with a fixed seed."""
    torch.manual_seed(123)
    with torch.no_grad():
        return model.generate(**inputs, do_sample=True, max_new_tokens=16, top_k=0, top_p=1.0, temperature=1.0)


def test_sampled_generation_gives_identical_tokens(model_and_processor):
    model, processor = model_and_processor
    model.eval()
    inputs = _prompt_batch(processor)

    off = _sample(model, inputs)
    enable_shared_prompt(model)
    on = _sample(model, inputs)
    assert torch.equal(on, off)
    stats = shared_prompt_stats(model)
    batch, length = inputs["input_ids"].shape
    assert stats.shared == 1 and stats.computed_tokens == 3 * length  # the prefill: 3 distinct prompts of 12 rows


def test_with_the_group_image_cache_and_lora(model_and_processor, tiny_dir):
    from peft import get_peft_model
    from trl import ModelConfig

    from vlm_grpo.modeling import lora_config

    model, processor = model_and_processor
    config = ModelConfig(model_name_or_path=str(tiny_dir), use_peft=True, lora_r=4, lora_dropout=0.0)
    model = get_peft_model(model, lora_config(config))
    model.train()
    for name, param in model.named_parameters():
        if "lora_B" in name:  # non-zero B so that LoRA changes the outputs and every adapter gets a gradient
            torch.nn.init.normal_(param, std=0.02)
    enable_group_image_cache(model)
    inputs, completion, completion_mask = _grpo_batch(processor)
    off = _logps_and_grads(model, inputs, completion, completion_mask)
    enable_shared_prompt(model)
    on = _logps_and_grads(model, inputs, completion, completion_mask)
    _assert_same(on, off)
    assert off[1] and all("lora_" in name for name in off[1])


def test_qwen2_vl_backbone(model_and_processor):
    """The other supported family: Qwen2-VL's backbone (no window attention, no second_per_grid_ts)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tiny, processor = model_and_processor
    tokens = {k: getattr(tiny.config, k) for k in
              ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")}
    text = tiny.config.text_config.to_dict()
    vision = {"depth": 2, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2, "hidden_size": text["hidden_size"]}
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text, vision_config=vision, **tokens))
    inputs, completion, completion_mask = _grpo_batch(processor)
    off = _logps_and_grads(model, inputs, completion, completion_mask)
    enable_shared_prompt(model)
    on = _logps_and_grads(model, inputs, completion, completion_mask)
    _assert_same(on, off)
    assert shared_prompt_stats(model).shared == 1


def test_disable_restores_the_plain_forward_and_state_dict(model_and_processor):
    model, _ = model_and_processor
    keys = list(model.state_dict())
    backbone = language_backbone(model)
    enable_shared_prompt(model)
    enable_shared_prompt(model)  # idempotent
    assert list(model.state_dict()) == keys and "forward" in vars(backbone)
    disable_shared_prompt(model)
    disable_shared_prompt(model)
    assert "forward" not in vars(backbone) and shared_prompt_stats(model) is None


def test_unsupported_calls_take_the_plain_path_and_say_so_once(model_and_processor, caplog):
    model, processor = model_and_processor
    inputs, _, _ = _grpo_batch(processor)
    enable_shared_prompt(model)
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    with caplog.at_level(logging.INFO, logger="vlm_grpo.speed.shared_prompt"), torch.no_grad():
        for _ in range(2):
            model.model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["group-shared prompt: plain forward for calls with inputs_embeds"]
    assert shared_prompt_stats(model).shared == 0


# ---- the plan ------------------------------------------------------------------------------------------------


def _keys(rows):
    return torch.tensor(rows), torch.ones(len(rows), len(rows[0]), dtype=torch.long)


def test_plan_splits_after_the_shared_prompt():
    keys, mask = _keys([[1, 2, 3, 7, 8], [1, 2, 3, 9, 9], [4, 5, 6, 7, 8], [4, 5, 6, 8, 8]])
    plan = plan_sharing(keys, mask, min_split=0, whole_rows=False)
    assert plan.split == 3 and plan.rows.tolist() == [0, 2] and plan.group_of_row.tolist() == [0, 0, 1, 1]


def test_plan_keeps_image_tokens_in_the_prefix_and_respects_the_mask():
    keys, mask = _keys([[1, 2, 3, 7], [1, 2, 5, 9]])
    assert plan_sharing(keys, mask, min_split=3, whole_rows=False) is None  # rows differ before the last image token
    keys, mask = _keys([[0, 2, 3, 7], [0, 2, 3, 9]])
    assert plan_sharing(keys, mask, min_split=0, whole_rows=False).split == 3
    mask[0, 0] = 0  # same ids, other padding: not the same prompt
    assert plan_sharing(keys, mask, min_split=0, whole_rows=False) is None


def test_plan_for_a_prefill_shares_whole_rows_only():
    keys, mask = _keys([[1, 2, 3], [1, 2, 3], [1, 2, 4]])
    plan = plan_sharing(keys, mask, min_split=0, whole_rows=True)
    assert plan.split == 3 and plan.rows.tolist() == [0, 2] and plan.group_of_row.tolist() == [0, 0, 1]
    assert plan_sharing(*_keys([[1, 2], [1, 3]]), min_split=0, whole_rows=True) is None


def test_active_dropout_takes_the_plain_path(model_and_processor, tiny_dir, caplog):
    from peft import get_peft_model
    from trl import ModelConfig

    from vlm_grpo.modeling import lora_config

    model, processor = model_and_processor
    model = get_peft_model(model, lora_config(ModelConfig(model_name_or_path=str(tiny_dir), use_peft=True, lora_r=4)))
    enable_shared_prompt(model)
    inputs, _, _ = _grpo_batch(processor)
    with caplog.at_level(logging.INFO, logger="vlm_grpo.speed.shared_prompt"), torch.no_grad():
        model.train()
        model(**inputs)  # lora_dropout 0.05: one mask per row, as the plain forward draws them
        model.eval()
        model(**inputs)  # no dropout in eval mode: shared
    assert shared_prompt_stats(model).shared == 1
    assert any("active dropout" in r.getMessage() for r in caplog.records)


# ---- under TRL -------------------------------------------------------------------------------------------------


def _image_cache(trainer):
    enable_group_image_cache(trainer.model, trainer.processing_class)
    enable_group_image_cache(trainer.ref_model)


def _image_cache_and_shared_prompt(trainer):
    _image_cache(trainer)
    enable_shared_prompt(trainer.model)
    enable_shared_prompt(trainer.ref_model)


def test_one_grpo_step_is_the_same_with_shared_prompts(tiny_dir, rec_data, tmp_path):
    from speed_helpers import one_grpo_step

    config = {"per_device_train_batch_size": 8, "learning_rate": 1e-2, "optim": "sgd"}  # SGD: update = -lr * grad
    loss_off, params_off, _ = one_grpo_step(tiny_dir, rec_data, tmp_path / "off", _image_cache, **config)
    loss_on, params_on, trainer = one_grpo_step(tiny_dir, rec_data, tmp_path / "on", _image_cache_and_shared_prompt,
                                                **config)
    policy, ref = shared_prompt_stats(trainer.model), shared_prompt_stats(trainer.ref_model)
    # the policy's generation prefill and training forward, the reference model's log-prob pass: 2 prompts x 4 rows
    assert policy.shared == 2 and ref.shared == 1
    assert ref.computed_tokens < ref.requested_tokens / 2
    assert loss_on == pytest.approx(loss_off, rel=RTOL, abs=1e-7)
    from vlm_grpo.modeling import load_model

    start = dict(load_model(str(tiny_dir), device="cpu").named_parameters())
    moved = 0
    for name, after in params_off.items():
        update_off, update_on = after - start[name].detach(), params_on[name] - start[name].detach()
        moved += bool(update_off.abs().max() > 0)
        assert float((update_on - update_off).norm()) <= 1e-4 * float(update_off.norm()) + 1e-9, name
    assert moved > len(params_off) // 2


DDP_WORKER = """
import sys
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, sys.argv[2])
from test_speed_prompt import _assert_same, _grpo_batch, _logps_and_grads
from vlm_grpo.modeling import load_model, load_processor
from vlm_grpo.speed import enable_shared_prompt, shared_prompt_stats

dist.init_process_group("gloo")
rank = dist.get_rank()
model, processor = load_model(sys.argv[1], device="cpu"), load_processor(sys.argv[1])
processor.tokenizer.padding_side = "left"
ddp = DistributedDataParallel(model)
inputs, completion, mask = _grpo_batch(processor, seed=rank)  # each rank its own completions
off = _logps_and_grads(ddp, inputs, completion, mask)
enable_shared_prompt(ddp)
on = _logps_and_grads(ddp, inputs, completion, mask)
_assert_same(on, off)  # gradients after DDP's all-reduce
assert shared_prompt_stats(ddp).shared == 1
print(f"rank {rank} ok", flush=True)
dist.destroy_process_group()
import os
os._exit(0)  # skip interpreter teardown: a C++ thread still joinable there aborts the process now and then
"""


def test_ddp_two_processes_gradients_match(tiny_dir, tmp_path):
    from pathlib import Path

    from speed_helpers import run_two_ranks

    run_two_ranks(tmp_path, DDP_WORKER, str(tiny_dir), str(Path(__file__).parent))
