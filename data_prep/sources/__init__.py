"""Source readers: one module per input format, found by name in :data:`FORMATS`.

Every reader has the same signature::

    read(spec: SourceSpec, options: SourceOptions) -> Iterator[SourceItem | Rejected]

and raises :class:`~data_prep.packed.PrepError` for problems with the whole input
(missing file, missing column). Modules are imported only when their format is used,
so ``import data_prep`` does not load pyarrow or ``datasets``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from data_prep.items import Rejected, SourceItem
from data_prep.packed import PrepError

if TYPE_CHECKING:
    from data_prep.synthetic import SyntheticConfig

#: Format name -> ``module:function`` of its reader.
FORMATS: dict[str, str] = {
    "vlm-r1": "data_prep.sources.vlm_r1:read",
    "rec-json": "data_prep.sources.rec_json:read",
    "parquet": "data_prep.sources.parquet:read",
    "hf-disk": "data_prep.sources.hf_disk:read",
    "coco": "data_prep.sources.coco:read",
    "screenspot": "data_prep.sources.screenspot:read",
    "synthetic": "data_prep.synthetic:read_source",
}


@dataclass(frozen=True)
class SourceSpec:
    """One input and the directory its relative image paths are resolved against."""

    input: Path | None
    image_root: Path | None = None

    def describe(self, fmt: str) -> dict[str, Any]:
        """How the input is recorded in ``manifest.json``."""
        return {
            "format": fmt,
            "input": str(self.input) if self.input else None,
            "image_root": str(self.image_root) if self.image_root else None,
        }


@dataclass
class SourceOptions:
    """Reader options (all formats share one object; each reader uses what applies).

    Fields:
        task: force this task for every record (see the task rule in ``sources.common``).
        prefix_ids: prefix every id with its input file's stem (``stem/id``), so ids
            from several inputs cannot collide.
        box_tolerance: rec-json: allowed difference, in 0..1000 units, between the
            absolute box and ``normalized_solution`` before a ``box_mismatch`` warning.
        image_column / problem_column / solution_column / id_column / task_column:
            parquet and hf-disk column names; None picks the first present of the defaults.
        split: hf-disk: which split of a saved ``DatasetDict`` to read.
        num / seed / synthetic: the synthetic source's size, seed and generator config.
        coco_records: coco: ``category`` (a record per image and category) or ``image``.
        coco_negatives: coco, ``category``: absent categories asked per image (solution ``[]``).
        screenspot_bbox: screenspot: ``xywh`` (the original release) or ``xyxy``.
        allow_images_outside_root: read image paths that resolve outside the image root
            (absolute paths, ``..``, symlinks out); off by default, see
            :func:`data_prep.sources.common.source_image_path`.
    """

    task: str | None = None
    prefix_ids: bool = False
    box_tolerance: float = 2.0
    image_column: str | None = None
    problem_column: str | None = None
    solution_column: str | None = None
    id_column: str | None = None
    task_column: str | None = None
    split: str | None = None
    num: int = 1000
    seed: int = 0
    synthetic: SyntheticConfig | None = field(default=None)
    allow_images_outside_root: bool = False
    coco_records: str = "category"
    coco_negatives: int = 0
    screenspot_bbox: str = "xywh"


class Reader(Protocol):
    """The signature every source reader implements."""

    def __call__(self, spec: SourceSpec, options: SourceOptions) -> Iterator[SourceItem | Rejected]: ...


def get_reader(fmt: str) -> Reader:
    """The reader for a format name; an unknown name lists the valid ones."""
    if fmt not in FORMATS:
        raise PrepError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}", reason="unknown_format")
    module_name, function = FORMATS[fmt].split(":")
    return getattr(importlib.import_module(module_name), function)


def read_sources(
    fmt: str, specs: Iterable[SourceSpec], options: SourceOptions
) -> Iterator[SourceItem | Rejected]:
    """Chain the items of several inputs of one format, in order (an unknown format fails now)."""
    reader = get_reader(fmt)
    specs = list(specs)
    return (entry for spec in specs for entry in reader(spec, options))


def stem_of(path: Path | None) -> str:
    """The name used for an input in ids and ``meta.source`` (file name without suffix)."""
    if path is None:
        return "input"
    return path.stem or path.name
