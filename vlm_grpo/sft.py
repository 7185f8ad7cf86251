"""Cold-start supervised fine-tuning (TRL's ``SFTTrainer``) that teaches the answer format before RL.

Each packed record becomes a prompt (the same template GRPO uses) and a target
``<think>…</think><answer>…</answer>``, written as what the model must generate
after its generation prompt: where that prompt already opened the ``<think>``
(the row's ``open_think``, Qwen3.5's "think" template) the target continues it,
``…</think><answer>…</answer>``, so SFT teaches the very layout the format reward
scores. The assistant message carries the thinking as ``reasoning_content`` too
(``""`` where the completion opens its own block), which is what Qwen3.5's
templates render after the prompt's ``<think>``; templates that know no
``reasoning_content`` (Qwen2/2.5/3-VL) ignore it and render ``content`` as is. The thinking text is the record's
``meta.thinking`` when the dataset has one, else the question itself (for REC,
the referring phrase): short and fixed, so a small model learns the format in a
few dozen steps, and the phrase sits right before the answer. Answers are each
task's ``Task.target``: boxes (rec, det) and points (point: the box centre) are
converted into the model family's frame (what the rewards convert back from),
rounded to integers.
"""

from __future__ import annotations

from rewards.tasks import TASKS
from rewards.tasks.base import plain_target
from vlm_grpo.data import RowSet


def answer_text(row: dict) -> str:
    """The solution written the way the model is asked to answer: the task's own target
    (:attr:`rewards.tasks.Task.target`; a box task's in the row's box frame), or for an
    unregistered task the solution itself."""
    task = TASKS.get(row["task"])
    target = task.target if task is not None else plain_target
    return target(row["solution"], box_frame=row["box_frame"], image_sizes=row["image_sizes"],
                  model_image_sizes=row["model_image_sizes"])


def thinking_text(row: dict, meta: dict) -> str:
    if meta.get("thinking"):
        return str(meta["thinking"])
    return row["prompt"][0]["content"][-1]["text"].split("\n", 1)[0].strip()


def target_text(row: dict, meta: dict) -> str:
    """What the model should write after its generation prompt (the opening ``<think>`` left out where the
    prompt holds it)."""
    opening = "" if row.get("open_think") else "<think>"
    return f"{opening}{thinking_text(row, meta)}</think><answer>{answer_text(row)}</answer>"


def target_message(row: dict, meta: dict) -> dict:
    """The assistant turn of the SFT target (see the module docstring)."""
    answer = f"<answer>{answer_text(row)}</answer>"
    if row.get("open_think"):
        return {"role": "assistant", "reasoning_content": thinking_text(row, meta), "content": answer}
    return {"role": "assistant", "reasoning_content": "", "content": target_text(row, meta)}


def sft_dataset(rows: RowSet):
    """A ``datasets.Dataset`` of prompt/completion rows with images, decoded on access."""

    def sft_row(i: int) -> dict:
        row = rows.row(i)
        completion = [target_message(row, rows.record(i).meta)]
        return {"prompt": row["prompt"], "completion": completion, "images": row["images"]}

    return rows.to_hf(sft_row)


def build_sft_trainer(args, model_args, data_args, vision_args, reward_args=None):
    """A ready ``SFTTrainer`` on the packed train_data (checked before the model is loaded); with ``tools``
    (``reward_args.tools``), a trainer on tool-use traces (:mod:`vlm_grpo.tools.sft`)."""
    from trl import SFTTrainer

    from vlm_grpo.modeling import lora_config
    from vlm_grpo.runs import overwrite_of, plan_run
    from vlm_grpo.train import _use_compact_progress, load_policy, prepare

    plan_run(args.output_dir, args.resume_from_checkpoint, overwrite_of(args))  # refused before the model loads
    prepared = prepare(args, model_args, data_args, vision_args, reward_args)
    model = load_policy(model_args, vision_args)
    if prepared.tools is not None:
        from vlm_grpo.tools.sft import build_tool_sft_trainer

        trainer = build_tool_sft_trainer(args, model, prepared)
        _use_compact_progress(trainer)
        return trainer, prepared
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_dataset(prepared.rows),
        processing_class=prepared.processor,
        peft_config=lora_config(model_args),
    )
    _use_compact_progress(trainer)
    return trainer, prepared
