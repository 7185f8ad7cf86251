"""Benchmark of the speed features: full GRPO steps with features on and off, in one run.

    python scripts/bench_step.py [--feature all|image_cache|shared_prompt|decode_cache|each] [--quick]
                                 [--pairs N] [--warmup N] [--num-generations 8] [--shapes tiny scaled]
                                 [--completions forced sampled] [--completion-tokens N] [--threads N]
                                 [--family qwen2_5_vl|qwen3_vl|qwen3_5] [--settings trainable frozen]

Features:
- ``all`` (the default): every speed feature on against every feature off,
  i.e. against plain TRL ``GRPOTrainer`` on the same model, data and config:
  what a user compares. The ``scaled`` model with a ~1000-token image prompt
  (868x868 px: 961 image tokens), 2 prompts x G=8 per step, completions of up
  to 256 tokens in two settings: ``forced`` (every completion 256 tokens) and
  ``sampled`` (EOS allowed and made e^1.5 times as likely as the random model
  makes it, so lengths spread over 0..256 as a policy's do; the two modes of
  each pair sample with the same seed); vision tower trainable, and frozen.
- ``image_cache`` (the group image cache, :mod:`vlm_grpo.speed.group_cache`):
  each distinct image resized and encoded once per batch. Compared on and
  off; shapes ``tiny`` and ``scaled`` at 144 image tokens, 32-token
  completions; vision tower trainable, and frozen.
- ``shared_prompt`` (:mod:`vlm_grpo.speed.shared_prompt`): the language model
  runs each distinct prompt once per forward. Compared on and off with the
  image cache on in both; the ``scaled`` model at 961 image tokens and
  256-token completions; vision tower trainable, and frozen.
- ``decode_cache`` (:mod:`vlm_grpo.speed.decode_cache`): generation writes
  each new key/value into a buffer instead of copying the cache every step.
  Compared on and off with the image cache and the shared prompt on in both;
  the shared-prompt workload, vision trainable.
- ``each``: ``image_cache``, ``shared_prompt`` and ``decode_cache`` in turn.

Each step is TRL's real ``GRPOTrainer`` step: generation with transformers
``generate`` (``forced``: completions forced to ``max_completion_length``
tokens so every step has the same shapes), the reference log-prob pass, the
GRPO loss, the backward and the optimizer step. One prompt per step (``all``:
two), ``num_generations`` (G, default 8) completions of it. Within one training run the feature is switched
on and off between steps in the order off,on,on,off,... (after ``--warmup``
steps that are not counted), so both modes see the same machine load and the
same model; the time of a step runs from the trainer's ``on_step_begin`` to
its ``on_step_end`` (data loading excluded, identical in both modes). Beside
wall time, the process's CPU time (all its threads) is recorded per step:
on a machine shared with other work, wall time stretches with the load while
CPU time measures the work done, so ``speedup_cpu_time`` and
``speedup_outside_generation_cpu_time`` are the steadier figures there.
``speedup`` is the median off-step time over the median on-step time;
``speedup_of_fastest`` compares each mode's fastest step, the one least
disturbed by other work on a shared machine. The time spent in the model's
``generate`` (prefill and decode loop) is recorded too, and
``speedup_outside_generation`` compares the rest of the step (the reference
log-prob pass, the training forward and backward, the optimizer step).

Shapes:
- ``tiny``: the offline tiny model (default ``TinySpec``), 112x112 synthetic
  images (16 image tokens).
- ``scaled``: a scaled-down Qwen2.5-VL that keeps Qwen2.5-VL-3B's ratio of
  vision-tower to language-model forward FLOPs per sequence. For 3B
  (``../shared/qwen2_5_vl_3b_shape.json`` beside the checkout) and one 1000-token image + 100 text
  tokens + a 128-token completion, the ratio is 0.771
  (:mod:`vlm_grpo.speed.flops`: vision 5.49 TFLOP, language model 7.12 TFLOP).
  The scaled model keeps the language model's proportions at width 128
  (4 layers, 4 heads, 2 KV heads, MLP 5.375x as in 3B), a vision tower of
  width 80 (= 128 * 1280 / 2048, 3B's vision/text width ratio; one 80-wide
  head as in 3B; 4 blocks, the last with full attention, 112 px windows as in
  3B); the vision MLP width is solved so that the ratio, counted on the
  image-cache sequence (336x336 images: 144 image tokens, + its prompt's text
  tokens + 32 completion tokens), equals 3B's: it comes out at 232 (2.9x the
  width; 3B: 2.67x). The same model serves both features; only the image size
  and completion length of the data differ. Ratios are printed and written to
  the JSON line.

Qwen3-VL (``--family qwen3_vl``): the same benchmark on a scaled Qwen3-VL that
keeps Qwen3-VL-4B's ratio of vision-tower to language-model forward FLOPs. The
published Qwen3-VL-4B config: text hidden 2560, 36 layers, intermediate 9728,
32 heads of 128 (head_dim 128, so q is 4096 wide), 8 KV heads, vocabulary
151,936; vision depth 24, hidden 1024, intermediate 4096 (a plain fc1/fc2 MLP,
not gated), 16 heads, patch 16 merged 2x2 (32 px per LM token), full attention
in every block (no windows), DeepStack layers [5, 11, 17] (three more mergers
of the merger's size), out_hidden 2560. transformers' ``Qwen3VLConfig()``
defaults confirm the structure and field names (patch 16, merge 2, temporal
patch 2, three DeepStack layers, ``head_dim`` 128, fc1/fc2 vision MLP) but
describe a larger checkpoint (vision 27 x 1152 x 4304, text 32 x 4096), so the
4B sizes above are written out in ``VISION_4B`` / ``TEXT_4B``. For one
1000-token image + 100 text tokens + a 128-token completion
(:mod:`vlm_grpo.speed.flops`): vision 4.22 TFLOP (patch embedding 0.01, block
matmuls 2.42, full attention over 4000 patches 1.57, four mergers 0.22),
language model 9.47 TFLOP (36 layers x 1228 tokens, logits for 128): the ratio
is 0.446 (Qwen2.5-VL-3B: 0.771; Qwen3-VL's tower is smaller relative to its
language model). The scaled Qwen3-VL keeps the language model at width 192
(4 layers, 4 heads, 1 KV head as 4B's 32:8, MLP 3.8x as in 4B: 728), a vision
tower of width 64 (192 * 1024 / 2560 = 77, rounded down to one 64-wide head,
4B's vision head width), 3 blocks with DeepStack after each (three mergers as
in 4B); the vision MLP width is solved for the ratio as for Qwen2.5-VL, on
384x384 images (144 tokens of 32 px): it comes out at 88 (1.4x the width; 4B:
4x). Why wider and shallower than the Qwen2.5-VL scaled model: Qwen3-VL's
tower has no windows, and at small widths full attention over an image's
patches weighs far more against the language model than at 4B's widths (a
128-wide LM with a 4-block, 64-wide tower gives a ratio of 1.03 even with an
8-wide MLP). The shared-prompt workload is a 992x992 image (961 tokens), on
which the same model's ratio is 1.64 (the Qwen2.5-VL scaled model's: 1.6).

Qwen3.5 (``--family qwen3_5``): the scaled hybrid model keeps Qwen3.5-4B's ratio. Its sizes are not in the
transformers sources (whose defaults describe a 9B-like text model and a 27-block tower); third-party copies
of the 4B config.json give text hidden 2560, 32 layers (full attention every fourth: 8 full, 24 Gated
DeltaNet), intermediate 9216, 16 query heads of 256 (the query projection twice as wide: the output gate), 4
KV heads, linear attention 16 key and 32 value heads of 128, vocabulary 248,320; vision Qwen3-VL-4B's tower
without DeepStack (24 x 1024, intermediate 4096, 16 heads, out 2560). For the reference sequence: vision
4.06 TFLOP, language model 9.15 TFLOP, ratio 0.443. The scaled model: LM 4 layers x 192 (3 linear, 1 full,
4 heads, 1 KV head, MLP 688 = 3.6x as in 4B; the tiny config's head and linear-attention widths), vision
3 blocks x 64 with the MLP solved for the ratio.

``--settings`` picks the vision settings to run (default both: trainable, frozen).

``--quick`` runs the scaled shape only, vision trainable, with fewer steps
(4 pairs after 1 warm-up step).

Memory: peak tensor memory of one step per mode, from torch's CPU memory
profiler (``torch.profiler.profile(profile_memory=True)``): the highest running
sum of the step's CPU allocation and free events, i.e. the most bytes of
tensors allocated during the step beyond what was live at its start (weights
and optimizer state are live before the step and not counted; activations,
gradients, pixel values and generation buffers are). The profiled steps come
after the timed ones and are not timed.

Prints a table, then as its last line one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from vlm_grpo.families import get_family  # noqa: E402
from vlm_grpo.speed.flops import TextShape, VisionShape, text_flops, vision_flops, vision_text_ratio  # noqa: E402
from vlm_grpo.tiny import TinySpec  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_timing import EOS_BIAS, SPEED_FEATURES, Result, timed_run  # noqa: E402

SHAPE_3B = Path(__file__).resolve().parents[2] / "shared" / "qwen2_5_vl_3b_shape.json"  # ../shared beside the checkout
# Qwen2.5-VL-3B, written out so the script also runs where the shared file is absent.
VISION_3B = VisionShape(hidden=1280, depth=32, intermediate=3420, out_hidden=2048, window_size=112, full_blocks=4)
TEXT_3B = TextShape(hidden=2048, layers=36, heads=16, kv_heads=2, intermediate=11008, vocab=151936)
REFERENCE_SEQUENCE = {"image_tokens": 1000, "text_tokens": 100, "completion_tokens": 128}

# Qwen3-VL-4B (the published config.json; see the docstring).
VISION_4B = VisionShape(hidden=1024, depth=24, intermediate=4096, out_hidden=2560, window_size=None, full_blocks=24,
                        patch_size=16, gated_mlp=False, deepstack_mergers=3)
TEXT_4B = TextShape(hidden=2560, layers=36, heads=32, kv_heads=8, intermediate=9728, vocab=151936, head_dim=128)

# Qwen3.5-4B: the family's published sizes (third-party copies of its config.json; see the docstring).
_Q35_4B = get_family("qwen3_5").published["Qwen/Qwen3.5-4B"]
VISION_Q35_4B, TEXT_Q35_4B = VisionShape.of(_Q35_4B["vision_config"]), TextShape.of(_Q35_4B["text_config"])

SCALED_GRID = 12  # image tokens per side of the image-cache workload: 144 image tokens (336 px at 28 px per token)
SCALED_COMPLETION = 32  # completion tokens of the sequence the scaled model's FLOPs ratio is solved on
SCALED_TEXT = {"text_hidden": 128, "text_layers": 4, "text_heads": 4, "text_kv_heads": 2, "text_intermediate": 688}
SCALED_VISION = {"vision_hidden": 80, "vision_depth": 4, "vision_heads": 1}  # 80 = 128 * 1280 / 2048
SCALED_WINDOW, SCALED_FULL_BLOCKS = 112, [3]
# Qwen3-VL: 4B's proportions at LM width 192 (1 KV head of 4 as 32:8, MLP 3.8x), vision width 64 (one head)
SCALED_TEXT_QWEN3 = {"text_hidden": 192, "text_layers": 4, "text_heads": 4, "text_kv_heads": 1, "text_intermediate": 728}
SCALED_VISION_QWEN3 = {"vision_hidden": 64, "vision_depth": 3, "vision_heads": 1}
# Qwen3.5: 4 layers (3 linear attention, 1 full, as 4B's interval of 4) at width 192, MLP 3.6x as in 4B
SCALED_TEXT_QWEN3_5 = {"text_hidden": 192, "text_layers": 4, "text_heads": 4, "text_kv_heads": 1,
                       "text_intermediate": 688}


@dataclasses.dataclass(frozen=True)
class Reference:
    """The published model whose vision/LM FLOPs ratio the scaled model keeps, and the scaled model's sizes."""

    model: str
    vision: VisionShape
    text: TextShape
    scaled_text: dict
    scaled_vision: dict
    windows: bool  # Qwen2.5-VL's window attention (the scaled tower keeps 3B's 112 px windows)


def reference_for(family: str) -> Reference:
    if family == "qwen3_vl":
        return Reference("Qwen3-VL-4B", VISION_4B, TEXT_4B, SCALED_TEXT_QWEN3, SCALED_VISION_QWEN3, windows=False)
    if family == "qwen3_5":
        return Reference("Qwen3.5-4B", VISION_Q35_4B, TEXT_Q35_4B, SCALED_TEXT_QWEN3_5, SCALED_VISION_QWEN3,
                         windows=False)
    vision, text = reference_shapes()
    return Reference("Qwen2.5-VL-3B", vision, text, SCALED_TEXT, SCALED_VISION, windows=True)


@dataclasses.dataclass(frozen=True)
class Feature:
    """A speed feature under test: how to switch it, what it counts, and the workload it is measured on."""

    name: str
    image_grid: int  # scaled shape's image tokens per side (x pixels per token: the image side; tiny keeps 112 px)
    completion_tokens: int
    settings: tuple[bool, ...]  # vision frozen?
    prompts_per_step: int = 1
    completions: tuple[str, ...] = ("forced",)  # forced: every completion max length; sampled: EOS allowed
    baseline: str = "plain"  # what runs in both modes


FEATURES = {
    "image_cache": Feature("image_cache", SCALED_GRID, SCALED_COMPLETION, (False, True)),
    # 31^2 = 961 image tokens (868 px at 28 px)
    "shared_prompt": Feature("shared_prompt", 31, 256, (False, True), baseline="image cache on in both modes"),
    "decode_cache": Feature("decode_cache", 31, 256, (False,), baseline="image cache and shared prompt on in both"),
    # everything on against everything off (plain TRL): what a user compares
    "all": Feature("all", 31, 256, (False, True), prompts_per_step=2, completions=("forced", "sampled")),
}
@dataclasses.dataclass
class Shape:
    name: str
    model_dir: Path
    data_dir: Path
    image_tokens: int
    text_tokens: int
    completion_tokens: int
    ratio: float
    sizes: dict


# ---- shapes -----------------------------------------------------------------------------------------------------


def reference_shapes() -> tuple[VisionShape, TextShape]:
    if SHAPE_3B.exists():
        published = json.loads(SHAPE_3B.read_text())
        return VisionShape.of(published["vision_config"]), TextShape.of(published["text_config"])
    return VISION_3B, TEXT_3B


def _text_tokens(processor, data_dir: Path) -> int:
    """Prompt tokens other than image tokens, for the first record (templates give near-equal lengths)."""
    from vlm_grpo.data import build_rows

    rows = build_rows([str(data_dir)], processor, box_frame="model_pixels", seed=0)
    row = rows.row(0)
    text = processor.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
    return len(processor.tokenizer(text, add_special_tokens=False)["input_ids"]) - 1  # minus the image placeholder


def _make_data(path: Path, image_size: int, n: int) -> None:
    from data_prep import PackOptions, pack
    from data_prep.synthetic import generate

    pack(generate("rec", n, seed=0, image_size=image_size, background="noise"), path, PackOptions(workers=1))


def _save(spec: TinySpec, path: Path, window_size: int | None, full_blocks: list[int] | None, family: str) -> None:
    from vlm_grpo.tiny import build_tiny

    model, processor = build_tiny(None, spec, family)
    if window_size is not None:
        model.config.vision_config.window_size = window_size
        model.config.vision_config.fullatt_block_indexes = full_blocks
    model.save_pretrained(path)  # loaded back through load_model: the tower is rebuilt from the edited config
    processor.save_pretrained(path)


def build_shape(name: str, workdir: Path, feature: Feature, target: float, family: str = "qwen2_5_vl") -> Shape:
    """Save the shape's model and a synthetic dataset of the feature's image size under ``workdir``."""
    from vlm_grpo.families import get_family
    from vlm_grpo.tiny import build_config, build_processor, build_tokenizer

    reference, per_token = reference_for(family), get_family(family).pixels_per_token
    model_dir, data_dir = workdir / f"{name}-{feature.name}-model", workdir / f"{name}-{feature.name}-data"
    if name == "tiny":
        spec, image_side, window, full_blocks = TinySpec(), 112, None, None
    else:
        image_side = feature.image_grid * per_token
        window, full_blocks = (SCALED_WINDOW, SCALED_FULL_BLOCKS) if reference.windows else (None, None)
        pixels = image_side * image_side
        spec = TinySpec(**reference.scaled_text, **reference.scaled_vision, vision_intermediate=8, min_pixels=pixels,
                        max_pixels=pixels)
    _make_data(data_dir, image_side, 24)
    tokenizer = build_tokenizer(spec, family)
    text_tokens = _text_tokens(build_processor(tokenizer, spec, family), data_dir)
    image_tokens = (image_side // per_token) ** 2
    config = build_config(tokenizer, spec, family)
    text = TextShape.of(config.text_config)
    vision = VisionShape.of(config.vision_config)
    if name == "scaled":  # the reference's windows; the MLP width that gives its FLOPs ratio on the reference sequence
        if window is not None:
            vision = dataclasses.replace(vision, window_size=window, full_blocks=len(full_blocks))
        ratio_sequence = (SCALED_GRID**2, text_tokens, SCALED_COMPLETION)
        vision = min(
            (dataclasses.replace(vision, intermediate=width) for width in range(8, 4096, 8)),
            key=lambda v: abs(vision_text_ratio(v, text, *ratio_sequence) - target),
        )
        spec = dataclasses.replace(spec, vision_intermediate=vision.intermediate)
    _save(spec, model_dir, window, full_blocks, family)
    ratio = vision_text_ratio(vision, text, image_tokens, text_tokens, feature.completion_tokens)
    sizes = {"text": dataclasses.asdict(text), "vision": dataclasses.asdict(vision), "image_side": image_side}
    return Shape(name, model_dir, data_dir, image_tokens, text_tokens, feature.completion_tokens, ratio, sizes)


def run_setting(feature: Feature, shape: Shape, frozen: bool, completions: str, args) -> Result:
    """Load the shape's saved model and data and time ``feature`` on them (CPU, fp32)."""
    from vlm_grpo.data import build_rows
    from vlm_grpo.modeling import freeze_vision, load_model, load_processor

    model, processor = load_model(str(shape.model_dir), device="cpu"), load_processor(str(shape.model_dir))
    if frozen:
        freeze_vision(model)
    rows = build_rows([str(shape.data_dir)], processor, box_frame="model_pixels", seed=0)
    result = Result(feature.name, shape.name, "vision_frozen" if frozen else "vision_trainable", completions,
                    feature.prompts_per_step)
    timed_run(feature, model, processor, rows, result, completions=completions,
              completion_tokens=shape.completion_tokens, output_dir=shape.model_dir.parent / "out", args=args)
    return result


def print_table(rows: list[dict]) -> None:
    header = (f"{'feature':<13} {'shape':<7} {'setting':<17} {'completions':<11} {'steps':>5} {'off s':>7} "
              f"{'on s':>7} {'speedup':>8} {'fastest':>8} {'w/o gen':>8} {'gen':>7} {'off gen s':>9} "
              f"{'on gen s':>8} {'cpu':>7} {'cpu w/o':>8} {'tokens':>7} {'off MiB':>8} {'on MiB':>8} "
              f"{'computed/requested':>26}")
    print(header)
    print("-" * len(header))
    for r in rows:
        unit, requested, computed = next(
            (unit, r[f"{key}_requested"], r[f"{key}_{done}"]) for key, done, unit in (
                ("vision_images", "encoded", "images"), ("lm_tokens", "computed", "tokens"),
                ("generation_caches", "computed", "caches buffered")) if f"{key}_requested" in r)
        print(f"{r['feature']:<13} {r['shape']:<7} {r['setting']:<17} {r['completions']:<11} {r['steps_each']:>5} "
              f"{r['off_median_s']:>7.2f} {r['on_median_s']:>7.2f} {r['speedup']:>7.2f}x "
              f"{r['speedup_of_fastest']:>7.2f}x {r['speedup_outside_generation']:>7.2f}x "
              f"{r['speedup_generation']:>6.2f}x {r['off_generation_median_s']:>9.2f} "
              f"{r['on_generation_median_s']:>8.2f} {r['speedup_cpu_time']:>6.2f}x "
              f"{r['speedup_outside_generation_cpu_time']:>7.2f}x {r['on_mean_completion_tokens']:>7.1f} "
              f"{r['off_peak_mib'] or float('nan'):>8.1f} {r['on_peak_mib'] or float('nan'):>8.1f} "
              f"{f'{computed}/{requested} {unit}':>26}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feature", choices=(*FEATURES, "each"), default="all",
                        help="all: every speed feature on against plain TRL (default); one feature against its "
                        "baseline; each: every feature in turn")
    parser.add_argument("--quick", action="store_true", help="scaled shape only, fewer steps, vision trainable")
    parser.add_argument("--pairs", type=int, default=None, help="timed off/on pairs per setting (default 12; quick 4)")
    parser.add_argument("--warmup", type=int, default=None, help="uncounted steps per setting (default 2; quick 1)")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--shapes", nargs="+", choices=("tiny", "scaled"), default=None,
                        help="default: tiny and scaled for the image cache, scaled for the others")
    parser.add_argument("--completions", nargs="+", choices=("forced", "sampled"), default=None,
                        help="completion settings (default: the feature's; all: both)")
    parser.add_argument("--completion-tokens", type=int, default=None,
                        help="max_completion_length (default: the feature's workload, 32 or 256)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--family", choices=("qwen2_5_vl", "qwen3_vl", "qwen3_5"), default="qwen2_5_vl",
                        help="model family of the tiny and scaled models (default: %(default)s)")
    parser.add_argument("--settings", nargs="+", choices=("trainable", "frozen"), default=None,
                        help="vision-tower settings to run (default: the feature's; quick: trainable)")
    args = parser.parse_args(argv)
    args.pairs = args.pairs or (4 if args.quick else 12)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if args.quick and args.settings is None:
        args.settings = ["trainable"]

    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    reference = reference_for(args.family)
    vision_3b, text_3b = reference.vision, reference.text
    target = vision_text_ratio(vision_3b, text_3b, **REFERENCE_SEQUENCE)
    wanted = {"trainable": False, "frozen": True}
    settings = None if args.settings is None else {wanted[s] for s in args.settings}
    workdir = Path(tempfile.mkdtemp(prefix="bench_step_"))
    features = list(SPEED_FEATURES) if args.feature == "each" else [args.feature]
    results, built = [], []
    try:
        for name in features:
            feature = FEATURES[name]
            if args.completion_tokens:
                feature = dataclasses.replace(feature, completion_tokens=args.completion_tokens)
            shapes = args.shapes or (["scaled"] if args.quick or name != "image_cache" else ["tiny", "scaled"])
            for shape_name in shapes:
                shape = build_shape(shape_name, workdir, feature, target, args.family)
                built.append((name, shape))
                print(f"{name} {shape_name}: vision/LM FLOPs ratio {shape.ratio:.3f} ({reference.model}: "
                      f"{target:.3f}); {shape.image_tokens} image + {shape.text_tokens} text + "
                      f"{shape.completion_tokens} completion tokens", file=sys.stderr)
                for frozen in [f for f in feature.settings if settings is None or f in settings]:
                    for completions in [c for c in feature.completions if c in (args.completions or feature.completions)]:
                        with contextlib.redirect_stdout(sys.stderr):
                            results.append(run_setting(feature, shape, frozen, completions, args))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    rows = [r.row() for r in results]
    print_table(rows)
    figures = {
        "benchmark": "bench_step",
        "family": args.family,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "num_generations": args.num_generations,
        "features": features,
        "baselines": {name: FEATURES[name].baseline for name in features},
        "eos_bias_sampled": EOS_BIAS,
        "timing": "median step time (on_step_begin..on_step_end), off/on alternating ABBA after warmup",
        "memory": "peak tensor bytes allocated during one profiled step per mode (torch.profiler profile_memory, CPU)",
        "reference_3b" if args.family == "qwen2_5_vl" else "reference": {
            "model": reference.model,
            **REFERENCE_SEQUENCE,
            "vision_lm_flops_ratio": round(target, 4),
            "vision_tflops": round(vision_flops(vision_3b, REFERENCE_SEQUENCE["image_tokens"]) / 1e12, 3),
            "lm_tflops": round(text_flops(text_3b, sum(REFERENCE_SEQUENCE.values()),
                                          REFERENCE_SEQUENCE["completion_tokens"]) / 1e12, 3),
        },
        "shapes": {f"{feature}/{s.name}": {"vision_lm_flops_ratio": round(s.ratio, 4), "image_tokens": s.image_tokens,
                                           "text_tokens": s.text_tokens, "completion_tokens": s.completion_tokens,
                                           **s.sizes}
                   for feature, s in built},
        "results": rows,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
