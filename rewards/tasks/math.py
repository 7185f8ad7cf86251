"""``math``: a value or expression, judged by math-verify equivalence within a time budget.

Solution: a string. Answer: the final answer (its last ``\\boxed{}`` if it has one; with
``accept_boxed``, a final ``\\boxed{}`` outside an answer block too). Correct when equivalent.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from rewards import mathcheck
from rewards.parsing import final_answer
from rewards.tasks.answers import check_text, read_text
from rewards.tasks.base import REASONING, Task

TEMPLATE = "{question}\n" + REASONING + " Put only the final value or expression in the answer."


def parse(text: str, /, accept_boxed: Any = None, force_boxed: bool | None = None, **_: Any) -> str | None:
    boxed = force_boxed if force_boxed is not None else bool(accept_boxed)
    return final_answer(text, accept_boxed=boxed) or None


def score(answer: str, /, solution: Any = None, budget_s: float = mathcheck.DEFAULT_BUDGET_S, **_: Any) -> float:
    return float(mathcheck.math_equivalent(answer, solution, budget_s=budget_s))


def make_math_task(budget_s: float = mathcheck.DEFAULT_BUDGET_S, accept_boxed: bool | None = None) -> Task:
    """The ``math`` task with another time budget or a fixed ``\\boxed{}`` policy
    (``accept_boxed=None``: the sample's ``accept_boxed`` column decides)."""
    return Task("math", "math", partial(parse, force_boxed=accept_boxed), partial(score, budget_s=budget_s),
                template=TEMPLATE, check=check_text, read_answer=read_text)


TASK = make_math_task()
