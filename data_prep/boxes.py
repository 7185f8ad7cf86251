"""Pure box geometry used while packing: bounds checks, clipping and rescaling.

Boxes are ``[x1, y1, x2, y2]`` in pixels of an image of size ``(width, height)``;
pixel edges, so a box may touch ``x2 == width``.
"""

from __future__ import annotations

from collections.abc import Sequence

Box = list[float]


def overshoot(box: Sequence[float], size: tuple[int, int]) -> float:
    """How far (in pixels) the box reaches outside the image; 0 when it is inside.

    >>> overshoot([-2, 0, 10, 10], (8, 20))
    2
    """
    width, height = size
    x1, y1, x2, y2 = box
    return max(0, -x1, -y1, x2 - width, y2 - height)


def clip_box(box: Sequence[float], size: tuple[int, int]) -> Box:
    """Clip a box to the image bounds (it may become empty; callers validate afterwards).

    >>> clip_box([-1.5, 2, 12, 9], (10, 10))
    [0, 2, 10, 9]
    """
    width, height = size
    x1, y1, x2, y2 = box
    return [min(max(x1, 0), width), min(max(y1, 0), height), min(max(x2, 0), width), min(max(y2, 0), height)]


def scale_box(box: Sequence[float], from_size: tuple[int, int], to_size: tuple[int, int], ndigits: int = 2) -> Box:
    """Map a box from one image size to another (x and y scaled separately), rounded.

    Unchanged (same values, same types) when the sizes are equal; otherwise the result is
    rounded to ``ndigits`` and clipped to the new bounds so rounding cannot push it out.

    >>> scale_box([10, 20, 30, 40], (100, 100), (50, 25))
    [5.0, 5.0, 15.0, 10.0]
    """
    if tuple(from_size) == tuple(to_size):
        return list(box)
    sx = to_size[0] / from_size[0]
    sy = to_size[1] / from_size[1]
    x1, y1, x2, y2 = box
    scaled = [round(x1 * sx, ndigits), round(y1 * sy, ndigits), round(x2 * sx, ndigits), round(y2 * sy, ndigits)]
    return [float(v) for v in clip_box(scaled, to_size)]
