"""Evaluation throughput (samples/s) of the tiny model at batch sizes 1, 8 and 32.

    python scripts/bench_eval.py [--num 64] [--max-new-tokens 32]

Builds the tiny model and a synthetic REC set in a temp dir, evaluates the same
records at each batch size (greedy, fixed max_new_tokens), prints a table and, as its
last line, one JSON object with the figures and the settings.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from data_prep import pack
from data_prep.synthetic import generate
from vlm_grpo.data import build_rows
from vlm_grpo.evaluate import EvalSettings, evaluate_rows
from vlm_grpo.modeling import load_model, load_processor
from vlm_grpo.tiny import build_tiny


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=64, help="records evaluated per batch size")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,8,32")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_tiny(root / "tiny")
        pack(generate("rec", args.num, seed=0), root / "data")
        processor = load_processor(str(root / "tiny"))
        model = load_model(str(root / "tiny")).eval()
        rows = build_rows([str(root / "data")], processor, box_frame="model_pixels")
        evaluate_rows(model, processor, rows, [0, 1], EvalSettings(batch_size=2, max_new_tokens=4), progress=False)
        figures = {}  # (after one warm-up batch: first-call costs are not throughput)
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            settings = EvalSettings(batch_size=batch_size, max_new_tokens=args.max_new_tokens)
            start = time.perf_counter()
            evaluate_rows(model, processor, rows, list(range(len(rows))), settings, progress=False)
            elapsed = time.perf_counter() - start
            figures[str(batch_size)] = round(len(rows) / elapsed, 2)
    print("| batch size | samples/s |\n|---:|---:|")
    for batch_size, rate in figures.items():
        print(f"| {batch_size} | {rate} |")
    print(json.dumps({"samples_per_s": figures, "num": args.num, "max_new_tokens": args.max_new_tokens,
                      "model": "tiny (default TinySpec)", "device": "cpu"}))


if __name__ == "__main__":
    main()
