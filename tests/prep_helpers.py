"""Shared helpers for the data_prep tests (tests/test_prep_*.py): tiny images, JSONL
sources, a CLI runner and hand-made packed datasets. Plain functions, no fixtures."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from data_prep.cli import main
from data_prep.packed import Record
from data_prep.writer import write_records_and_manifest


def make_image(
    path: Path, size: tuple[int, int] = (64, 48), color: Any = (200, 30, 30), mode: str = "RGB", fmt: str | None = None
) -> Path:
    """Write a solid-colour image (any Pillow mode/format) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format=fmt)
    return path


def image_bytes(size: tuple[int, int] = (32, 24), color: Any = (10, 120, 30), fmt: str = "PNG") -> bytes:
    """Encoded bytes of a solid-colour RGB image."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def write_jsonl(path: Path, rows: Iterable[Any]) -> Path:
    """Write objects (or raw strings, written as-is) one per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def vlm_line(rid: Any, image: Any, question: str, answer: Any, method: str | None = None) -> dict[str, Any]:
    """One VLM-R1 training JSONL object."""
    row: dict[str, Any] = {
        "id": rid,
        "image": image,
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
    }
    if method is not None:
        row["accu_reward_method"] = method
    return row


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """Run ``data_prep.cli.main`` and capture (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*argv, "--quiet"])
    return code, out.getvalue(), err.getvalue()


def leftovers(parent: Path) -> list[str]:
    """Temp/backup directories the writer may have left in ``parent``."""
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (to prove sources were not modified)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


def write_dataset(directory: Path, records: list[dict[str, Any]], images: dict[str, Image.Image] | None = None) -> Path:
    """A hand-made packed dataset (valid checksum) holding exactly these record objects."""
    (directory / "images").mkdir(parents=True, exist_ok=True)
    for name, image in (images or {}).items():
        image.save(directory / name)
    write_records_and_manifest(
        directory,
        [Record(**{"meta": {}, **obj}) for obj in records],
        num_images=len(images or {}),
        sources=[],
        skipped={},
        warnings={},
        settings={},
    )
    return directory


def rec_record(rid: str = "r1", image: str = "images/a.png", size: tuple[int, int] = (32, 24), **extra: Any) -> dict:
    """A valid rec record object (override any field with keywords)."""
    return {
        "id": rid,
        "task": "rec",
        "images": [image],
        "image_sizes": [list(size)],
        "problem": "the red square",
        "solution": [1, 2, 10, 12],
        **extra,
    }
