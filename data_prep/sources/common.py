"""Helpers shared by the source readers: JSON reading with line numbers, question
cleaning, answer parsing, and the task rule.

Task rule (used by every reader, first match wins):

1. ``--task T`` given: every record gets ``T``.
2. The source names a reward/task (VLM-R1's ``accu_reward_method``, a table's task
   column): mapped through :data:`TASK_FROM_METHOD`; ``default`` and unknown names
   fall through to 3.
3. Inferred from the answer (:func:`infer_task`): two or more boxes -> ``det``; a 4-number box, or an answer that looks
   like a box but is not a valid one (:func:`looks_like_box`: 3 to 8 numbers, 4 values
   that are not all finite numbers, a ``bbox_2d``/``bbox`` object) -> ``rec``, so that the
   bad box is an ``invalid_solution`` naming the record, never a silent ``open``; a lone
   letter when the question lists lettered options -> ``mcq``; an integer when the
   question asks "how many" / "what number of" -> ``count``; a number or a LaTeX/
   fraction answer -> ``math``; anything else -> ``open``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from data_prep.packed import PrepError, parse_json
from rewards.tasks import TASKS
from rewards.tasks.answers import BOX_KEYS, answer_text, box_problem, looks_like_box, source_box, unwrapped  # noqa: F401

#: Fixed instruction text that VLM-R1-style data prepends to the actual question;
#: stripped (case-insensitively, after the ``<image>`` markers) so ``problem`` is the
#: question itself. A trailing period is dropped when one of these was removed, since
#: what remains is then a referring phrase ("the man in red").
INSTRUCTION_PREFIXES: tuple[str, ...] = (
    "Please provide the bounding box coordinate of the region this sentence describes:",
    "Please provide the bounding box coordinates of the region this sentence describes:",
    "Please provide the bounding box coordinate of the region this sentence describes",
    "Locate the region this sentence describes:",
    "Output the bounding box of the region this sentence describes:",
)

#: Fixed answer-format instructions that some datasets append to the question; stripped.
INSTRUCTION_SUFFIXES: tuple[str, ...] = (
    "Output the final answer in JSON format.",
    "First output the thinking process in <think> </think> tags and then output the final answer in "
    "<answer> </answer> tags.",
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags.",
)

#: Source reward/task names -> task. ``default`` is absent on purpose: it is inferred.
TASK_FROM_METHOD: dict[str, str] = {
    "iou": "rec",
    "rec": "rec",
    "math": "math",
    "mcq": "mcq",
    "count": "count",
    "yes_no": "open",
    "llm": "open",
    "open": "open",
    # VLM-R1's detection rewards (od_ap, odLength), and the tasks by name
    "od_ap": "det",
    "od_ap50": "det",
    "odlength": "det",
    "det": "det",
    "point": "point",
    # MathVista's question_type column (pass --task-column question_type)
    "multi_choice": "mcq",
    "free_form": "math",
}

_LETTER = re.compile(r"^\(?([A-Za-z])\)?[.:]?$")
_OPTIONS = re.compile(r"(^|[\s(])[A-E][.):]\s")
_COUNT_QUESTION = re.compile(r"\b(how many|what number of)\b", re.IGNORECASE)
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)(/\d+)?%?$")
_INT = re.compile(r"^[-+]?\d+$")


def clean_question(text: str) -> str:
    """Remove ``<image>`` markers and known instruction prefixes/suffixes; collapse whitespace."""
    text = " ".join(text.replace("<image>", " ").split())
    stripped = False
    for prefix in INSTRUCTION_PREFIXES:
        if text.lower().startswith(prefix.lower()):
            text, stripped = text[len(prefix) :].strip(), True
            break
    for suffix in INSTRUCTION_SUFFIXES:
        if text.lower().endswith(suffix.lower()):
            text = text[: -len(suffix)].strip()
    if stripped and text.endswith("."):
        text = text[:-1].rstrip()
    return text


#: How a raw source answer becomes a solution: each task's ``read_answer`` (its module in
#: :mod:`rewards.tasks`); a task without one keeps a text answer as text.
def solution_parser(task: str) -> Callable[[Any], Any] | None:
    spec = TASKS.get(task)
    return spec.read_answer if spec is not None else None


def parse_box(value: Any) -> list[float] | None:
    """A ``[x1, y1, x2, y2]`` box from a list, a JSON string (maybe in answer tags), or a
    ``{"bbox_2d": [...]}`` / ``{"bbox": [...]}`` object or a one-element list of such;
    None when the value is not a box."""
    return source_box(value)


def coerce_solution(task: str, value: Any, *, where: str, inferred: bool = False) -> Any:
    """Turn a raw answer into the task's solution type, or raise ``invalid_solution``
    (``inferred``: the task was guessed from the answer, and the message says how to name it)."""
    parser = solution_parser(task)
    try:
        if parser is not None:
            return parser(value)
        return answer_text(value) if isinstance(value, str) else value
    except ValueError as exc:
        hint = (
            f"; the task {task!r} was inferred from the answer: if that is wrong, name the record's task "
            "(accu_reward_method, --task-column or --task)"
            if inferred
            else ""
        )
        raise PrepError(f"{where}: {task} answer: {exc}{hint}", reason="invalid_solution") from None


def _is_box_list(answer: Any) -> bool:
    """Two or more boxes (``[x1, y1, x2, y2]`` or ``{"bbox_2d": …}`` objects): a detection answer."""
    value = unwrapped(answer)
    return isinstance(value, list) and len(value) >= 2 and all(
        (isinstance(v, dict) and any(k in v for k in BOX_KEYS)) or (isinstance(v, list) and len(v) == 4) for v in value
    )


def infer_task(problem: str, answer: Any) -> str:
    """Guess the task from the answer and question (rule 3 of the module docstring)."""
    if _is_box_list(answer):
        return "det"
    if parse_box(answer) is not None or looks_like_box(answer):
        return "rec"
    text = answer_text(answer) if isinstance(answer, str) else str(answer)
    if _LETTER.match(text) and _OPTIONS.search(problem):
        return "mcq"
    if _INT.match(text) and _COUNT_QUESTION.search(problem):
        return "count"
    if _NUMBER.match(text.replace(",", "")) or "\\" in text or "$" in text:
        return "math"
    return "open"


def is_inferred(override: str | None, method: Any) -> bool:
    """Whether :func:`choose_task` falls through to inferring the task from the answer."""
    return not override and not (isinstance(method, str) and method.strip().lower() in TASK_FROM_METHOD)


def choose_task(override: str | None, method: Any, problem: str, answer: Any) -> str:
    """Apply the task rule: ``--task``, then the source's method name, then inference."""
    if override:
        return override
    if isinstance(method, str) and method.strip().lower() in TASK_FROM_METHOD:
        return TASK_FROM_METHOD[method.strip().lower()]
    return infer_task(problem, answer)


def source_image_path(name: str, root: Path, *, record: str, where: str, allow_outside: bool = False) -> Path:
    """The file a source's image ``name`` (relative to ``root``, or absolute) points at.

    Unless ``allow_outside`` (``--allow-images-outside-root``), the path must stay inside
    ``root`` once ``..`` and symlinks are resolved: a source file is data, and a line naming
    ``/etc/shadow`` or ``../../secret.png`` must not get that file copied into the dataset.
    Returns the resolved path, so the file that is read is the one that was checked.
    """
    path = root / name
    if allow_outside:
        return path
    try:
        resolved, inside = path.resolve(), root.resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a symlink loop, a name too long
        raise PrepError(
            f"{where}: record {record!r}: image path {name!r} is not a valid file name ({exc})", reason="missing_image"
        ) from None
    if not resolved.is_relative_to(inside):
        raise PrepError(
            f"{where}: record {record!r}: image {name!r} resolves to {resolved}, outside the image root {inside}; "
            "prep only reads images under --image-root (default: the input's folder). Move the image there, "
            "point --image-root at its folder, or pass --allow-images-outside-root",
            reason="image_outside_root",
        )
    return resolved


def open_input(path: Path) -> None:
    """Raise a clear error if an input file is missing or not a file."""
    if not path.exists():
        raise PrepError(f"input {path} not found; check --input", reason="missing_input")
    if not path.is_file():
        raise PrepError(f"input {path} is not a file; check --input", reason="missing_input")


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, object)`` per non-blank line; a bad line yields a PrepError
    (reason ``malformed_json``) in place of the object so the caller can skip it."""
    open_input(path)
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                yield lineno, parse_json(raw.decode("utf-8"))
            except ValueError as exc:  # bad syntax, not UTF-8, too deep, an integer over the digit limit
                reason = getattr(exc, "msg", None) or str(exc)
                yield lineno, PrepError(f"{path}:{lineno}: malformed JSON line ({reason})", reason="malformed_json")


def iter_json_array(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, element)`` for each element of a top-level JSON array.

    The line number is where the element starts. A syntax error anywhere makes the
    whole file unreadable: it raises :class:`PrepError` naming the file and line.
    """
    open_input(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PrepError(f"{path}: not UTF-8 text ({exc})", reason="malformed_json") from None
    decoder = json.JSONDecoder()
    ws = re.compile(r"\s*")
    pos, line, counted = ws.match(text, 0).end(), 1, 0

    def fail(at: int, what: str) -> PrepError:
        return PrepError(f"{path}:{text.count(chr(10), 0, at) + 1}: {what}", reason="malformed_json")

    if not text.startswith("[", pos):
        raise fail(pos, "expected a JSON array of objects ('[' ...)")
    pos = ws.match(text, pos + 1).end()
    if text.startswith("]", pos):
        return
    while True:
        try:
            element, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise fail(exc.pos, f"malformed JSON ({exc.msg})") from None
        except (ValueError, RecursionError) as exc:  # an integer over the digit limit, nesting too deep
            what = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise fail(pos, f"malformed JSON ({what})") from None
        line += text.count("\n", counted, pos)
        counted = pos
        yield line, element
        pos = ws.match(text, end).end()
        if text.startswith("]", pos):
            if text[pos + 1 :].strip():
                raise fail(pos + 1, "unexpected text after the JSON array")
            return
        if not text.startswith(",", pos):
            raise fail(pos, "expected ',' or ']' between array elements")
        pos = ws.match(text, pos + 1).end()
