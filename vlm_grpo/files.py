"""Small file helpers: writes that never leave a half-written file behind, strict JSON text,
output folders whose problems (a full disk, a path that cannot be made) are one line."""

from __future__ import annotations

import contextlib
import json
import math
import os
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
