"""Format rewards: the R1 ``<think>…</think><answer>…</answer>`` layout.

The layout is judged on what the model wrote after its prompt. Where the chat template's generation prompt
already opened the ``<think>`` (the sample's ``open_think`` column, Qwen3.5's "think" template), a well-formed
completion continues that block and closes it, ``…</think><answer>…</answer>``; opening it again is malformed.
Elsewhere the completion must open it itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.columns import iter_samples
from rewards.parsing import THINK_OPEN, after_thinking, completion_text, extract_answer, parse_box
from rewards.registry import register

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def has_r1_format(text: str, open_think: bool = False) -> bool:
    """Exactly one ``<think>…</think>`` then exactly one ``<answer>…</answer>``,
    whitespace allowed around and between them, nothing else outside; with
    ``open_think`` the prompt's own ``<think>`` counts as the opening tag.

    >>> has_r1_format(" <think>a</think>\\n<answer>b</answer>\\n")
    True
    >>> has_r1_format("<think>a</think>so <answer>b</answer>")
    False
    >>> has_r1_format("a\\n</think>\\n\\n<answer>b</answer>", open_think=True)
    True
    """
    body = (THINK_OPEN + text if open_think is True else text).strip()
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
        **columns: ``open_think`` (per sample: the prompt opened the ``<think>``) is read; the rest is
            accepted for TRL's calling convention.

    >>> format_reward(["<think>x</think><answer>3</answer>", "<answer>3</answer>"])
    [1.0, 0.0]
    >>> format_reward(["x</think><answer>3</answer>"] * 2, open_think=[True, False])
    [1.0, 0.0]
    """
    return [float(has_r1_format(completion_text(c), sample.get("open_think", False)))
            for c, sample in zip(completions, iter_samples(completions, columns))]


@register("format_box")
def format_box_reward(completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """1.0 when the R1 layout holds and the answer parses as a box
    (:func:`rewards.parsing.parse_box`, degenerate boxes included), else 0.0.

    >>> format_box_reward(["<think>x</think><answer>[1, 2, 3, 4]</answer>",
    ...                    "<think>x</think><answer>the dog</answer>"])
    [1.0, 0.0]
    """
    scores: list[float | None] = []
    for completion, sample in zip(completions, iter_samples(completions, columns)):
        text, open_think = completion_text(completion), sample.get("open_think", False)
        ok = has_r1_format(text, open_think) and parse_box(extract_answer(after_thinking(text, open_think))) is not None
        scores.append(float(ok))
    return scores
