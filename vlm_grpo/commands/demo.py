"""The offline end-to-end demo.

Builds the tiny Qwen2.5-VL, draws a synthetic grounding image, and samples a
group of responses for it through the real processor and chat template.
"""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="demo_output", help="folder for everything the demo writes (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, weights and sampling (default: %(default)s)")
    parser.add_argument("--num-generations", type=int, default=4, help="group size G (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a reduced run for tests")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from PIL import Image, ImageDraw

    from vlm_grpo.generation import generate, user_message
    from vlm_grpo.modeling import load_model, load_processor
    from vlm_grpo.tiny import TinySpec, build_tiny

    output = Path(args.output)
    start = time.perf_counter()
    model_dir = output / "tiny"
    if not (model_dir / "config.json").exists():
        build_tiny(model_dir, TinySpec(seed=args.seed))
    model, processor = load_model(str(model_dir)), load_processor(str(model_dir))
    image = Image.new("RGB", (112, 112), (235, 235, 235))
    ImageDraw.Draw(image).ellipse((20, 30, 60, 70), fill=(220, 30, 30))
    question = "Locate the red circle. Output its box as [x1, y1, x2, y2]."
    group = generate(
        model, processor, [user_message(question)], [[image]],
        max_new_tokens=24, do_sample=True, num_return_sequences=args.num_generations, seed=args.seed,
    )
    print(f"question: {question}  (image 112x112, {group.prompt_tokens[0]} prompt tokens)")
    for i, text in enumerate(group.texts):
        print(f"  completion {i}: {text!r}")
    print(f"demo finished in {time.perf_counter() - start:.1f}s; model in {model_dir}")
    return 0
