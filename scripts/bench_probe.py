"""What the speed features' exactness probes cost at the start of a run (`vlm_grpo.speed.probe`).

    python scripts/bench_probe.py [--repeats 5]

Each probe builds a small twin of the policy from its config and runs it on the plain path and with the
feature on, so its cost depends on the family, not on the policy's size. Measured on the tiny model
and on a Qwen2.5-VL-3B built on the meta device from ``../shared/qwen2_5_vl_3b_shape.json`` (the
published sizes; no weights are read or allocated). Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPE = ROOT.parent / "shared" / "qwen2_5_vl_3b_shape.json"


def shaped_3b():
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    shape = json.loads(SHAPE.read_text())
    text = dict(shape["text_config"])
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": text.pop("rope_theta"),
                               "mrope_section": text.pop("mrope_section")}
    ids = shape["token_ids"]
    config = Qwen2_5_VLConfig(text_config=text, vision_config=shape["vision_config"], image_token_id=ids["image_pad"],
                              video_token_id=ids["video_pad"], vision_start_token_id=ids["vision_start"],
                              vision_end_token_id=ids["vision_end"])
    with torch.device("meta"):
        return Qwen2_5_VLForConditionalGeneration(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each probe (default: %(default)s)")
    args = parser.parse_args(argv)

    from vlm_grpo.speed.probe import check_image_cache, check_shared_prompt
    from vlm_grpo.tiny import build_tiny

    models = {"tiny": build_tiny()[0]}
    if SHAPE.exists():
        models["qwen2_5_vl_3b (meta)"] = shaped_3b()
    figures = {}
    print("| model | probe | result | median (s) | min (s) |\n|---|---|---|---:|---:|")
    for label, model in models.items():
        for probe, check in (("group_image_cache", check_image_cache), ("group_shared_prompt", check_shared_prompt)):
            times, result = [], None
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = check(model)
                times.append(time.perf_counter() - start)
            figures[f"{label}/{probe}"] = {"exact": result is None, "median_s": round(statistics.median(times), 3),
                                           "min_s": round(min(times), 3)}
            print(f"| {label} | {probe} | {'exact' if result is None else result} | "
                  f"{statistics.median(times):.3f} | {min(times):.3f} |")
    print(json.dumps({"benchmark": "probe", "repeats": args.repeats, "figures": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
