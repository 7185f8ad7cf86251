"""Format rewards: the R1 ``<think>…</think><answer>…</answer>`` layout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.parsing import completion_text, extract_answer, parse_box
from rewards.registry import register

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def has_r1_format(text: str) -> bool:
    """Exactly one ``<think>…</think>`` then exactly one ``<answer>…</answer>``,
    whitespace allowed around and between them, nothing else outside.

    >>> has_r1_format(" <think>a</think>\\n<answer>b</answer>\\n")
    True
    >>> has_r1_format("<think>a</think>so <answer>b</answer>")
    False
    """
    body = text.strip()
    if not (body.startswith("<think>") and body.endswith("</answer>")):
        return False
    if any(body.count(tag) != 1 for tag in _TAGS):
        return False
    think_end, answer_start = body.index("</think>"), body.index("<answer>")
    return think_end < answer_start and not body[think_end + len("</think>") : answer_start].strip()


@register("format")
def format_reward(completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """1.0 when the completion has the R1 layout (:func:`has_r1_format`), else 0.0.

    Args:
        completions: strings or TRL conversational completions.
        **columns: unused; accepted for TRL's calling convention.

    >>> format_reward(["<think>x</think><answer>3</answer>", "<answer>3</answer>"])
    [1.0, 0.0]
    """
    return [float(has_r1_format(completion_text(c))) for c in completions]


@register("format_box")
def format_box_reward(completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """1.0 when the R1 layout holds and the answer parses as a box
    (:func:`rewards.parsing.parse_box`, degenerate boxes included), else 0.0.

    >>> format_box_reward(["<think>x</think><answer>[1, 2, 3, 4]</answer>",
    ...                    "<think>x</think><answer>the dog</answer>"])
    [1.0, 0.0]
    """
    scores: list[float | None] = []
    for completion in completions:
        text = completion_text(completion)
        ok = has_r1_format(text) and parse_box(extract_answer(text)) is not None
        scores.append(float(ok))
    return scores
