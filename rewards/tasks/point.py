"""``point``: GUI grounding, one click point per answer.

Solution: the target element's box ``[x1, y1, x2, y2]`` in original pixels. Answer: a point
``[x, y]`` (also ``{"point_2d": [x, y]}``, ``(x, y)``), or a box, which counts as its centre;
in the family's box frame, converted to original pixels. Score (reward ``point_in_box``): 1.0
when the point lies inside the box, edges included, else 0.0; unparsable 0.0. Metrics: click
accuracy (``accuracy``) and, where records carry ``meta.data_type`` (ScreenSpot's ``text`` /
``icon``) or ``meta.data_source`` (its app or site), ``by_data_type`` / ``by_data_source``;
``by_source`` (the input file, e.g. the platform) comes with every task.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from rewards import boxes
from rewards.parsing import _FENCE, final_answer, parse_box
from rewards.tasks.answers import check_box, one_box, read_box, with_one_box
from rewards.tasks.base import REASONING, Mark, Task
from rewards.tasks.rec import is_drawable_box

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_POINT = re.compile(rf"[\[(]\s*({_NUM})\s*,\s*({_NUM})\s*[\])]")
_POINT_KEYS = ("point_2d", "point", "click")
MAX_ANSWER_CHARS = 20_000


def _point_from_json(obj: Any) -> list[float] | None:
    if isinstance(obj, list) and len(obj) == 1 and isinstance(obj[0], (dict, list)):
        obj = obj[0]
    if isinstance(obj, dict):
        key = next((k for k in _POINT_KEYS if k in obj), None)
        obj = obj[key] if key else None
    if isinstance(obj, list) and len(obj) == 2 and all(boxes.is_coordinate(v) for v in obj):
        return [float(v) for v in obj]
    return None


def parse_point(answer: str | None) -> list[float] | None:
    """``[x, y]`` from an answer (a box gives its centre), in the model's frame, or ``None``.

    >>> parse_point("[10, 20]"), parse_point('{"point_2d": [3, 4]}'), parse_point("[0, 0, 10, 20]"), parse_point("no")
    ([10.0, 20.0], [3.0, 4.0], [5.0, 10.0], None)
    """
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return None
    body = _FENCE.sub("", answer).strip()
    try:
        point = _point_from_json(json.loads(body))
    except (ValueError, RecursionError):
        point = None
    if point is not None:
        return point
    box = parse_box(body)
    if box is not None:
        return [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]
    match = _POINT.search(body)
    if match:
        point = [float(v) for v in match.groups()]
        return point if all(boxes.is_coordinate(v) for v in point) else None
    return None


def parse(text: str, /, image_sizes: Any = None, model_image_sizes: Any = None,
          box_frame: str | None = None, **_: Any) -> list[float] | None:
    point = parse_point(final_answer(text))
    if point is None:
        return None
    model_size = boxes.first_size(model_image_sizes)
    frame = boxes.resolve_frame(box_frame, model_size)
    x, y, _, _ = boxes.to_original_pixels(point + point, frame, boxes.first_size(image_sizes), model_size)
    return [x, y]


def score(point: list[float], /, solution: Any = None, **_: Any) -> float:
    if not (isinstance(solution, (list, tuple)) and boxes.is_valid_box(list(solution))):
        raise ValueError(f"point solution must be the target's box [x1, y1, x2, y2], got {solution!r}")
    x, y = point
    return float(solution[0] <= x <= solution[2] and solution[1] <= y <= solution[3])


def check(solution: Any) -> str | None:
    return check_box(solution, "point")


def target(solution: Any, /, box_frame: str = "original_pixels", image_sizes: Any = None,
           model_image_sizes: Any = None, **_: Any) -> str:
    centre = [(solution[0] + solution[2]) / 2, (solution[1] + solution[3]) / 2]
    converted = boxes.from_original_pixels(centre + centre, box_frame, boxes.first_size(image_sizes),
                                           boxes.first_size(model_image_sizes))
    return json.dumps([round(converted[0]), round(converted[1])])


def metrics(predictions: Sequence[dict]) -> dict:
    """Click accuracy per ``data_type`` (``by_data_type``) and per ``data_source`` (``by_data_source``),
    where the records carry them."""
    out: dict[str, Any] = {}
    for key in ("data_type", "data_source"):
        groups: dict[str, list[bool]] = defaultdict(list)
        for p in predictions:
            if p.get(key):
                groups[str(p[key])].append(bool(p["correct"]))
        if groups:
            out[f"by_{key}"] = {k: {"count": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(groups.items())}
    return out


def marks(solution: Any, parsed: Any) -> list[Mark]:
    out = [Mark("box", list(solution), "truth")] if is_drawable_box(solution) else []
    if isinstance(parsed, list) and len(parsed) == 2 and all(isinstance(v, (int, float)) for v in parsed):
        out.append(Mark("point", list(parsed), "pred"))
    return out


TASK = Task(
    "point", "point_in_box", parse, score,
    template="{question}\n" + REASONING + " The answer is the point to click on that element as JSON [x, y], {frame}.",
    check=check,
    read_answer=read_box,
    boxes=one_box,
    with_boxes=with_one_box,
    target=target,
    metrics=metrics,
    marks=marks,
)
