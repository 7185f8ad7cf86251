"""GRPO training on TRL's ``GRPOTrainer``, through its public API.

What this module adds around the trainer: packed datasets as rows with images
and reward columns, rewards resolved by name and guarded (a reward that raises
stops the run naming the reward and the sample), the box frame of the model
family, vision freezing, LoRA on the language model, a rollout log, and a final
model folder that ``vlm-grpo eval`` and plain transformers load. Everything that
can be checked without the model is checked before the model is loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from pathlib import Path

import rewards
from vlm_grpo.callbacks import NoSignalWarning, ProgressBar, RolloutRecorder
from vlm_grpo.checkpoints import (
    check_save_steps,
    disk_full_error,
    make_crash_safe,
    mismatch_warning_hidden,
    restore_model_weights,
)
from vlm_grpo.config import DataArguments, RewardArguments, VisionArguments
from vlm_grpo.data import RowSet, build_rows
from vlm_grpo.engines import check_engine, engine_record, gathered_state_dict
from vlm_grpo.files import atomic_write_text, save_pretrained_atomically
from vlm_grpo.modeling import family_of, freeze_vision, load_config, load_model, load_processor, lora_config
from rewards.tasks import load_task_module
from vlm_grpo.prompts import merged_templates
from vlm_grpo.runs import overwrite_of, plan_run, start_run
from vlm_grpo.speed.features import FeatureStatus, enable_speed_features
from vlm_grpo.tools import note_tool_rollouts, prepare_processor, resolve_tools

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Prepared:
    """Everything a trainer needs, built and checked before the model is loaded."""

    processor: object
    rows: RowSet
    eval_rows: list[RowSet]
    box_frame: str
    templates: dict[str, str]
    family: str = ""
    speed_features: list[FeatureStatus] = dataclasses.field(default_factory=list)
    engine: dict = dataclasses.field(default_factory=dict)  # see vlm_grpo.engines.engine_record
    tools: object = None  # a vlm_grpo.tools.Toolset when the rollouts may call tools

    def run_info(self) -> dict:
        """What ``training_log.json`` records first: the family, the box frame, the speed features, the versions."""
        import transformers
        import trl

        return {"run": {
            "family": self.family,
            "box_frame": self.box_frame,
            "engine": self.engine,
            "speed_features": {f.name: {"mode": f.mode, "active": f.active, "reason": f.reason}
                               for f in self.speed_features},
            "transformers": transformers.__version__,
            "trl": trl.__version__,
        }}


def load_task_modules(data_args: DataArguments) -> None:
    """Import the user's ``task_modules`` (each once), so their tasks are registered before templates,
    data and rewards are read."""
    for spec in data_args.task_modules or []:
        load_task_module(spec)


def prepare(args, model_args, data_args: DataArguments, vision_args: VisionArguments,
            reward_args: RewardArguments | None = None) -> Prepared:
    """Resolve the checkpoint, processor, tools, templates and datasets (no model weights are read)."""
    if not model_args.model_name_or_path:
        raise ValueError("model_name_or_path is not set: give a hub id, a checkpoint folder or a `vlm-grpo tiny` output")
    load_task_modules(data_args)
    config = load_config(model_args.model_name_or_path, revision=model_args.model_revision)
    box_frame = vision_args.box_frame or family_of(config).box_frame
    processor = load_processor(
        model_args.model_name_or_path,
        min_pixels=vision_args.min_pixels,
        max_pixels=vision_args.max_pixels,
        revision=model_args.model_revision,
    )
    tools = resolve_tools(reward_args.tools if reward_args else None, processor,
                          max_tool_calls=reward_args.max_tool_calls if reward_args else 3,
                          max_image_tokens=reward_args.max_image_tokens if reward_args else 1024)
    if tools is not None:
        prepare_processor(processor, family_of(config))
    # the tools' templates (describing them) replace the tasks' own; the user's task_templates win over both
    templates = merged_templates({**(tools.templates if tools else {}), **(data_args.task_templates or {})})
    common = {"box_frame": box_frame, "templates": templates, "max_prompt_tokens": data_args.max_prompt_tokens}
    rows = build_rows(
        data_args.train_data or [], processor, weights=data_args.train_data_weights, seed=args.seed, **common
    )
    eval_rows = [build_rows([d], processor, seed=args.seed, **common) for d in data_args.eval_data or []]
    return Prepared(processor, rows, eval_rows, box_frame, templates, family=family_of(config).model_type,
                    tools=tools)


def resolve_rewards(reward_args: RewardArguments, reward_weights: list[float] | None) -> list:
    """Reward callables from names/specs, each guarded, in config order."""
    if not reward_args.reward_funcs:
        raise ValueError("reward_funcs is empty; name at least one reward, e.g. [format, accuracy]")
    funcs = [rewards.guard(rewards.load(spec), timeout_s=reward_args.reward_timeout) for spec in reward_args.reward_funcs]
    names = [f.__name__ for f in funcs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"reward_funcs names {duplicates} more than once; each reward is logged under its name")
    if reward_weights is not None and len(reward_weights) != len(funcs):
        raise ValueError(f"reward_weights has {len(reward_weights)} values for {len(funcs)} reward_funcs; give one per reward")
    return funcs


def load_policy(model_args, vision_args: VisionArguments):
    """The policy model, with the vision tower frozen when asked."""
    model = load_model(
        model_args.model_name_or_path,
        dtype=model_args.dtype,
        attn_implementation=model_args.attn_implementation,
        revision=model_args.model_revision,
    )
    if vision_args.freeze_vision:
        frozen = freeze_vision(model, merger=vision_args.freeze_vision_merger)
        logger.info("froze %.2fM vision parameters", frozen / 1e6)
    return model


def build_grpo_trainer(args, model_args, data_args, vision_args, reward_args):
    """A ready ``GRPOTrainer`` and the prepared data (checked first, then the model is loaded)."""
    from trl import GRPOTrainer

    load_task_modules(data_args)  # before the rewards: a task module may register rewards by name
    reward_funcs = resolve_rewards(reward_args, args.reward_weights)
    check_save_steps(args)
    eval_by_epoch = _take_over_evaluation(args, data_args)
    plan_run(args.output_dir, args.resume_from_checkpoint, overwrite_of(args))  # refused before the model loads
    prepared = prepare(args, model_args, data_args, vision_args, reward_args)
    recorder = RolloutRecorder(args.output_dir, reward_args.rollout_log_steps, rank=args.process_index)
    tools = prepared.tools
    recorder.with_tools = tools is not None
    if tools is not None and args.max_tool_calling_iterations is None:
        # one turn past the limit, so a call over it gets its error text and the model a turn to answer
        args.max_tool_calling_iterations = tools.limits.max_calls + 1
    reward_funcs = [recorder.wrap(f, first=i == 0) for i, f in enumerate(reward_funcs)]
    model = load_policy(model_args, vision_args)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=prepared.rows.to_hf(),
        processing_class=prepared.processor,
        peft_config=lora_config(model_args),
        callbacks=[recorder, NoSignalWarning()],
        **({"environment_factory": tools.environment, "tools": tools.functions or None} if tools else {}),
    )
    check_engine(trainer.accelerator, trainer.model)  # before training: sharding asked for is sharding got
    prepared.engine = engine_record(trainer.accelerator)
    prepared.speed_features = enable_speed_features(
        trainer, group_image_cache=vision_args.group_image_cache, group_shared_prompt=vision_args.group_shared_prompt,
        decode_cache=vision_args.decode_cache,
    )
    if tools is not None:
        note_tool_rollouts(prepared.speed_features)
    _use_compact_progress(trainer)
    _add_eval_callback(trainer, prepared, data_args, eval_by_epoch)
    return trainer, prepared


def _use_compact_progress(trainer) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(ProgressBar())


def _take_over_evaluation(args, data_args: DataArguments) -> bool:
    """``eval_data`` is evaluated by this project's callback on the schedule ``eval_strategy`` names; TRL's own
    evaluation (which wants an ``eval_dataset`` of prompts) stays off. Returns whether it runs per epoch."""
    from transformers.trainer_utils import IntervalStrategy

    strategy = IntervalStrategy(args.eval_strategy)
    if strategy == IntervalStrategy.NO:
        return False
    if not data_args.eval_data:
        raise ValueError(f"eval_strategy={strategy.value} needs eval_data: the packed dataset dirs to evaluate "
                         "(made by `vlm-grpo prep`); or set eval_strategy: no")
    args.eval_strategy, args.do_eval = IntervalStrategy.NO, False
    return strategy == IntervalStrategy.EPOCH


def _add_eval_callback(trainer, prepared: Prepared, data_args: DataArguments, by_epoch: bool) -> None:
    if not prepared.eval_rows:
        return
    from vlm_grpo.evaluate import EvalCallback

    callback = EvalCallback(prepared.eval_rows, prepared.processor, max_samples=data_args.eval_max_samples,
                            by_epoch=by_epoch, toolset=prepared.tools)
    callback.trainer = trainer
    trainer.add_callback(callback)


def run_training(trainer, resume, kind: str = "GRPO", run_info: dict | None = None) -> dict:
    """Train, save the final model and processor, and print a one-line summary. Returns the summary.

    ``training_log.json`` holds the trainer's log history, after ``run_info`` (see ``Prepared.run_info``) when given.

    ``resume`` is ``resume_from_checkpoint``: ``true`` and ``auto`` resume from the newest
    *complete* checkpoint (see ``vlm_grpo.checkpoints``) of the run ``output_dir`` holds, and a
    fresh run refuses an ``output_dir`` holding another run's output unless
    ``overwrite_output_dir`` (see ``vlm_grpo.runs``); a full disk becomes a ``DiskFullError``
    that says which checkpoint is intact.
    """
    start = time.perf_counter()
    output_dir = Path(trainer.args.output_dir)
    make_crash_safe(trainer)
    checkpoint = start_run(trainer, resume, overwrite=overwrite_of(trainer.args)).checkpoint
    restored = bool(checkpoint) and restore_model_weights(trainer, checkpoint)
    try:
        with _disk_full_explained(output_dir), mismatch_warning_hidden(restored):
            trainer.train(resume_from_checkpoint=checkpoint)
    finally:  # on an error too, so the `error:` line that follows starts a line of its own
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, ProgressBar) and callback.bar is not None:
                callback.bar.close()
                callback.bar = None
    with _disk_full_explained(output_dir, final_save=True):
        save_final(trainer, output_dir)
        if trainer.is_world_process_zero():
            history = ([run_info] if run_info else []) + trainer.state.log_history
            atomic_write_text(output_dir / "training_log.json", json.dumps(history, indent=1) + "\n")
    progress = next((c for c in trainer.callback_handler.callbacks if isinstance(c, ProgressBar)), None)
    summary = {
        "steps": trainer.state.global_step,
        "seconds": round(time.perf_counter() - start, 1),
        "final_reward": progress.last_reward if progress else None,
        "model": str(output_dir),
    }
    if trainer.is_world_process_zero():
        reward = "n/a" if summary["final_reward"] is None else f"{summary['final_reward']:.3f}"
        print(
            f"{kind} done: {summary['steps']} steps in {summary['seconds']}s, final mean reward {reward}; "
            f"model and processor saved to {output_dir}"
        )
    return summary


@contextlib.contextmanager
def _disk_full_explained(output_dir: Path, final_save: bool = False):
    try:
        yield
    except Exception as err:
        full = disk_full_error(err, output_dir, final_save=final_save)
        if full is None:
            raise
        raise full from err


def save_final(trainer, output_dir: Path) -> None:
    """Save a plain (LoRA-merged) model and the processor, loadable by `vlm-grpo eval` and transformers.

    Every rank calls it: under FSDP2 and ZeRO-3 the weights are gathered to the main process first
    (:func:`~vlm_grpo.engines.gathered_state_dict`), which alone writes. Written into a temporary folder first and renamed into place file by file
    (:func:`~vlm_grpo.files.save_pretrained_atomically`): a kill or a full disk during the save
    leaves the previous files whole, never a truncated ``model.safetensors``.
    """
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    state_dict = gathered_state_dict(trainer, model)
    if trainer.is_world_process_zero():
        saved = model if state_dict is None else _WithStateDict(model, state_dict)
        save_pretrained_atomically(output_dir, saved, trainer.processing_class)
    trainer.accelerator.wait_for_everyone()


class _WithStateDict:
    """A model whose ``save_pretrained`` writes the given (gathered) weights in place of its own shards."""

    def __init__(self, model, state_dict: dict) -> None:
        self.model, self.state_dict = model, state_dict

    def save_pretrained(self, folder, **kwargs) -> None:
        self.model.save_pretrained(folder, state_dict=self.state_dict, **kwargs)
