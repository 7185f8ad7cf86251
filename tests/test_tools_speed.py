"""Both speed features on multi-turn batches whose rows diverge: a group shares its first image and prompt,
then its rows make 0, 1 and 2 zoom_in calls (crops of different sizes inside the completions, turns of
different lengths). On and off give the same log-probs and gradients (tiny model, fp32, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from test_speed_prompt import _assert_same  # logps within 1e-6, every gradient within RTOL = 1e-5
from vlm_grpo.speed import enable_group_image_cache, enable_shared_prompt
from vlm_grpo.tools import ZoomEnvironment, ZoomLimits, prepare_processor


def _noise(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture()
def model_and_processor(tiny_dir):
    from vlm_grpo.modeling import family_of, load_model, load_processor

    processor = load_processor(str(tiny_dir))
    model = load_model(str(tiny_dir), device="cpu")
    prepare_processor(processor, family_of(model.config))
    return model, processor


def _call(box):
    return {"type": "function", "function": {"name": "zoom_in", "arguments": {"bbox_2d": box}}}


def _rollout(image, boxes: list, limits: ZoomLimits, answer: str) -> tuple[list[dict], list]:
    """The messages after the prompt of a rollout that zooms on ``boxes`` (one call per turn), and its crops."""
    env = ZoomEnvironment(limits)
    env.reset(images=[image], image_sizes=[list(image.size)], model_image_sizes=[[112, 84]], box_frame="model_pixels")
    messages, crops = [], []
    for box in boxes:
        content = env.zoom_in(box)
        crops.append(content[0]["image"])
        messages += [{"role": "assistant", "content": "", "tool_calls": [_call(box)]},
                     {"role": "tool", "name": "zoom_in", "content": content}]
    messages.append({"role": "assistant", "content": f"<think>seen</think><answer>{answer}</answer>"})
    return messages, crops


def diverging_batch(processor, tools) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Two groups of three rows as TRL's training forward gets them: the prompt (left-padded, shared in a
    group), then completions with 0, 1 and 2 tool calls (right-padded), every image in row order."""
    limits = ZoomLimits.of(processor)
    groups = [(_noise(224, 168, 1), "where is the dot?"), (_noise(168, 224, 2), "what colour is the square?")]
    plans = [[], [[10, 10, 60, 50]], [[0, 0, 30, 30], [50, 20, 111, 83]]]
    prompts, completions, images = [], [], []
    for image, question in groups:
        user = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]
        prompt_ids = processor.apply_chat_template(user, tools=tools, add_generation_prompt=True, tokenize=True,
                                                   return_dict=True)["input_ids"][0]
        for k, boxes in enumerate(plans):
            messages, crops = _rollout(image, boxes, limits, ["red", "blue", "green"][k])
            full = processor.apply_chat_template(user + messages, tools=tools, tokenize=True,
                                                 return_dict=True)["input_ids"][0]
            assert full[: len(prompt_ids)] == prompt_ids  # prefix-preserving template
            prompts.append(prompt_ids)
            completions.append(full[len(prompt_ids):])
            images += [image, *crops]
    pad = processor.tokenizer.pad_token_id
    width_p, width_c = max(map(len, prompts)), max(map(len, completions))
    prompt = torch.tensor([[pad] * (width_p - len(p)) + p for p in prompts])
    prompt_mask = torch.tensor([[0] * (width_p - len(p)) + [1] * len(p) for p in prompts])
    completion = torch.tensor([c + [pad] * (width_c - len(c)) for c in completions])
    completion_mask = torch.tensor([[1] * len(c) + [0] * (width_c - len(c)) for c in completions])
    input_ids = torch.cat([prompt, completion], 1)
    pixels = processor.image_processor(images=images, return_tensors="pt")
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    inputs = {"input_ids": input_ids, "attention_mask": torch.cat([prompt_mask, completion_mask], 1),
              "mm_token_type_ids": (input_ids == image_pad).long(),
              "pixel_values": pixels["pixel_values"], "image_grid_thw": pixels["image_grid_thw"]}
    return inputs, completion, completion_mask


def _images_of(processor) -> dict:
    """The pixels of rows that zoom nowhere: each one's own image (groups 1 and 2 of :func:`diverging_batch`),
    twice."""
    images = [_noise(224, 168, 1), _noise(224, 168, 1), _noise(168, 224, 2), _noise(168, 224, 2)]
    pixels = processor.image_processor(images=images, return_tensors="pt")
    return {"pixel_values": pixels["pixel_values"], "image_grid_thw": pixels["image_grid_thw"]}


def _logps_and_grads(model, inputs, completion, completion_mask):
    model.zero_grad()
    width = completion.shape[1]
    logits = model(**inputs, use_cache=False).logits[:, -width - 1 : -1]
    logps = logits.log_softmax(-1).gather(-1, completion.unsqueeze(-1)).squeeze(-1) * completion_mask
    logps.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logps.detach(), grads


@pytest.mark.parametrize("feature", [pytest.param("group_image_cache", marks=pytest.mark.slow),
                                     pytest.param("group_shared_prompt", marks=pytest.mark.slow), "both"])
def test_diverging_groups_match_the_plain_path(model_and_processor, feature):
    model, processor = model_and_processor
    model.train()
    env = ZoomEnvironment(ZoomLimits.of(processor))
    inputs, completion, completion_mask = diverging_batch(processor, [env.zoom_in])
    assert int(inputs["image_grid_thw"].shape[0]) == 2 * (1 + 2 + 3)  # each row: its image, then its crops
    off = _logps_and_grads(model, inputs, completion, completion_mask)
    if feature in ("group_image_cache", "both"):
        enable_group_image_cache(model, processor)
    if feature in ("group_shared_prompt", "both"):
        enable_shared_prompt(model)
    on = _logps_and_grads(model, inputs, completion, completion_mask)
    _assert_same(on, off)


def test_what_the_features_share_on_diverging_groups(model_and_processor):
    """The image cache encodes each group's shared image once; the shared prompt runs the prompt once per group
    when no image follows it, and takes the plain path (exact) when crops sit in the completions."""
    from vlm_grpo.speed import cache_stats, shared_prompt_stats

    model, processor = model_and_processor
    env = ZoomEnvironment(ZoomLimits.of(processor))
    inputs, _, _ = diverging_batch(processor, [env.zoom_in])
    enable_group_image_cache(model, processor)
    enable_shared_prompt(model)
    with torch.no_grad():
        model(**inputs, use_cache=False)
    images = cache_stats(model)
    assert (images.requested, images.encoded) == (12, 2 + 6)  # each group's image once, every crop
    prompts = shared_prompt_stats(model)
    assert (prompts.calls, prompts.shared) == (1, 0)  # an image token after the prompt: nothing shared
    # without tool calls, the rows of each group share their prompt
    with torch.no_grad():
        model(input_ids=inputs["input_ids"][[0, 0, 3, 3]], attention_mask=inputs["attention_mask"][[0, 0, 3, 3]],
              use_cache=False, **_images_of(processor))
    assert shared_prompt_stats(model).shared == 1
