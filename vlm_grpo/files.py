"""Small file helpers: writes that never leave a half-written file behind, strict JSON text."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


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
