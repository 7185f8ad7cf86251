"""``rec``: referring expression comprehension, one box per answer.

Solution: ``[x1, y1, x2, y2]`` in original pixels. Answer: a box (``[x1, y1, x2, y2]``,
``{"bbox_2d": [...]}`` or a list of those, the first counts) in the family's box frame.
Score: IoU with the solution in original pixels; correct when IoU >= 0.5 (RefCOCO's
criterion). Metrics: ``acc@0.5`` and ``mean_iou`` (the headline).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rewards import boxes
from rewards.parsing import final_answer, parse_box
from rewards.tasks.answers import check_box, one_box, read_box, with_one_box
from rewards.tasks.base import REASONING, Mark, Task


def parse(text: str, /, image_sizes: Any = None, model_image_sizes: Any = None,
          box_frame: str | None = None, **_: Any) -> list[float] | None:
    box = parse_box(final_answer(text))
    if not boxes.is_valid_box(box):
        return None
    model_size = boxes.first_size(model_image_sizes)
    frame = boxes.resolve_frame(box_frame, model_size)
    return boxes.to_original_pixels(box, frame, boxes.first_size(image_sizes), model_size)  # type: ignore[arg-type]


def score(box: list[float], /, solution: Any = None, **_: Any) -> float:
    if not (isinstance(solution, (list, tuple)) and boxes.is_valid_box(list(solution))):
        raise ValueError(f"rec solution must be a valid box [x1, y1, x2, y2], got {solution!r}")
    return boxes.iou(box, solution)


def box_target(box: Sequence[float], box_frame: str, image_sizes: Any, model_image_sizes: Any) -> list[int]:
    """A box in original pixels written in the family's frame, rounded to integers."""
    converted = boxes.from_original_pixels(box, box_frame, boxes.first_size(image_sizes),
                                           boxes.first_size(model_image_sizes))
    return [round(v) for v in converted]


def target(solution: Any, /, box_frame: str = "original_pixels", image_sizes: Any = None,
           model_image_sizes: Any = None, **_: Any) -> str:
    return json.dumps(box_target(solution, box_frame, image_sizes, model_image_sizes))


def metrics(predictions: Sequence[dict]) -> dict:
    n = len(predictions)
    accuracy = sum(bool(p["correct"]) for p in predictions) / n if n else 0.0
    return {"acc@0.5": accuracy, "mean_iou": sum(float(p["score"] or 0.0) for p in predictions) / n if n else 0.0}


def is_drawable_box(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            and value[2] > value[0] and value[3] > value[1])


def marks(solution: Any, parsed: Any) -> list[Mark]:
    return [Mark("box", list(box), role) for box, role in ((solution, "truth"), (parsed, "pred")) if is_drawable_box(box)]


TASK = Task(
    "rec", "iou", parse, score, threshold=0.5,
    template="{question}\n" + REASONING + " The answer is the bounding box of that region as JSON "
    "[x1, y1, x2, y2], {frame}.",
    check=check_box,
    read_answer=read_box,
    boxes=one_box,
    with_boxes=with_one_box,
    target=target,
    metrics=metrics,
    headline="mean_iou",
    marks=marks,
)
