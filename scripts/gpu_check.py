"""One GPU's check: plain TRL against every speed feature on, at the published Qwen2.5-VL-3B and Qwen3-VL-4B shapes.

    scripts/gpu_check.sh [--wheels DIR] [--models qwen2_5_vl_3b qwen3_vl_4b] [--pairs 2] [--out DIR]  # one GPU
    scripts/gpu_check.sh --device cpu --tiny                                    # the CPU suite's run of the same code

Each model has random weights in the published checkpoint's sizes (``Family.published``), bf16 (fp32 on the CPU),
``sdpa`` attention, and the tiny tokenizer (its ids lie at the start of the published vocabulary; ids above it
decode to nothing). TRL's ``GRPOTrainer`` trains it on synthetic REC data with one ~1000-token image per prompt
(31 x 31 language-model tokens: 868 px for Qwen2.5-VL, 992 px for Qwen3-VL), 2 prompts x G=8 per step,
completions forced to 256 tokens (``--tiny``: the family's tiny model, 4 x 4 image tokens, 16). The steps
alternate plain TRL (every feature off) and every feature on (the group image cache, the group-shared prompt, the
decode cache), ABBA after a warm-up, as ``scripts/bench_step.py --feature all`` does. Before the first step each
feature is probed as a training run probes it, set to ``require``: a feature that is not exact stops the check.

Figures per model and mode:
- median step time and generation time (``generate``: prefill and decode loop);
- tokens per second: completion tokens per second of generation, and all tokens (prompt + completion, every row)
  per second of step;
- peak GPU memory of one step: ``torch.cuda.max_memory_allocated`` beyond what was live at its start (weights,
  gradients' buffers and optimizer state are; activations, caches and pixel values are not);
- the training pass's MFU. FLOPs (:mod:`vlm_grpo.speed.flops`: matmuls and attention, a multiply-add is 2) of the
  plain path over every row: the vision tower per image and the language model per row (prompt + completion
  tokens, logits for the completion). Outside generation a step runs that forward 4 times: TRL's reference
  log-prob pass (1) and the training forward and backward (1 + 2); activation checkpointing's recomputation is
  not counted (model FLOPs, not hardware FLOPs). MFU = 4 x forward FLOPs / (step time outside generation x the
  GPU's bf16 dense peak: 989 TFLOP/s for an H200, ``--peak-tflops``). With the features on, the same plain-path
  FLOPs over a shorter time: a *plain-equivalent* MFU, which can exceed what the hardware does.

Writes ``gpu_check.json`` (and ``gpu_check.txt``, the table) to ``--out``; the JSON is also the last stdout line.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_step  # noqa: E402
import lock  # noqa: E402
import step_timing  # noqa: E402
import torch  # noqa: E402

from vlm_grpo.speed.flops import TextShape, VisionShape, text_flops, vision_flops  # noqa: E402

MODELS = {  # name: (family, hub id of the published checkpoint whose sizes are used)
    "qwen2_5_vl_3b": ("qwen2_5_vl", "Qwen/Qwen2.5-VL-3B-Instruct"),
    "qwen3_vl_4b": ("qwen3_vl", "Qwen/Qwen3-VL-4B-Instruct"),
}
IMAGE_GRID, TINY_GRID = 31, 4  # language-model image tokens per side
COMPLETION, TINY_COMPLETION = 256, 16
H200_BF16_TFLOPS = 989.0  # dense bf16, NVIDIA's figure for the H200 SXM


def build_model(name: str, tiny: bool, device: str, workdir: Path):
    """The model (random weights), its processor and REC rows with images of ``IMAGE_GRID``^2 tokens."""
    from transformers import GenerationConfig

    from vlm_grpo.data import build_rows
    from vlm_grpo.families import get_family
    from vlm_grpo.tiny import TinySpec, build_config, build_processor, build_tokenizer

    family_name, hub_id = MODELS[name]
    family = get_family(family_name)
    side = (TINY_GRID if tiny else IMAGE_GRID) * family.pixels_per_token
    spec = TinySpec(min_pixels=side * side, max_pixels=side * side)
    tokenizer = build_tokenizer(spec, family)
    processor = build_processor(tokenizer, spec, family)
    config = build_config(tokenizer, spec, family)
    if not tiny:
        published = family.published[hub_id]
        for part, sizes in (("text_config", published["text_config"]), ("vision_config", published["vision_config"])):
            target = getattr(config, part)
            for key, value in sizes.items():
                if isinstance(value, dict):
                    getattr(target, key).update(value)
                else:
                    setattr(target, key, value)
    text = config.text_config
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = family.transformers_class("model")._from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.generation_config = GenerationConfig(
        bos_token_id=text.bos_token_id, eos_token_id=[text.eos_token_id, text.bos_token_id],
        pad_token_id=text.pad_token_id, do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
    saved = workdir / f"{name}-model"  # TRL builds its reference model from the policy's path
    model.save_pretrained(saved)
    processor.save_pretrained(saved)
    model.config._name_or_path = str(saved)
    data = workdir / f"{name}-data"
    bench_step._make_data(data, side, 24)
    rows = build_rows([str(data)], processor, box_frame=family.box_frame, seed=0)
    return model, processor, rows, config


def forward_flops(config, rows: int, prompt_tokens: int, image_tokens: int, completion: int) -> float:
    """One plain forward over every row: the vision tower per image, the language model per row."""
    vision = VisionShape.of(config.vision_config)
    text = TextShape.of(config.text_config)
    return rows * (vision_flops(vision, image_tokens) + text_flops(text, prompt_tokens + completion, completion))


def prompt_length(processor, rows) -> int:
    row = rows.row(0)
    text = processor.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
    return len(processor(text=[text], images=[row["images"]], return_tensors="pt")["input_ids"][0])


def check_model(name: str, args, workdir: Path) -> dict:
    from vlm_grpo.speed.features import enable_speed_features

    model, processor, rows, config = build_model(name, args.tiny, args.device, workdir)
    parameters = sum(p.numel() for p in model.parameters())
    completion = TINY_COMPLETION if args.tiny else COMPLETION
    feature = dataclasses.replace(bench_step.FEATURES["all"], completion_tokens=completion)
    result = step_timing.Result("all", name, "vision_trainable", "forced", feature.prompts_per_step)
    probed = {}

    def probe(trainer):  # what a training run does before its first step, with every feature required
        for status in enable_speed_features(trainer, group_image_cache="require", group_shared_prompt="require",
                                            decode_cache="require"):
            probed[status.name] = status.active

    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the trainer's own summary: stdout is the table and the JSON
        step_timing.timed_run(feature, model, processor, rows, result, completions="forced",
                             completion_tokens=completion, output_dir=workdir / f"{name}-out", args=args,
                             cuda=args.device == "cuda", on_trainer=probe)
    wall = time.perf_counter() - start
    row = result.row()
    batch = args.num_generations * feature.prompts_per_step
    prompt = prompt_length(processor, rows)
    grid = TINY_GRID if args.tiny else IMAGE_GRID
    flops = 4 * forward_flops(config, batch, prompt, grid * grid, completion)
    peak = args.peak_tflops or (H200_BF16_TFLOPS if args.device == "cuda" else None)
    median = statistics.median
    modes = {}
    for mode in ("off", "on"):
        step, generation = median(getattr(result, mode)), median(getattr(result, f"{mode}_generation"))
        outside = median(t - g for t, g in zip(getattr(result, mode), getattr(result, f"{mode}_generation")))
        tflops = flops / outside / 1e12
        modes["plain" if mode == "off" else "features_on"] = {
            "step_s": round(step, 3),
            "generation_s": round(generation, 3),
            "outside_generation_s": round(outside, 3),
            "generated_tokens_per_s": round(batch * median(getattr(result, f"{mode}_completion_tokens")) / generation,
                                            1),
            "step_tokens_per_s": round(batch * (prompt + completion) / step, 1),
            "training_pass_tflops": float(f"{tflops:.4g}"),
            "training_pass_mfu": None if peak is None else round(tflops / peak, 4),
            "peak_memory_gib": None if row[f"{mode}_peak_mib"] is None else round(row[f"{mode}_peak_mib"] / 1024, 2),
            "times_s": row[f"{mode}_times_s"],
        }
    del model
    shutil.rmtree(workdir / f"{name}-model", ignore_errors=True)
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return {
        "model": name,
        "shape": "tiny" if args.tiny else MODELS[name][1],
        "parameters": parameters,
        "rows_per_step": batch,
        "prompt_tokens": prompt,
        "image_tokens": grid * grid,
        "completion_tokens": completion,
        "features_probed_exact": probed,
        "training_pass_flops_per_step": flops,
        **modes,
        "speedup": row["speedup"],
        "speedup_generation": row["speedup_generation"],
        "speedup_outside_generation": row["speedup_outside_generation"],
        "lm_tokens_requested": row["lm_tokens_requested"],
        "lm_tokens_computed": row["lm_tokens_computed"],
        "wall_s": round(wall, 1),
    }


def table(results: list[dict]) -> str:
    header = (f"{'model':<15} {'mode':<12} {'step s':>8} {'gen s':>8} {'rest s':>8} {'gen tok/s':>10} "
              f"{'step tok/s':>11} {'TFLOP/s':>8} {'MFU':>7} {'peak GiB':>9}")
    lines = [header, "-" * len(header)]
    for r in results:
        for mode in ("plain", "features_on"):
            m = r[mode]
            mfu = "-" if m["training_pass_mfu"] is None else f"{100 * m['training_pass_mfu']:.1f}%"
            memory = "-" if m["peak_memory_gib"] is None else f"{m['peak_memory_gib']:.2f}"
            lines.append(f"{r['model']:<15} {mode:<12} {m['step_s']:>8.2f} {m['generation_s']:>8.2f} "
                         f"{m['outside_generation_s']:>8.2f} {m['generated_tokens_per_s']:>10.1f} "
                         f"{m['step_tokens_per_s']:>11.1f} {m['training_pass_tflops']:>8.3g} {mfu:>7} {memory:>9}")
        lines.append(f"{'':<15} {'speedup':<12} {r['speedup']:>7.2f}x {r['speedup_generation']:>7.2f}x "
                     f"{r['speedup_outside_generation']:>7.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the families' tiny models (the CPU suite's run)")
    parser.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    parser.add_argument("--pairs", type=int, default=2, help="timed plain/on pairs per model (default 2)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted steps per model (default 1)")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense bf16 peak for MFU (default: 989, an H200; none on the CPU)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu_check", help="where the JSON and table go")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no GPU (torch.cuda.is_available() is False); "
              "run with --device cpu --tiny for the CPU check", file=sys.stderr)
        return 2
    import transformers

    transformers.logging.set_verbosity_error()
    pins, present = lock.read_lock(), lock.installed()
    versions = {name: present.get(name) for name in lock.SHOWN}
    differ = {n: (v, pins.get(n)) for n, v in versions.items() if n != "torch" and v != pins.get(n)}
    for name, (have, pinned) in differ.items():
        print(f"warning: {name} {have} installed, the lock has {pinned} (install the lock's wheels: --wheels DIR)",
              file=sys.stderr)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    results = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as workdir:
        for name in args.models:
            print(f"{name}: building ({'tiny' if args.tiny else MODELS[name][1]} shape) on {device}", file=sys.stderr)
            results.append(check_model(name, args, Path(workdir)))
    report = {
        "check": "gpu_check",
        "date": time.strftime("%Y-%m-%d"),
        "device": device,
        "dtype": "bfloat16" if args.device == "cuda" else "float32",
        "attention": "sdpa",
        "versions": versions,
        "lock_differs": {n: {"installed": h, "lock": p} for n, (h, p) in differ.items()},
        "peak_tflops": args.peak_tflops or (H200_BF16_TFLOPS if args.device == "cuda" else None),
        "mfu": "4 x plain-path forward FLOPs (reference pass 1, training forward 1, backward 2) / step time outside "
               "generation / peak; recomputation under activation checkpointing not counted",
        "timing": "median of ABBA-alternated steps after warm-up (plain TRL vs every speed feature on)",
        "results": results,
    }
    text = table(results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.txt").write_text(text + "\n")
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
