"""Build an offline tiny model of a family (Qwen2.5-VL by default): real architecture, random weights, a locally
trained tokenizer with the family's chat template and special tokens.

The folder looks like a real checkpoint (config.json, model.safetensors, tokenizer,
preprocessor and chat template) and loads through the same code as a hub model.
"""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vlm_grpo.families import FAMILIES
    from vlm_grpo.tiny import DEFAULT_FAMILY, TinySpec

    defaults = TinySpec()
    parser.add_argument("--output", required=True, help="folder to write the checkpoint to")
    parser.add_argument("--family", choices=sorted(FAMILIES), default=DEFAULT_FAMILY,
                        help="model family (transformers model_type) of the tiny model (default: %(default)s)")
    parser.add_argument("--template", default=None,
                        help="chat template flavour of the family (Qwen3.5: think, the default, or nothink)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="weight and tokenizer seed (default: %(default)s)")
    parser.add_argument("--text-hidden", type=int, default=defaults.text_hidden, help="language model width (default: %(default)s)")
    parser.add_argument("--text-layers", type=int, default=defaults.text_layers, help="language model depth (default: %(default)s)")
    parser.add_argument("--vision-hidden", type=int, default=defaults.vision_hidden, help="vision tower width (default: %(default)s)")
    parser.add_argument("--vision-depth", type=int, default=defaults.vision_depth, help="vision tower depth (default: %(default)s)")
    parser.add_argument("--min-pixels", type=int, default=defaults.min_pixels, help="processor min_pixels (default: %(default)s)")
    parser.add_argument("--max-pixels", type=int, default=defaults.max_pixels, help="processor max_pixels (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint in --output")


def _save_atomically(model, processor, output) -> None:
    """Save into a temp folder beside ``output``, then move it (or its files) into place: a failure
    (a full disk) leaves no half-written checkpoint behind."""
    import os
    import shutil

    from data_prep.writer import temp_sibling

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(output, "tmp")
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if not output.exists():
            os.rename(tmp, output)
            return
        for file in sorted(tmp.iterdir()):  # into an existing folder: each file replaced whole
            os.replace(file, output / file.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vlm_grpo.files import output_errors_explained
    from vlm_grpo.families import get_family
    from vlm_grpo.tiny import TinySpec, build_tiny

    output = Path(args.output)
    with output_errors_explained(output, "--output", kept="Nothing was written."):
        if (output / "config.json").exists() and not args.overwrite:
            raise ValueError(f"{output} already holds a checkpoint; pass --overwrite to replace it")
    spec = TinySpec(
        text_hidden=args.text_hidden,
        text_layers=args.text_layers,
        vision_hidden=args.vision_hidden,
        vision_depth=args.vision_depth,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        seed=args.seed,
    )
    start = time.perf_counter()
    family = get_family(args.family)
    model, processor = build_tiny(None, spec, family, args.template)
    with output_errors_explained(output, "--output", kept="Nothing was written."):
        _save_atomically(model, processor, output)
    params = sum(p.numel() for p in model.parameters())
    flavour = f", {args.template} template" if args.template else ""
    print(f"tiny {family.display}{flavour} ({params / 1e6:.2f}M parameters) written to {output} in {time.perf_counter() - start:.1f}s")
    return 0
