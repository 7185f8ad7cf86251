"""The ``vlm-grpo`` command: parse, build, run, save. The work lives in the library modules.

Each subcommand is a module with ``add_arguments(parser)`` and ``run(args) -> int``;
heavy imports (torch, transformers, trl) happen inside ``run`` so ``--help`` is fast.
A module with ``PASSTHROUGH = True`` (train, sft) receives the ``--key value`` pairs it
does not declare in ``args.extra``: they are TRL config keys, parsed by ``TrlParser``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from rewards.guard import RewardError

# name -> (module, one-line help). Order is the order `vlm-grpo --help` lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "tiny": ("vlm_grpo.commands.tiny", "build an offline tiny checkpoint (--family qwen2_5_vl, qwen2_vl, qwen3_vl, qwen3_vl_moe)"),
    "prep": ("data_prep.cli", "pack a source dataset into the packed format (records.jsonl + images/)"),
    "train": ("vlm_grpo.commands.train", "GRPO training from a YAML config (TRL GRPOTrainer)"),
    "sft": ("vlm_grpo.commands.sft", "cold-start supervised fine-tuning (TRL SFTTrainer)"),
    "eval": ("vlm_grpo.commands.eval", "evaluate a model on packed datasets (metrics, predictions, HTML report)"),
    "demo": ("vlm_grpo.commands.demo", "the offline end-to-end demo"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-grpo",
        description="R1-style GRPO fine-tuning for vision-language models (Qwen2.5-VL) on TRL.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or help_text).strip()
        cmd = sub.add_parser(name, help=help_text, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run, _passthrough=getattr(module, "PASSTHROUGH", False))
    return parser


class _ConsoleHandler(logging.Handler):
    """``warning: ...`` lines on whatever ``sys.stderr`` is when the line is written, above any progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(f"{record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging never stops a command
            self.handleError(record)


def show_warnings() -> None:
    """The project's WARNING and ERROR log lines on stderr as ``warning: ...`` (INFO stays quiet). Idempotent."""
    for name in ("vlm_grpo", "data_prep", "rewards"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
            logger.addHandler(_ConsoleHandler())
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    show_warnings()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not args._passthrough:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, RewardError) as err:
        # Library errors carry messages written for users (file, line or record, what to do);
        # a RewardError names the reward and the sample that broke it.
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
