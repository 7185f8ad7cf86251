"""Cold-start SFT: `vlm-grpo sft --config scripts/configs/sft_rec.yaml [--key value ...]`.

Teaches the <think>…</think><answer>…</answer> format (and, on REC, boxes in the
model's frame) with TRL's SFTTrainer before GRPO. Keys are the fields of TRL's
SFTConfig and ModelConfig plus this project's data/vision keys; the output folder
is a checkpoint `vlm-grpo train` can start from.
"""

from __future__ import annotations

import argparse
import sys

from vlm_grpo.commands.train import add_arguments, argv_of, finish_processes

PASSTHROUGH = True

__all__ = ["add_arguments", "run", "PASSTHROUGH"]


def run(args: argparse.Namespace) -> int:
    from trl import SFTConfig

    from vlm_grpo.checkpoints import DiskFullError
    from vlm_grpo.files import make_output_dir
    from vlm_grpo.config import SFT_DEFAULTS, parse
    from vlm_grpo.sft import build_sft_trainer
    from vlm_grpo.train import run_training

    sft_args, model_args, data_args, vision_args, reward_args = parse(SFTConfig, SFT_DEFAULTS, argv_of(args))
    make_output_dir(sft_args.output_dir, "output_dir")  # one error line, before the model loads
    trainer, _ = build_sft_trainer(sft_args, model_args, data_args, vision_args, reward_args)
    try:
        run_training(trainer, sft_args.resume_from_checkpoint, kind="SFT")
    except DiskFullError as err:
        # Not a bug: the message says which checkpoint is intact and how to resume.
        print(f"error: {err}", file=sys.stderr)
        return 2
    finish_processes(trainer)
    return 0
