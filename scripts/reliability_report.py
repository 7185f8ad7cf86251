"""Render docs/RELIABILITY.md from the figures the slow test tier writes.

    make test-slow && .venv/bin/python scripts/reliability_report.py [--results DIR] [--output FILE]

Figures format: one JSON file per area in the results dir (``$RELIABILITY_RESULTS``, else
``build/reliability/``), named ``<area slug>.json``; areas are rendered in the order of
:data:`ORDER` (the issue's order), then any others by file name::

    {
      "area": "Crash-safe training",              # section title
      "command": "make test-slow",                # how to rerun this area, shown under its table
      "rows": [                                   # one table row per case
        {"case": "SIGKILL during save",           # required: what was tried
         "tried": 20,                             # required: how many inputs / faults / kills
         "outcome": "20 resumed, 0 steps lost",   # required: what happened, in words
         "max s": 1.2}                            # optional: any further keys become extra columns
      ],
      "notes": "free text under the table",       # optional
      "wall_s": 12.3                              # optional: wall time of the test that wrote it
    }

Tests write these with ``tests/reliability_figures.py: write_area(...)``. Other JSON files in
the dir (a list, or an object without ``area``: raw details a test keeps) are not rendered.
The script only reads and formats: every figure in the document comes from a real run. Its last
line is a checksum of the text above it (:func:`stamp`), so a hand edit shows (a default-suite
test checks it): change the tests or this script and render again instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RERUN = "make test-slow && .venv/bin/python scripts/reliability_report.py"
#: Known area slugs, in the order the document shows them.
ORDER = ("prep_fuzz", "sandbox_fuzz", "rewards_fuzz", "training", "eval_faults")

PREFACE = """\
What the project does with bad input, injected faults and untrusted files, and what the
test suite tried to make it fail. The fast cases run in the default suite (`make test`);
the generated ones (fuzzing, kill loops) in the slow tier (`make test-slow`), which wrote
the figures below.

Rules the tests hold the code to:

- **Bad data** (`vlm-grpo prep`, every source format): exit 2 with one line
  `error: <file>:<line or row>: record '<id>': <what is wrong>. Fix the input, or pass
  --skip-invalid …`, no traceback, and no output or temp dir left behind; with
  `--skip-invalid` the bad records are skipped and counted by reason in the summary and
  `manifest.json`. Images: CMYK, paletted, grayscale, LA/RGBA/PA, 16-bit and float images
  are converted to 8-bit RGB (alpha composited on white); only JPEG, PNG, WebP, GIF, BMP,
  TIFF, PPM and JPEG 2000 are decoded (EPS, which would start Ghostscript, and Pillow's
  other plugins are refused as `unsupported_image`); images over Pillow's
  decompression-bomb limit are refused from their header; only regular files up to 1 GiB
  are read (a source naming `/dev/zero` or a FIFO is refused, not read).
- **Sandboxing**: a packed dataset whose record names an image outside its directory
  (`../`, an absolute path, a backslash or drive path, a symlink that escapes) is refused
  when it is loaded, naming the record id; packed images decode as PNG or JPEG only;
  nothing is unpickled; checkpoints load with `trust_remote_code=False`; the
  project's sources contain no `torch.load` without `weights_only=True` (checked by a test).
- **Rewards**: every built-in reward returns one finite float or `None` per completion on
  any input, in bounded time; the math reward's bound is its 1 s deadline plus guards
  against single long C calls.
- **Evaluation**: a sample whose image, generation or answer fails is recorded with its
  error and the run goes on; `--resume` skips finished samples.
"""


def load_areas(results: Path) -> list[dict[str, Any]]:
    """Every area file in ``results``, in :data:`ORDER`, then by file name.

    A JSON file that is not an object with an ``area`` key (raw per-run details a test keeps
    beside its figures) is skipped; an area file with malformed rows is an error.
    """
    areas = []
    rank = {slug: i for i, slug in enumerate(ORDER)}
    for path in sorted(results.glob("*.json"), key=lambda p: (rank.get(p.stem, len(ORDER)), p.name)):
        area = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(area, dict) or "area" not in area:
            continue
        if not isinstance(area.get("rows"), list):
            raise ValueError(f"{path}: 'rows' must be a list (see the format in {Path(__file__).name})")
        for row in area["rows"]:
            missing = {"case", "tried", "outcome"} - set(row)
            if missing:
                raise ValueError(f"{path}: row {row!r} lacks {sorted(missing)}")
        area["_file"] = path.name
        areas.append(area)
    return areas


def _cell(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: case, tried, outcome, then the other keys in first-seen order."""
    columns = ["case", "tried", "outcome"]
    for row in rows:
        columns += [key for key in row if key not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(key, "")) for key in columns) + " |" for row in rows]
    return "\n".join(lines)


def _commit() -> str:
    """The short commit of the checkout, with ``-dirty`` when tracked files (other than this document) changed."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                  ":!docs/RELIABILITY.md"], cwd=REPO, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + ("-dirty" if changed.strip() else "")) if head else "unknown"


def render(areas: list[dict[str, Any]], results: Path) -> str:
    tried = sum(int(row["tried"]) for area in areas for row in area["rows"])
    where = results.relative_to(REPO) if results.is_relative_to(REPO) else results
    parts = [
        "# Reliability\n",
        PREFACE,
        f"Rerun: `{RERUN}`\n",
        f"Figures below: {tried:,} generated inputs and injected faults in {len(areas)} area(s), from the "
        f"slow tier's last run; rendered at commit `{_commit()}` on {dt.date.today().isoformat()}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPU cores shared with other work (times are wall "
        f"clock). Source: `{where}/*.json`, rendered by `scripts/reliability_report.py`.\n",
    ]
    if not areas:
        parts.append("No figures found: run `make test-slow` first.\n")
    for area in areas:
        parts.append(f"## {area['area']}\n")
        parts.append(table(area["rows"]) + "\n")
        if area.get("notes"):
            parts.append(area["notes"] + "\n")
        footer = f"Rerun this area: `{area.get('command', RERUN)}`"
        if area.get("wall_s") is not None:
            footer += f" (took {area['wall_s']:g} s)"
        parts.append(footer + f". Figures: `{area['_file']}`.\n")
    return "\n".join(parts)


STAMP = "<!-- rendered by scripts/reliability_report.py from the slow tier's figures; sha256 of the text above: {} -->"


def stamp(text: str) -> str:
    """``text`` (ending in a newline) with its checksum line appended (see :func:`check_stamp`)."""
    return text + "\n" + STAMP.format(hashlib.sha256(text.encode("utf-8")).hexdigest()) + "\n"


def check_stamp(document: str) -> bool:
    """Whether ``document`` is exactly what :func:`stamp` made: the text above its last line unchanged."""
    body, _, last = document.rstrip("\n").rpartition("\n")  # body: the text, with its own final newline
    return last == STAMP.format(hashlib.sha256(body.encode("utf-8")).hexdigest())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("RELIABILITY_RESULTS") or str(REPO / "build" / "reliability")
    parser.add_argument("--results", type=Path, default=Path(default), help="figures dir (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "RELIABILITY.md", help="(default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        areas = load_areas(args.results)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(stamp(render(areas, args.results.resolve())), encoding="utf-8")
    print(f"wrote {args.output} ({len(areas)} area(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
