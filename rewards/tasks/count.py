"""``count``: an integer >= 0 (digits, or a number word up to twenty, in the answer); correct when equal."""

from __future__ import annotations

import re
from typing import Any

from rewards.parsing import final_answer, parse_count
from rewards.tasks.answers import answer_text
from rewards.tasks.base import REASONING, Task

_INT = re.compile(r"^[-+]?\d+$")


def parse(text: str, /, **_: Any) -> int | None:
    return parse_count(final_answer(text))


def score(count: int, /, solution: Any = None, **_: Any) -> float:
    gold = solution if isinstance(solution, int) and not isinstance(solution, bool) else parse_count(str(solution))
    if gold is None:
        raise ValueError(f"count solution must be a non-negative integer, got {solution!r}")
    return float(count == gold)


def check(solution: Any) -> str | None:
    if not isinstance(solution, int) or isinstance(solution, bool) or solution < 0:
        return f"count solution must be an integer >= 0, got {solution!r}"
    return None


def read_answer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer count, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and _INT.match(answer_text(value)):
        value = int(answer_text(value))
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"expected an integer count >= 0, got {value!r}")
    return value


TASK = Task("count", "count", parse, score, template="{question}\n" + REASONING + " The answer is a single integer.",
            check=check, read_answer=read_answer)
