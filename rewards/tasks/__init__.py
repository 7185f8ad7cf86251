"""The tasks: one module each, and the one scoring path (:func:`judge`) for training and evaluation.

``TASKS[name]`` is a :class:`~rewards.tasks.base.Task` (see :mod:`rewards.tasks.base` for
everything a task owns): ``parse(completion_text, **sample)`` returns the parsed answer or
``None``, ``score(parsed, **sample)`` a float in [0, 1], and ``threshold`` the score that
counts as correct. :func:`judge` runs both and returns a :class:`Judgement`; every
accuracy-type reward is a thin loop over :func:`judge`, so training and evaluation cannot
disagree.

``**sample`` holds one sample's columns (not lists): ``solution`` and, for box tasks,
``image_sizes``, ``model_image_sizes``, ``box_frame``; for math the optional
``accept_boxed`` (bool, default ``False``) also takes a final ``\\boxed{}`` when the
completion has no answer block.

Built-in tasks (``metric`` names the reward that scores them):

====== ============ ======================================== ================
task   metric       parsed                                   correct
====== ============ ======================================== ================
rec    iou          box in original pixels (valid boxes)     IoU >= 0.5
math   math         answer string                            equivalent
count  count        int                                      equal
mcq    mcq          option letter                            equal
open   exact_match  normalised string                        equal
det    det_f1       boxes (+ labels) in original pixels      every box matched
point  point_in_box point in original pixels                 inside the box
zoom   accuracy     normalised word (the final turn)         equal
====== ============ ======================================== ================

Why here: the task modules live in ``rewards`` because parsing and scoring are the rewards'
own code and must stay pure; ``data_prep`` (validation, source answers, rescaling) and
``vlm_grpo`` (prompts, SFT targets, metrics, report) import them, and ``rewards`` imports
neither. A user task is a module that calls :func:`register_task`, named in ``task_modules``
(train), ``--task-module`` (eval, prep); :func:`load_task_module` imports it.
"""

from __future__ import annotations

from typing import Any

from rewards.parsing import after_thinking, completion_text
from rewards.tasks import count, det, mcq, point, rec, zoom
from rewards.tasks import math as math_task
from rewards.tasks import open as open_task  # not `open`: the builtin stays the builtin here
from rewards.tasks.base import REASONING, Judgement, Mark, Task
from rewards.tasks.math import make_math_task

TASKS: dict[str, Task] = {
    "rec": rec.TASK,
    "math": math_task.TASK,
    "count": count.TASK,
    "mcq": mcq.TASK,
    "open": open_task.TASK,
    "det": det.TASK,
    "point": point.TASK,
    "zoom": zoom.TASK,
}
"""The task table; add a task with :func:`register_task`."""
BUILTIN_TASKS = tuple(TASKS)


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


def load_task_module(spec: str) -> Any:
    """Import a module that registers tasks: ``package.module`` or ``path/to/file.py``.

    A module is imported once (a second call returns it), so its :func:`register_task` calls
    run once. Errors are :class:`rewards.registry.RewardLoadError` naming the spec.
    """
    from rewards.registry import RewardLoadError, _import, _load_file

    if not isinstance(spec, str) or not spec.strip():
        raise RewardLoadError(f"task module must be a module name or a .py path, got {spec!r}")
    spec = spec.strip()
    if spec.endswith(".py") or "/" in spec or "\\" in spec:
        return _load_file(spec)
    return _import(spec)


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
    # under a template that opened the <think>, the answer is read after the completion's first </think>
    parsed = spec.parse(after_thinking(completion_text(completion), sample.get("open_think", False)), **sample)
    if parsed is None:
        return Judgement(parsed=None, parse_ok=False, score=0.0, correct=False)
    score = float(spec.score(parsed, **sample))
    return Judgement(parsed=parsed, parse_ok=True, score=score, correct=score >= spec.threshold)


__all__ = ["BUILTIN_TASKS", "REASONING", "TASKS", "Judgement", "Mark", "Task", "get_task", "judge",
           "load_task_module", "make_math_task", "register_task"]
