"""Reader for VLM-R1's training JSONL (``--format vlm-r1``).

One object per line::

    {"id": 1, "image": "coco/x.jpg" | ["a.jpg", "b.jpg"],
     "conversations": [{"from": "human", "value": "<image>question…"},
                       {"from": "gpt", "value": "answer"}],
     "accu_reward_method": "default"}          # optional

* Image paths are relative to ``--image-root`` (default: the JSONL's folder) and must
  stay inside it (absolute paths, ``..`` and symlinks included) unless
  ``--allow-images-outside-root`` is given.
* ``problem`` is the first human turn with ``<image>`` markers and the instruction
  text in :data:`~data_prep.sources.common.INSTRUCTION_PREFIXES` /
  ``INSTRUCTION_SUFFIXES`` removed.
* The answer is the first gpt turn after it; ``<answer>…</answer>`` wrapping is
  removed. A REC answer is a JSON box ``[x1, y1, x2, y2]`` in original pixels.
* The task follows the rule in :mod:`data_prep.sources.common`: ``--task``, else
  ``accu_reward_method``, else inferred from the answer.
* ``id`` is ``str(obj["id"])``, or ``<file stem>_<line>`` when absent; with
  ``--prefix-ids`` it becomes ``<file stem>/<id>``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_prep.items import Rejected, SourceItem
from data_prep.packed import PrepError
from data_prep.sources import SourceOptions, SourceSpec, stem_of
from data_prep.sources.common import choose_task, clean_question, coerce_solution, is_inferred, iter_jsonl, source_image_path

_HUMAN = {"human", "user"}
_ASSISTANT = {"gpt", "assistant"}


def _image_paths(value: Any, root: Path, where: str, record: str, options: SourceOptions) -> list[Path]:
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        raise PrepError(f"{where}: 'image' must be a path or a list of paths, got {value!r}", reason="malformed_record")
    return [
        source_image_path(name, root, record=record, where=where, allow_outside=options.allow_images_outside_root)
        for name in names
    ]


def _turns(conversations: Any, where: str) -> tuple[str, Any]:
    if not isinstance(conversations, list):
        raise PrepError(f"{where}: 'conversations' must be a list of turns", reason="missing_field")
    question = answer = None
    for turn in conversations:
        if not isinstance(turn, dict):
            continue
        role = str(turn.get("from", turn.get("role", ""))).lower()
        if question is None and role in _HUMAN:
            question = turn.get("value", turn.get("content"))
        elif question is not None and role in _ASSISTANT:
            answer = turn.get("value", turn.get("content"))
            break
    if not isinstance(question, str):
        raise PrepError(f"{where}: no human turn with a text 'value' in 'conversations'", reason="missing_field")
    if answer is None:
        raise PrepError(f"{where}: no gpt turn (the answer) after the human turn", reason="missing_field")
    return question, answer


def convert(obj: Any, *, where: str, lineno: int, spec: SourceSpec, options: SourceOptions) -> SourceItem:
    """Turn one parsed JSONL object into a :class:`SourceItem` (raises :class:`PrepError`)."""
    if not isinstance(obj, dict):
        raise PrepError(f"{where}: expected a JSON object, got {type(obj).__name__}", reason="malformed_record")
    stem = stem_of(spec.input)
    if "conversations" not in obj:
        raise PrepError(f"{where}: missing field 'conversations'", reason="missing_field")
    raw_question, raw_answer = _turns(obj["conversations"], where)
    problem = clean_question(raw_question)
    method = obj.get("accu_reward_method")
    task = choose_task(options.task, method, problem, raw_answer)
    solution = coerce_solution(task, raw_answer, where=where, inferred=is_inferred(options.task, method))
    raw_id = obj.get("id")
    record_id = f"{stem}_{lineno}" if raw_id is None or raw_id == "" else str(raw_id)
    if options.prefix_ids:
        record_id = f"{stem}/{record_id}"
    root = spec.image_root or (spec.input.parent if spec.input else Path("."))
    meta: dict[str, Any] = {"source": stem}
    if method is not None:
        meta["accu_reward_method"] = method
    return SourceItem(
        id=record_id,
        task=task,
        images=_image_paths(obj.get("image"), root, where, record_id, options),
        problem=problem,
        solution=solution,
        origin=where,
        meta=meta,
    )


def read(spec: SourceSpec, options: SourceOptions) -> Iterator[SourceItem | Rejected]:
    """Yield one item per line of ``spec.input``; bad lines become :class:`Rejected`."""
    if spec.input is None:
        raise PrepError("--format vlm-r1 needs --input FILE.jsonl", reason="missing_input")
    for lineno, obj in iter_jsonl(spec.input):
        where = f"{spec.input}:{lineno}"
        try:
            if isinstance(obj, PrepError):
                raise obj
            yield convert(obj, where=where, lineno=lineno, spec=spec, options=options)
        except PrepError as err:
            yield Rejected(origin=where, reason=err.reason, message=str(err))
