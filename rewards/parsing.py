"""Reading answers out of completions: the one extraction rule and per-kind parsers.

The rule every reward and the evaluation share (:func:`final_answer`):

1. The answer is the content of the **last complete** ``<answer>…</answer>``
   block (the model's final answer), stripped of surrounding whitespace.
   "Complete" means both tags are present: the last ``</answer>`` and the
   last ``<answer>`` before it. Tags are matched exactly (lowercase).
2. If that content holds a ``\\boxed{…}``, the content of its last complete
   ``\\boxed{}`` is the answer (consistent with rule 1: the final one wins).
3. Only when there is no complete answer block and the caller allows it
   (``accept_boxed=True``), the last complete ``\\boxed{}`` anywhere in the
   completion is the answer.

Under a chat template whose generation prompt leaves a ``<think>`` open (Qwen3.5's
"think" flavour; the sample's ``open_think`` column, read off the processor by
:func:`vlm_grpo.prompts.opens_think`), a completion starts inside the thinking
block: everything up to its first ``</think>`` is thinking, and the rule above is
applied to what follows it only (:func:`after_thinking`). Without the column, or
``False``, the whole completion is read, as before.

All functions are pure, never raise on model output, and run in time linear in
the length of the text (adversarial megabyte completions included).
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from typing import Any

from rewards.boxes import is_coordinate

MAX_BOX_CHARS = 20_000
"""Answers longer than this are not searched for a box."""
_BOXED_TRIES = 8
_MAX_BOXED_SCAN = 20_000

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_BOX_LIST = re.compile(rf"[\[(]\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*[\])]")
_FENCE = re.compile(r"```[A-Za-z0-9_-]*")
_BOX_KEYS = ("bbox_2d", "bbox", "box")


def completion_text(completion: Any) -> str:
    """The generated text of one completion, in any form TRL passes it.

    Accepts a string, TRL's conversational form ``[{"role": "assistant",
    "content": ...}]`` (the last assistant message is used; content may be a
    string or a list of ``{"type": "text", "text": ...}`` parts) or a single
    message dict. Anything else gives ``""``.

    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}])
    'hi'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
        if assistant:
            return _content_text(assistant[-1].get("content"))
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type", "text") == "text"]
        return "".join(p for p in parts if isinstance(p, str))
    return ""


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def inside_open_think(text: str) -> bool:
    """Whether ``text`` ends inside an unclosed ``<think>`` block (its last ``<think>`` comes after its last
    ``</think>``): a rendered generation prompt that does leaves the model writing its thinking first.

    >>> inside_open_think("<|im_start|>assistant\\n<think>\\n"), inside_open_think("<think>\\n\\n</think>\\n\\n")
    (True, False)
    """
    return text.rfind(THINK_OPEN) > text.rfind(THINK_CLOSE)


def after_thinking(text: str, open_think: Any = False) -> str:
    """The part of a completion an answer is read from: all of it, or, when the prompt left a ``<think>`` open
    (``open_think``), what follows the completion's first ``</think>`` (``""`` when it never closes it: the
    model is still thinking).

    >>> after_thinking("x</think><answer>1</answer>", True), after_thinking("<answer>1</answer>", True)
    ('<answer>1</answer>', '')
    """
    if open_think is not True:
        return text
    end = text.find(THINK_CLOSE)
    return "" if end < 0 else text[end + len(THINK_CLOSE):]


def extract_answer(text: str) -> str | None:
    """Content of the last complete ``<answer>…</answer>`` block, stripped; ``None`` if none.

    >>> extract_answer("<answer>A</answer> then <answer> B </answer><answer>C")
    'B'
    """
    end = text.rfind("</answer>")
    if end < 0:
        return None
    start = text.rfind("<answer>", 0, end)
    if start < 0:
        return None
    return text[start + len("<answer>") : end].strip()


def extract_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{…}`` (braces balanced), stripped; ``None`` if none.

    >>> extract_boxed(r"so \\boxed{\\frac{1}{2}} or \\boxed{3")
    '\\\\frac{1}{2}'
    """
    end = len(text)
    for _ in range(_BOXED_TRIES):
        start = text.rfind("\\boxed", 0, end)
        if start < 0:
            return None
        content = _braced(text, start + len("\\boxed"))
        if content is not None:
            return content.strip()
        end = start
    return None


def _braced(text: str, pos: int) -> str | None:
    while pos < len(text) and text[pos] == " ":
        pos += 1
    if pos >= len(text) or text[pos] != "{":
        return None
    depth = 0
    limit = min(len(text), pos + _MAX_BOXED_SCAN)
    for i in range(pos, limit):
        if text[i] == "{" and text[i - 1] != "\\":
            depth += 1
        elif text[i] == "}" and text[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[pos + 1 : i]
    return None


def final_answer(text: str, accept_boxed: bool = False) -> str | None:
    """The answer under the one rule (see the module docstring).

    >>> final_answer("<think>…</think><answer>It is \\\\boxed{4}.</answer>")
    '4'
    >>> final_answer("so \\\\boxed{4}") is None, final_answer("so \\\\boxed{4}", accept_boxed=True)
    (True, '4')
    """
    answer = extract_answer(text)
    if answer is None:
        return extract_boxed(text) if accept_boxed else None
    if "\\boxed" in answer:
        boxed = extract_boxed(answer)
        if boxed is not None:
            return boxed
    return answer


def parse_box(answer: str | None) -> list[float] | None:
    """Four floats ``[x1, y1, x2, y2]`` from an answer, or ``None``.

    Accepts ``[x1, y1, x2, y2]``, ``{"bbox_2d": [...]}`` (also ``bbox``/``box``),
    a list of such objects or lists (the first is taken), ints or floats,
    inside code fences or not; else the first ``[a, b, c, d]`` / ``(a, b, c, d)``
    in the text. Each value must be finite and at most
    :data:`rewards.boxes.MAX_COORDINATE` in size (``1e308`` is not a coordinate);
    not checked for degeneracy (see :mod:`rewards.boxes`).

    >>> parse_box('```json\\n[{"bbox_2d": [10, 20, 110.5, 220], "label": "cat"}]\\n```')
    [10.0, 20.0, 110.5, 220.0]
    >>> parse_box("[0, 0, 1e308, 1e308]"), parse_box("[0, 0, 1e999, 5]")
    (None, None)
    """
    if not answer or len(answer) > MAX_BOX_CHARS:
        return None
    body = _FENCE.sub("", answer).strip()
    try:
        box = _box_from_json(json.loads(body))
    except (ValueError, RecursionError):
        box = None
    if box is None:
        match = _BOX_LIST.search(body)
        box = [float(v) for v in match.groups()] if match else None
    if box is None or not all(is_coordinate(v) for v in box):
        return None
    return box


def _box_from_json(obj: Any, depth: int = 0) -> list[float] | None:
    if depth > 3:
        return None
    if isinstance(obj, dict):
        key = next((k for k in _BOX_KEYS if k in obj), None)
        return _box_from_json(obj[key], depth + 1) if key else None
    if not isinstance(obj, list) or not obj:
        return None
    if len(obj) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in obj):
        try:
            return [float(v) for v in obj]
        except OverflowError:  # a JSON integer with hundreds of digits is not a coordinate
            return None
    if isinstance(obj[0], (dict, list)):
        return _box_from_json(obj[0], depth + 1)
    return None


_MCQ_ALONE = re.compile(r"^\(?([A-Za-z])\)?[.:)]?$")
_MCQ_LEADING = re.compile(r"^(?:\(([A-Z])\)|([A-Z])[.:)])\s*\S")
_MCQ_PHRASE = re.compile(r"answer\s*(?:is|:)?\s*:?\s*(?:option\s*)?\(?([A-Z])\b\)?", re.IGNORECASE)
_MCQ_OPTION = re.compile(r"^option\s*\(?([A-Z])\b", re.IGNORECASE)
_MARKUP = re.compile(r"\*\*|__|`|\\text\{([^{}]*)\}")


def _unmarked(answer: str) -> str:
    return _MARKUP.sub(lambda m: m.group(1) or "", answer).strip()


def parse_mcq(answer: str | None) -> str | None:
    """An option letter (uppercase) from an answer, or ``None``.

    Accepts ``B``, ``(B)``, ``B.``, ``B) 12``, ``(B) 12``, ``the answer is B``,
    ``Answer: (B)``, ``Option B``, markdown bold, ``\\text{B}``. A lone
    lowercase letter counts; a capital starting a sentence ("A cat") does not.

    >>> [parse_mcq(a) for a in ["B", "(b)", "B) 12", "The answer is C.", "A cat"]]
    ['B', 'B', 'B', 'C', None]
    """
    if answer is None:
        return None
    text = _unmarked(answer)[:1000]
    for pattern in (_MCQ_ALONE, _MCQ_LEADING, _MCQ_OPTION):
        match = pattern.match(text)
        if match:
            return next(g for g in match.groups() if g).upper()
    phrases = _MCQ_PHRASE.findall(text)
    if phrases and phrases[-1].isupper():
        return phrases[-1]
    return None


_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen twenty"
).split()
_COUNT_TOKEN = re.compile(
    r"(?<![\w.\-])(\d{1,9}(?:\.0+)?|" + "|".join(_NUMBER_WORDS) + r")(?![\w\-]|\.\d)", re.IGNORECASE
)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def parse_count(answer: str | None) -> int | None:
    """A non-negative integer from an answer: the last number, digits or a word up to twenty.

    Compound words (``twenty-one``) and fractional numbers are not counts.

    >>> [parse_count(a) for a in ["3", "There are five.", "2 red + 3 blue = 5", "1,000", "2.5", "many"]]
    [3, 5, 5, 1000, None, None]
    """
    if answer is None:
        return None
    text = _THOUSANDS.sub("", _unmarked(answer)[:10_000])
    tokens = _COUNT_TOKEN.findall(text)
    if not tokens:
        return None
    last = tokens[-1].lower()
    return _NUMBER_WORDS.index(last) if last in _NUMBER_WORDS else int(float(last))


def _is_punctuation(char: str) -> bool:
    return char in string.punctuation or unicodedata.category(char).startswith("P")


def normalize_text(text: str) -> str:
    """Case-folded, whitespace-collapsed, surrounding punctuation removed.

    >>> normalize_text('  "The  Red\\nCar." ')
    'the red car'
    """
    words = " ".join(text.split()).casefold()
    start, end = 0, len(words)
    while start < end and (_is_punctuation(words[start]) or words[start].isspace()):
        start += 1
    while end > start and (_is_punctuation(words[end - 1]) or words[end - 1].isspace()):
        end -= 1
    return words[start:end]
