"""Deterministic synthetic tasks for tests, benchmarks and the offline demo.

Tasks:

* ``rec``: coloured shapes on a plain or noisy background; the problem is a referring
  phrase such as ``"the red circle"`` that matches exactly one shape (no distractor has
  both that colour and that kind), and the solution is that shape's tight box
  ``[x1, y1, x2, y2]`` in pixels (pixel edges: a shape covering columns 3..9 gives
  ``x1 = 3, x2 = 10``), measured from the drawn pixels.
* ``count``: several shapes; "How many red shapes are there?" -> an integer (may be 0).
* ``math``: ``"a + b = ?"`` rendered with Pillow's default font; the answer is a string.
* ``det``: several shapes; "Locate every circle in the image." -> every circle's box with the
  label ``circle`` (``[]`` when there is none: about :data:`NO_TARGET_SHARE` of the images
  hold no shape of the asked kind, more by chance).
* ``point``: the ``rec`` scene; the solution is the referent's box and the model answers a
  point inside it.
* ``zoom``: one shape of a colour outside ``colors`` with a dot of one of ``colors`` at its centre,
  drawn at ``image_size`` and then enlarged ``zoom_scale`` times (so at a ``max_pixels`` of
  ``image_size`` the policy sees the ``rec`` layout, and the dot, a quarter of the shape's side, covers a
  few of its pixels blended with the shape); "What colour is the dot inside the circle?" ->
  ``{"answer": colour, "box": the shape's box}`` in the enlarged image's pixels. A crop of that box at
  full resolution shows the dot plainly.

Everything about the images is configurable through :class:`SyntheticConfig`
(size, number of shapes, kinds, colours, size range, grid snapping, background).
With ``grid=28`` each shape is centred in its own 28x28 cell, matching the merged
14-px patches of Qwen2.5-VL, which makes localisation learnable by a tiny model.

Sample ``i`` depends only on ``(task, seed, i, config)``, so ``generate(t, 10, s)`` is
a prefix of ``generate(t, 20, s)`` and runs are reproducible across machines.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from data_prep.items import Rejected, SourceItem
from data_prep.packed import PrepError

TASKS = ("rec", "count", "math", "det", "point", "zoom")
#: det: the share of images drawn with no shape of the asked kind (the answer is then ``[]``).
NO_TARGET_SHARE = 0.25
BACKGROUNDS = ("plain", "noise", "tiles")
ANSWER_BOXES = ("tight", "cell")
SHAPE_KINDS = ("circle", "square", "triangle")  # keep in sync with _DRAWERS
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 90, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "cyan": (40, 200, 210),
    "black": (20, 20, 20),
}
#: rec phrase style -> (phrase for (colour, kind), which attributes a distractor may not share)
_PHRASES = {
    "color+kind": (lambda c, k: f"the {c} {k}", lambda a, b: a == b),
    "color": (lambda c, k: f"the {c} shape", lambda a, b: a[0] == b[0]),
    "kind": (lambda c, k: f"the {k}", lambda a, b: a[1] == b[1]),
}
_OPERATORS = {"+": ("+", lambda a, b: a + b), "-": ("-", lambda a, b: a - b), "*": ("x", lambda a, b: a * b)}


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


#: Largest synthetic image side: images are drawn in memory (4096x4096 RGB is 48 MiB, per worker),
#: and the scenes are a few shapes; ``--image-size 60000x60000`` would need 10 GiB per image.
MAX_IMAGE_SIDE = 4096
#: Most shapes per image: each is placed by up to 60 tries against every shape already placed.
MAX_SHAPES = 100
#: Most synthetic records: the packer keeps every record in memory until it writes them (~1 KB each).
MAX_SAMPLES = 10_000_000


@dataclass(frozen=True)
class SyntheticConfig:
    """How synthetic images look. Ints given for a pair mean ``(v, v)``.

    Fields:
        image_size: ``(width, height)`` in pixels.
        num_shapes: inclusive ``(min, max)`` shapes per image (rec: referent included).
        shape_kinds: subset of :data:`SHAPE_KINDS`.
        colors: names from :data:`COLORS`.
        size_range: inclusive ``(min, max)`` shape side/diameter in pixels.
        grid: if set, cell size in pixels: each shape sits centred in its own cell
            (shape size capped to fit the cell with a 2 px margin).
        background: ``plain`` (``background_color``), ``noise`` (uniform noise of
            +-``noise_level`` around ``background_color``) or ``tiles`` (needs ``grid``:
            each cell is filled with its own light colour whose red channel grows with the
            column and green channel with the row, a "map" that puts where a cell is into
            its pixels; see :func:`tile_color`).
        answer_box: rec answer: ``tight`` (the referent's pixel bounding box) or ``cell``
            (needs ``grid``: the box of the grid cell that holds the referent, a coarse
            grounding target whose box does not depend on the shape's size).
        referring: rec phrase style: ``color+kind`` ("the red circle"), ``color``
            ("the red shape") or ``kind`` ("the circle"); distractors never match the
            attributes the phrase uses, so the referent is always unique.
        max_operand / operators: math operands are 0..max_operand; operators from ``+ - *``.
        zoom_scale: zoom: the factor the scene is enlarged by after drawing (the full resolution a crop reads).
    """

    image_size: tuple[int, int] = (112, 112)
    num_shapes: tuple[int, int] = (1, 4)
    shape_kinds: tuple[str, ...] = SHAPE_KINDS
    colors: tuple[str, ...] = ("red", "green", "blue", "yellow")
    size_range: tuple[int, int] = (14, 36)
    grid: int | None = None
    background: Literal["plain", "noise", "tiles"] = "plain"
    background_color: tuple[int, int, int] = (255, 255, 255)
    noise_level: int = 40
    referring: Literal["color+kind", "color", "kind"] = "color+kind"
    answer_box: Literal["tight", "cell"] = "tight"
    max_operand: int = 20
    operators: tuple[str, ...] = ("+", "-", "*")
    zoom_scale: int = 4

    def __post_init__(self) -> None:
        for name in ("image_size", "num_shapes", "size_range"):
            object.__setattr__(self, name, _pair(getattr(self, name)))
        for name in ("shape_kinds", "colors", "operators"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        width, height = self.image_size
        problems = [
            (width < 16 or height < 16, f"image_size must be at least 16x16, got {self.image_size}"),
            (max(width, height) > MAX_IMAGE_SIDE,
             f"image_size must be at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} (images are drawn in memory: "
             f"{width}x{height} RGB needs {width * height * 3 / 2**30:.1f} GiB each), got {self.image_size}"),
            (not 1 <= self.num_shapes[0] <= self.num_shapes[1], f"num_shapes must be 1 <= min <= max, got {self.num_shapes}"),
            (self.num_shapes[1] > MAX_SHAPES, f"num_shapes must be at most {MAX_SHAPES} per image, got {self.num_shapes}"),
            (not 2 <= self.size_range[0] <= self.size_range[1], f"size_range must be 2 <= min <= max, got {self.size_range}"),
            (self.size_range[0] > min(width, height), f"size_range {self.size_range} does not fit {self.image_size}"),
            (not self.shape_kinds or set(self.shape_kinds) - set(SHAPE_KINDS), f"shape_kinds must be from {SHAPE_KINDS}"),
            (not self.colors or set(self.colors) - set(COLORS), f"colors must be from {tuple(COLORS)}"),
            (self.grid is not None and not 8 <= self.grid <= min(width, height), f"grid must be 8..{min(width, height)} px"),
            (self.background not in BACKGROUNDS, f"background must be one of {BACKGROUNDS}, got {self.background!r}"),
            (self.background == "tiles" and self.grid is None, "background 'tiles' needs a grid (e.g. grid=28)"),
            (self.answer_box not in ANSWER_BOXES, f"answer_box must be one of {ANSWER_BOXES}, got {self.answer_box!r}"),
            (self.answer_box == "cell" and self.grid is None, "answer_box 'cell' needs a grid (e.g. grid=28)"),
            (self.referring not in _PHRASES, f"referring must be one of {tuple(_PHRASES)}, got {self.referring!r}"),
            (self.max_operand < 1, "max_operand must be >= 1"),
            (not self.operators or set(self.operators) - set(_OPERATORS), f"operators must be from {tuple(_OPERATORS)}"),
            (not 1 <= self.zoom_scale <= 16 or max(width, height) * self.zoom_scale > MAX_IMAGE_SIDE,
             f"zoom_scale must be 1..16 with image_size x zoom_scale at most {MAX_IMAGE_SIDE} px a side"),
        ]
        for bad, message in problems:
            if bad:
                raise PrepError(f"synthetic config: {message}")


@dataclass(frozen=True)
class _Slot:
    x: int
    y: int
    size: int


def _place(rng: random.Random, config: SyntheticConfig, count: int) -> list[_Slot]:
    """Non-overlapping square slots; fewer than ``count`` if the image is too crowded."""
    width, height = config.image_size
    low, high = config.size_range
    if config.grid:
        cell = config.grid
        cols, rows = width // cell, height // cell
        fit = cell - 4
        slots = []
        for index in rng.sample(range(cols * rows), min(count, cols * rows)):
            size = rng.randint(min(low, fit), min(high, fit))
            col, row = index % cols, index // cols
            slots.append(_Slot(col * cell + (cell - size) // 2, row * cell + (cell - size) // 2, size))
        return slots
    slots: list[_Slot] = []
    for _ in range(count):
        for _attempt in range(60):
            size = rng.randint(low, min(high, width, height))
            x, y = rng.randint(0, width - size), rng.randint(0, height - size)
            if all(x + size + 2 <= s.x or s.x + s.size + 2 <= x or y + size + 2 <= s.y or s.y + s.size + 2 <= y for s in slots):
                slots.append(_Slot(x, y, size))
                break
    return slots


def _triangle(draw: ImageDraw.ImageDraw, box: list[int], fill: Any) -> None:
    x, y, right, bottom = box
    draw.polygon([((x + right) / 2, y), (right, bottom), (x, bottom)], fill=fill)


#: How each shape kind is drawn into its square slot (inclusive pixel box).
_DRAWERS = {
    "circle": lambda draw, box, fill: draw.ellipse(box, fill=fill),
    "square": lambda draw, box, fill: draw.rectangle(box, fill=fill),
    "triangle": _triangle,
}


def _draw(draw: ImageDraw.ImageDraw, kind: str, slot: _Slot, fill: Any) -> None:
    _DRAWERS[kind](draw, [slot.x, slot.y, slot.x + slot.size - 1, slot.y + slot.size - 1], fill)


def _tight_box(kind: str, slot: _Slot, size: tuple[int, int]) -> list[int]:
    mask = Image.new("L", size, 0)
    _draw(ImageDraw.Draw(mask), kind, slot, 255)
    return list(mask.getbbox())


def tile_color(col: int, row: int, cols: int, rows: int) -> tuple[int, int, int]:
    """The ``tiles`` background colour of cell ``(col, row)`` in a ``cols`` x ``rows`` grid.

    Red runs 0..255 from the left column to the right one, green 0..255 from the
    top row to the bottom one, blue is fixed at 200 (the full range: a small model
    learned the column faster than with a pale 130..240 ramp). Why: neither Qwen2.5-VL's vision
    tower (2-D RoPE, no absolute position embedding) nor its LM (RoPE acts on queries
    and keys only) puts a token's position into its features, so a small model trained
    for minutes cannot read coordinates off a plain image; with tiles the token of a
    shape carries both what it is and where it is. Blue 200 matches no entry of
    :data:`COLORS`, so a shape is never the colour of a tile.
    """

    def ramp(index: int, count: int) -> int:
        return 128 if count == 1 else round(255 * index / (count - 1))

    return ramp(col, cols), ramp(row, rows), 200


def _background(config: SyntheticConfig, nprng: np.random.Generator) -> Image.Image:
    if config.background == "plain":
        return Image.new("RGB", config.image_size, config.background_color)
    if config.background == "tiles":
        width, height = config.image_size
        cell = config.grid
        cols, rows = -(-width // cell), -(-height // cell)
        image = Image.new("RGB", config.image_size)
        draw = ImageDraw.Draw(image)
        for row in range(rows):
            for col in range(cols):
                draw.rectangle([col * cell, row * cell, (col + 1) * cell - 1, (row + 1) * cell - 1],
                               fill=tile_color(col, row, cols, rows))
        return image
    width, height = config.image_size
    noise = nprng.integers(-config.noise_level, config.noise_level + 1, size=(height, width, 3))
    pixels = np.clip(np.asarray(config.background_color, dtype=np.int64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def _shapes_image(
    config: SyntheticConfig, nprng: np.random.Generator, slots: list[_Slot], attrs: list[tuple[str, str]]
) -> tuple[Image.Image, list[dict[str, Any]]]:
    image = _background(config, nprng)
    draw = ImageDraw.Draw(image)
    shapes = []
    for slot, (color, kind) in zip(slots, attrs):
        _draw(draw, kind, slot, COLORS[color])
        shapes.append({"color": color, "kind": kind, "box": _tight_box(kind, slot, config.image_size)})
    return image, shapes


def _rec(rng: random.Random, nprng: np.random.Generator, config: SyntheticConfig) -> tuple[Image.Image, str, Any, dict]:
    slots = _place(rng, config, rng.randint(*config.num_shapes))
    target = (rng.choice(config.colors), rng.choice(config.shape_kinds))
    phrase, clashes = _PHRASES[config.referring]
    others = [(c, k) for c in config.colors for k in config.shape_kinds if not clashes((c, k), target)]
    attrs = [target] + ([rng.choice(others) for _ in slots[1:]] if others else [])
    image, shapes = _shapes_image(config, nprng, slots[: len(attrs)], attrs)
    answer = shapes[0]["box"] if config.answer_box == "tight" else _cell_box(slots[0], config)
    return image, phrase(*target), answer, {"shapes": shapes}


def _cell_box(slot: _Slot, config: SyntheticConfig) -> list[int]:
    """The box of the grid cell that holds ``slot`` (shapes are centred in their cells)."""
    cell = config.grid
    col, row = (slot.x + slot.size // 2) // cell, (slot.y + slot.size // 2) // cell
    return [col * cell, row * cell, (col + 1) * cell, (row + 1) * cell]


def _count(rng: random.Random, nprng: np.random.Generator, config: SyntheticConfig) -> tuple[Image.Image, str, Any, dict]:
    slots = _place(rng, config, rng.randint(*config.num_shapes))
    color = rng.choice(config.colors)
    others = [c for c in config.colors if c != color]
    hits = rng.randint(0, len(slots)) if others else len(slots)
    flags = [True] * hits + [False] * (len(slots) - hits)
    rng.shuffle(flags)
    attrs = [(color if flag else rng.choice(others), rng.choice(config.shape_kinds)) for flag in flags]
    image, shapes = _shapes_image(config, nprng, slots, attrs)
    return image, f"How many {color} shapes are there?", hits, {"shapes": shapes}


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _math(rng: random.Random, nprng: np.random.Generator, config: SyntheticConfig) -> tuple[Image.Image, str, Any, dict]:
    a, b = rng.randint(0, config.max_operand), rng.randint(0, config.max_operand)
    op = rng.choice(config.operators)
    if op == "-" and a < b:
        a, b = b, a
    symbol, fn = _OPERATORS[op]
    text = f"{a} {symbol} {b} = ?"
    image = _background(config, nprng)
    draw = ImageDraw.Draw(image)
    width, height = config.image_size
    size = max(8, height // 5)
    while True:
        font = _font(size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        if right - left <= width - 4 or size <= 8:
            break
        size -= 2
    x = rng.randint(2, max(2, width - (right - left) - 2)) - left
    y = rng.randint(2, max(2, height - (bottom - top) - 2)) - top
    draw.text((x, y), text, fill=(20, 20, 20), font=font)
    problem = "What is the value of the expression in the image?"
    return image, problem, str(fn(a, b)), {"expression": f"{a} {op} {b}"}


def _det(rng: random.Random, nprng: np.random.Generator, config: SyntheticConfig) -> tuple[Image.Image, str, Any, dict]:
    slots = _place(rng, config, rng.randint(*config.num_shapes))
    kind = rng.choice(config.shape_kinds)
    others = [k for k in config.shape_kinds if k != kind]
    none_here = bool(others) and rng.random() < NO_TARGET_SHARE
    attrs = [(rng.choice(config.colors), rng.choice(others) if none_here else rng.choice(config.shape_kinds))
             for _ in slots]
    image, shapes = _shapes_image(config, nprng, slots, attrs)
    solution = [
        {"box": shape["box"] if config.answer_box == "tight" else _cell_box(slot, config), "label": kind}
        for slot, shape in zip(slots, shapes) if shape["kind"] == kind
    ]
    return image, f"Locate every {kind} in the image.", solution, {"shapes": shapes}


def _point(rng: random.Random, nprng: np.random.Generator, config: SyntheticConfig) -> tuple[Image.Image, str, Any, dict]:
    """A rec scene whose answer is a click: the solution is the referent's box, the answer a point in it."""
    return _rec(rng, nprng, config)


def _zoom(rng: random.Random, nprng: np.random.Generator, config: SyntheticConfig) -> tuple[Image.Image, str, Any, dict]:
    """One shape with a small dot of the answer's colour at its centre, enlarged ``zoom_scale`` times."""
    slot = _place(rng, config, 1)[0]
    kind, color = rng.choice(config.shape_kinds), rng.choice(config.colors)
    body = rng.choice([c for c in ("purple", "orange", "cyan", "black") if c not in config.colors] or ["black"])
    image, shapes = _shapes_image(config, nprng, [slot], [(body, kind)])
    scale = config.zoom_scale
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    box = [v * scale for v in shapes[0]["box"]]
    side = max(scale, (box[2] - box[0]) // 4)
    cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
    if kind == "triangle":  # the apex is at the top: the dot sits below the box centre, inside the triangle
        cy = (box[1] + 2 * box[3]) // 3
    ImageDraw.Draw(image).rectangle([cx - side // 2, cy - side // 2, cx - side // 2 + side - 1, cy - side // 2 + side - 1],
                                    fill=COLORS[color])
    extra = {"shape": body, "zoom_thinking": f"the {body} {kind}"}  # what a tool-use trace says before its call
    return image, f"What colour is the dot inside the {kind}?", {"answer": color, "box": box}, extra


_MAKERS = {"rec": _rec, "count": _count, "math": _math, "det": _det, "point": _point, "zoom": _zoom}


def make_sample(task: str, index: int, seed: int = 0, config: SyntheticConfig | None = None) -> SourceItem:
    """Sample ``index`` of a task (depends only on the arguments)."""
    if task not in _MAKERS:
        raise PrepError(f"unknown synthetic task {task!r}; choose one of: {', '.join(TASKS)}")
    config = config or SyntheticConfig()
    rng = random.Random(f"{task}/{seed}/{index}")
    nprng = np.random.default_rng(rng.getrandbits(64))
    image, problem, solution, extra = _MAKERS[task](rng, nprng, config)
    return SourceItem(
        id=f"synthetic-{task}-s{seed}-{index:06d}",
        task=task,
        images=[image],
        problem=problem,
        solution=solution,
        origin=f"synthetic {task} #{index} (seed {seed})",
        meta={"source": "synthetic", "seed": seed, "index": index, **extra},
    )


def iter_generate(
    task: str, n: int, seed: int = 0, config: SyntheticConfig | None = None, **overrides: Any
) -> Iterator[SourceItem]:
    """Lazily yield ``n`` samples; keyword overrides replace fields of ``config``
    (``iter_generate("rec", 100, grid=28, image_size=112)``)."""
    if task not in _MAKERS:
        raise PrepError(f"unknown synthetic task {task!r}; choose one of: {', '.join(TASKS)}")
    config = replace(config or SyntheticConfig(), **overrides) if overrides else (config or SyntheticConfig())
    return (make_sample(task, index, seed, config) for index in range(n))


def generate(task: str, n: int, seed: int = 0, config: SyntheticConfig | None = None, **overrides: Any) -> list[SourceItem]:
    """``n`` samples of ``task`` as a list (see :func:`iter_generate`); pass to :func:`data_prep.pack`."""
    return list(iter_generate(task, n, seed, config, **overrides))


def read_source(spec: Any, options: Any) -> Iterator[SourceItem | Rejected]:
    """The ``--format synthetic`` reader: ``--task`` (rec/count/math/det/point), ``--num``, ``--seed``."""
    if options.task not in _MAKERS:
        raise PrepError(f"--format synthetic needs --task, one of: {', '.join(TASKS)} (got {options.task!r})")
    if not 1 <= options.num <= MAX_SAMPLES:
        raise PrepError(
            f"--num must be 1..{MAX_SAMPLES:,} (prep keeps every record in memory until it writes them), "
            f"got {options.num}"
        )
    return iter_generate(options.task, options.num, options.seed, options.synthetic)
