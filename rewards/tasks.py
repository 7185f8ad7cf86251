"""Per-task parsing and scoring shared by the rewards and the evaluation.

``TASKS[name]`` is a :class:`Task`: ``parse(completion_text, **sample)``
returns the parsed answer or ``None``, ``score(parsed, **sample)`` a float in
[0, 1], and ``threshold`` the score that counts as correct. :func:`judge`
runs both and returns a :class:`Judgement`; every accuracy-type reward is a
thin loop over :func:`judge`, so training and evaluation cannot disagree.

``**sample`` holds one sample's columns (not lists): ``solution`` and, for
REC, ``image_sizes``, ``model_image_sizes``, ``box_frame``; for math the
optional ``accept_boxed`` (bool, default ``False``) also takes a final
``\\boxed{}`` when the completion has no answer block.

Built-in tasks (``metric`` names the reward that scores them):

====== ============ ======================================== =========
task   metric       parsed                                   correct
====== ============ ======================================== =========
rec    iou          box in original pixels (valid boxes)     IoU >= 0.5
math   math         answer string                            equivalent
count  count        int                                      equal
mcq    mcq          option letter                            equal
open   exact_match  normalised string                        equal
====== ============ ======================================== =========
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from rewards import boxes, mathcheck
from rewards.parsing import completion_text, final_answer, normalize_text, parse_box, parse_count, parse_mcq


@dataclass(frozen=True)
class Judgement:
    """The verdict on one completion.

    Attributes:
        parsed: the parsed answer (rec: ``[x1, y1, x2, y2]`` in original
            pixels; math: the answer string; count: int; mcq: letter; open:
            normalised string), ``None`` when nothing parsed.
        parse_ok: whether an answer parsed (rec: a valid, non-degenerate box).
        score: rec: IoU with the solution; other tasks: 1.0 or 0.0.
        correct: ``score >= task.threshold`` (rec: IoU >= 0.5).
    """

    parsed: Any
    parse_ok: bool
    score: float
    correct: bool


@dataclass(frozen=True)
class Task:
    """How one task is parsed and scored.

    Attributes:
        name: the ``task`` value of the records.
        metric: the registry name of the reward that scores this task; a
            task-specific reward (``iou``, ``math`` …) returns ``None`` on
            samples of a registered task with another metric.
        parse: ``(completion_text, **sample) -> parsed | None``; never raises on model output.
        score: ``(parsed, **sample) -> float`` for a non-``None`` parse.
        threshold: the score that counts as correct.
    """

    name: str
    metric: str
    parse: Callable[..., Any]
    score: Callable[..., float]
    threshold: float = 1.0


def _parse_rec(text: str, /, image_sizes: Any = None, model_image_sizes: Any = None,
               box_frame: str | None = None, **_: Any) -> list[float] | None:
    box = parse_box(final_answer(text))
    if not boxes.is_valid_box(box):
        return None
    model_size = boxes.first_size(model_image_sizes)
    frame = boxes.resolve_frame(box_frame, model_size)
    return boxes.to_original_pixels(box, frame, boxes.first_size(image_sizes), model_size)  # type: ignore[arg-type]


def _score_rec(box: list[float], /, solution: Any = None, **_: Any) -> float:
    if not (isinstance(solution, (list, tuple)) and boxes.is_valid_box(list(solution))):
        raise ValueError(f"rec solution must be a valid box [x1, y1, x2, y2], got {solution!r}")
    return boxes.iou(box, solution)


def _parse_math(text: str, /, accept_boxed: Any = None, force_boxed: bool | None = None, **_: Any) -> str | None:
    boxed = force_boxed if force_boxed is not None else bool(accept_boxed)
    return final_answer(text, accept_boxed=boxed) or None


def _score_math(answer: str, /, solution: Any = None, budget_s: float = mathcheck.DEFAULT_BUDGET_S,
                **_: Any) -> float:
    return float(mathcheck.math_equivalent(answer, solution, budget_s=budget_s))


def make_math_task(budget_s: float = mathcheck.DEFAULT_BUDGET_S, accept_boxed: bool | None = None) -> Task:
    """The ``math`` task with another time budget or a fixed ``\\boxed{}`` policy
    (``accept_boxed=None``: the sample's ``accept_boxed`` column decides)."""
    return Task("math", "math", partial(_parse_math, force_boxed=accept_boxed),
                partial(_score_math, budget_s=budget_s))


def _parse_count(text: str, /, **_: Any) -> int | None:
    return parse_count(final_answer(text))


def _score_count(count: int, /, solution: Any = None, **_: Any) -> float:
    gold = solution if isinstance(solution, int) and not isinstance(solution, bool) else parse_count(str(solution))
    if gold is None:
        raise ValueError(f"count solution must be a non-negative integer, got {solution!r}")
    return float(count == gold)


def _parse_mcq(text: str, /, **_: Any) -> str | None:
    return parse_mcq(final_answer(text))


def _score_mcq(letter: str, /, solution: Any = None, **_: Any) -> float:
    gold = parse_mcq(str(solution))
    if gold is None:
        raise ValueError(f"mcq solution must be an option letter, got {solution!r}")
    return float(letter == gold)


def _parse_open(text: str, /, **_: Any) -> str | None:
    answer = final_answer(text)
    normalized = normalize_text(answer) if answer is not None else ""
    return normalized or None


def _score_open(answer: str, /, solution: Any = None, **_: Any) -> float:
    golds = solution if isinstance(solution, (list, tuple)) else [solution]
    return float(any(answer == normalize_text(str(gold)) for gold in golds))


TASKS: dict[str, Task] = {
    "rec": Task("rec", "iou", _parse_rec, _score_rec, threshold=0.5),
    "math": make_math_task(),
    "count": Task("count", "count", _parse_count, _score_count),
    "mcq": Task("mcq", "mcq", _parse_mcq, _score_mcq),
    "open": Task("open", "exact_match", _parse_open, _score_open),
}
"""The task table; add a task with :func:`register_task`."""


def register_task(task: Task) -> Task:
    """Add a user task to :data:`TASKS`; refuses a name that is taken."""
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """``TASKS[name]``, with an error that lists the known tasks."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


def judge(task: str | Task, completion: Any, /, **sample: Any) -> Judgement:
    """Parse and score one completion for ``task`` (a name in :data:`TASKS` or a :class:`Task`).

    ``completion`` is a string or TRL's conversational form; ``sample`` holds
    that sample's columns. Malformed completions give ``parse_ok=False`` and
    score 0; a malformed *solution* or missing size raises ``ValueError``.

    >>> judge("rec", "<answer>[0, 0, 50, 100]</answer>", solution=[0, 0, 100, 100],
    ...       image_sizes=[[100, 100]], box_frame="original_pixels")
    Judgement(parsed=[0.0, 0.0, 50.0, 100.0], parse_ok=True, score=0.5, correct=True)
    >>> judge("mcq", "<think>…</think><answer>(B) 12</answer>", solution="B").correct
    True
    """
    spec = task if isinstance(task, Task) else get_task(task)
    parsed = spec.parse(completion_text(completion), **sample)
    if parsed is None:
        return Judgement(parsed=None, parse_ok=False, score=0.0, correct=False)
    score = float(spec.score(parsed, **sample))
    return Judgement(parsed=parsed, parse_ok=True, score=score, correct=score >= spec.threshold)
