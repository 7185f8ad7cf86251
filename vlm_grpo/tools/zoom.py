"""The ``zoom_in`` tool: crop a region of the original full-resolution image and show it to the model.

DeepEyes-style "thinking with images": the policy sees the image at its (low) ``max_pixels``, names a box
in its family's frame, and gets back that region of the *original* image, upscaled to the processor's
pixel bounds, as a new image in the conversation.

:class:`ZoomEnvironment` is what TRL's ``GRPOTrainer(environment_factory=...)`` builds once per rollout:
``reset(**row)`` receives the trainer row (its ``images``, ``image_sizes``, ``model_image_sizes`` and
``box_frame``), and its one public method, :meth:`ZoomEnvironment.zoom_in`, is the tool (TRL reads its
name, type hints and docstring into the tool schema the prompt lists). Evaluation calls the same class
(:mod:`vlm_grpo.tools.rollout`), so training and evaluation crop alike.

A bad call never stops a run: an unparsable or out-of-range box, an empty or inverted one, a call past
``max_calls`` or past the rollout's image-token budget raises :class:`ToolError`, whose message TRL
returns to the model as the tool's response (``{'error': '...'}``) and counts in
``tools/failure_frequency``. What is clamped rather than refused: a box partly outside the image (cut to
the image) and a box smaller than ``min_side`` original pixels (grown around its centre).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from rewards.boxes import is_coordinate, resolve_frame, to_original_pixels


class ToolError(ValueError):
    """A tool call the tool refuses; the message is what the model reads back."""


@dataclasses.dataclass(frozen=True)
class ZoomLimits:
    """The limits of one rollout's zooms and the processor's resize rule.

    Fields:
        max_calls: tool calls per rollout (the next call is refused with an error text).
        max_image_tokens: image tokens per rollout, the prompt's images included; a crop is shrunk to fit
            what is left, and refused when not even ``min_pixels`` fits.
        min_side: the smallest crop side in original pixels (a smaller box grows around its centre).
        factor: side in pixels of one language-model image token (``patch_size * merge_size``).
        min_pixels, max_pixels: the processor's resize bounds; a crop is upscaled to ``max_pixels``.
    """

    max_calls: int = 3
    max_image_tokens: int = 1024
    min_side: int = 28
    factor: int = 28
    min_pixels: int = 56 * 56
    max_pixels: int = 224 * 224

    def __post_init__(self) -> None:
        if self.max_calls < 1:
            raise ValueError(f"max_tool_calls must be at least 1, got {self.max_calls}")
        if self.max_image_tokens < 1:
            raise ValueError(f"max_image_tokens must be at least 1, got {self.max_image_tokens}")

    @classmethod
    def of(cls, processor, max_calls: int = 3, max_image_tokens: int = 1024) -> ZoomLimits:
        """The limits with ``processor``'s token size and pixel bounds."""
        from vlm_grpo.processing import pixel_bounds

        image_processor = processor.image_processor
        low, high = pixel_bounds(processor)
        factor = image_processor.patch_size * image_processor.merge_size
        return cls(max_calls=max_calls, max_image_tokens=max_image_tokens, min_side=factor, factor=factor,
                   min_pixels=low, max_pixels=high)

    def tokens(self, width: int, height: int) -> int:
        """Image tokens of a ``width`` x ``height`` image after the processor's resize."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        h, w = smart_resize(height, width, factor=self.factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        return (h // self.factor) * (w // self.factor)


def parse_box(bbox_2d: Any) -> list[float]:
    """Four finite numbers ``[x1, y1, x2, y2]`` with ``x2 > x1`` and ``y2 > y1``, or :class:`ToolError`.

    >>> parse_box([1, 2, 30, 40])
    [1.0, 2.0, 30.0, 40.0]
    >>> parse_box([30, 2, 1, 40])
    Traceback (most recent call last):
    ...
    vlm_grpo.tools.zoom.ToolError: zoom_in: bbox_2d [30, 2, 1, 40] is empty or inverted (need x2 > x1 and y2 > y1)
    """
    if isinstance(bbox_2d, dict):  # {"x1": ..} or {"bbox_2d": [...]} nested once: say what is expected
        raise ToolError(f"zoom_in: bbox_2d must be a list [x1, y1, x2, y2], got an object {bbox_2d!r}")
    if not isinstance(bbox_2d, (list, tuple)) or len(bbox_2d) != 4 or not all(is_coordinate(v) for v in bbox_2d):
        raise ToolError(f"zoom_in: bbox_2d must be four numbers [x1, y1, x2, y2], got {bbox_2d!r}")
    x1, y1, x2, y2 = (float(v) for v in bbox_2d)
    if not (x2 > x1 and y2 > y1):
        raise ToolError(f"zoom_in: bbox_2d {list(bbox_2d)!r} is empty or inverted (need x2 > x1 and y2 > y1)")
    return [x1, y1, x2, y2]


def crop_region(box: Sequence[float], image_size: Sequence[int], min_side: int) -> list[int]:
    """``box`` (original pixels) cut to the image and grown to ``min_side`` around its centre, as integer
    pixel edges; a box wholly outside the image is a :class:`ToolError`.

    >>> crop_region([-10, -10, 50, 50], [100, 100], 28)
    [0, 0, 50, 50]
    >>> crop_region([40, 40, 42, 42], [100, 100], 28)
    [27, 27, 55, 55]
    >>> crop_region([95, 95, 120, 99], [100, 100], 28)
    [72, 72, 100, 100]
    """
    width, height = int(image_size[0]), int(image_size[1])
    x1, y1, x2, y2 = max(box[0], 0.0), max(box[1], 0.0), min(box[2], float(width)), min(box[3], float(height))
    if not (x2 > x1 and y2 > y1):
        raise ToolError(f"zoom_in: the box lies outside the image ({width}x{height} pixels originally)")
    edges = []
    for low, high, size in ((x1, x2, width), (y1, y2, height)):
        side = min(max(high - low, float(min_side)), float(size))
        centre = (low + high) / 2
        start = min(max(centre - side / 2, 0.0), size - side)
        edges.append((int(math.floor(start)), int(math.floor(start)) + int(math.ceil(side))))
    (left, right), (top, bottom) = edges
    return [left, top, min(right, width), min(bottom, height)]


def upscaled_size(width: int, height: int, limits: ZoomLimits, budget: int) -> tuple[int, int] | None:
    """The size a ``width`` x ``height`` crop is resized to: the aspect kept, its area ``max_pixels`` (so the
    processor keeps every pixel), shrunk until its tokens fit ``budget``; ``None`` when not even the
    processor's smallest image fits."""
    scale = math.sqrt(limits.max_pixels / (width * height))
    while True:
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        if limits.tokens(w, h) <= budget:
            return w, h
        if w * h <= limits.min_pixels:
            return None
        scale *= 0.85


@dataclasses.dataclass
class ZoomCall:
    """One call of ``zoom_in`` in a rollout: the box as given, the crop in original pixels, the outcome."""

    bbox_2d: Any
    label: str | None
    region: list[int] | None = None
    image_tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class ZoomEnvironment:
    """One rollout's zoom tool (TRL's ``environment_factory`` builds one per rollout, then resets it per row)."""

    def __init__(self, limits: ZoomLimits | None = None) -> None:
        self._limits = limits or ZoomLimits()
        self._image = None
        self._row: dict = {}
        self.calls: list[ZoomCall] = []
        self._tokens_used = 0

    def reset(self, **row: Any) -> None:
        """Start a rollout on ``row`` (a trainer row: ``images``, ``image_sizes``, ``model_image_sizes``,
        ``box_frame``). Returns ``None``: the prompt is the row's own."""
        images = row.get("images") or []
        self._image = images[0] if images else None
        self._row = {"image_sizes": row.get("image_sizes"), "model_image_sizes": row.get("model_image_sizes"),
                     "box_frame": row.get("box_frame")}
        self.calls = []
        # the prompt's images count against the rollout's image-token budget
        self._tokens_used = sum(self._limits.tokens(*image.size) for image in images)
        return None

    def zoom_in(self, bbox_2d: list[float], label: str | None = None) -> list:
        """Zoom in on a region of the image, to see it at full resolution.

        Args:
            bbox_2d: The region [x1, y1, x2, y2], in the coordinates of a box answer.
            label: What is there (optional).
        """
        call = ZoomCall(bbox_2d=bbox_2d, label=label)
        self.calls.append(call)
        try:
            image, call.region, call.image_tokens = self._crop(bbox_2d, len(self.calls))
        except ToolError as err:
            call.error = str(err)
            raise
        self._tokens_used += call.image_tokens
        x1, y1, x2, y2 = call.region
        return [{"type": "image", "image": image}, {"type": "text", "text": f"zoom_in {x1} {y1} {x2} {y2}"}]

    def _crop(self, bbox_2d: Any, number: int):
        limits = self._limits
        if number > limits.max_calls:
            raise ToolError(f"zoom_in: no calls left ({limits.max_calls} per answer); answer from what you have seen")
        if self._image is None:
            raise ToolError("zoom_in: this sample has no image")
        box = parse_box(bbox_2d)
        sizes, model_sizes = self._row["image_sizes"], self._row["model_image_sizes"]
        image_size = list(sizes[0]) if sizes else list(self._image.size)
        model_size = list(model_sizes[0]) if model_sizes else None
        frame = resolve_frame(self._row["box_frame"], model_size)
        original = to_original_pixels(box, frame, image_size, model_size)
        # a stored image may differ in size from image_sizes (prep resized it): scale to the pixels held
        sx, sy = self._image.size[0] / image_size[0], self._image.size[1] / image_size[1]
        region = crop_region([original[0] * sx, original[1] * sy, original[2] * sx, original[3] * sy],
                             self._image.size, limits.min_side)
        budget = limits.max_image_tokens - self._tokens_used
        size = upscaled_size(region[2] - region[0], region[3] - region[1], limits, budget)
        if size is None:
            raise ToolError(f"zoom_in: the image-token budget of this answer ({limits.max_image_tokens}) is spent; "
                            "answer from what you have seen")
        from PIL import Image

        crop = self._image.crop(tuple(region)).resize(size, Image.Resampling.BICUBIC)
        return crop, region, limits.tokens(*size)
