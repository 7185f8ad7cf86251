"""Evaluation: batched generation over packed datasets, judged by the reward code itself.

Correctness comes from ``rewards.judge`` (the function the rewards are built on),
so training and evaluation can never disagree on what "correct" means. Prompts
come from the same templates as training. Batches are sorted by prompt length so
they are not mostly padding; a batch that fails to generate is retried one sample
at a time, and a sample that still fails is recorded with its error. So is a sample whose
image cannot be read; an image changed after prep (``changed_image``) stops the run instead.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm.auto import tqdm
from transformers import TrainerCallback

import rewards
from data_prep.packed import PrepError
from vlm_grpo.data import RowSet
from vlm_grpo.generation import generate
from vlm_grpo.metrics import compute_metrics

logger = logging.getLogger(__name__)

#: ``meta`` keys copied into each prediction, for the task metrics that group by them.
GROUP_KEYS = ("data_type", "data_source")


@dataclasses.dataclass
class EvalSettings:
    """How completions are generated for evaluation (greedy by default)."""

    batch_size: int = 8
    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    seed: int = 0


def length_order(rows: RowSet, indices: Iterable[int]) -> list[int]:
    """Indices sorted by prompt length (image tokens, then text), so batches hold similar lengths."""

    def key(i: int) -> tuple[int, int]:
        image_tokens = sum(w * h for w, h in rows.model_image_sizes[i])
        return (image_tokens, len(rows.prompts[i]))

    return sorted(indices, key=key)


def judge_row(row: dict, completion: str, index: int, error: str | None = None) -> dict:
    """One prediction line: the completion, its parsed answer and score, judged by the reward code."""
    sample = {k: v for k, v in row.items() if k != "prompt"}
    try:
        verdict = rewards.judge(row["task"], completion, **sample)
        format_ok = rewards.get("format")([completion], **{k: [v] for k, v in sample.items()})[0] == 1.0
    except Exception as err:  # a scorer that raises (a user task's, say): recorded as a failure, the run goes on
        verdict, format_ok = rewards.Judgement(None, False, 0.0, False), False
        error = error or f"scoring failed: {type(err).__name__}: {err}"
    return {
        "index": index,
        "id": row["id"],
        "task": row["task"],
        "source": row["source"],
        "prompt": row["prompt"][0]["content"][-1]["text"],
        "completion": completion,
        "solution": row["solution"],
        "parsed": verdict.parsed,
        "parse_ok": verdict.parse_ok and error is None,
        "score": verdict.score if error is None else 0.0,
        "correct": verdict.correct and error is None,
        "format_ok": format_ok and error is None,
        "error": error,
    }


def _generate_any(model, processor, batch: list[dict], settings: EvalSettings, toolset=None) -> list:
    """Completion texts, or with a ``toolset`` multi-turn rollouts with the same tools and limits as training
    (:mod:`vlm_grpo.tools.rollout`)."""
    if toolset is None:
        return _generate_batch(model, processor, batch, settings)
    from vlm_grpo.tools.rollout import generate_with_tools

    return generate_with_tools(model, processor, batch, toolset, max_new_tokens=settings.max_new_tokens,
                               do_sample=settings.do_sample, temperature=settings.temperature,
                               seed=settings.seed if settings.do_sample else None)


def _generate_batch(model, processor, batch: list[dict], settings: EvalSettings) -> list[str]:
    out = generate(
        model,
        processor,
        [row["prompt"] for row in batch],
        [row["images"] for row in batch],
        max_new_tokens=settings.max_new_tokens,
        do_sample=settings.do_sample,
        temperature=settings.temperature,
        seed=settings.seed if settings.do_sample else None,
    )
    return out.texts


def evaluate_rows(
    model,
    processor,
    rows: RowSet,
    indices: list[int],
    settings: EvalSettings,
    *,
    on_prediction: Callable[[dict], None] | None = None,
    desc: str = "eval",
    progress: bool = True,
    toolset=None,
) -> list[dict]:
    """Predictions for ``rows[indices]`` in length order; ``on_prediction`` sees each as it is made. With a
    ``toolset`` (:class:`vlm_grpo.tools.Toolset`) each prediction also holds its ``tool_calls`` and ``crops``."""
    order = length_order(rows, indices)
    predictions: list[dict] = []
    correct = 0
    # closed on an error too, so the `error:` line that follows starts a line of its own
    with tqdm(total=len(order), desc=desc, disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(order), settings.batch_size):
            chunk = order[start : start + settings.batch_size]
            made = _predict_chunk(model, processor, rows, chunk, settings, toolset)
            for prediction in made:
                correct += bool(prediction["correct"])
                if on_prediction is not None:
                    on_prediction(prediction)
            predictions += made
            bar.update(len(chunk))
            bar.set_postfix(acc=f"{correct / len(predictions):.3f}")
    return predictions


def _predict_chunk(model, processor, rows: RowSet, chunk: list[int], settings: EvalSettings, toolset=None) -> list[dict]:
    batch, made = [], []
    for i in chunk:
        try:
            batch.append((i, rows.row(i)))
        except PrepError as err:
            if err.reason == "changed_image":  # the dataset no longer matches its records: no score can be trusted
                raise
            row = rows.row(i, with_images=False)
            made.append(judge_row(row, "", i, error=f"{type(err).__name__}: {err}"))
        except Exception as err:  # an unreadable image: recorded, the run goes on
            row = rows.row(i, with_images=False)
            made.append(judge_row(row, "", i, error=f"{type(err).__name__}: {err}"))
    try:
        texts = _generate_any(model, processor, [row for _, row in batch], settings, toolset)
    except Exception as err:  # retry one by one so one bad sample does not sink the batch
        logger.warning("batch generation failed (%s); retrying its %d samples one at a time", err, len(batch))
        texts = []
        for i, row in batch:
            try:
                texts.append(_generate_any(model, processor, [row], settings, toolset)[0])
            except Exception as single:
                texts.append(None)
                made.append(judge_row(row, "", i, error=f"{type(single).__name__}: {single}"))
    made += [_judged(row, text, i) for (i, row), text in zip(batch, texts) if text is not None]
    for prediction in made:  # a task's metrics may group by these (point: ScreenSpot's text / icon, its app)
        meta = rows.record(prediction["index"]).meta
        prediction.update({key: meta[key] for key in GROUP_KEYS if meta.get(key) is not None})
    return sorted(made, key=lambda p: p["index"])


def _judged(row: dict, output, index: int) -> dict:
    """A prediction from a completion text, or from a multi-turn :class:`~vlm_grpo.tools.rollout.ToolRollout`
    (judged on its final answer; its tool calls and the crops it got recorded)."""
    if isinstance(output, str):
        return judge_row(row, output, index)
    from vlm_grpo.callbacks import logged_tool_calls

    prediction = judge_row(row, output.text, index)
    prediction["tool_calls"] = logged_tool_calls(output.messages)
    prediction["crops"] = output.regions
    return prediction


def read_predictions(path: Path) -> list[dict]:
    """Predictions from a JSONL file; a torn last line (an interrupted write) is ignored."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def unique_names(paths: list[Path]) -> list[str]:
    """Short distinct names for dataset folders: the folder name, with as many parents as it takes to differ.

    >>> unique_names([Path("data/refcoco/val"), Path("data/lisa/val"), Path("data/math")])
    ['refcoco/val', 'lisa/val', 'math']
    """
    parts = [Path(p).resolve().parts for p in paths]
    names = []
    for mine in parts:
        depth = 1
        while depth < len(mine) and sum(other[-depth:] == mine[-depth:] for other in parts) > 1:
            depth += 1
        names.append("/".join(mine[-depth:]))
    return names


class EvalCallback(TrainerCallback):
    """Evaluates ``eval_data`` during training and logs the same metrics as `vlm-grpo eval`.

    When: every ``eval_steps`` steps (``logging_steps`` when unset) with ``eval_strategy`` ``no`` or ``steps``,
    at the end of each epoch with ``epoch``. The metrics go to the trainer's log (``training_log.json``,
    TensorBoard) under ``eval_<name>/...``, ``<name>`` the dataset folder (with its parents where two folders
    share a name), and one line per dataset to the console. Each process evaluates its share of the records;
    the metrics are computed on all of them.
    """

    def __init__(self, eval_rows: list[RowSet], processor, max_samples: int | None = None, settings=None,
                 by_epoch: bool = False, toolset=None) -> None:
        self.eval_rows = eval_rows
        self.by_epoch = by_epoch
        self.names = unique_names([rows.datasets[0].path for rows in eval_rows])
        self.processor = processor
        self.max_samples = max_samples
        self.settings = settings or EvalSettings(batch_size=8, max_new_tokens=128)
        self.trainer = None  # set by the training code after the trainer exists
        self.history: list[dict] = []
        self.toolset = toolset  # a run with tools evaluates multi-turn with the same tools and limits

    def on_step_end(self, args, state, control, model=None, **kwargs):
        steps = args.eval_steps or args.logging_steps
        if self.trainer is None or self.by_epoch or not steps or state.global_step % int(steps):
            return
        self._log(self.evaluate(model), control)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if self.trainer is not None and self.by_epoch:
            self._log(self.evaluate(model), control)

    def _log(self, logs: dict, control) -> None:
        """Log the metrics without eating the step's own log: ``Trainer.log`` clears ``should_log``."""
        should_log = control.should_log
        self.trainer.log(logs)
        control.should_log = should_log

    def evaluate(self, model) -> dict:
        from accelerate.utils import gather_object

        accelerator = self.trainer.accelerator
        unwrapped = accelerator.unwrap_model(model)
        was_training = unwrapped.training
        unwrapped.eval()
        logs = {}
        for rows, name in zip(self.eval_rows, self.names):
            count = len(rows) if self.max_samples is None else min(len(rows), self.max_samples)
            mine = list(range(count))[accelerator.process_index :: accelerator.num_processes]
            preds = evaluate_rows(unwrapped, self.processor, rows, mine, self.settings, progress=False,
                                  toolset=self.toolset)
            metrics = compute_metrics(sorted(gather_object(preds), key=lambda p: p["index"]))
            for key in ("accuracy", "format_rate", "parse_failure_rate", "tool_call_rate", "crops_per_sample"):
                if key in metrics:
                    logs[f"eval_{name}/{key}"] = metrics[key]
            if metrics["metric"] != "accuracy":  # the task's headline (rec: mean_iou, det: mAP)
                logs[f"eval_{name}/{metrics['metric']}"] = metrics["value"]
            self.history.append({"step": self.trainer.state.global_step, "data": name, "metrics": metrics})
            if accelerator.is_main_process:
                prefix = f"eval_{name}/"
                shown = ", ".join(f"{k[len(prefix):]} {v:.3f}" for k, v in logs.items() if k.startswith(prefix))
                tqdm.write(f"eval step {self.trainer.state.global_step} {name} ({count} records): {shown}")
        if was_training:
            unwrapped.train()
        return logs
