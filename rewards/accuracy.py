"""Accuracy rewards: thin loops over :func:`rewards.tasks.judge`.

Task-specific rewards (``iou``, ``rec_acc``, ``math``, ``exact_match``,
``mcq``, ``count``) score every sample with their task's parser and scorer and
return ``None`` for a sample whose ``task`` is a registered task scored by a
different metric (e.g. ``iou`` on a math record). Samples without a ``task``
column, or whose task is not registered, are scored (the user chose the reward).
``accuracy`` instead dispatches on each sample's ``task`` through
:data:`rewards.tasks.TASKS`; unknown or missing task gives ``None``.

Columns read per sample: ``solution`` (all), ``task`` (applicability,
dispatch); REC: ``image_sizes``, ``model_image_sizes``, ``box_frame`` (missing:
``model_pixels`` when ``model_image_sizes`` is present, else
``original_pixels``); math: ``accept_boxed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards import mathcheck
from rewards.columns import iter_samples
from rewards.registry import register
from rewards.tasks import TASKS, Task, det, judge, make_math_task


def _applies(spec: Task, task: Any) -> bool:
    if not isinstance(task, str) or task not in TASKS:
        return True
    # a reward applies to the task it is built on (det_ap on det) and to any task scored by its metric
    return TASKS[task].metric == spec.metric or task == spec.name


def _scores(task: Task, completions: Sequence[Any], columns: dict[str, Any], correct: bool = False
            ) -> list[float | None]:
    scores: list[float | None] = []
    for completion, sample in zip(completions, iter_samples(completions, columns)):
        if not _applies(task, sample.get("task")):
            scores.append(None)
            continue
        verdict = judge(task, completion, **sample)
        scores.append(float(verdict.correct) if correct else verdict.score)
    return scores


@register("iou")
def iou_reward(completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """IoU between the answer's box (converted to original pixels) and ``solution``.

    Unparsable, degenerate or missing boxes score 0.0; non-box tasks get ``None``.

    >>> iou_reward(["<answer>[0, 0, 25, 50]</answer>", "<answer>no box</answer>"],
    ...            solution=[[0, 0, 100, 100]] * 2, image_sizes=[[[200, 200]]] * 2,
    ...            model_image_sizes=[[[100, 100]]] * 2, box_frame=["model_pixels"] * 2)
    [0.5, 0.0]
    """
    return _scores(TASKS["rec"], completions, columns)


@register("rec_acc")
def rec_acc_reward(completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """1.0 when the IoU of :func:`iou_reward` is >= 0.5 (the RefCOCO criterion), else 0.0.

    >>> rec_acc_reward(["<answer>[0, 0, 60, 100]</answer>"], solution=[[0, 0, 100, 100]],
    ...                image_sizes=[[[100, 100]]], box_frame=["original_pixels"])
    [1.0]
    """
    return _scores(TASKS["rec"], completions, columns, correct=True)


@register("exact_match")
def exact_match_reward(completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """1.0 when the answer equals ``solution`` (or one of a list of them) after
    normalisation (case, whitespace, surrounding punctuation), else 0.0.

    >>> exact_match_reward(["<answer> The red car. </answer>"], solution=["the Red car"])
    [1.0]
    """
    return _scores(TASKS["open"], completions, columns)


@register("mcq")
def mcq_reward(completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """1.0 when the answer's option letter (``B``, ``(B)``, ``B.``, ``B) 12``,
    ``the answer is B``) equals ``solution``, else 0.0.

    >>> mcq_reward(["<answer>(B) 12</answer>", "<answer>the answer is C</answer>"], solution=["B", "B"])
    [1.0, 0.0]
    """
    return _scores(TASKS["mcq"], completions, columns)


@register("count")
def count_reward(completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """1.0 when the answer's last number (digits or a word up to twenty) equals ``solution``.

    >>> count_reward(["<answer>There are three.</answer>", "<answer>4</answer>"], solution=[3, 3])
    [1.0, 0.0]
    """
    return _scores(TASKS["count"], completions, columns)


class MathReward:
    """Math-verify equivalence of the answer and ``solution``, bounded in time.

    ``\\frac{1}{2}`` equals ``0.5`` and ``x=3`` equals ``3``. The answer is the
    last complete answer block (its last ``\\boxed{}`` if it has one); without
    an answer block, the last ``\\boxed{}`` of the completion when
    ``accept_boxed`` (the factory argument, else the sample's ``accept_boxed``
    column, default ``False``). Each sample takes at most about ``budget_s``
    seconds, from any thread or process (see :mod:`rewards.mathcheck`).

    >>> math_reward = make_math_reward()
    >>> math_reward(["<answer>\\\\frac{1}{2}</answer>", "<answer>x = 3</answer>", "\\\\boxed{3}"],
    ...             solution=["0.5", "3", "3"])
    [1.0, 1.0, 0.0]
    """

    def __init__(self, budget_s: float, accept_boxed: bool | None, name: str) -> None:
        if budget_s <= 0:
            raise ValueError(f"budget_s must be positive, got {budget_s}")
        self.task = make_math_task(budget_s=budget_s, accept_boxed=accept_boxed)
        self.__name__ = name

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float | None]:
        return _scores(self.task, completions, columns)


def make_math_reward(budget_s: float = mathcheck.DEFAULT_BUDGET_S, accept_boxed: bool | None = None,
                     name: str = "math") -> MathReward:
    """A ``math`` reward with its own time budget per sample and ``\\boxed{}`` policy."""
    return MathReward(budget_s, accept_boxed, name)


register("math")(make_math_reward())


@register("det_f1")
def det_f1_reward(completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """F1 of a greedy one-to-one matching (IoU >= 0.5, labels equal where both have one) between the
    answer's boxes and ``solution``'s; both empty 1.0, unparsable 0.0 (:mod:`rewards.tasks.det`).

    >>> det_f1_reward(['<answer>[{"bbox_2d": [0, 0, 10, 10], "label": "cat"}, [50, 50, 60, 60]]</answer>'],
    ...               solution=[[{"box": [0, 0, 10, 10], "label": "cat"}]], image_sizes=[[[100, 100]]],
    ...               box_frame=["original_pixels"])
    [0.6666666666666666]
    """
    return _scores(TASKS["det"], completions, columns)


@register("det_ap")
def det_ap_reward(completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """COCO AP@[.5:.95] of the answer's boxes (each scored 1.0) for the one sample, by pycocotools.

    >>> [round(v, 6) for v in det_ap_reward(["<answer>[[0, 0, 10, 10]]</answer>"], solution=[[{"box": [0, 0, 10, 10]}]],
    ...                                     image_sizes=[[[100, 100]]], box_frame=["original_pixels"])]
    [1.0]
    """
    return _scores(det.AP_TASK, completions, columns)


@register("det_odlength")
def det_odlength_reward(completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """``det_ap * min(1, n_gt / n_pred)``: AP, discounted for redundant boxes (VLM-R1's odLength).

    >>> [round(v, 6) for v in det_odlength_reward(["<answer>[[0, 0, 10, 10], [0, 0, 10, 10]]</answer>"],
    ...                                           solution=[[{"box": [0, 0, 10, 10]}]], image_sizes=[[[100, 100]]],
    ...                                           box_frame=["original_pixels"])]
    [0.5]
    """
    return _scores(det.ODLENGTH_TASK, completions, columns)


@register("point_in_box")
def point_in_box_reward(completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """1.0 when the answer's point (a box answer: its centre), converted to original pixels, lies in the
    ``solution`` box, edges included; else 0.0.

    >>> point_in_box_reward(["<answer>[500, 500]</answer>", "<answer>[10, 990]</answer>"],
    ...                     solution=[[40, 40, 60, 60]] * 2, image_sizes=[[[100, 100]]] * 2,
    ...                     box_frame=["norm1000"] * 2)
    [1.0, 0.0]
    """
    return _scores(TASKS["point"], completions, columns)


@register("accuracy")
def accuracy_reward(completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """Each sample's task score, dispatched on its ``task`` through :data:`rewards.tasks.TASKS`:
    rec -> IoU, math -> math, count -> count, mcq -> mcq, open -> exact_match, det -> det_f1,
    point -> point_in_box;
    an unknown or missing task gives ``None``.

    >>> accuracy_reward(["<answer>B</answer>", "<answer>2</answer>", "<answer>x</answer>"],
    ...                 task=["mcq", "count", "caption"], solution=["B", 3, "x"])
    [1.0, 0.0, None]
    """
    scores: list[float | None] = []
    for completion, sample in zip(completions, iter_samples(completions, columns)):
        task = sample.get("task")
        spec = TASKS.get(task) if isinstance(task, str) else None
        scores.append(None if spec is None else judge(spec, completion, **sample).score)
    return scores
