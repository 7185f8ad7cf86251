"""``zoom``: a question about a detail too small to read at the policy's resolution; the answer is a word.

The solution is ``{"answer": "red", "box": [x1, y1, x2, y2]}``: the answer and, in original pixels, the box
of the region that shows the detail (where a ``zoom_in`` call should look; prep rescales it with the
image). Correct when the normalised final answer equals ``answer``. Only the final answer counts: in a
multi-turn completion that is the last assistant turn (:func:`rewards.parsing.completion_text`), so tool
calls and tool responses never score.

Two templates: :data:`TASK`'s own, for a policy without tools (it must answer from the image it has), and
:data:`TOOL_TEMPLATES`, the one a run with the ``zoom_in`` tool uses, which describes the tool.
"""

from __future__ import annotations

from typing import Any

from rewards.boxes import is_valid_box
from rewards.parsing import final_answer, normalize_text
from rewards.tasks.base import REASONING, Mark, Task


def parse(text: str, /, **_: Any) -> str | None:
    answer = final_answer(text)
    normalized = normalize_text(answer) if answer is not None else ""
    return normalized or None


def score(answer: str, /, solution: Any = None, **_: Any) -> float:
    if not isinstance(solution, dict) or "answer" not in solution:
        raise ValueError(f"zoom solution must be {{'answer': ..., 'box': [...]}}, got {solution!r}")
    return float(answer == normalize_text(str(solution["answer"])))


def check(solution: Any) -> str | None:
    if not isinstance(solution, dict) or set(solution) != {"answer", "box"}:
        return f"zoom solution must be {{'answer': str, 'box': [x1, y1, x2, y2]}}, got {solution!r}"
    if not isinstance(solution["answer"], str) or not solution["answer"].strip():
        return f"zoom answer must be a non-empty string, got {solution['answer']!r}"
    if not is_valid_box(solution["box"]):
        return f"zoom box must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1, got {solution['box']!r}"
    return None


def boxes(solution: Any) -> list[list[float]]:
    return [list(solution["box"])]


def with_boxes(solution: Any, new: Any) -> dict:
    return {"answer": solution["answer"], "box": list(new[0])}


def target(solution: Any, /, **_: Any) -> str:
    return str(solution["answer"])


def marks(solution: Any, parsed: Any) -> list[Mark]:
    return [Mark("box", list(solution["box"]), "truth", str(solution["answer"]))]


TEMPLATE = "{question}\n" + REASONING + " The answer is one word."
TOOL_TEMPLATES = {
    "zoom": "{question}\nThe detail is small: first call zoom_in with the box of the shape ({frame}) to see it at "
            "full resolution, then " + REASONING[0].lower() + REASONING[1:] + " The answer is one word.",
}
"""Templates of a run with the ``zoom_in`` tool (task -> template); ``task_templates`` overrides them."""

TASK = Task("zoom", "accuracy", parse, score, template=TEMPLATE, check=check, boxes=boxes, with_boxes=with_boxes,
            target=target, marks=marks)
