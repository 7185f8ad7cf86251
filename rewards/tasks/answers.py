"""Reading a *source's* answer (a dataset's ground truth, not a completion): the helpers
the task modules' ``read_answer`` share, and ``data_prep`` re-exports.

Pure functions; a bad value raises ``ValueError`` saying what is wrong.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_ANSWER_TAGS = re.compile(r"^\s*<answer>(.*?)</answer>\s*$", re.DOTALL | re.IGNORECASE)
BOX_KEYS = ("bbox_2d", "bbox")
#: Lengths of a list of numbers that is taken for a (broken) box: 2 is left out, it is
#: as often an interval or a point; 4 is a box whatever its values.
_BOX_LIKE_LENGTHS = range(3, 9)


def is_finite_number(value: Any) -> bool:
    """An int or float (not bool) that is finite as a float (a 400-digit int is not)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def parse_json(text: str | bytes) -> Any:
    """``json.loads`` whose every failure is a ``ValueError`` (nesting too deep included)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def answer_text(value: Any) -> str:
    """The answer as text, without ``<answer>…</answer>`` wrapping and outer whitespace."""
    text = value if isinstance(value, str) else json.dumps(value)
    match = _ANSWER_TAGS.match(text)
    return (match.group(1) if match else text).strip()


def unwrapped(value: Any) -> Any:
    """The answer as parsed JSON when it is JSON text (maybe in answer tags or a code fence), else itself;
    ``None`` for text that is not JSON."""
    if isinstance(value, str):
        text = answer_text(value)
        if text.startswith("```"):
            text = re.sub(r"^```[A-Za-z0-9_-]*\s*|\s*```$", "", text)
        try:
            return parse_json(text)
        except ValueError:
            return None
    return value


def source_box(value: Any) -> list[float] | None:
    """A ``[x1, y1, x2, y2]`` box from a list, a JSON string (maybe in answer tags), or a
    ``{"bbox_2d": [...]}`` / ``{"bbox": [...]}`` object or a one-element list of such;
    None when the value is not a box."""
    if isinstance(value, str):
        try:
            value = parse_json(answer_text(value))
        except ValueError:
            return None
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    if isinstance(value, dict):
        value = value.get("bbox_2d", value.get("bbox"))
    if isinstance(value, list) and len(value) == 4 and all(is_finite_number(v) for v in value):
        return list(value)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def looks_like_box(value: Any) -> bool:
    """Whether an answer was meant as a box, valid or not.

    >>> [looks_like_box(a) for a in ["[1, 2, 3, 4]", "[NaN, 0, 5, 5]", "[1, 1, 5]", '{"bbox_2d": 7}', "[1, 2]", "4"]]
    [True, True, True, True, False, False]
    """
    value = unwrapped(value)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    if isinstance(value, dict):
        return any(key in value for key in BOX_KEYS)
    if not isinstance(value, list):
        return False
    if len(value) == 4:
        return any(_is_number(v) for v in value) and all(v is None or isinstance(v, (int, float, str)) for v in value)
    return len(value) in _BOX_LIKE_LENGTHS and all(_is_number(v) for v in value)


def box_problem(value: Any) -> str:
    """What is wrong with an answer that is not a valid ``[x1, y1, x2, y2]`` box."""
    value = unwrapped(value)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    if isinstance(value, dict):
        value = value.get("bbox_2d", value.get("bbox"))
    if not isinstance(value, list):
        return "it is not a list of 4 numbers"
    if len(value) != 4:
        return f"it has {len(value)} values, a box has 4"
    if not all(_is_number(v) for v in value):
        return "not every value is a number"
    return "a value is not finite (NaN, Infinity or too large)"


def read_box(value: Any) -> list[float]:
    """A source's box answer, or ``ValueError`` saying what is wrong with it."""
    box = source_box(value)
    if box is None:
        raise ValueError(f"expected a box [x1, y1, x2, y2], got {value!r} ({box_problem(value)})")
    return box


def check_box(solution: Any, task: str = "rec") -> str | None:
    """Why ``solution`` is not 4 finite numbers ``[x1, y1, x2, y2]`` with x1 < x2, y1 < y2, or None."""
    if not (isinstance(solution, list) and len(solution) == 4 and all(is_finite_number(v) for v in solution)):
        return f"{task} solution must be 4 finite numbers [x1, y1, x2, y2], got {solution!r}"
    x1, y1, x2, y2 = solution
    if not (x1 < x2 and y1 < y2):
        return f"box {solution} is empty or inverted (needs x1 < x2 and y1 < y2)"
    return None


def read_text(value: Any) -> str:
    """A text answer (a finite number becomes its text)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not is_finite_number(value):
            raise ValueError(f"expected a finite number or a string answer, got {value!r}")
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a string answer, got {value!r}")
    text = answer_text(value)
    if not text:
        raise ValueError("the answer is empty")
    return text


def check_text(solution: Any) -> str | None:
    """Why ``solution`` is not a non-empty string, or None."""
    if not isinstance(solution, str) or not solution.strip():
        return f"solution must be a non-empty string, got {solution!r}"
    return None


def one_box(solution: Any) -> list[list[float]]:
    """The geometry of a task whose solution is one box (rec, point): that box."""
    return [list(solution)]


def with_one_box(solution: Any, new: Any) -> list[float]:
    """A one-box solution with its box replaced."""
    return list(new[0])
