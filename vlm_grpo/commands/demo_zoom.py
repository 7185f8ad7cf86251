"""``vlm-grpo demo --task zoom``: thinking with images on synthetic data, offline, before and after GRPO.

The stages are public commands with their real options:
  1. policy   the shipped demo policy (``vlm_grpo/assets/demo_policy``: it localises one shape on the
              112 px tiles layout)
  2. data     synthetic zoom records: that layout drawn at 112 px and enlarged 4x (448 px), a dot of the
              answer's colour inside the shape; the policy sees the image at ``max_pixels`` 112x112, where
              the dot is a few blended pixels, and a zoom_in crop of the shape shows it plainly
  3. sft      the cold start on tool-use traces (``sft --tools zoom_in``): call zoom_in on the shape's box,
              read the crop, answer; every other trace answers directly without tools
  4. eval     the cold-started policy, with the tool (multi-turn) and without it, on the held-out split
  5. grpo     multi-turn GRPO with the tool: format + accuracy (final answer) + tool_bonus, both speed
              features on
  6. eval     the trained policy, with and without the tool, on the same split
It prints the before/after table (tool-call rate, successful calls, crops per sample, accuracy with and
without the tool) and writes ``summary.json`` (``before`` / ``after``: ``with_tool`` and ``without_tool``
eval metrics) and the four eval reports, whose cards show each sample's crops.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from vlm_grpo.files import atomic_write_text


@dataclasses.dataclass(frozen=True)
class ZoomPlan:
    """Sizes of one zoom demo run."""

    train_records: int
    val_records: int
    sft_steps: int
    grpo_steps: int
    num_generations: int
    prompts_per_step: int


FULL = ZoomPlan(train_records=2000, val_records=64, sft_steps=400, grpo_steps=40, num_generations=4,
                prompts_per_step=2)
QUICK = ZoomPlan(train_records=16, val_records=4, sft_steps=2, grpo_steps=2, num_generations=2, prompts_per_step=2)

MAX_PIXELS = str(112 * 112)  # the policy's view: the 448 px image at a quarter of its side
SYNTHETIC = ["--image-size", "112", "--grid", "28", "--num-shapes", "1", "--size-range", "12-24", "--background",
             "tiles", "--zoom-scale", "4"]
TOOLS = ["--tools", "zoom_in", "--max_tool_calls", "2"]
SFT = ["--learning_rate", "1e-3", "--per_device_train_batch_size", "8", "--lr_scheduler_type", "cosine"]
# loss_type dapo and the learning rate as the rec demo; the completion budget holds a call, its crop's
# tokens and the answer
GRPO = ["--learning_rate", "5e-5", "--temperature", "1.0", "--beta", "0.04", "--max_completion_length", "256",
        "--loss_type", "dapo", "--reward_funcs", "format", "accuracy", "tool_bonus"]
# a zoom_in call is about 70 tokens of the tiny tokenizer: a turn has room for it
EVAL = ["--batch-size", "16", "--max-new-tokens", "96", "--max-pixels", MAX_PIXELS]
FIGURES = (("tool-call rate", "with_tool", "tool_call_rate"), ("successful calls", "with_tool", "tool_success_rate"),
           ("crops per sample", "with_tool", "crops_per_sample"), ("accuracy with the tool", "with_tool", "accuracy"),
           ("accuracy without the tool", "without_tool", "accuracy"), ("format rate (with the tool)", "with_tool",
                                                                       "format_rate"))
QUICK_NOTE = ("quick run: {sft} SFT and {grpo} GRPO steps are a smoke test of the pipeline, not a measure of "
              "learning; `vlm-grpo demo --task zoom` runs the real comparison")


def run_zoom(args, out: Path, stages) -> int:
    """The zoom demo into ``out`` (``stages`` runs and times the public commands)."""
    from vlm_grpo.commands.demo import COMMON, remove_model_folder

    plan = QUICK if args.quick else FULL
    policy, data, sft, grpo = out / "policy", out / "data", out / "sft", out / "grpo"
    start = time.perf_counter()
    print(f"== policy: copying the starting checkpoint {args.policy} to {policy}", flush=True)
    remove_model_folder(policy)
    shutil.copytree(args.policy, policy)
    stages.seconds["policy"] = round(time.perf_counter() - start, 1)
    total = plan.train_records + plan.val_records
    stages("data", ["prep", "--format", "synthetic", "--task", "zoom", "--num", str(total), "--seed",
                    str(args.data_seed), "--val-fraction", f"{plan.val_records / total:.6f}", "--output", str(data),
                    "--overwrite", "--quiet", *SYNTHETIC])
    common = [*COMMON, "--max_pixels", MAX_PIXELS, "--seed", str(args.seed), "--overwrite_output_dir", "true"]
    stages("sft", ["sft", "--model_name_or_path", str(policy), "--train_data", str(data / "train"),
                   "--output_dir", str(sft), "--max_steps", str(plan.sft_steps), "--logging_steps", "10",
                   "--save_strategy", "no", *SFT, *TOOLS, *common])
    before = _evaluate(stages, "before", sft, data / "val", out)
    stages("grpo", ["train", "--model_name_or_path", str(sft), "--train_data", str(data / "train"),
                    "--output_dir", str(grpo), "--max_steps", str(plan.grpo_steps),
                    "--num_generations", str(plan.num_generations),
                    "--per_device_train_batch_size", str(plan.prompts_per_step * plan.num_generations),
                    "--logging_steps", "1", "--rollout_log_steps", "5", "--save_strategy", "no",
                    *GRPO, *TOOLS, *common])
    after = _evaluate(stages, "after", grpo, data / "val", out)
    summary = {"task": "zoom", "metric": "accuracy", "before": before, "after": after, "seconds": stages.seconds,
               "seed": args.seed, "data_seed": args.data_seed, "quick": args.quick, "policy": str(args.policy),
               "plan": dataclasses.asdict(plan)}
    if args.quick:
        summary["note"] = QUICK_NOTE.format(sft=plan.sft_steps, grpo=plan.grpo_steps)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(table(before, after))
    print(f"\nstage times (s): {json.dumps(stages.seconds)}; total {sum(stages.seconds.values()):.0f}s")
    if args.quick:
        print(f"\n{summary['note']}")
    print(f"\nreports: {out}/eval_{{before,after}}_{{tool,plain}}/report.html; summary: {out / 'summary.json'}")
    return 0


def _evaluate(stages, side: str, model: Path, val: Path, out: Path) -> dict:
    found = {}
    for mode, extra in (("with_tool", ["--tools", "zoom_in", "--max-tool-calls", "2"]), ("without_tool", [])):
        folder = out / f"eval_{side}_{'tool' if extra else 'plain'}"
        stages(f"eval_{side}_{'tool' if extra else 'plain'}",
               ["eval", "--model", str(model), "--data", str(val), "--output", str(folder), *EVAL, *extra])
        found[mode] = json.loads((folder / "metrics.json").read_text())["metrics"]
    return found


def table(before: dict, after: dict) -> str:
    """The before/after markdown table of the zoom demo."""
    lines = ["\n| held-out ZOOM | before GRPO | after GRPO |", "|---|---:|---:|"]
    shown = lambda value: "–" if value is None else f"{value:.3f}"  # noqa: E731
    for label, mode, key in FIGURES:
        lines.append(f"| {label} | {shown(before[mode].get(key))} | {shown(after[mode].get(key))} |")
    return "\n".join(lines)
