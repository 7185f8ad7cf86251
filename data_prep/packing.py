"""Packing: source items in, a validated packed dataset (or a train/val pair) out.

:func:`pack` is the Python entry point used by the CLI, the demo and the tests::

    from data_prep import pack, PackOptions, synthetic
    summary = pack(synthetic.generate("rec", 200, seed=0), "data/rec", PackOptions(val_fraction=0.1))

It streams items in chunks: the images of a chunk are decoded, converted, hashed and
written by a thread pool (Pillow and hashlib release the GIL), then the chunk's items
are validated in input order, so the first error reported is the first in the input.
Every record passes :func:`~data_prep.packed.validate_record` before it is kept; with
``skip_invalid`` a bad item is counted by reason instead of aborting. Everything is
written into a temp dir beside the output and renamed into place at the end (see
:mod:`data_prep.writer`): an error or Ctrl-C leaves no output behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image
from tqdm import tqdm

from data_prep.boxes import clip_box, overshoot, scale_box
from data_prep.images import ImageInput, StoredImage, store_image
from data_prep.items import Rejected, SourceItem
from data_prep.model_limits import TOKEN_PIXELS
from data_prep.packed import IMAGES_DIR, PrepError, Record, validate_record
from rewards.tasks import TASKS
from data_prep.split import split_by_image
from data_prep.summary import PackSummary, SplitSummary
from data_prep.writer import atomic_output_dir, check_output, write_records_and_manifest

T = TypeVar("T")

#: Most image threads: each holds decoded images in memory, and decoding is bound by the CPUs.
MAX_WORKERS = 64


@dataclass
class PackOptions:
    """How to pack. Every field is also a ``vlm-grpo prep`` option (same name, dashes).

    Fields:
        max_pixels: downscale images with ``w * h`` above this (boxes rescaled with them).
        clip_boxes: clip rec boxes that overshoot the image by at most ``clip_tolerance`` px
            (counted as ``box_clipped`` warnings); off by default: overshoots are rejected.
        clip_tolerance: the largest overshoot, in pixels, that ``clip_boxes`` clips.
        skip_invalid: skip invalid records (counted by reason) instead of failing.
        dedup: drop records equal to an earlier one (same task, same image contents,
            same whitespace-normalised problem, same solution).
        limit: stop after this many records have been kept.
        val_fraction: if > 0, write ``OUTPUT/train`` and ``OUTPUT/val`` split by image.
        seed: seed of the split.
        overwrite: replace an existing output (atomically, once the new one is complete).
        workers: image threads; 0 picks ``min(4, cpu_count)``.
        jpeg_quality / png_compress_level: used when an image has to be re-encoded.
        progress: show a tqdm progress bar on stderr.
        chunk_size: items read and validated per batch.
    """

    max_pixels: int | None = None
    clip_boxes: bool = False
    clip_tolerance: float = 4.0
    skip_invalid: bool = False
    dedup: bool = False
    limit: int | None = None
    val_fraction: float = 0.0
    seed: int = 0
    overwrite: bool = False
    workers: int = 0
    jpeg_quality: int = 95
    png_compress_level: int = 6
    progress: bool = False
    chunk_size: int = 256

    def __post_init__(self) -> None:
        checks = [
            (self.max_pixels is None or self.max_pixels >= TOKEN_PIXELS,
             f"--max-pixels must be at least {TOKEN_PIXELS} (28x28 px, one image token of the Qwen processors; "
             f"smaller images hold nothing the model can see), got {self.max_pixels}"),
            (self.clip_tolerance >= 0, f"--clip-tolerance must be >= 0, got {self.clip_tolerance}"),
            (self.limit is None or self.limit >= 1, f"--limit must be >= 1, got {self.limit}"),
            (0.0 <= self.val_fraction < 1.0, f"--val-fraction must be in [0, 1), got {self.val_fraction}"),
            (0 <= self.workers <= MAX_WORKERS,
             f"--workers must be 0..{MAX_WORKERS} (each image thread holds decoded images in memory), got {self.workers}"),
            (1 <= self.jpeg_quality <= 100, f"jpeg_quality must be in 1..100, got {self.jpeg_quality}"),
            (0 <= self.png_compress_level <= 9, f"png_compress_level must be in 0..9, got {self.png_compress_level}"),
            (self.chunk_size >= 1, f"chunk_size must be >= 1, got {self.chunk_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise PrepError(message)

    def settings(self) -> dict[str, Any]:
        """The options that shape the output, as recorded in ``manifest.json``."""
        keys = ("max_pixels", "clip_boxes", "clip_tolerance", "skip_invalid", "dedup", "limit", "val_fraction", "seed")
        return {key: getattr(self, key) for key in keys}


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _image_key(source: ImageInput) -> tuple[str, Any]:
    if isinstance(source, Path):
        return ("path", os.path.abspath(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return ("bytes", hashlib.sha1(source).digest())
    return ("memory", id(source))  # only valid while the chunk holds the object


class _Packer:
    """Accumulates validated records and stored images for one pack run."""

    def __init__(self, options: PackOptions, images_dir: Path, mapper: Callable[..., Iterable[Any]]) -> None:
        self.options = options
        self.images_dir = images_dir
        self.mapper = mapper
        self.cache: dict[tuple[str, Any], StoredImage | PrepError] = {}
        self.records: list[Record] = []
        self.first_seen: dict[str, str] = {}
        self.dedup_keys: set[tuple[Any, ...]] = set()
        self.refs: Counter[str] = Counter()
        self.stored: dict[str, StoredImage] = {}
        self.skipped: Counter[str] = Counter()
        self.warnings: Counter[str] = Counter()
        self.seen = 0

    @property
    def full(self) -> bool:
        return self.options.limit is not None and len(self.records) >= self.options.limit

    def _store(self, source: ImageInput) -> StoredImage | PrepError:
        try:
            return store_image(
                source,
                self.images_dir,
                max_pixels=self.options.max_pixels,
                jpeg_quality=self.options.jpeg_quality,
                png_compress_level=self.options.png_compress_level,
            )
        except PrepError as err:
            return err

    def add_chunk(self, chunk: list[SourceItem | Rejected]) -> None:
        """Store the chunk's new images in parallel, then validate its items in order."""
        self.seen += len(chunk)
        todo: dict[tuple[str, Any], ImageInput] = {}
        for entry in chunk:
            if isinstance(entry, SourceItem):
                for source in entry.images:
                    key = _image_key(source)
                    if key not in self.cache:
                        todo.setdefault(key, source)
        for key, result in zip(todo, self.mapper(self._store, list(todo.values()))):
            self.cache[key] = result
            if isinstance(result, StoredImage):
                self.stored[result.name] = result
        for entry in chunk:
            if self.full:
                break
            try:
                if isinstance(entry, Rejected):
                    raise PrepError(entry.message, reason=entry.reason)
                self._accept(entry)
            except PrepError as err:
                if not self.options.skip_invalid:
                    raise PrepError(
                        f"{err}. Fix the input, or pass --skip-invalid to skip and count such records",
                        reason=err.reason,
                    ) from None
                self.skipped[err.reason] += 1
        for key in [key for key in todo if key[0] == "memory"]:
            del self.cache[key]

    def _accept(self, item: SourceItem) -> None:
        where, rid = item.origin, item.id
        stored: list[StoredImage] = []
        for source in item.images:
            result = self.cache[_image_key(source)]
            if isinstance(result, PrepError):
                raise PrepError(f"{where}: record {rid!r}: {result}", reason=result.reason)
            stored.append(result)
        notes = list(item.warnings)
        solution = item.solution
        task = TASKS.get(item.task)
        if task is not None and task.boxes is not None and stored and task.check(solution) is None:
            # the task's geometry: each box fitted to the image, then rescaled with it (--max-pixels)
            fitted = []
            for box in task.boxes(solution):
                box, clipped = self._fit_box(item, box, stored[0].original_size)
                notes += ["box_clipped"] if clipped else []
                fitted.append(scale_box(box, stored[0].original_size, stored[0].size))
            solution = task.with_boxes(solution, fitted)
        if item.declared_size is not None and stored and tuple(item.declared_size) != stored[0].original_size:
            notes.append("size_mismatch")
        record = Record(
            id=rid,
            task=item.task,
            images=[image.name for image in stored],
            image_sizes=[list(image.size) for image in stored],
            problem=item.problem,
            solution=solution,
            meta=item.meta,
        )
        validate_record(record, where=where)
        if self.options.dedup:
            key = (record.task, tuple(record.images), " ".join(record.problem.split()), json.dumps(solution))
            if key in self.dedup_keys:
                self.skipped["duplicate"] += 1
                return
            self.dedup_keys.add(key)
        if rid in self.first_seen:
            raise PrepError(
                f"{where}: record {rid!r}: duplicate id (first seen at {self.first_seen[rid]}); "
                "ids must be unique (--prefix-ids prefixes each id with its input file name)",
                reason="duplicate_id",
            )
        self.first_seen[rid] = where
        self.refs.update(record.images)
        self.warnings.update(notes)
        self.records.append(record)

    def _fit_box(self, item: SourceItem, box: list[float], size: tuple[int, int]) -> tuple[list[float], bool]:
        over = overshoot(box, size)
        if over <= 0:
            return box, False
        if self.options.clip_boxes and over <= self.options.clip_tolerance:
            return clip_box(box, size), True
        hint = (
            f"it overshoots by {over:g} px, more than --clip-tolerance {self.options.clip_tolerance:g}"
            if self.options.clip_boxes
            else "pass --clip-boxes to clip small overshoots"
        )
        raise PrepError(
            f"{item.origin}: record {item.id!r}: box {box} is outside the {size[0]}x{size[1]} image ({hint})",
            reason="box_outside_image",
        )


def _dir_bytes(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def _write_split(
    directory: Path, final: Path, records: list[Record], staging: Path, extra: dict[str, Any]
) -> SplitSummary:
    """Write one packed dataset into ``directory`` (renamed to ``final`` later), moving its images."""
    images_dir = directory / IMAGES_DIR
    images_dir.mkdir(parents=True, exist_ok=True)
    names = sorted({name for record in records for name in record.images})
    if staging != images_dir:
        for name in names:
            os.rename(staging.parent / name, directory / name)
    manifest = write_records_and_manifest(directory, records, num_images=len(names), **extra)
    return SplitSummary(final, manifest["num_records"], len(names), manifest["task_counts"])


def _finish(packer: _Packer, tmp: Path, staging: Path, output: Path, meta: dict[str, Any]) -> PackSummary:
    if not packer.seen:
        raise PrepError("the input holds no records (an empty file?); check --input and --format", reason="empty_input")
    if not packer.records:
        skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(packer.skipped.items())) or "none"
        raise PrepError(f"no records to write (skipped: {skipped}); check the input and options")
    for name in set(packer.stored) - set(packer.refs):
        (staging.parent / name).unlink(missing_ok=True)
    extra = {"skipped": dict(packer.skipped), "warnings": dict(packer.warnings), **meta}
    if packer.options.val_fraction > 0:
        train, val = split_by_image(packer.records, packer.options.val_fraction, packer.options.seed)
        splits = {
            name: _write_split(tmp / name, output / name, records, staging, {**extra, "split": name})
            for name, records in (("train", train), ("val", val))
        }
        staging.rmdir()
        staging.parent.rmdir()
    else:
        splits = {"all": _write_split(tmp, output, packer.records, staging, extra)}
    sizes = [packer.stored[name].size for name in packer.refs]
    return PackSummary(
        output=output,
        splits=splits,
        skipped=dict(sorted(packer.skipped.items())),
        warnings=dict(sorted(packer.warnings.items())),
        image_size_range={
            "min": list(min(sizes, key=lambda s: (s[0] * s[1], s))),
            "max": list(max(sizes, key=lambda s: (s[0] * s[1], s))),
        }
        if sizes
        else None,
        output_bytes=_dir_bytes(tmp),
    )


def pack(
    items: Iterable[SourceItem | Rejected],
    output: str | Path,
    options: PackOptions | None = None,
    *,
    sources: list[dict[str, Any]] | None = None,
    settings: dict[str, Any] | None = None,
) -> PackSummary:
    """Validate ``items``, store their images and write a packed dataset at ``output``.

    Args:
        items: source items (e.g. ``synthetic.generate(...)`` or a reader from
            :mod:`data_prep.sources`), consumed lazily, in order.
        output: the dataset directory to create (``output/train`` and ``output/val``
            with ``options.val_fraction``). Its parent is created if needed.
        options: see :class:`PackOptions`.
        sources: descriptions of the inputs, recorded in ``manifest.json``.
        settings: extra creation settings recorded in ``manifest.json``.

    Returns a :class:`~data_prep.summary.PackSummary`. Raises :class:`PrepError` on the
    first invalid item (unless ``skip_invalid``) and on whole-input problems; in every
    failure case nothing is left at ``output`` (an existing one is untouched).
    """
    options = options or PackOptions()
    output = Path(output).absolute()
    check_output(output, overwrite=options.overwrite)
    started = time.perf_counter()
    workers = options.workers or min(4, os.cpu_count() or 1)
    meta = {"sources": list(sources or []), "settings": {**options.settings(), **(settings or {})}}
    with warnings.catch_warnings():
        # store_image checks Image.MAX_IMAGE_PIXELS itself and rejects bombs with a clear message.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with atomic_output_dir(output, overwrite=options.overwrite) as tmp:
            # Images go straight to their final place, or to a staging dir until the split is known.
            staging = tmp / ".staging" / IMAGES_DIR if options.val_fraction > 0 else tmp / IMAGES_DIR
            staging.mkdir(parents=True)
            with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
                desc="prep", unit="rec", file=sys.stderr, disable=not options.progress, total=options.limit
            ) as bar:
                mapper = pool.map if workers > 1 else map
                packer = _Packer(options, staging, mapper)
                for chunk in _chunks(items, options.chunk_size):
                    packer.add_chunk(chunk)
                    bar.update(len(chunk) if options.limit is None else len(packer.records) - bar.n)
                    bar.set_postfix(kept=len(packer.records), skipped=sum(packer.skipped.values()))
                    if packer.full:
                        break
            summary = _finish(packer, tmp, staging, output, meta)
    summary.seconds = time.perf_counter() - started
    return summary
