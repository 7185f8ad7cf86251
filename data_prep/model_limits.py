"""What the chat templates and image processors of the supported model families accept.

A record that packs must also train: :func:`~data_prep.packed.validate_record` (run by
prep on every record and by ``load_packed`` on every line) checks it against these
limits, so a question holding ``<|image_pad|>`` or a 4000x12 image is refused with the
record's id instead of stopping training with transformers' own message, which names no
record. The supported families are those of ``vlm_grpo.modeling.FAMILIES``: Qwen2-VL and
Qwen2.5-VL, which share one tokenizer vocabulary and one image processor.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

#: The special tokens of the Qwen2-VL and Qwen2.5-VL chat templates: the added special tokens of
#: the released tokenizers (``Qwen/Qwen2-VL-*-Instruct``, ``Qwen/Qwen2.5-VL-*-Instruct``,
#: ``added_tokens_decoder`` ids 151643-151656, the same set in both families; the tiny model,
#: ``vlm_grpo.tiny.SPECIAL_TOKENS``, has exactly these). In a text field they are not text:
#: the processor expands ``<|image_pad|>`` into image features (and fails when the counts
#: differ), ``<|im_start|>`` / ``<|im_end|>`` cut the conversation, ``<|endoftext|>`` is the
#: pad token.
TEMPLATE_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: Largest ``max(w, h) / min(w, h)`` the image processors resize: Qwen2-VL's ``smart_resize``
#: (``transformers.models.qwen2_vl.image_processing_qwen2_vl``, also used by Qwen2.5-VL) raises
#: "absolute aspect ratio must be smaller than 200" above it. Small and large images are
#: otherwise fine: ``smart_resize`` scales them into ``[min_pixels, max_pixels]``, and prep
#: refuses images over Pillow's decompression-bomb limit before decoding them.
MAX_ASPECT_RATIO = 200

#: Pixels of one merged image token (14 px patches merged 2x2): the least ``min_pixels`` and
#: ``--max-pixels`` that make sense; below it ``smart_resize`` can return a 0x0 size.
TOKEN_PIXELS = 28 * 28

#: The largest ``max_pixels`` the project accepts: Qwen2.5-VL's own default (16,384 image
#: tokens, 12,845,056 pixels); above it one image alone fills the model's context.
MAX_PROCESSOR_PIXELS = 16384 * TOKEN_PIXELS


def special_token_in(text: str) -> str | None:
    """The first special token of :data:`TEMPLATE_SPECIAL_TOKENS` found in ``text``, or None.

    >>> special_token_in("where is <|image_pad|> the cat"), special_token_in("<image> <answer>")
    ('<|image_pad|>', None)
    """
    if "<|" not in text:
        return None
    return next((token for token in TEMPLATE_SPECIAL_TOKENS if token in text), None)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def text_problem(problem: Any, solution: Any, thinking: Any = None) -> str | None:
    """Why the text that reaches the chat template (the question; a text solution and
    ``meta.thinking``, which SFT trains on) cannot go there, or None."""
    for field, value in (("problem", problem), ("solution", solution), ("meta.thinking", thinking)):
        for text in _strings(value):
            token = special_token_in(text)
            if token:
                return (
                    f"{field} contains {token!r}, a special token of the Qwen2-VL/Qwen2.5-VL chat template "
                    "(data_prep.model_limits.TEMPLATE_SPECIAL_TOKENS): the processor would read it as an image "
                    "placeholder or a turn boundary and training would stop. Remove it from the source"
                )
    return None


def image_size_problem(width: int, height: int) -> str | None:
    """Why the image processors refuse an image of ``width x height`` pixels, or None.

    >>> image_size_problem(4000, 12)[:40], image_size_problem(400, 2)
    ('is 4000x12 (aspect ratio 333:1); the Qwe', None)
    """
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        return (
            f"is {width}x{height} (aspect ratio {ratio:.0f}:1); the Qwen2-VL/Qwen2.5-VL image processors refuse "
            f"ratios over {MAX_ASPECT_RATIO}:1 (data_prep.model_limits.MAX_ASPECT_RATIO). Crop or pad the image"
        )
    return None
