"""Which run an ``output_dir`` belongs to, and what a fresh run or a resume may do there.

Every training run has a run id (``<start time>-<6 hex>``). It goes into the completion marker
(``checkpoint_complete.json``) of each checkpoint the run writes; a resumed run keeps the id of
the checkpoint it continues, so the checkpoints of one run share one id however often it was
stopped. With that, the rules (checked by :func:`plan_run` before the model is loaded, applied
by :func:`start_run` when training starts):

- A fresh run (no ``resume_from_checkpoint``) needs an ``output_dir`` without another run's
  output: ``checkpoint-N`` folders or rollout logs (``rollouts*.jsonl``). Otherwise it stops,
  naming them: its checkpoints would land among the other run's (same-numbered folders written
  into, the other run's taken for the latest on resume) and its rollouts appended to theirs.
  ``--overwrite_output_dir true`` deletes that output first (``checkpoint-N``,
  ``incomplete-checkpoint-N``, ``rollouts*.jsonl``, ``training_log.json``) and says what it
  deleted; the other run's final model files are replaced when this run saves its own.
- ``true`` / ``auto`` resume the newest complete checkpoint of the one run whose checkpoints
  ``output_dir`` holds, and say which (run id, step, when written). When the complete
  checkpoints belong to several runs, or carry no run id (written before run ids existed),
  there is no run to pick: the command stops and asks for the folder by path. ``auto`` with no
  complete checkpoint starts fresh.
- A checkpoint given by path is resumed with its own run id (a new one when it has none). The
  other checkpoints of ``output_dir`` must be of that run and not newer: this run would write
  into the newer ones or rotate them together with its own. Otherwise it stops, naming them;
  ``--overwrite_output_dir true`` deletes them first.

A resumed run drops the rollout-log lines after the step it resumes from (that part of the run
is trained again and logged again); so does ``auto`` starting over (after step 0).
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import time
from pathlib import Path

from vlm_grpo.checkpoints import (
    AUTO,
    INCOMPLETE_PREFIX,
    LATEST,
    CompletionMarker,
    checkpoints_in,
    marker_of,
    remove_checkpoint,
    resolve_resume,
    resume_arg,
)
from vlm_grpo.files import atomic_write_text

ROLLOUT_LOGS = "rollouts*.jsonl"
TRAINING_LOG = "training_log.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")
_TO_DO = (
    "resume it with --resume_from_checkpoint true, choose another output_dir, or pass "
    "--overwrite_output_dir true to delete it first"
)


def overwrite_of(args) -> bool:
    """``overwrite_output_dir`` as parsed (a project key: transformers 5 dropped its own)."""
    return bool(getattr(args, "overwrite_output_dir", False))


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


@dataclasses.dataclass
class RunPlan:
    """What :func:`start_run` will do: the run id, the checkpoint to resume (if any), what it deletes."""

    run_id: str
    checkpoint: str | None = None
    step: int | None = None  # of ``checkpoint``
    written_at: str | None = None
    delete: list[Path] = dataclasses.field(default_factory=list)  # only with overwrite_output_dir


def _run_of(folder: Path) -> str | None:
    marker = marker_of(folder)
    return None if marker is None else marker.get("run_id")


def _describe(folders: list[Path]) -> str:
    """``checkpoint-2, checkpoint-4 (run A); checkpoint-1 (not complete)`` for an error message."""
    groups: dict[str, list[str]] = {}
    for folder in folders:
        if not _STEP.match(folder.name):
            key = "a rollout log"
        elif marker_of(folder) is None:
            key = "not complete"
        else:
            key = f"run {_run_of(folder)}" if _run_of(folder) else "no run id"
        groups.setdefault(key, []).append(folder.name)
    return "; ".join(f"{', '.join(names)} ({key})" for key, names in groups.items())


def plan_run(output_dir: str | Path, resume, overwrite: bool = False) -> RunPlan:
    """Check what this run may do in ``output_dir`` (module docstring) without changing anything.

    Raises ``ValueError`` naming the folders in the way and what to do.
    """
    output_dir = Path(output_dir)
    value = resume_arg(resume)
    found = [folder for _, folder in checkpoints_in(output_dir)]
    complete = [folder for folder in found if marker_of(folder) is not None]
    logs = sorted(output_dir.glob(ROLLOUT_LOGS)) if output_dir.is_dir() else []
    if value is None:
        theirs = found + logs
        if theirs and not overwrite:
            raise ValueError(
                f"output_dir {output_dir} holds another run's output: {_describe(theirs)}. A fresh run there would "
                f"mix its checkpoints and rollouts with that run's; {_TO_DO}"
            )
        aside = sorted(output_dir.glob(INCOMPLETE_PREFIX + "checkpoint-*")) if output_dir.is_dir() else []
        training_log = [output_dir / TRAINING_LOG] if (output_dir / TRAINING_LOG).is_file() else []
        return RunPlan(new_run_id(), delete=(found + aside + logs + training_log) if theirs else [])
    if value in (LATEST, AUTO):
        runs = {_run_of(folder) for folder in complete}
        if len(runs) > 1 or runs == {None}:
            newest = complete[-1]
            raise ValueError(
                f"resume_from_checkpoint={resume}: the complete checkpoints in {output_dir} "
                f"{'belong to several runs' if len(runs) > 1 else 'carry no run id (written before runs had ids)'} "
                f"({_describe(complete)}), so there is no one run to continue; give the checkpoint to resume by "
                f"path, e.g. --resume_from_checkpoint {newest} (with --overwrite_output_dir true to delete the "
                "checkpoints of any other run there)"
            )
        if not complete:
            if value == LATEST:  # refused the way resolve_resume refuses it (naming the folders), moving nothing
                resolve_resume(resume, output_dir, is_main_process=False)
            return RunPlan(new_run_id())
        chosen = complete[-1]
    else:
        chosen = Path(value)
    marker = marker_of(chosen) or {}
    run_id = marker.get("run_id")
    step = int(_STEP.match(chosen.name).group(1)) if _STEP.match(chosen.name) else marker.get("global_step")
    in_the_way = [
        folder for folder in complete
        if folder.resolve() != chosen.resolve()
        and (_run_of(folder) != run_id or (step is not None and int(_STEP.match(folder.name).group(1)) > step))
    ]
    if in_the_way and not overwrite:
        raise ValueError(
            f"resume_from_checkpoint={chosen}: {output_dir} also holds {_describe(in_the_way)}, checkpoints of another "
            f"run or newer than step {step}, which this run would write into or rotate away with its own; choose "
            "another output_dir, or pass --overwrite_output_dir true to delete them first"
        )
    return RunPlan(run_id or new_run_id(), str(chosen), step, marker.get("written_at"), delete=in_the_way)


def start_run(trainer, resume, overwrite: bool = False) -> RunPlan:
    """Apply :func:`plan_run` for ``trainer``: delete what overwrite_output_dir allows, pick the checkpoint, set the run id.

    Prints what it did (main process). Half-written checkpoints are moved aside by
    :func:`~vlm_grpo.checkpoints.resolve_resume`. Every process plans before the main one changes
    anything, and the others resolve only after it is done, so all see the same folders.
    """
    from accelerate import PartialState

    output_dir = Path(trainer.args.output_dir)
    main = trainer.is_world_process_zero()
    plan = plan_run(output_dir, resume, overwrite)
    PartialState().wait_for_everyone()
    if main:
        if plan.delete:
            for path in plan.delete:
                if path.is_dir():
                    remove_checkpoint(path)
                else:
                    path.unlink(missing_ok=True)
            names = ", ".join(p.name for p in plan.delete)
            print(f"overwrite_output_dir: deleted {names} from {output_dir}", flush=True)
        resolved = resolve_resume(plan.checkpoint or resume, output_dir, is_main_process=True)
    PartialState().wait_for_everyone()
    if not main:
        resolved = resolve_resume(plan.checkpoint or resume, output_dir, is_main_process=False)
    plan.checkpoint = resolved
    if resolved is None:
        plan.step = None
        if main and resume_arg(resume) == AUTO:  # a requeued job starting over: its earlier rollouts are redone
            _drop_rollouts_after(output_dir, 0)
    elif main:
        when = f", written {plan.written_at}" if plan.written_at else ""
        print(f"resuming from {resolved} (run {plan.run_id}, step {plan.step}{when})", flush=True)
        _drop_rollouts_after(output_dir, plan.step)
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, CompletionMarker):
            callback.run_id = plan.run_id
    return plan


def _drop_rollouts_after(output_dir: Path, step: int | None) -> None:
    if step is None:
        return
    for log in sorted(output_dir.glob(ROLLOUT_LOGS)):
        lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if _step_of(line) is not None and _step_of(line) <= step]
        if len(kept) != len(lines):
            atomic_write_text(log, "".join(kept))
            print(f"dropped {len(lines) - len(kept)} lines after step {step} from {log.name} (redone now)", flush=True)


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a torn last line
