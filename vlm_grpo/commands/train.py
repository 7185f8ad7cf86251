"""GRPO training: `vlm-grpo train --config scripts/configs/rec.yaml [--key value ...]`.

Keys are the fields of TRL's GRPOConfig and ModelConfig plus this project's
(train_data, train_data_weights, eval_data, reward_funcs, task_templates,
min_pixels, max_pixels, freeze_vision, max_prompt_tokens, box_frame, ...).
Any key of the YAML file can be overridden on the command line. Multi-GPU:
`accelerate launch --config_file scripts/configs/accelerate/ddp.yaml -m vlm_grpo.cli train ...`.
"""

from __future__ import annotations

import argparse
import sys


PASSTHROUGH = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vlm_grpo.config import project_keys_help

    parser.add_argument("--config", action="append",
                        help="YAML file of training keys (one); --key value pairs after it override it")
    parser.epilog = project_keys_help()


def argv_of(args: argparse.Namespace) -> list[str]:
    """The TRL parser's arguments; a second ``--config`` is an error (only one file is read, the other silently not)."""
    if args.config and len(args.config) > 1:
        raise ValueError(
            "--config is given twice; only one config file is read. The scripts pass their own (CONFIG, e.g. "
            "scripts/configs/rec.yaml): set CONFIG=your.yaml instead of adding --config, or put the keys you want "
            "to change on the command line as --key value"
        )
    return (["--config", args.config[0]] if args.config else []) + list(args.extra)


def run(args: argparse.Namespace) -> int:
    from trl import GRPOConfig

    from vlm_grpo.checkpoints import DiskFullError
    from vlm_grpo.config import GRPO_DEFAULTS, parse
    from vlm_grpo.files import make_output_dir
    from vlm_grpo.train import build_grpo_trainer, run_training

    grpo_args, model_args, data_args, vision_args, reward_args = parse(GRPOConfig, GRPO_DEFAULTS, argv_of(args))
    make_output_dir(grpo_args.output_dir, "output_dir")  # one error line, before the model loads
    trainer, prepared = build_grpo_trainer(grpo_args, model_args, data_args, vision_args, reward_args)
    try:
        run_training(trainer, grpo_args.resume_from_checkpoint, run_info=prepared.run_info())
    except DiskFullError as err:
        # Not a bug: the message says which checkpoint is intact and how to resume.
        print(f"error: {err}", file=sys.stderr)
        return 2
    finish_processes(trainer)
    return 0


def finish_processes(trainer) -> None:
    """End a finished multi-process run cleanly: every rank is past the final save's barrier.

    The process group is destroyed, and a distributed rank then leaves at once (``os._exit(0)`` after flushing):
    at interpreter teardown a C++ thread of torch's gloo backend that is still joinable aborted a rank now and
    then ("terminate called without an active exception", exit -6) after a run had finished and saved, so the
    launcher reported a failure. A single process (tests, the demo's stages) returns normally.
    """
    import logging
    import os

    distributed = trainer.accelerator.num_processes > 1
    trainer.accelerator.state.destroy_process_group()
    if distributed:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(0)
