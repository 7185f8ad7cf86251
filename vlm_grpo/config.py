"""Configuration: TRL's ``GRPOConfig``/``SFTConfig`` and ``ModelConfig`` plus this project's keys.

One YAML file sets any field of any of these dataclasses; any key can be
overridden on the command line as ``--key value`` (TRL's ``TrlParser``).
Unknown keys are an error that names them, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Literal

BoxFrame = Literal["model_pixels", "norm1000", "original_pixels"]


@dataclasses.dataclass
class DataArguments:
    """Which packed datasets to train and evaluate on, and how to turn them into prompts."""

    train_data: list[str] | None = dataclasses.field(
        default=None, metadata={"help": "Packed dataset dirs to train on (made by `vlm-grpo prep`)."}
    )
    train_data_weights: list[float] | None = dataclasses.field(
        default=None, metadata={"help": "Mixing ratio per train_data dir (default: by size)."}
    )
    eval_data: list[str] | None = dataclasses.field(
        default=None, metadata={"help": "Packed dataset dirs evaluated every eval_steps during training."}
    )
    task_modules: list[str] | None = dataclasses.field(
        default=None,
        metadata={"help": "Modules that register tasks (rewards.tasks.register_task): package.module or path/to/file.py; "
                          "imported before the data is read. Give `vlm-grpo eval` the same with --task-module."},
    )
    task_templates: dict | str | None = dataclasses.field(
        default=None,
        metadata={"help": "Prompt template per task, e.g. {rec: '{question} ...'} (JSON on the command line)."},
    )
    max_prompt_tokens: int | None = dataclasses.field(
        default=None,
        metadata={"help": "Drop (and count) records whose prompt, image tokens included, is longer. Never truncates."},
    )
    eval_max_samples: int | None = dataclasses.field(
        default=None, metadata={"help": "Evaluate at most this many records per eval_data dir during training."}
    )

    def __post_init__(self) -> None:
        if isinstance(self.task_templates, str):
            try:
                self.task_templates = json.loads(self.task_templates)
            except json.JSONDecodeError as err:
                raise ValueError(f"task_templates must be a mapping task -> template (JSON on the command line): {err}")
        if self.train_data_weights is not None and self.train_data is not None:
            if len(self.train_data_weights) != len(self.train_data):
                raise ValueError(
                    f"train_data_weights has {len(self.train_data_weights)} values for {len(self.train_data)} "
                    "train_data dirs; give one weight per dir"
                )


@dataclasses.dataclass
class VisionArguments:
    """How images are resized, which vision parts train, which box frame the model answers in, and the
    group-aware forward (each distinct image and prompt of a GRPO group computed once)."""

    min_pixels: int | None = dataclasses.field(
        default=None, metadata={"help": "Processor resize lower bound in pixels (default: the checkpoint's)."}
    )
    max_pixels: int | None = dataclasses.field(
        default=None, metadata={"help": "Processor resize upper bound in pixels (default: the checkpoint's)."}
    )
    freeze_vision: bool = dataclasses.field(
        default=False, metadata={"help": "Keep the vision tower frozen (with its merger unless freeze_vision_merger=false)."}
    )
    freeze_vision_merger: bool = dataclasses.field(
        default=True,
        metadata={"help": "With freeze_vision: also freeze the merger (the projector into the language model)."},
    )
    box_frame: BoxFrame | None = dataclasses.field(
        default=None,
        metadata={"help": "Frame of predicted boxes: model_pixels (Qwen2.5-VL), norm1000 (Qwen2-VL), original_pixels."},
    )
    group_image_cache: str = dataclasses.field(
        default="on",
        metadata={"help": "Encode each distinct image once per batch: on (probed first; steps aside with a warning "
                  "where not exact), require (an error instead), off."},
    )
    group_shared_prompt: str = dataclasses.field(
        default="on",
        metadata={"help": "Run each distinct prompt once per forward, shared across its group: on (probed first; "
                  "steps aside with a warning where not exact), require (an error instead), off."},
    )
    decode_cache: str = dataclasses.field(
        default="on",
        metadata={"help": "Generation appends each new token's keys/values into a buffer instead of copying the "
                  "whole cache every step (same numbers): on (probed first; steps aside with a warning where not "
                  "exact), require (an error instead), off."},
    )

    def __post_init__(self) -> None:
        from vlm_grpo.speed.features import speed_mode

        self.group_image_cache = speed_mode(self.group_image_cache, "group_image_cache")
        self.group_shared_prompt = speed_mode(self.group_shared_prompt, "group_shared_prompt")
        self.decode_cache = speed_mode(self.decode_cache, "decode_cache")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels={self.min_pixels} is larger than max_pixels={self.max_pixels}")


@dataclasses.dataclass
class RewardArguments:
    """Which rewards score the completions, which tools a rollout may call, and how rollouts are logged."""

    reward_funcs: list[str] = dataclasses.field(
        default_factory=lambda: ["format", "accuracy"],
        metadata={
            "help": "Reward names (see `rewards.names()`), `package.module:function` or `file.py:function`. "
            "Weights: reward_weights."
        },
    )
    tools: list[str] | None = dataclasses.field(
        default=None,
        metadata={"help": "Tools a rollout may call (multi-turn): zoom_in, package.module:name or file.py:name "
                  "(a function, or an environment class with reset(**row)); see vlm_grpo.tools."},
    )
    max_tool_calls: int = dataclasses.field(
        default=3, metadata={"help": "With tools: tool calls per rollout; the next one gets an error text back."},
    )
    max_image_tokens: int = dataclasses.field(
        default=1024,
        metadata={"help": "With tools: image tokens per rollout, the prompt's images and every crop included."},
    )
    rollout_log_steps: int = dataclasses.field(
        default=10, metadata={"help": "Write every completion and its rewards to rollouts.jsonl every N steps (0: off)."}
    )
    reward_timeout: float | None = dataclasses.field(
        default=300.0,
        metadata={"help": "Seconds one call of a reward (a whole batch) may take; a slower call stops training naming "
                  "the reward (0: no limit). The built-in math reward alone may take up to 1 s per sample."},
    )

    def __post_init__(self) -> None:
        if self.max_tool_calls < 1 or self.max_image_tokens < 1:
            raise ValueError(f"max_tool_calls and max_image_tokens must be at least 1, got {self.max_tool_calls} and "
                             f"{self.max_image_tokens}")


@dataclasses.dataclass
class RunArguments:
    """What a run may do with an output_dir that already holds another run's output (see ``vlm_grpo.runs``)."""

    overwrite_output_dir: bool = dataclasses.field(
        default=False,
        metadata={"help": "Delete another run's checkpoints and rollout logs in output_dir before starting "
                          "(without it, a fresh run there is an error)."},
    )


# Published recipe defaults (VLM-R1 / R1-V) where TRL's differ. A YAML file or the command line overrides them.
# loss_type grpo: each completion's token losses are averaged, then the completions (VLM-R1's and R1-V's loss;
# TRL 1.16 defaults to dapo, averaging over all tokens of the batch, which weighs long completions more).
GRPO_DEFAULTS: dict = {
    "loss_type": "grpo",
    "num_generations": 8,
    "beta": 0.04,
    "epsilon": 0.2,
    "learning_rate": 1e-6,
    "temperature": 0.9,
    "max_completion_length": 256,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "logging_steps": 1,
    "save_steps": 100,
    "save_total_limit": 3,
    "report_to": ["tensorboard"],
    "activation_checkpointing": True,  # TRL's default, under its non-deprecated name
}

SFT_DEFAULTS: dict = {
    "learning_rate": 1e-5,
    "remove_unused_columns": False,  # rows are built on access; the stored table has no model inputs
    "max_length": None,  # never truncate: a cut prompt loses image tokens and crashes Qwen2.5-VL
    "per_device_train_batch_size": 8,
    "logging_steps": 1,
    "save_steps": 100,
    "save_total_limit": 2,
    "report_to": ["tensorboard"],
    "activation_checkpointing": True,  # TRL's default, under its non-deprecated name
}


def parse(config_cls, defaults: dict, argv: list[str] | None):
    """Parse ``--config FILE`` plus overrides into (config, model, data, vision, reward) dataclasses."""
    from trl import ModelConfig, TrlParser

    import torch

    parser = TrlParser((config_cls, ModelConfig, DataArguments, VisionArguments, RewardArguments, RunArguments))
    # Mixed precision only where it pays: TRL turns bf16 on by default, which on CPU is slow autocast.
    parser.set_defaults_with_config(**{"bf16": torch.cuda.is_available(), **defaults})
    *parsed, run_args = parser.parse_args_and_config(args=argv)
    parsed[0].overwrite_output_dir = run_args.overwrite_output_dir  # read with the other output_dir keys
    return tuple(parsed)


def project_keys_help() -> str:
    """The project's own keys with their help, for `vlm-grpo train --help`."""
    lines = ["project keys (TRL's GRPOConfig/SFTConfig and ModelConfig keys are accepted too):"]
    for cls in (DataArguments, VisionArguments, RewardArguments, RunArguments):
        for f in dataclasses.fields(cls):
            lines.append(f"  --{f.name:<22} {f.metadata.get('help', '')}")
    return "\n".join(lines)
