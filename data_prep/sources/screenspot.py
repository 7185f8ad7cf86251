"""Reader for ScreenSpot-style GUI grounding JSON (``--format screenspot``): ``point`` records.

Input: a JSON array as in ScreenSpot's released ``screenspot_{mobile,web,desktop}.json``::

    [{"img_filename": "web_3b0a….png", "bbox": [42, 1102, 197, 70],
      "instruction": "view the details of the item", "data_type": "text", "data_source": "shop"}, …]

``bbox`` is ``[x, y, width, height]`` in pixels of the screenshot in the original release
(``--screenspot-bbox xywh``, the default); the box ``[42, 1102, 197, 70]`` above cannot be
``[x1, y1, x2, y2]`` (y2 < y1). Re-packaged copies differ (some ScreenSpot-v2 mirrors store
``[x1, y1, x2, y2]``): ``--screenspot-bbox xyxy`` reads pixel corners. ``question`` is taken
for ``instruction`` and ``image`` for ``img_filename`` (VLMEvalKit's copy).

Records: task ``point``, problem the instruction, solution the element's box
``[x1, y1, x2, y2]`` in pixels; ``meta``: ``source`` (the file's stem, e.g. the platform),
``data_type`` (``text`` / ``icon``; evaluation reports click accuracy per data type) and
``data_source``. Ids are ``<file stem>_<index>``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from data_prep.items import Rejected, SourceItem
from data_prep.packed import PrepError, is_finite_number
from data_prep.sources import SourceOptions, SourceSpec, stem_of
from data_prep.sources.common import iter_json_array, source_image_path

BBOX_CONVENTIONS = ("xywh", "xyxy")


def _box(value: Any, convention: str, where: str) -> list[float]:
    if not (isinstance(value, list) and len(value) == 4 and all(is_finite_number(v) for v in value)):
        raise PrepError(f"{where}: bbox must be 4 numbers, got {value!r}", reason="invalid_solution")
    if convention == "xyxy":
        return list(value)
    x, y, w, h = value
    return [x, y, x + w, y + h]


def read(spec: SourceSpec, options: SourceOptions) -> Iterator[SourceItem | Rejected]:
    """One ``point`` item per element of the array."""
    if spec.input is None:
        raise PrepError("--format screenspot needs --input FILE.json", reason="missing_input")
    convention = options.screenspot_bbox
    if convention not in BBOX_CONVENTIONS:
        raise PrepError(f"--screenspot-bbox must be one of {', '.join(BBOX_CONVENTIONS)}, got {convention!r}")
    stem = stem_of(spec.input)
    root = spec.image_root or spec.input.parent
    for index, (lineno, obj) in enumerate(iter_json_array(spec.input)):
        where = f"{spec.input}:{lineno}"
        try:
            if not isinstance(obj, dict):
                raise PrepError(f"{where}: expected a JSON object, got {type(obj).__name__}", reason="malformed_record")
            record_id = f"{stem}/{stem}_{index}" if options.prefix_ids else f"{stem}_{index}"
            name = obj.get("img_filename", obj.get("image"))
            problem = obj.get("instruction", obj.get("question"))
            if not isinstance(name, str) or not name:
                raise PrepError(f"{where}: missing 'img_filename'", reason="missing_field")
            if not isinstance(problem, str) or not problem.strip():
                raise PrepError(f"{where}: missing 'instruction'", reason="missing_field")
            meta = {"source": stem}
            for key in ("data_type", "data_source"):
                if isinstance(obj.get(key), str):
                    meta[key] = obj[key]
            yield SourceItem(
                id=record_id, task="point",
                images=[source_image_path(name, root, record=record_id, where=where,
                                          allow_outside=options.allow_images_outside_root)],
                problem=" ".join(problem.split()), solution=_box(obj.get("bbox"), convention, where),
                origin=where, meta=meta,
            )
        except PrepError as err:
            yield Rejected(origin=where, reason=err.reason, message=str(err))
