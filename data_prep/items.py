"""The typed hand-off between source readers and the packer.

A source reader (``data_prep.sources.*``, :mod:`data_prep.synthetic`) turns its input
into a stream of :class:`SourceItem` (one per would-be record) and :class:`Rejected`
(a line or row it could not read). The packer (:func:`data_prep.packing.pack`) validates
items, stores their images and writes records; it raises on a :class:`Rejected` or
skips and counts it under ``--skip-invalid``. Problems with the whole input (a missing
file, a missing column) are not items: readers raise :class:`~data_prep.packed.PrepError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from data_prep.images import ImageInput


@dataclass
class SourceItem:
    """One example read from a source, before validation and image storage.

    Fields:
        id: the record id (unique across everything packed together).
        task: ``rec`` | ``math`` | ``count`` | ``mcq`` | ``open`` or a user task.
        images: image inputs (path, bytes or PIL image) in order.
        problem: the question, already stripped of ``<image>`` markers and instructions.
        solution: already coerced to the task's type (rec: box in pixels of the
            *original* first image; count: int; others: str).
        origin: where it came from, for messages: ``file.jsonl:12`` or ``file.parquet row 3``.
        meta: provenance copied into the record.
        declared_size: ``(width, height)`` the source claims for the first image, if any;
            the packer counts a ``size_mismatch`` warning when the real image differs.
        warnings: reason keys for problems that do not reject the item (``box_mismatch``),
            counted in the summary and the manifest.
    """

    id: str
    task: str
    images: list[ImageInput]
    problem: str
    solution: Any
    origin: str
    meta: dict[str, Any] = field(default_factory=dict)
    declared_size: tuple[int, int] | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class Rejected:
    """A line or row a reader could not turn into an item (bad JSON, missing field ...)."""

    origin: str
    reason: str
    message: str
