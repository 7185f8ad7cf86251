"""What a task is: the :class:`Task` record every task module fills in, and the verdict type.

A task module (``rewards/tasks/rec.py`` …) owns everything about one task, as plain
functions on plain values (no model, processor, file or image object), so that the
rewards stay pure and ``data_prep`` and ``vlm_grpo`` can use the same code:

- prep: :attr:`Task.check` (is a stored solution valid?), :attr:`Task.read_answer`
  (a source's raw answer -> the solution), :attr:`Task.boxes` / :attr:`Task.with_boxes`
  (the solution's boxes in original pixels, which prep clips, rescales on resize and
  checks against the image);
- prompts and SFT: :attr:`Task.template`, :attr:`Task.target` (the answer text the model
  is taught, in the family's box frame);
- scoring: :attr:`Task.parse` and :attr:`Task.score`, run by :func:`rewards.tasks.judge`;
- evaluation: :attr:`Task.metrics` (extra figures over a group of predictions) and
  :attr:`Task.headline` (the figure ``metrics.json`` leads with when the data is all this task);
- the report: :attr:`Task.marks` (what to draw on the image, as :class:`Mark` values).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

REASONING = (
    "First output the thinking process in <think> </think> tags and then output the final answer "
    "in <answer> </answer> tags."
)
"""The format instruction every built-in template carries."""


@dataclass(frozen=True)
class Judgement:
    """The verdict on one completion.

    Attributes:
        parsed: the parsed answer (rec: ``[x1, y1, x2, y2]`` in original
            pixels; math: the answer string; count: int; mcq: letter; open:
            normalised string; det: ``[{"box": [...], "label": str | None}]``;
            point: ``[x, y]`` in original pixels), ``None`` when nothing parsed.
        parse_ok: whether an answer parsed (rec: a valid, non-degenerate box).
        score: rec: IoU with the solution; det: F1 of the matched boxes; other tasks: 1.0 or 0.0.
        correct: ``score >= task.threshold`` (rec: IoU >= 0.5).
    """

    parsed: Any
    parse_ok: bool
    score: float
    correct: bool


@dataclass(frozen=True)
class Mark:
    """One thing the report draws on a sample's first image, in original pixels.

    Attributes:
        kind: ``"box"`` (``xy`` is ``[x1, y1, x2, y2]``) or ``"point"`` (``xy`` is ``[x, y]``).
        xy: the coordinates.
        role: ``"truth"`` (drawn green) or ``"pred"`` (drawn red).
        label: text written next to it, or ``None``.
    """

    kind: str
    xy: list[float]
    role: str
    label: str | None = None


def check_present(solution: Any) -> str | None:
    """The check of a task without its own: a solution is present (a string is not blank)."""
    if solution is None or (isinstance(solution, str) and not solution.strip()):
        return f"solution must not be empty, got {solution!r}"
    return None


def plain_target(solution: Any, /, **_: Any) -> str:
    """The SFT answer of a text task: the solution itself (JSON for a non-string)."""
    return solution if isinstance(solution, str) else json.dumps(solution)


@dataclass(frozen=True)
class Task:
    """How one task is checked, prompted, taught, parsed, scored, measured and drawn.

    Only ``name``, ``metric``, ``parse`` and ``score`` are required; the rest default
    to what a text task needs, so ``Task("yesno", "exact_match", parse, score)`` is a task.

    Attributes:
        name: the ``task`` value of the records.
        metric: the registry name of the reward that scores this task; a
            task-specific reward (``iou``, ``math`` …) returns ``None`` on
            samples of a registered task with another metric.
        parse: ``(completion_text, **sample) -> parsed | None``; never raises on model output.
        score: ``(parsed, **sample) -> float`` for a non-``None`` parse.
        threshold: the score that counts as correct.
        template: the prompt, a ``str.format`` string with ``{question}`` and optionally
            ``{frame}`` (the sentence naming the family's box frame).
        check: ``(solution) -> problem | None``: the prep-time check of a stored solution's
            form (the bounds of its boxes are checked through :attr:`boxes`).
        read_answer: ``(raw source answer) -> solution``, raising ``ValueError`` with what is
            wrong; ``None``: a text answer stays text, other values are kept.
        boxes: ``(solution) -> list of [x1, y1, x2, y2]`` in original pixels of the first
            image, for a task with geometry; prep clips them (``--clip-boxes``), rescales them
            when it resizes the image (``--max-pixels``) and checks they lie inside it.
        with_boxes: ``(solution, boxes) -> solution`` with those boxes put back (same order).
        target: ``(solution, *, box_frame, image_sizes, model_image_sizes) -> str``, the
            answer SFT teaches, in the frame the rewards convert back from.
        metrics: ``(predictions) -> dict`` of extra figures over a group of this task's
            predictions (lines of ``predictions.jsonl``), merged into its ``by_task`` entry.
        headline: the key of :attr:`metrics` that ``metrics.json`` leads with when every
            prediction is this task (``None``: ``accuracy``).
        marks: ``(solution, parsed) -> list[Mark]`` drawn by the report (``None``: none).
    """

    name: str
    metric: str
    parse: Callable[..., Any]
    score: Callable[..., float]
    threshold: float = 1.0
    template: str = "{question}\n" + REASONING
    check: Callable[[Any], str | None] = check_present
    read_answer: Callable[[Any], Any] | None = None
    boxes: Callable[[Any], list[list[float]]] | None = None
    with_boxes: Callable[[Any, Sequence[Sequence[float]]], Any] | None = None
    target: Callable[..., str] = plain_target
    metrics: Callable[[Sequence[dict]], dict] | None = None
    headline: str | None = None
    marks: Callable[[Any, Any], list[Mark]] | None = None
