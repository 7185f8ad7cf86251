"""Batched generation for image + question prompts through the processor's chat template."""

from __future__ import annotations

import dataclasses

import torch
from PIL import Image


def user_message(question: str, num_images: int = 1) -> list[dict]:
    """A one-turn conversation: the image placeholders, then the question text."""
    content = [{"type": "image"} for _ in range(num_images)]
    content.append({"type": "text", "text": question})
    return [{"role": "user", "content": content}]


@dataclasses.dataclass
class Generation:
    """Completions for one batch: ``texts[i]`` answers prompt ``i // num_return_sequences``."""

    texts: list[str]
    prompt_tokens: list[int]  # prompt length of each input row, image tokens included
    completion_tokens: list[int]


@torch.no_grad()
def generate(
    model,
    processor,
    conversations: list[list[dict]],
    images: list[list[Image.Image]],
    *,
    max_new_tokens: int = 128,
    do_sample: bool = False,
    temperature: float = 1.0,
    num_return_sequences: int = 1,
    seed: int | None = None,
    tools: list | None = None,
) -> Generation:
    """Generate for a batch of conversations, each with its own list of images (left-padded batch); ``tools``
    (callables) are listed in the prompt by the chat template."""
    texts = [processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False, tools=tools or None)
             for c in conversations]
    flat_images = [img for per_prompt in images for img in per_prompt] or None
    inputs = processor(text=texts, images=flat_images, return_tensors="pt", padding=True, padding_side="left")
    inputs = inputs.to(model.device)
    if seed is not None:
        torch.manual_seed(seed)
    tokenizer = processor.tokenizer
    sampling = {"temperature": temperature, "top_k": 0, "top_p": 1.0} if do_sample else {}
    out = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        num_return_sequences=num_return_sequences,
        pad_token_id=tokenizer.pad_token_id,
        **sampling,
    )
    prompt_len = inputs["input_ids"].shape[1]
    completion_ids = out[:, prompt_len:]
    stop_ids = _stop_ids(model, tokenizer)
    lengths = [_completion_length(row, stop_ids) for row in completion_ids.tolist()]
    decoded = tokenizer.batch_decode(
        [row[:n] for row, n in zip(completion_ids.tolist(), lengths)], skip_special_tokens=True
    )
    prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
    return Generation(texts=decoded, prompt_tokens=prompt_tokens, completion_tokens=lengths)


def _stop_ids(model, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    ids.add(tokenizer.pad_token_id)
    return {i for i in ids if i is not None}


def _completion_length(row: list[int], stop_ids: set[int]) -> int:
    """Tokens up to and including the first stop token (the rest is padding)."""
    for i, token in enumerate(row):
        if token in stop_ids:
            return i + 1
    return len(row)
