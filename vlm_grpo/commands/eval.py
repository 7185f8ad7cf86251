"""Evaluate a model on packed datasets: `vlm-grpo eval --model DIR --data DIR [DIR ...] --output DIR`.

Writes metrics.json, predictions.jsonl and report.html (per dataset; with several
datasets also benchmarks.md/.json, one table across them). Uses the training
prompt templates and the reward code's judgement. Multi-process:
`torchrun --nproc_per_node N -m vlm_grpo.cli eval ...` (CPU) or
`accelerate launch --num_processes N -m vlm_grpo.cli eval ...` (GPUs).
"""

from __future__ import annotations

import argparse
import json
import math

#: Most prompts per generation batch: the batch's images and key/value cache share one device.
MAX_BATCH_SIZE = 4096
#: Longest completion: Qwen2-VL/Qwen2.5-VL's context (max_position_embeddings 32,768 in the released configs).
MAX_NEW_TOKENS = 32768


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint folder, hub id, or a `vlm-grpo tiny` output")
    parser.add_argument("--data", required=True, nargs="+", help="packed dataset dir(s) made by `vlm-grpo prep`")
    parser.add_argument("--output", required=True, help="folder for metrics.json, predictions.jsonl, report.html")
    parser.add_argument("--task", help="evaluate only records of this task")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="completion length cap (default: %(default)s)")
    parser.add_argument("--max-samples", type=int, help="evaluate at most N records per dataset")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0, help="with --sample (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="with --sample (default: %(default)s)")
    parser.add_argument("--min-pixels", type=int, help="processor min_pixels (default: the checkpoint's)")
    parser.add_argument("--max-pixels", type=int, help="processor max_pixels (default: the checkpoint's)")
    parser.add_argument("--box-frame", choices=["model_pixels", "norm1000", "original_pixels"],
                        help="frame the model answers boxes in (default: from the model family)")
    parser.add_argument("--task-templates", help="JSON mapping task -> prompt template (as in training)")
    parser.add_argument("--task-module", action="append", default=[], metavar="MODULE",
                        help="module that registers tasks (package.module or file.py; as task_modules in training); "
                             "repeatable")
    parser.add_argument("--resume", action="store_true", help="keep finished samples of an interrupted run in --output")
    parser.add_argument("--tools", nargs="+", metavar="TOOL",
                        help="multi-turn with these tools, as the `tools` training key (zoom_in, module:name, "
                             "file.py:name); reports tool-call rate, success rate and crops per sample")
    parser.add_argument("--max-tool-calls", type=int, default=3, help="with --tools: calls per sample (default: %(default)s)")
    parser.add_argument("--max-image-tokens", type=int, default=1024,
                        help="with --tools: image tokens per sample, crops included (default: %(default)s)")


def _check_sizes(args: argparse.Namespace) -> None:
    """Every size the command takes has a bound that says why."""
    from vlm_grpo.processing import check_pixel_bounds

    if not 1 <= args.batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"--batch-size must be 1..{MAX_BATCH_SIZE} (one batch is generated at once), got {args.batch_size}")
    if not 1 <= args.max_new_tokens <= MAX_NEW_TOKENS:
        raise ValueError(
            f"--max-new-tokens must be 1..{MAX_NEW_TOKENS} (the context of Qwen2-VL/Qwen2.5-VL), got {args.max_new_tokens}"
        )
    if args.max_samples is not None and args.max_samples < 1:
        raise ValueError(f"--max-samples must be at least 1, got {args.max_samples}")
    if not 0 <= args.seed < 2**63:
        raise ValueError(f"--seed must be 0..2**63-1 (torch.manual_seed takes a 64-bit integer), got {args.seed}")
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise ValueError(f"--temperature must be a positive number, got {args.temperature}")
    check_pixel_bounds(args.min_pixels, args.max_pixels, names=("--min-pixels", "--max-pixels"))
    if args.max_tool_calls < 1 or args.max_image_tokens < 1:
        raise ValueError("--max-tool-calls and --max-image-tokens must be at least 1")


def _task_templates(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        templates = json.loads(text)
    except ValueError as err:
        raise ValueError(f"--task-templates is not valid JSON ({err}); pass an object such as "
                         '\'{"rec": "{question} ..."}\'') from None
    if not isinstance(templates, dict) or not all(isinstance(v, str) for v in templates.values()):
        raise ValueError("--task-templates must be a JSON object mapping task names to template strings")
    return templates


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vlm_grpo.eval_run import EvalJob, run_eval
    from vlm_grpo.evaluate import EvalSettings
    from vlm_grpo.files import output_errors_explained

    _check_sizes(args)
    from rewards.tasks import load_task_module

    for spec in args.task_module:
        load_task_module(spec)
    job = EvalJob(
        model=args.model,
        data=list(args.data),
        output=Path(args.output),
        task=args.task,
        max_samples=args.max_samples,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        box_frame=args.box_frame,
        task_templates=_task_templates(args.task_templates),
        resume=args.resume,
        tools=args.tools,
        max_tool_calls=args.max_tool_calls,
        max_image_tokens=args.max_image_tokens,
        settings=EvalSettings(
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            do_sample=args.sample,
            temperature=args.temperature,
            seed=args.seed,
        ),
    )
    kept = (f"The samples evaluated so far are kept in {args.output}/predictions.partial.rank*.jsonl "
            "(or its per-dataset folders).")
    with output_errors_explained(args.output, "--output", kept=kept, again="add --resume to continue from them"):
        results = run_eval(job)
    for name, result in results.items():
        m = result["metrics"]
        print(f"{name}: {m['metric']} {m['value']:.4f}, accuracy {100 * m['accuracy']:.1f}% over {m['count']} samples, "
              f"format {100 * m['format_rate']:.1f}%")
        if "tool_call_rate" in m:
            print(f"{name}: tool-call rate {100 * m['tool_call_rate']:.1f}%, successful calls "
                  f"{100 * m['tool_success_rate']:.1f}%, crops per sample {m['crops_per_sample']:.2f}")
    if results:
        print(f"results written to {args.output}")
    return 0
