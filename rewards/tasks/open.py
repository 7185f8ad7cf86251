"""``open``: a short phrase, equal to the solution (or one of a list of them) after normalisation
(case, whitespace, surrounding punctuation)."""

from __future__ import annotations

from typing import Any

from rewards.parsing import final_answer, normalize_text
from rewards.tasks.answers import check_text, read_text
from rewards.tasks.base import REASONING, Task


def parse(text: str, /, **_: Any) -> str | None:
    answer = final_answer(text)
    normalized = normalize_text(answer) if answer is not None else ""
    return normalized or None


def score(answer: str, /, solution: Any = None, **_: Any) -> float:
    golds = solution if isinstance(solution, (list, tuple)) else [solution]
    return float(any(answer == normalize_text(str(gold)) for gold in golds))


TASK = Task("open", "exact_match", parse, score, template="{question}\n" + REASONING + " The answer is a short phrase.",
            check=check_text, read_answer=read_text)
