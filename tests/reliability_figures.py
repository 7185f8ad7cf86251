"""Shared by the reliability tests (issue #10): the figures file each slow test writes,
and a hang detector. Plain functions, no fixtures.

Figures: one JSON file per area in :func:`results_dir` (``$RELIABILITY_RESULTS``, else
``build/reliability/`` in the repository); ``scripts/reliability_report.py`` renders them
all into ``docs/RELIABILITY.md``. The format is documented at the top of that script.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
RERUN = "make test-slow && .venv/bin/python scripts/reliability_report.py"


def results_dir() -> Path:
    """Where the slow tier writes its figures (created on demand)."""
    path = Path(os.environ.get("RELIABILITY_RESULTS") or REPO / "build" / "reliability")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_area(
    slug: str,
    area: str,
    rows: list[dict[str, Any]],
    *,
    command: str = RERUN,
    notes: str | None = None,
    wall_s: float | None = None,
) -> Path:
    """Write ``<results dir>/<slug>.json`` for one area; every row needs ``case``, ``tried``, ``outcome``."""
    for row in rows:
        missing = {"case", "tried", "outcome"} - set(row)
        if missing:
            raise ValueError(f"figures row {row!r} lacks {sorted(missing)}")
    body: dict[str, Any] = {"area": area, "command": command, "rows": rows}
    if notes:
        body["notes"] = notes
    if wall_s is not None:
        body["wall_s"] = round(wall_s, 1)
    path = results_dir() / f"{slug}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


class Hung(AssertionError):
    """A call that did not return within the hang detector's (generous) limit."""


def bounded(fn: Callable[[], T], limit_s: float, what: str = "call") -> T:
    """Run ``fn`` in a daemon thread and return its value; raise :class:`Hung` after ``limit_s``.

    A hang detector, not a speed check: ``limit_s`` is tens of seconds, far above any
    normal run, so only a real hang (an unbounded loop, a stuck C call) trips it. A hung
    thread is left behind (it cannot be killed); the test fails and names the input.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed back to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="reliability-bounded", daemon=True)
    thread.start()
    thread.join(limit_s)
    if thread.is_alive():
        raise Hung(f"{what} did not return within {limit_s:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]
