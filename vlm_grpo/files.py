"""Small file helpers: writes that never leave a half-written file behind (text, saved models), strict
JSON text, output folders whose problems (a full disk, a path that cannot be made) are one line, a cheap
file fingerprint, and a check that a safetensors file is whole."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from pathlib import Path

from data_prep.writer import output_error_message


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and a rename (readers see old or new, never half)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def json_text(value, **kwargs) -> str:
    """``json.dumps`` that writes strict JSON: NaN and ±Infinity become ``null``.

    Python's ``json`` writes ``NaN``/``Infinity`` by default, which other JSON readers
    (``jq``, JavaScript, pandas with ``engine="pyarrow"``) refuse.

    >>> json_text({"score": float("inf"), "box": [0.0, float("nan")]})
    '{"score": null, "box": [0.0, null]}'
    """
    return json.dumps(_finite(value), allow_nan=False, **kwargs)


class OutputError(ValueError):
    """An output that cannot be written (a full disk, a path that cannot be made); the message says what to do."""


def make_output_dir(path: str | Path, flag: str) -> Path:
    """Create the folder ``path`` (and its parents) or raise :class:`OutputError` naming ``flag``."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(output_error_message(err, path.absolute(), flag=flag, kept="")) from None
    return path


@contextlib.contextmanager
def output_errors_explained(output: str | Path, flag: str, *, kept: str = "", again: str = "run the same command again"):
    """Turn an ``OSError`` raised inside the block (a full disk ...) into one :class:`OutputError` line."""
    try:
        yield
    except OSError as err:
        raise OutputError(
            output_error_message(err, Path(output).absolute(), flag=flag, kept=kept, again=again)
        ) from err
def sampled_sha256(path: Path, *, every: int = 1 << 20, block: int = 4096) -> str:
    """sha256 of a file's size, its first 64 KiB, one ``block`` every ``every`` bytes and its last ``block``.

    A fingerprint of large files (model weights) that reads ~0.4% of them: two different
    checkpoints differ in it with near certainty, a single edited byte may not.
    """
    import hashlib

    digest = hashlib.sha256()
    size = Path(path).stat().st_size
    digest.update(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 16))
        for offset in [*range(every, size, every), max(size - block, 0)]:
            handle.seek(offset)
            digest.update(handle.read(block))
    return digest.hexdigest()


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file (cut short, torn header), or None. Reads the header only.

    The format is an 8-byte little-endian header length, a JSON header giving each tensor's
    ``dtype``, ``shape`` and ``data_offsets``, then the tensor bytes back to back: in a whole
    file each tensor has ``prod(shape) x itemsize`` bytes and the last one ends at the end.
    """
    import json
    import math

    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        return f"it has {size} bytes, fewer than a safetensors header needs"
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if 8 + length > size:
            return f"its header announces {length} bytes of metadata, more than the {size} bytes the file has"
        try:
            header = json.loads(handle.read(length))
            spans = sorted(
                (int(t["data_offsets"][0]), int(t["data_offsets"][1]), name, t["dtype"], [int(d) for d in t["shape"]])
                for name, t in header.items() if name != "__metadata__"
            )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return "its header is not the JSON table of tensors safetensors writes"
    end = 0
    for begin, stop, name, dtype, shape in spans:
        itemsize = _ITEMSIZE.get(dtype)
        if begin != end or (itemsize is not None and stop - begin != math.prod(shape) * itemsize):
            return f"its header's entry for {name} does not fit the tensors before it or its own shape"
        end = stop
    if 8 + length + end != size:
        return f"it has {size} bytes but its header describes {8 + length + end}"
    return None


_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
             "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def save_pretrained_atomically(output_dir: str | Path, *objects) -> None:
    """``save_pretrained`` each object into ``output_dir`` so that a kill never leaves a torn file there.

    Everything is written into a temporary folder inside ``output_dir`` (same file system) and
    flushed to disk; then each file is renamed into place, so a reader sees every file either
    old or new and whole. Weight files of an earlier save that this one does not write (another
    shard count) are removed last. A leftover temporary folder of a killed save is removed first.
    """
    import secrets
    import shutil

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for leftover in output_dir.glob(f"{_SAVING_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = output_dir / f"{_SAVING_PREFIX}{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        for obj in objects:
            obj.save_pretrained(tmp)
        written = sorted(p.relative_to(tmp) for p in tmp.rglob("*") if p.is_file())
        for rel in written:
            fsync_path(tmp / rel)
        for rel in written:
            (output_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, output_dir / rel)
        names = {rel.as_posix() for rel in written}
        for path in output_dir.iterdir():
            if path.is_file() and path.name not in names and _WEIGHT_FILE.match(path.name):
                path.unlink()
        fsync_path(output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_SAVING_PREFIX = ".saving-"
_WEIGHT_FILE = re.compile(r"^(model|pytorch_model|adapter_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?$")


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
