"""Reader for VLM-R1's REC evaluation JSON (``--format rec-json``).

The file is a JSON list (as in VLM-R1's ``rec_jsons_processed/*.json``) of objects::

    {"image": "train2014/COCO_train2014_000000580957.jpg",
     "problem": "bowl behind the others",          # or "normal_caption"
     "solution": [x1, y1, x2, y2],                  # absolute pixels: this is what is used
     "normalized_solution": [n1, n2, n3, n4],       # 0..1000, only cross-checked
     "height": 480, "width": 640, "image_id": 580957, "ann_id": ..., ...}

* The absolute ``solution`` is the box. When ``normalized_solution`` and
  ``width``/``height`` are present, the box is compared with
  ``normalized * size / 1000``; a difference above ``--box-tolerance`` (in 0..1000
  units) counts a ``box_mismatch`` warning. ``width``/``height`` are also compared with
  the real image size (``size_mismatch``). Both are reported, not rejected.
* Remaining scalar fields (COCO ids …) are kept in ``meta``.
* ``id`` is ``obj["id"]`` if present, else ``<file stem>_<index>`` (0-based position).
* The task is ``rec`` unless ``--task`` says otherwise.
* ``image`` is relative to ``--image-root`` (default: the JSON file's folder) and must stay
  inside it unless ``--allow-images-outside-root`` is given.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_prep.items import Rejected, SourceItem
from data_prep.packed import PrepError
from data_prep.sources import SourceOptions, SourceSpec, stem_of
from data_prep.sources.common import clean_question, coerce_solution, iter_json_array, parse_box, source_image_path

_USED = {"image", "problem", "normal_caption", "solution", "normalized_solution", "height", "width", "id"}


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def box_disagreement(box: list[float], normalized: list[float], width: int, height: int) -> float:
    """Largest difference, in 0..1000 units, between an absolute box and a normalized one.

    >>> box_disagreement([64, 48, 320, 240], [100, 100, 500, 500], 640, 480)
    0.0
    """
    scaled = [box[0] / width, box[1] / height, box[2] / width, box[3] / height]
    return max(abs(1000 * s - n) for s, n in zip(scaled, normalized))


def convert(obj: Any, *, where: str, index: int, spec: SourceSpec, options: SourceOptions) -> SourceItem:
    """Turn one element of the JSON list into a :class:`SourceItem` (raises :class:`PrepError`)."""
    if not isinstance(obj, dict):
        raise PrepError(f"{where}: expected a JSON object, got {type(obj).__name__}", reason="malformed_record")
    image = obj.get("image")
    if not isinstance(image, str) or not image:
        raise PrepError(f"{where}: missing field 'image' (a path)", reason="missing_field")
    question = obj.get("problem") or obj.get("normal_caption")
    if not isinstance(question, str):
        raise PrepError(f"{where}: missing field 'problem' or 'normal_caption'", reason="missing_field")
    if "solution" not in obj:
        raise PrepError(f"{where}: missing field 'solution'", reason="missing_field")
    task = options.task or "rec"
    solution = coerce_solution(task, obj["solution"], where=where)
    width, height = _positive_int(obj.get("width")), _positive_int(obj.get("height"))
    warnings = []
    normalized = parse_box(obj.get("normalized_solution"))
    if task == "rec" and normalized is not None and width and height:
        if box_disagreement(solution, normalized, width, height) > options.box_tolerance:
            warnings.append("box_mismatch")
    stem = stem_of(spec.input)
    raw_id = obj.get("id")
    record_id = f"{stem}_{index}" if raw_id is None or raw_id == "" else str(raw_id)
    if options.prefix_ids:
        record_id = f"{stem}/{record_id}"
    meta: dict[str, Any] = {"source": stem}
    meta.update(
        {key: value for key, value in obj.items() if key not in _USED and isinstance(value, (str, int, float, bool))}
    )
    root = spec.image_root or (spec.input.parent if spec.input else Path("."))
    return SourceItem(
        id=record_id,
        task=task,
        images=[
            source_image_path(image, root, record=record_id, where=where, allow_outside=options.allow_images_outside_root)
        ],
        problem=clean_question(question),
        solution=solution,
        origin=where,
        meta=meta,
        declared_size=(width, height) if width and height else None,
        warnings=warnings,
    )


def read(spec: SourceSpec, options: SourceOptions) -> Iterator[SourceItem | Rejected]:
    """Yield one item per list element; a malformed file raises, a bad element is Rejected."""
    if spec.input is None:
        raise PrepError("--format rec-json needs --input FILE.json", reason="missing_input")
    for index, (lineno, obj) in enumerate(iter_json_array(spec.input)):
        where = f"{spec.input}:{lineno} [item {index}]"
        try:
            yield convert(obj, where=where, index=index, spec=spec, options=options)
        except PrepError as err:
            yield Rejected(origin=where, reason=err.reason, message=str(err))
