"""Row conversion shared by the table readers (``parquet``, ``hf-disk``).

Columns (each overridable; the default is the first name present):

=========  =============================  ===========================================
role       option                         default names
=========  =============================  ===========================================
image      ``--image-column``             ``decoded_image``, ``image``, ``images``
problem    ``--problem-column``           ``problem``, ``question``
solution   ``--solution-column``          ``answer``, ``solution``
id         ``--id-column``                ``id`` (else ``<file stem>_<row>``)
task       ``--task-column``              none (the task rule in ``sources.common``)
=========  =============================  ===========================================

An image cell may be raw bytes, a path (relative to ``--image-root``, default the
input's directory, and inside it unless ``--allow-images-outside-root``), the Hugging Face ``Image`` feature dict ``{"bytes", "path"}``
(bytes win when both are set), a PIL image, or a list of any of these. Other
scalar columns (numbers, booleans, strings up to 500 characters) are kept in ``meta``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from data_prep.images import ImageInput
from data_prep.items import SourceItem
from data_prep.packed import PrepError
from data_prep.sources import SourceOptions
from data_prep.sources.common import choose_task, clean_question, coerce_solution, is_inferred, source_image_path

DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "image": ("decoded_image", "image", "images"),
    "problem": ("problem", "question"),
    "solution": ("answer", "solution"),
}
_META_TEXT_LIMIT = 500


@dataclass(frozen=True)
class Columns:
    """The column chosen for each role of a table."""

    image: str
    problem: str
    solution: str
    id: str | None
    task: str | None


def resolve_columns(available: list[str], options: SourceOptions, where: str) -> Columns:
    """Pick the columns to read; a named or needed column that is absent is a ``missing_column`` error."""
    listing = ", ".join(available) or "(none)"
    chosen: dict[str, str | None] = {}
    for role in ("image", "problem", "solution", "id", "task"):
        name = getattr(options, f"{role}_column")
        if name is not None:
            if name not in available:
                raise PrepError(
                    f"{where}: column {name!r} (--{role}-column) not found; available columns: {listing}",
                    reason="missing_column",
                )
            chosen[role] = name
            continue
        candidates = DEFAULT_COLUMNS.get(role, ("id",) if role == "id" else ())
        chosen[role] = next((c for c in candidates if c in available), None)
        if chosen[role] is None and role in DEFAULT_COLUMNS:
            raise PrepError(
                f"{where}: no {role} column (looked for {', '.join(candidates)}); available columns: {listing}; "
                f"name it with --{role}-column",
                reason="missing_column",
            )
    return Columns(**chosen)


def _one_image(cell: Any, root: Path, where: str, record: str, allow_outside: bool) -> ImageInput:
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return bytes(cell)
    if isinstance(cell, Image.Image):
        return cell
    if isinstance(cell, dict):
        data = cell.get("bytes")
        if isinstance(data, (bytes, bytearray, memoryview)) and data:
            return bytes(data)
        if data and not isinstance(data, (bytes, bytearray, memoryview)):
            raise PrepError(
                f"{where}: the image cell's 'bytes' must be binary, got {type(data).__name__}", reason="malformed_record"
            )
        cell = cell.get("path")
    if isinstance(cell, str) and cell:
        return source_image_path(cell, root, record=record, where=where, allow_outside=allow_outside)
    if cell is None:
        raise PrepError(f"{where}: the image cell is empty (no bytes and no path)", reason="missing_image")
    raise PrepError(f"{where}: unsupported image cell of type {type(cell).__name__}", reason="malformed_record")


def image_inputs(cell: Any, root: Path, where: str, record: str = "", allow_outside: bool = False) -> list[ImageInput]:
    """The image inputs of one cell (one image or a list of them); paths are confined to ``root``
    (see :func:`~data_prep.sources.common.source_image_path`) unless ``allow_outside``."""
    cells = list(cell) if isinstance(cell, (list, tuple)) else [cell]
    return [_one_image(item, root, where, record, allow_outside) for item in cells]


def _meta_value(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= _META_TEXT_LIMIT
    return isinstance(value, (int, float, bool))


def row_to_item(
    row: dict[str, Any], *, index: int, columns: Columns, stem: str, where: str, root: Path, options: SourceOptions
) -> SourceItem:
    """Turn one table row into a :class:`SourceItem` (raises :class:`PrepError`)."""
    raw_id = row.get(columns.id) if columns.id else None
    record_id = f"{stem}_{index}" if raw_id is None or raw_id == "" else str(raw_id)
    if options.prefix_ids:
        record_id = f"{stem}/{record_id}"
    images = image_inputs(row.get(columns.image), root, where, record_id, options.allow_images_outside_root)
    question = row.get(columns.problem)
    if not isinstance(question, str):
        raise PrepError(f"{where}: column {columns.problem!r} must hold text, got {question!r}", reason="empty_problem")
    problem = clean_question(question)
    answer = row.get(columns.solution)
    if answer is None:
        raise PrepError(f"{where}: column {columns.solution!r} is empty", reason="invalid_solution")
    method = row.get(columns.task) if columns.task else None
    task = choose_task(options.task, method, problem, answer)
    solution = coerce_solution(task, answer, where=where, inferred=is_inferred(options.task, method))
    used = {columns.image, columns.problem, columns.solution, columns.id}
    meta = {key: value for key, value in row.items() if key not in used and _meta_value(value)}
    meta.update(source=stem, row=index)
    return SourceItem(
        id=record_id, task=task, images=images, problem=problem, solution=solution, origin=where, meta=meta
    )


def guarded_row_batches(batches: Iterator, errors: tuple[type[BaseException], ...], describe) -> Iterator[list[dict]]:
    """``to_pylist()`` of each Arrow batch; a read error (a file damaged past its footer only fails while
    iterating) becomes one ``PrepError`` whose message is ``describe(exception)``."""
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            rows = batch.to_pylist()
        except errors as exc:
            raise PrepError(describe(exc), reason="malformed_input") from None
        yield rows

