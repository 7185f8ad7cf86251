"""Benchmark of data_prep: generate and pack N synthetic records, report time and records/s.

    python scripts/bench_prep.py [--num 10000] [--task rec] [--image-size 112] [--workers 0]

Two timed phases on the same samples: ``generate`` (drawing the synthetic images only)
and ``generate+pack`` (streaming generation into :func:`data_prep.pack`: RGB checks,
PNG encoding, sha256, writes, record validation, manifest). Prints a table, then as the
last line one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from data_prep import PackOptions, load_packed, pack  # noqa: E402
from data_prep.synthetic import iter_generate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=10_000)
    parser.add_argument("--task", default="rec", choices=("rec", "count", "math"))
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--workers", type=int, default=0, help="0: min(4, CPUs)")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    generated = sum(1 for _ in iter_generate(args.task, args.num, seed=0, image_size=args.image_size))
    assert generated == args.num
    generate_s = time.perf_counter() - start

    workdir = Path(tempfile.mkdtemp(prefix="bench_prep_"))
    try:
        output = workdir / "ds"
        start = time.perf_counter()
        summary = pack(
            iter_generate(args.task, args.num, seed=0, image_size=args.image_size),
            output,
            PackOptions(val_fraction=args.val_fraction, workers=args.workers),
        )
        total_s = time.perf_counter() - start
        start = time.perf_counter()
        loaded = sum(len(load_packed(split.path)) for split in summary.splits.values())
        load_s = time.perf_counter() - start
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    figures = {
        "benchmark": "bench_prep",
        "task": args.task,
        "records": summary.num_records,
        "image_size": args.image_size,
        "workers": args.workers or min(4, os.cpu_count() or 1),
        "cpus": os.cpu_count(),
        "generate_s": round(generate_s, 3),
        "generate_pack_s": round(total_s, 3),
        "pack_only_s_est": round(max(total_s - generate_s, 0.0), 3),
        "records_per_s": round(summary.num_records / total_s, 1),
        "load_s": round(load_s, 3),
        "loaded_records": loaded,
        "output_mib": round(summary.output_bytes / 2**20, 2),
    }
    rows = [
        ("phase", "seconds", "records/s"),
        ("generate", f"{generate_s:.2f}", f"{args.num / generate_s:.0f}"),
        ("generate+pack", f"{total_s:.2f}", f"{summary.num_records / total_s:.0f}"),
        ("load_packed", f"{load_s:.2f}", f"{loaded / load_s:.0f}"),
    ]
    for row in rows:
        print(f"{row[0]:<15}{row[1]:>10}{row[2]:>12}")
    print(f"{summary.num_records} records ({args.task}, {args.image_size}px), {figures['output_mib']} MiB, "
          f"{figures['workers']} image threads on {figures['cpus']} CPUs")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
