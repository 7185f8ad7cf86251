"""What a pack run produced: :class:`PackSummary` and its human-readable table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SplitSummary:
    """One written packed dataset (the whole output, or its ``train`` / ``val`` part)."""

    path: Path
    num_records: int
    num_images: int
    task_counts: dict[str, int]


@dataclass
class PackSummary:
    """Counts and figures of one :func:`data_prep.packing.pack` run.

    ``splits`` maps ``"all"`` (no split) or ``"train"`` / ``"val"`` to what was written.
    ``skipped`` counts dropped records by reason (``--skip-invalid``, ``--dedup``);
    ``warnings`` counts problems that did not drop a record (``box_mismatch``,
    ``size_mismatch``, ``box_clipped``). ``image_size_range`` holds the stored
    ``[width, height]`` with the fewest and the most pixels.
    """

    output: Path
    splits: dict[str, SplitSummary]
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    image_size_range: dict[str, list[int]] | None = None
    output_bytes: int = 0
    seconds: float = 0.0

    @property
    def num_records(self) -> int:
        """Records written, all splits together."""
        return sum(split.num_records for split in self.splits.values())

    @property
    def task_counts(self) -> dict[str, int]:
        """Records written per task, all splits together."""
        counts: dict[str, int] = {}
        for split in self.splits.values():
            for task, count in split.task_counts.items():
                counts[task] = counts.get(task, 0) + count
        return dict(sorted(counts.items()))

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict of every figure."""
        return {
            "output": str(self.output),
            "num_records": self.num_records,
            "task_counts": self.task_counts,
            "splits": {name: {**asdict(split), "path": str(split.path)} for name, split in self.splits.items()},
            "skipped": self.skipped,
            "warnings": self.warnings,
            "image_size_range": self.image_size_range,
            "output_bytes": self.output_bytes,
            "seconds": round(self.seconds, 3),
        }

    def format(self) -> str:
        """The end-of-run summary table printed by ``vlm-grpo prep``."""
        rows: list[tuple[str, str]] = [("output", str(self.output))]
        for name, split in self.splits.items():
            label = "records" if name == "all" else f"records ({name})"
            tasks = ", ".join(f"{task} {count}" for task, count in split.task_counts.items())
            rows.append((label, f"{split.num_records}  [{tasks}]  images {split.num_images}"))
        skipped = sum(self.skipped.values())
        rows.append(("skipped", f"{skipped}" + (f"  [{_counts(self.skipped)}]" if skipped else "")))
        if self.warnings:
            rows.append(("warnings", _counts(self.warnings)))
        if self.image_size_range:
            low, high = self.image_size_range["min"], self.image_size_range["max"]
            rows.append(("image sizes", f"{low[0]}x{low[1]} .. {high[0]}x{high[1]}"))
        rows.append(("output size", _human_bytes(self.output_bytes)))
        rows.append(("time", f"{self.seconds:.1f} s"))
        width = max(len(key) for key, _ in rows)
        return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items()))


def _human_bytes(num: int) -> str:
    value = float(num)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{num} B"
