"""``mcq``: one option letter (``B``, ``(B)``, ``B) 12``, ``the answer is B``); correct when equal."""

from __future__ import annotations

import re
from typing import Any

from rewards.parsing import final_answer, parse_mcq
from rewards.tasks.answers import answer_text
from rewards.tasks.base import REASONING, Task

_LETTER = re.compile(r"^\(?([A-Za-z])\)?[.:]?$")


def parse(text: str, /, **_: Any) -> str | None:
    return parse_mcq(final_answer(text))


def score(letter: str, /, solution: Any = None, **_: Any) -> float:
    gold = parse_mcq(str(solution))
    if gold is None:
        raise ValueError(f"mcq solution must be an option letter, got {solution!r}")
    return float(letter == gold)


def check(solution: Any) -> str | None:
    if not (isinstance(solution, str) and re.fullmatch(r"[A-Z]", solution)):
        return f"mcq solution must be one capital letter A-Z, got {solution!r}"
    return None


def read_answer(value: Any) -> str:
    match = _LETTER.match(answer_text(value)) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"expected a choice letter such as 'B' or '(B)', got {value!r}")
    return match.group(1).upper()


TASK = Task("mcq", "mcq", parse, score, template="{question}\n" + REASONING + " The answer is the letter of the correct option.",
            check=check, read_answer=read_answer)
