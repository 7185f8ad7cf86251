"""Box geometry and coordinate frames (pure functions on plain lists).

A box is ``[x1, y1, x2, y2]`` with ``x1 < x2`` and ``y1 < y2`` (pixel edges, no
+1). Solutions are stored in original pixels; a model answers in one of
:data:`BOX_FRAMES`:

- ``model_pixels`` (Qwen2.5-VL): pixels of the image as resized by the
  processor, ``model_image_size = [w', h']``: ``x = x' * w / w'``.
- ``norm1000`` (Qwen2-VL, Qwen3-VL): 0..1000 of the image: ``x = x' * w / 1000``.
- ``original_pixels``: pixels of the original image ``image_size = [w, h]``.

Boxes are not clipped to the image: area outside it counts in the union, so a
box that spills out of the image is penalised like any other excess.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

BoxFrame = Literal["model_pixels", "norm1000", "original_pixels"]
BOX_FRAMES: tuple[str, ...] = ("model_pixels", "norm1000", "original_pixels")

MAX_COORDINATE = 1e6
"""Largest absolute box coordinate that counts as a box. No image the processors accept
has a side near it (Pillow's pixel limit and the aspect-ratio limit of 200 cap a side at
about 134,000 px), and a bound keeps every product of a coordinate and a frame's scale
finite: ``[0, 0, 1e308, 1e308]`` would otherwise become ``inf`` in original pixels."""


def is_coordinate(value: Any) -> bool:
    """A number (not bool) that is finite and at most :data:`MAX_COORDINATE` in size.

    >>> is_coordinate(640.5), is_coordinate(1e308), is_coordinate(float("nan")), is_coordinate(10**400)
    (True, False, False, False)
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value) and abs(value) <= MAX_COORDINATE
    except OverflowError:  # an int too large for a float
        return False


def is_valid_box(box: Sequence[float] | None) -> bool:
    """Four coordinates (:func:`is_coordinate`) with ``x2 > x1`` and ``y2 > y1``.

    >>> is_valid_box([0, 0, 10, 10]), is_valid_box([5, 0, 5, 10]), is_valid_box([0, 0, 1e308, 1e308])
    (True, False, False)
    """
    if box is None or len(box) != 4:
        return False
    if not all(is_coordinate(v) for v in box):
        return False
    return box[2] > box[0] and box[3] > box[1]


def area(box: Sequence[float]) -> float:
    """Area of a box, 0.0 when degenerate."""
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes in the same frame; 0.0 if either is degenerate.

    >>> iou([0, 0, 10, 10], [5, 0, 15, 10])  # overlap 50, union 150
    0.3333333333333333
    >>> iou([0, 0, 10, 10], [0, 0, 10, 10]), iou([0, 0, 1, 1], [2, 2, 3, 3])
    (1.0, 0.0)
    """
    if not (is_valid_box(a) and is_valid_box(b)):
        return 0.0
    inter = area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])
    union = area(a) + area(b) - inter
    return min(1.0, inter / union) if union > 0 else 0.0


def _size(size: Any, what: str) -> tuple[float, float]:
    if size is None:
        raise ValueError(f"{what} is required for this box frame but is missing")
    try:
        width, height = (float(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be [width, height], got {size!r}") from None
    if not (width > 0 and height > 0 and math.isfinite(width) and math.isfinite(height)):
        raise ValueError(f"{what} must be positive, got {size!r}")
    return width, height


def _scale(frame: str, image_size: Any, model_image_size: Any) -> tuple[float, float]:
    """Factors (sx, sy) that map the frame's coordinates to original pixels."""
    if frame == "original_pixels":
        return 1.0, 1.0
    width, height = _size(image_size, "image_size")
    if frame == "norm1000":
        return width / 1000.0, height / 1000.0
    if frame == "model_pixels":
        model_width, model_height = _size(model_image_size, "model_image_size")
        return width / model_width, height / model_height
    raise ValueError(f"unknown box_frame {frame!r}; expected one of {', '.join(BOX_FRAMES)}")


def to_original_pixels(
    box: Sequence[float], frame: str, image_size: Any = None, model_image_size: Any = None
) -> list[float]:
    """Convert a box from ``frame`` to original pixels.

    ``image_size`` ([w, h] of the original image) is needed by ``norm1000`` and
    ``model_pixels``; ``model_image_size`` by ``model_pixels``. A missing size
    or an unknown frame raises ``ValueError`` (a data bug, not a model error).

    >>> to_original_pixels([100, 50, 200, 100], "model_pixels", [640, 480], [320, 240])
    [200.0, 100.0, 400.0, 200.0]
    >>> to_original_pixels([0, 0, 500, 1000], "norm1000", [640, 480])
    [0.0, 0.0, 320.0, 480.0]
    """
    sx, sy = _scale(frame, image_size, model_image_size)
    return [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]


def from_original_pixels(
    box: Sequence[float], frame: str, image_size: Any = None, model_image_size: Any = None
) -> list[float]:
    """Inverse of :func:`to_original_pixels`: original pixels to ``frame`` (floats, not rounded).

    >>> from_original_pixels([200, 100, 400, 200], "model_pixels", [640, 480], [320, 240])
    [100.0, 50.0, 200.0, 100.0]
    """
    sx, sy = _scale(frame, image_size, model_image_size)
    return [box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy]


def resolve_frame(box_frame: str | None, model_image_size: Any) -> str:
    """The frame of a sample; when ``box_frame`` is missing: ``model_pixels`` if the
    sample has a ``model_image_sizes`` entry, else ``original_pixels``.

    >>> resolve_frame(None, [320, 240]), resolve_frame(None, None), resolve_frame("norm1000", None)
    ('model_pixels', 'original_pixels', 'norm1000')
    """
    if box_frame is None:
        return "model_pixels" if model_image_size is not None else "original_pixels"
    if box_frame not in BOX_FRAMES:
        raise ValueError(f"unknown box_frame {box_frame!r}; expected one of {', '.join(BOX_FRAMES)}")
    return box_frame


def first_size(sizes: Any) -> Any:
    """The first image's ``[w, h]`` from a per-sample ``image_sizes`` entry.

    Accepts a list of sizes (one per image) or a single ``[w, h]``; ``None`` stays ``None``.

    >>> first_size([[640, 480], [10, 10]]), first_size([640, 480]), first_size(None)
    ([640, 480], [640, 480], None)
    """
    if sizes is None or len(sizes) == 0:
        return None
    if isinstance(sizes[0], (int, float)):
        return sizes
    return sizes[0]
