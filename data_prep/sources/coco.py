"""Reader for COCO instances JSON (``--format coco``): detection records for the ``det`` task.

Input: one ``instances_*.json`` with ``images`` (``id``, ``file_name``, ``width``,
``height``), ``annotations`` (``image_id``, ``category_id``, ``bbox`` as COCO's
``[x, y, width, height]`` in pixels, ``iscrowd``) and ``categories`` (``id``, ``name``).
Images are ``file_name`` under ``--image-root`` (default: the JSON's folder).

``--coco-records`` picks the records:

* ``category`` (default): one record per image and category present in it, the prompt
  naming the category ("Locate every dog in the image."), the solution that category's boxes;
  with ``--coco-negatives N``, also N categories absent from the image (chosen by a seed
  from the image id, so a rerun picks the same), each with the solution ``[]``, so the
  model learns to answer "none" (VLM-R1's OVD data asks about absent categories too).
* ``image``: one record per image, the prompt naming every category of the file, the
  solution every box with its category as label; an image with no annotation gives an
  empty solution (a record that teaches "none").

Boxes become ``{"box": [x, y, x + w, y + h], "label": name}``. Crowd annotations
(``iscrowd: 1``, which COCO's own evaluation ignores) are left out, counted as the
``crowd_skipped`` warning. Ids are ``<file stem>_<image id>[_<category id>]``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_prep.items import Rejected, SourceItem
from data_prep.packed import PrepError, is_finite_number, parse_json
from data_prep.sources import SourceOptions, SourceSpec, stem_of
from data_prep.sources.common import open_input, source_image_path

RECORD_MODES = ("category", "image")


def _load(path: Path) -> dict[str, Any]:
    open_input(path)
    try:
        data = parse_json(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PrepError(f"{path}: not a COCO instances JSON file ({exc})", reason="malformed_json") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise PrepError(f"{path}: a COCO instances file is an object with lists 'images', 'annotations' and "
                        "'categories'", reason="missing_field")
    return data


def _box(ann: dict, where: str) -> list[float]:
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox)):
        raise PrepError(f"{where}: annotation {ann.get('id')!r}: bbox must be [x, y, width, height], got {bbox!r}",
                        reason="invalid_solution")
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def read(spec: SourceSpec, options: SourceOptions) -> Iterator[SourceItem | Rejected]:
    """One item per image and category (or per image, ``--coco-records image``)."""
    if spec.input is None:
        raise PrepError("--format coco needs --input instances.json", reason="missing_input")
    mode = options.coco_records
    if mode not in RECORD_MODES:
        raise PrepError(f"--coco-records must be one of {', '.join(RECORD_MODES)}, got {mode!r}")
    data = _load(spec.input)
    stem = stem_of(spec.input)
    names = {c.get("id"): str(c.get("name", "")).strip() for c in data["categories"] if isinstance(c, dict)}
    by_image: dict[Any, list[dict]] = defaultdict(list)
    crowd: dict[Any, int] = defaultdict(int)
    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            continue
        if ann.get("iscrowd"):
            crowd[ann.get("image_id")] += 1
        else:
            by_image[ann.get("image_id")].append(ann)
    root = spec.image_root or spec.input.parent
    for image in data["images"]:
        where = f"{spec.input}: image {image.get('id') if isinstance(image, dict) else image!r}"
        try:
            yield from _items(image, by_image, crowd, names, mode, stem, root, where, options)
        except PrepError as err:
            yield Rejected(origin=where, reason=err.reason, message=str(err))


def _items(image: Any, by_image: dict, crowd: dict, names: dict, mode: str, stem: str, root: Path, where: str,
           options: SourceOptions) -> Iterator[SourceItem]:
    if not isinstance(image, dict) or not isinstance(image.get("file_name"), str):
        raise PrepError(f"{where}: an image needs 'id' and 'file_name'", reason="missing_field")
    image_id = image.get("id")
    base = f"{stem}_{image_id}"
    if options.prefix_ids:
        base = f"{stem}/{base}"
    path = source_image_path(image["file_name"], root, record=base, where=where,
                             allow_outside=options.allow_images_outside_root)
    size = (image["width"], image["height"]) if isinstance(image.get("width"), int) and isinstance(image.get("height"), int) else None
    warnings = ["crowd_skipped"] * crowd.get(image_id, 0)
    meta = {"source": stem, "coco_image_id": image_id, "file_name": image["file_name"]}
    groups: dict[Any, list[dict]] = defaultdict(list)
    for ann in by_image.get(image_id, []):
        if ann.get("category_id") not in names:
            raise PrepError(f"{where}: annotation {ann.get('id')!r} names unknown category {ann.get('category_id')!r}",
                            reason="invalid_solution")
        groups[ann["category_id"]].append(ann)
    if mode == "image":
        solution = [{"box": _box(a, where), "label": names[a["category_id"]]} for anns in groups.values() for a in anns]
        listed = ", ".join(name for name in names.values() if name)
        yield SourceItem(id=base, task="det", images=[path], problem=f"Locate every object of these categories: {listed}.",
                         solution=solution, origin=where, meta=meta, declared_size=size, warnings=warnings)
        return
    absent = sorted((c for c in names if c not in groups), key=str)
    negatives = random.Random(f"coco-negatives/{image_id}").sample(absent, min(options.coco_negatives, len(absent)))
    for category_id in negatives:
        yield SourceItem(id=f"{base}_{category_id}", task="det", images=[path],
                         problem=f"Locate every {names[category_id]} in the image.", solution=[], origin=where,
                         meta={**meta, "category_id": category_id, "negative": True}, declared_size=size)
    for category_id in sorted(groups, key=str):
        name = names[category_id]
        solution = [{"box": _box(a, where), "label": name} for a in groups[category_id]]
        yield SourceItem(id=f"{base}_{category_id}", task="det", images=[path], problem=f"Locate every {name} in the image.",
                         solution=solution, origin=where, meta={**meta, "category_id": category_id}, declared_size=size,
                         warnings=warnings)
