"""Example visual reward: does the predicted box hold the colour the problem names?

For a problem such as "the red circle", the reward compares the predicted box
with the pixels of the image whose colour is nearest to "red" in a small
palette, and returns their F1:

    precision = named-colour pixels inside the box / pixels inside the box
    recall    = named-colour pixels inside the box / named-colour pixels in the image
    reward    = 2 * precision * recall / (precision + recall)

so a tight box around the only red shape scores close to 1 (a disc in its
bounding box: about 0.88), a tiny box inside it scores low (poor recall), and
a box on a blue shape scores 0. It needs no ``solution``: it scores what the
model points at against the image itself. Written for synthetic shape images
(flat colours); photos need a better colour model.

Columns used per sample: ``images`` (a list of PIL images; the first is used),
``problem`` (the colour word), and the REC box columns (``image_sizes``,
``model_image_sizes``, ``box_frame``) to convert the box to original pixels.
Returns ``None`` when the problem names no palette colour or the sample has no
image, 0.0 when the answer has no valid box.

Use it next to IoU: ``reward_funcs: [format, iou, rewards.examples.colour_match:colour_match]``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from rewards.columns import iter_samples
from rewards.parsing import completion_text
from rewards.tasks import TASKS

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 220, 30),
    "orange": (245, 140, 20),
    "purple": (130, 50, 170),
    "pink": (245, 130, 190),
    "brown": (130, 80, 30),
    "black": (15, 15, 15),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
}
_ALIASES = {"grey": "gray", "violet": "purple"}
_WORD = re.compile(r"\b(" + "|".join([*PALETTE, *_ALIASES]) + r")\b", re.IGNORECASE)
_MAX_SIDE = 128  # colour masks are computed on a downscaled copy


def colour_word(problem: Any) -> str | None:
    """The first palette colour named in ``problem``.

    >>> colour_word("Where is the Grey square?")
    'gray'
    """
    match = _WORD.search(problem) if isinstance(problem, str) else None
    if match is None:
        return None
    word = match.group(1).lower()
    return _ALIASES.get(word, word)


def colour_mask(image: Image.Image, colour: str) -> tuple[np.ndarray, float]:
    """Pixels (of a copy at most ``_MAX_SIDE`` wide/high) nearest to ``colour``, and the scale used."""
    scale = min(1.0, _MAX_SIDE / max(image.size))
    small = image.convert("RGB")
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        small = small.resize(size, Image.NEAREST)
    pixels = np.asarray(small, dtype=np.float32)
    palette = np.asarray(list(PALETTE.values()), dtype=np.float32)
    nearest = ((pixels[:, :, None, :] - palette) ** 2).sum(axis=-1).argmin(axis=-1)
    return nearest == list(PALETTE).index(colour), scale


def box_f1(mask: np.ndarray, box: Sequence[float]) -> float:
    """F1 between a box (in mask pixels) and a boolean mask.

    >>> mask = np.zeros((10, 10), bool); mask[2:6, 2:6] = True
    >>> box_f1(mask, [2, 2, 6, 6]), round(box_f1(mask, [0, 0, 10, 10]), 3)
    (1.0, 0.276)
    """
    height, width = mask.shape
    x1, y1 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
    x2, y2 = min(width, int(round(box[2]))), min(height, int(round(box[3])))
    total = int(mask.sum())
    if x2 <= x1 or y2 <= y1 or total == 0:
        return 0.0
    inside = int(mask[y1:y2, x1:x2].sum())
    if inside == 0:
        return 0.0
    precision, recall = inside / ((x2 - x1) * (y2 - y1)), inside / total
    return 2 * precision * recall / (precision + recall)


def colour_match(completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """F1 between the predicted box and the pixels of the colour named in ``problem``.

    >>> image = Image.new("RGB", (200, 100), "white")
    >>> image.paste((220, 30, 30), (20, 20, 60, 60)); image.paste((30, 70, 220), (120, 20, 180, 80))
    >>> colour_match(["<answer>[20, 20, 60, 60]</answer>", "<answer>[120, 20, 180, 80]</answer>"],
    ...              images=[[image]] * 2, problem=["the red square"] * 2, box_frame=["original_pixels"] * 2)
    [1.0, 0.0]
    """
    scores: list[float | None] = []
    masks: dict[tuple[int, str], tuple[np.ndarray, float]] = {}  # the G completions share an image
    for completion, sample in zip(completions, iter_samples(completions, columns)):
        colour = colour_word(sample.get("problem"))
        images = sample.get("images") or []
        if colour is None or not images:
            scores.append(None)
            continue
        image = images[0]
        if not isinstance(image, Image.Image):
            raise TypeError(f"colour_match needs PIL images in the images column, got {type(image).__name__}")
        sample.setdefault("image_sizes", [list(image.size)])
        box = TASKS["rec"].parse(completion_text(completion), **sample)
        if box is None:
            scores.append(0.0)
            continue
        key = (id(image), colour)
        if key not in masks:
            masks[key] = colour_mask(image, colour)
        mask, scale = masks[key]
        scores.append(box_f1(mask, [v * scale for v in box]))
    return scores
