"""The packed dataset format, defined once: record schema, validation and the reader.

A packed dataset is a directory::

    records.jsonl   one JSON object per line (a :class:`Record`)
    images/         image files named by content, ``<sha256>.<ext>``, each stored once
    manifest.json   format version, counts, sources, settings and the sha256 of records.jsonl

Training and evaluation read it with :func:`load_packed`, which trusts nothing:
it checks the manifest and its format version, verifies the records checksum,
validates every line, and sandboxes image paths so that a record can never name a
file outside the dataset directory (``../``, absolute paths, symlinks whose target
escapes). :meth:`PackedDataset.open_image` checks each image's content hash and size
again when it is opened. Nothing is ever unpickled; the only parsers involved are ``json`` and Pillow,
which decodes images as PNG or JPEG only (:data:`STORED_FORMATS`, what prep writes).

All failures raise :class:`PrepError` with a message that names the file and line
(or the record id) and says what to do.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from PIL import Image

from data_prep.model_limits import image_size_problem, text_problem
from rewards.tasks import BUILTIN_TASKS, TASKS
from rewards.tasks.answers import is_finite_number  # noqa: F401  (re-exported: the sources use it)
from rewards.tasks.base import check_present

FORMAT_VERSION = 1
RECORDS_FILE = "records.jsonl"
MANIFEST_FILE = "manifest.json"
IMAGES_DIR = "images"
#: The only formats prep writes, so the only ones a packed dataset's images are decoded as.
STORED_FORMATS = ("PNG", "JPEG")
#: How prep names a stored image: the sha256 of its bytes (checked again when it is opened).
CONTENT_NAME = re.compile(r"^([0-9a-f]{64})\.(?:png|jpg)$")

#: Built-in tasks (one module each in :mod:`rewards.tasks`, which owns each one's solution check).
#: Other task names are allowed: a registered user task is checked by its own module; an
#: unregistered one's solution only has to be present (and non-empty when it is a string).
KNOWN_TASKS = BUILTIN_TASKS

_RECORD_FIELDS = ("id", "task", "images", "image_sizes", "problem", "solution", "meta")
_REQUIRED_FIELDS = _RECORD_FIELDS[:-1]


class PrepError(ValueError):
    """A dataset problem: bad source input, an invalid record, or a damaged packed dataset.

    ``reason`` is a short stable key (``missing_image``, ``box_outside_image`` ...) used to
    count skipped records with ``--skip-invalid``; the message names the file and line or
    the record id and says what to do.
    """

    def __init__(self, message: str, *, reason: str = "invalid_record") -> None:
        # One line: messages quote library errors (pyarrow's span several lines), and the CLI
        # prints exactly one `error: ...` line.
        super().__init__(" ".join(line.strip() for line in message.splitlines() if line.strip()))
        self.reason = reason


@dataclass
class Record:
    """One training/evaluation example, exactly as stored in ``records.jsonl``.

    Fields:
        id: unique within the dataset.
        task: ``rec`` | ``math`` | ``count`` | ``mcq`` | ``open`` | ``det`` | ``point`` or a user task name.
        images: paths relative to the dataset directory (``images/<sha256>.<ext>``).
        image_sizes: ``[width, height]`` of each stored image, aligned with ``images``.
        problem: the question itself (no ``<image>`` marker, no fixed instructions).
        solution: rec: ``[x1, y1, x2, y2]`` in pixels of the stored first image;
            math/open: string; count: int >= 0; mcq: one capital letter; det: a list of
            ``{"box": [x1, y1, x2, y2], "label": str}``; point: the target's box. Each task's
            module in :mod:`rewards.tasks` says what its solution is (``Task.check``).
        meta: free-form provenance (``source``, original ids ...).
    """

    id: str
    task: str
    images: list[str]
    image_sizes: list[list[int]]
    problem: str
    solution: Any
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The record as the JSON object written to ``records.jsonl`` (field order fixed)."""
        return {name: getattr(self, name) for name in _RECORD_FIELDS}

    @classmethod
    def from_json(cls, obj: Any, *, where: str = "") -> Record:
        """Build a record from a parsed JSON object, checking field names (not values)."""
        if not isinstance(obj, dict):
            raise PrepError(f"{where}: expected a JSON object, got {type(obj).__name__}", reason="malformed_record")
        missing = [name for name in _REQUIRED_FIELDS if name not in obj]
        if missing:
            raise PrepError(f"{where}: record is missing field(s) {', '.join(missing)}", reason="missing_field")
        unknown = sorted(set(obj) - set(_RECORD_FIELDS))
        if unknown:
            raise PrepError(
                f"{where}: unknown record field(s) {', '.join(unknown)} (format version {FORMAT_VERSION} "
                f"allows {', '.join(_RECORD_FIELDS)})",
                reason="malformed_record",
            )
        return cls(**{name: obj[name] for name in _REQUIRED_FIELDS}, meta=obj.get("meta", {}))


def parse_json(text: str | bytes) -> Any:
    """``json.loads`` whose every failure is a ``ValueError`` (nesting too deep included).

    ``json`` raises ``RecursionError`` on deeply nested input and a plain ``ValueError``
    on integers over Python's digit limit; callers turn the ``ValueError`` into a message.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def json_problem(value: Any) -> str | None:
    """Why ``value`` cannot be written as strict UTF-8 JSON (NaN, Infinity, a lone
    surrogate, a non-JSON type), or None."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, TypeError, RecursionError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


def solution_check(task: str) -> Callable[[Any], str | None]:
    """The solution check of a task: its module's :attr:`rewards.tasks.Task.check`; an unregistered
    task's solution only has to be present (and non-empty when it is a string)."""
    spec = TASKS.get(task)
    return spec.check if spec is not None else check_present


def _invalid(where: str, record_id: Any, what: str, reason: str) -> PrepError:
    return PrepError(f"{where}: record {record_id!r}: {what}", reason=reason)


def check_relative_path(rel: Any) -> str | None:
    """Say why ``rel`` is not a safe dataset-relative POSIX path, or return None."""
    if not isinstance(rel, str) or not rel:
        return f"image path must be a non-empty string, got {rel!r}"
    if "\x00" in rel:
        return f"image path {rel!r} contains a NUL character"
    if "\\" in rel or PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).drive:
        return f"image path {rel!r} must be relative to the dataset directory (no absolute paths, no backslashes)"
    if ".." in PurePosixPath(rel).parts:
        return f"image path {rel!r} escapes the dataset directory ('..')"
    return None


def validate_record(record: Record, *, where: str = "record") -> None:
    """Check one record against the format; raise :class:`PrepError` naming ``where`` and the id.

    Checks: id/task/problem are non-empty strings; images are safe relative paths with one
    positive ``[w, h]`` per image; the solution passes the task's check (:func:`solution_check`);
    the whole record is strict UTF-8 JSON (no NaN/Infinity, no lone surrogates); every box of
    a box task (``Task.boxes``: rec, det, point) lies inside the first image; meta is an object; the problem, a text solution and
    ``meta.thinking`` (SFT's reasoning text) hold no special token of the chat template and every image has a size the image processors
    resize (:mod:`data_prep.model_limits`). Does not touch the file system.
    """
    rid = record.id
    if not isinstance(rid, str) or not rid.strip():
        raise PrepError(f"{where}: record id must be a non-empty string, got {rid!r}", reason="missing_field")
    if not isinstance(record.task, str) or not record.task.strip():
        raise _invalid(where, rid, f"task must be a non-empty string, got {record.task!r}", "missing_field")
    if not isinstance(record.problem, str) or not record.problem.strip():
        raise _invalid(where, rid, "problem (the question) is empty", "empty_problem")
    if not isinstance(record.images, list) or not isinstance(record.image_sizes, list):
        raise _invalid(where, rid, "images and image_sizes must be lists", "malformed_record")
    if len(record.images) != len(record.image_sizes):
        raise _invalid(
            where, rid, f"{len(record.images)} images but {len(record.image_sizes)} image_sizes", "malformed_record"
        )
    for rel, size in zip(record.images, record.image_sizes):
        problem = check_relative_path(rel)
        if problem:
            raise _invalid(where, rid, problem, "unsafe_path")
        if not (
            isinstance(size, list)
            and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        ):
            raise _invalid(where, rid, f"image size must be [width, height] positive integers, got {size!r}", "malformed_record")
        problem = image_size_problem(*size)
        if problem:
            raise _invalid(where, rid, f"image {rel} {problem}", "image_aspect_ratio")
    if not isinstance(record.meta, dict):
        raise _invalid(where, rid, f"meta must be an object, got {type(record.meta).__name__}", "malformed_record")
    task = TASKS.get(record.task)
    problem = solution_check(record.task)(record.solution)
    if problem:
        raise _invalid(where, rid, problem, "invalid_solution")
    problem = text_problem(record.problem, record.solution, record.meta.get("thinking"))
    if problem:
        raise _invalid(where, rid, problem, "special_token")
    problem = json_problem(record.to_json())
    if problem:
        raise _invalid(
            where, rid, f"cannot be stored as JSON text: NaN/Infinity, a lone surrogate or a non-JSON value ({problem})",
            "malformed_record",
        )
    if task is not None and task.boxes is not None:
        found = task.boxes(record.solution)
        if not record.images:
            raise _invalid(where, rid, f"a {record.task} record needs an image", "missing_image")
        for box in found:
            width, height = record.image_sizes[0]
            x1, y1, x2, y2 = box
            if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
                shown = record.solution if record.task in ("rec", "point") else box
                raise _invalid(where, rid, f"box {shown} is outside the {width}x{height} image", "box_outside_image")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_inside(root: Path, rel: str, *, record_id: str, where: str) -> Path:
    """Absolute path of ``rel`` under ``root``, rejecting anything that lands outside ``root``.

    Symlinks are followed before the check, so a link whose target escapes is rejected too.
    """
    problem = check_relative_path(rel)
    if problem:
        raise _invalid(where, record_id, problem, "unsafe_path")
    try:
        resolved = (root / rel).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a name too long, a symlink loop ...
        raise _invalid(where, record_id, f"image path {rel!r} cannot be resolved ({exc})", "unsafe_path") from None
    if not resolved.is_relative_to(root.resolve()):
        raise _invalid(
            where, record_id, f"image path {rel!r} resolves to {resolved}, outside the dataset directory", "unsafe_path"
        )
    return resolved


@dataclass
class PackedDataset:
    """A loaded packed dataset: validated records plus checked access to their images."""

    path: Path
    manifest: dict[str, Any]
    records: list[Record]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, index: int) -> Record:
        return self.records[index]

    @property
    def tasks(self) -> set[str]:
        """The set of task names present in the records."""
        return {record.task for record in self.records}

    def image_path(self, record: Record, i: int = 0) -> Path:
        """Absolute path of the record's ``i``-th image, checked to lie inside the dataset."""
        if not 0 <= i < len(record.images):
            raise PrepError(f"{self.path}: record {record.id!r} has {len(record.images)} image(s), no index {i}")
        return resolve_inside(self.path, record.images[i], record_id=record.id, where=str(self.path))

    def open_image(self, record: Record, i: int = 0) -> Image.Image:
        """Open the record's ``i``-th image fully decoded as PIL RGB (alpha composited on white).

        Checked on every open, so an image swapped or edited after prep is an error naming the
        record instead of boxes converted with a stale size:

        - the content hash: a file named by content (``<sha256>.png|jpg``, how prep stores every
          image) must hash to its name. The bytes are read once, hashed and decoded from memory, so
          this costs a sha256 pass, small next to the decoding (a 1344x1024 image: 0.6 ms for
          12.5 ms of JPEG decoding, 4 ms for 33 ms of PNG). Files named otherwise (hand-made
          datasets) skip it.
        - the size: the width and height in the image header must equal ``image_sizes[i]`` (what
          the boxes and the model's resize were computed from); checked before decoding.
        """
        from data_prep.images import to_rgb  # local: keeps numpy out of plain format use

        path = self.image_path(record, i)
        rel = record.images[i]
        where = f"{self.path}: record {record.id!r}: image {rel}"
        try:
            data = path.read_bytes()
            named = CONTENT_NAME.match(PurePosixPath(rel).name)
            actual = hashlib.sha256(data).hexdigest() if named else None
            if named and actual != named.group(1):
                raise PrepError(
                    f"{where} does not match its content hash (the name says sha256 {named.group(1)[:12]}…, the "
                    f"file has {actual[:12]}…): it was replaced or edited after prep; restore the file or re-run "
                    "`vlm-grpo prep`",
                    reason="changed_image",
                )
            with Image.open(io.BytesIO(data), formats=STORED_FORMATS) as image:
                if list(image.size) != list(record.image_sizes[i]):
                    width, height = record.image_sizes[i]
                    raise PrepError(
                        f"{where} is {image.size[0]}x{image.size[1]} but the record says {width}x{height} (its "
                        "boxes and the model's resize were computed from that): the image was replaced after "
                        "prep; restore the file or re-run `vlm-grpo prep`",
                        reason="changed_image",
                    )
                image.load()
                return to_rgb(image)
        except PrepError:
            raise
        except FileNotFoundError:
            raise PrepError(
                f"{where} is missing; the dataset is incomplete, re-run `vlm-grpo prep`",
                reason="missing_image",
            ) from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure on a damaged file
            raise PrepError(
                f"{where} cannot be decoded as {' or '.join(STORED_FORMATS)} ({type(exc).__name__}: {exc}); "
                "re-run `vlm-grpo prep`",
                reason="corrupt_image",
            ) from None


def _read_manifest(root: Path) -> dict[str, Any]:
    manifest_path = root / MANIFEST_FILE
    if not root.is_dir():
        raise PrepError(f"{root}: not a directory; pass a packed dataset made by `vlm-grpo prep`")
    if not manifest_path.is_file():
        raise PrepError(f"{manifest_path} not found: {root} is not a packed dataset; create one with `vlm-grpo prep`")
    try:
        manifest = parse_json(manifest_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise PrepError(f"{manifest_path}: not valid JSON ({exc}); re-run `vlm-grpo prep`") from None
    if not isinstance(manifest, dict):
        raise PrepError(f"{manifest_path}: expected a JSON object; re-run `vlm-grpo prep`")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise PrepError(
            f"{manifest_path}: format_version {version!r} is not supported (this code reads version "
            f"{FORMAT_VERSION}); re-pack the dataset with this version of `vlm-grpo prep`"
        )
    return manifest


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the file system
        return False


def load_packed(path: str | Path, *, check_images: bool = True) -> PackedDataset:
    """Read and verify a packed dataset directory.

    Checks, in order: ``manifest.json`` exists and has this :data:`FORMAT_VERSION`; the
    sha256 of ``records.jsonl`` matches the manifest; every line parses and passes
    :func:`validate_record`; ids are unique; every image path stays inside the directory
    (symlinks followed) and, when ``check_images``, exists as a file. Images are not
    read here: :meth:`PackedDataset.open_image` decodes them on demand and checks then that
    each still hashes to its name and has the recorded size.
    """
    root = Path(path).absolute()
    manifest = _read_manifest(root)
    records_path = root / RECORDS_FILE
    if not records_path.is_file():
        raise PrepError(f"{records_path} not found; the dataset is incomplete, re-run `vlm-grpo prep`")
    expected = manifest.get("records_sha256")
    actual = sha256_file(records_path)
    if actual != expected:
        raise PrepError(
            f"{records_path}: checksum mismatch (sha256 {actual[:12]}…, manifest says {str(expected)[:12]}…): "
            "the file was modified or truncated after packing; re-run `vlm-grpo prep` (or restore the file)"
        )
    records: list[Record] = []
    seen: dict[str, int] = {}
    checked: dict[str, Path] = {}
    with open(records_path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            where = f"{records_path}:{lineno}"
            try:
                obj = parse_json(line)
            except ValueError as exc:
                raise PrepError(
                    f"{where}: malformed JSON ({getattr(exc, 'msg', None) or exc})", reason="malformed_json"
                ) from None
            record = Record.from_json(obj, where=where)
            validate_record(record, where=where)
            if record.id in seen:
                raise _invalid(where, record.id, f"duplicate id (first on line {seen[record.id]})", "duplicate_id")
            seen[record.id] = lineno
            for rel in record.images:
                if rel not in checked:
                    checked[rel] = resolve_inside(root, rel, record_id=record.id, where=where)
                    if check_images and not _is_file(checked[rel]):
                        raise _invalid(where, record.id, f"image {rel} is missing from {root}", "missing_image")
            records.append(record)
    if manifest.get("num_records") != len(records):
        raise PrepError(
            f"{root / MANIFEST_FILE}: num_records is {manifest.get('num_records')!r} but {records_path} "
            f"has {len(records)} records; re-run `vlm-grpo prep`"
        )
    return PackedDataset(path=root, manifest=manifest, records=records)
