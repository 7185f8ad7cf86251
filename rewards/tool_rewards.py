"""Rewards and summaries of multi-turn completions with tool calls (pure functions on TRL's messages).

A multi-turn completion, as TRL's tool loop hands it to the rewards, is a list of messages: assistant
turns (a turn that calls a tool has ``tool_calls``: ``[{"type": "function", "function": {"name",
"arguments"}}]``), each followed by one ``tool`` message per call, whose ``content`` is the tool's
return value (a list of content blocks; a crop is an ``{"type": "image"}`` block) or, for a call that
failed, the text ``{'error': '...'}``. The accuracy rewards read the last assistant turn only.

``tool_bonus`` is DeepEyes' conditional tool reward: ``bonus`` for a correct final answer reached with at
least one successful tool call, 0 otherwise (a wrong answer, or a right one without a successful call).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.columns import iter_samples
from rewards.registry import register


def tool_calls(completion: Any) -> list[dict]:
    """Each tool call of a completion: ``{"name", "arguments", "ok", "error"}``, in order.

    ``ok``: the tool's response holds an image or is a text that is not an error. A call without a
    response (the rollout ended) is not ok.

    >>> calls = tool_calls([
    ...     {"role": "assistant", "content": "", "tool_calls": [
    ...         {"type": "function", "function": {"name": "zoom_in", "arguments": {"bbox_2d": [0, 0, 9, 9]}}}]},
    ...     {"role": "tool", "name": "zoom_in", "content": [{"type": "image"}, {"type": "text", "text": "ok"}]},
    ...     {"role": "assistant", "content": "", "tool_calls": [
    ...         {"type": "function", "function": {"name": "zoom_in", "arguments": {"bbox_2d": [9, 0, 0, 9]}}}]},
    ...     {"role": "tool", "name": "zoom_in", "content": "{'error': 'zoom_in: bbox_2d is inverted'}"},
    ...     {"role": "assistant", "content": "<answer>red</answer>"}])
    >>> [(c["arguments"]["bbox_2d"], c["ok"]) for c in calls]
    [([0, 0, 9, 9], True), ([9, 0, 0, 9], False)]
    """
    if not isinstance(completion, (list, tuple)):
        return []
    calls: list[dict] = []
    pending: list[dict] = []
    for message in completion:
        if not isinstance(message, dict):
            continue
        if message.get("role") == "assistant":
            pending = []
            for call in message.get("tool_calls") or []:
                function = call.get("function", call) if isinstance(call, dict) else {}
                entry = {"name": function.get("name"), "arguments": function.get("arguments"), "ok": False,
                         "error": "no response"}
                calls.append(entry)
                pending.append(entry)
        elif message.get("role") == "tool" and pending:
            entry = pending.pop(0)
            entry["ok"], entry["error"] = _outcome(message.get("content"))
    return calls


def _outcome(content: Any) -> tuple[bool, str | None]:
    if isinstance(content, (list, tuple)):
        texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if any(isinstance(p, dict) and p.get("type") == "image" for p in content):
            return True, None
        content = " ".join(texts)
    text = str(content)
    if text.startswith("{'error'") or text.startswith('{"error"') or text.lower().startswith("error"):
        return False, text
    return True, None


class ToolBonus:
    """``bonus`` when the final answer is correct and at least one tool call succeeded, else 0.0; ``None``
    for a sample whose task is not registered (nothing says what correct is).

    >>> bonus = ToolBonus()
    >>> called = [{"role": "assistant", "content": "", "tool_calls": [
    ...     {"type": "function", "function": {"name": "zoom_in", "arguments": {"bbox_2d": [0, 0, 9, 9]}}}]},
    ...     {"role": "tool", "name": "zoom_in", "content": [{"type": "image"}]},
    ...     {"role": "assistant", "content": "<think>a</think><answer>red</answer>"}]
    >>> direct = [{"role": "assistant", "content": "<think>a</think><answer>red</answer>"}]
    >>> solution = {"answer": "red", "box": [0, 0, 9, 9]}
    >>> bonus([called, direct, called], task=["zoom"] * 3,
    ...       solution=[solution, solution, {"answer": "blue", "box": [0, 0, 9, 9]}])
    [1.0, 0.0, 0.0]
    """

    def __init__(self, bonus: float = 1.0, name: str = "tool_bonus") -> None:
        self.bonus = float(bonus)
        self.__name__ = name

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float | None]:
        from rewards.tasks import TASKS, judge

        out: list[float | None] = []
        for completion, sample in zip(completions, iter_samples(completions, columns)):
            task = sample.get("task")
            if task not in TASKS:
                out.append(None)
                continue
            used = any(call["ok"] for call in tool_calls(completion))
            out.append(self.bonus if used and judge(task, completion, **sample).correct else 0.0)
        return out


def make_tool_bonus(bonus: float = 1.0, name: str = "tool_bonus") -> ToolBonus:
    """A :class:`ToolBonus` of ``bonus`` (DeepEyes weighs it like the accuracy reward: 1.0)."""
    return ToolBonus(bonus, name)


register("tool_bonus")(make_tool_bonus())
