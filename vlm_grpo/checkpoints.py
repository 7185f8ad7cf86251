"""Crash-safe checkpoints around the HF Trainer: a checkpoint counts only once it is completely written.

What the HF Trainer (transformers 5.23) does on its own, and why that is not enough:
- ``_save_checkpoint`` writes ``checkpoint-N`` file by file in place (weights, optimizer,
  scheduler, RNG state, ``trainer_state.json``), with no temp folder and no fsync. A process
  killed half-way leaves a ``checkpoint-N`` folder that looks like any other.
- ``resume_from_checkpoint=True`` takes the folder with the highest N (``get_last_checkpoint``),
  so it picks that half-written folder, and then fails or, worse, silently starts with a fresh
  optimizer when ``optimizer.pt`` is missing.
- Old checkpoints are rotated (``save_total_limit``) inside ``_save_checkpoint``, before
  ``on_save`` fires and with no regard to whether the newest one is complete.

What this module adds, through public APIs only (a callback, the arguments, and choosing the
resume path before ``trainer.train``):
- :class:`CompletionMarker` runs in ``on_save``, which the Trainer calls after the checkpoint is
  written. It fsyncs every file of the folder and then writes ``checkpoint_complete.json``
  (temp file, fsync, rename, fsync of the folder), listing each file and its size.
- It also takes over rotation: the trainer's own ``save_total_limit`` is set to ``None`` and old
  checkpoints are removed only after the new one is marked, each renamed first so that a kill
  during the removal never leaves a half-deleted ``checkpoint-N``. The Trainer's rotation
  protects the highest-numbered checkpoint, which in a reused ``output_dir`` is another run's,
  and so deletes the one just written; this one never removes the checkpoint just written,
  and counts and removes only checkpoints of the run being trained (the run id in their
  marker; which run may use which ``output_dir`` is :mod:`vlm_grpo.runs`).
- :func:`resolve_resume` turns ``true`` / ``auto`` into the newest checkpoint whose marker is
  present and whose files still match it. Newer folders without one are moved aside to
  ``incomplete-checkpoint-N``, with a log line naming each and why.
- :func:`disk_full_error` recognises a full disk (or quota) in what a save raised, and says which
  folder, which checkpoint is intact and how to resume.

Exact resume (a resumed run ends with the same weights as one never stopped, same seed and data)
needs three more things the Trainer and TRL do not do on their own:
- Weights. transformers 5.23 reloads them with a plain ``load_state_dict`` that matches no key of
  a saved Qwen2.5-VL, so the resumed run silently goes on from the starting weights.
  :func:`restore_model_weights` loads them through ``from_pretrained`` first.
- Data order. TRL's sampler draws each epoch's order from its own generator, which the Trainer
  does not restore. :class:`ReplaySamplerEpochs` replays the epochs already trained.
- Generation boundaries. TRL generates once every ``steps_per_generation × num_iterations``
  micro-steps and reuses the completions from a buffer that is not saved, so a resumed trainer
  regenerates at once. ``save_steps × gradient_accumulation_steps`` must therefore be a multiple
  of ``steps_per_generation × num_iterations``; :func:`check_save_steps` enforces it before the
  model loads. With TRL's defaults (``num_iterations=1``, ``steps_per_generation`` =
  ``gradient_accumulation_steps``) every step is a boundary.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import re
import shutil
import time
from pathlib import Path

from transformers import TrainerCallback

from vlm_grpo.files import atomic_write_text, fsync_path

logger = logging.getLogger(__name__)

MARKER = "checkpoint_complete.json"
INCOMPLETE_PREFIX = "incomplete-"
DELETING_PREFIX = "deleting-"
LATEST = "latest"  # resume from the newest complete checkpoint; there must be one
AUTO = "auto"  # the same, or start from scratch when there is none yet (for jobs that are requeued)
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FULL_TEXTS = ("no space left on device", "disk quota exceeded", "os error 28", "os error 122")
_LOW_FREE_BYTES = 64 * 2**20


def checkpoints_in(output_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` for every ``checkpoint-N`` folder in ``output_dir``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = _CHECKPOINT.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def incomplete_reason(folder: str | Path) -> str | None:
    """Why ``folder`` is not a complete checkpoint, or ``None`` when it is."""
    folder = Path(folder)
    marker = folder / MARKER
    if not marker.is_file():
        return f"it has no {MARKER} (it was being written when the run stopped)"
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"its {MARKER} is unreadable ({err})"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing although {MARKER} lists it"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {MARKER} says {size}"
    return None


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in ``output_dir``, or ``None``."""
    for _, folder in reversed(checkpoints_in(output_dir)):
        if incomplete_reason(folder) is None:
            return folder
    return None


def marker_of(folder: str | Path) -> dict | None:
    """The completion marker of a complete checkpoint, or ``None`` when it is not complete."""
    if incomplete_reason(folder) is not None:
        return None
    return json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))


def mark_complete(folder: str | Path, step: int, run_id: str | None = None) -> None:
    """Flush every file of ``folder`` to disk, then write its completion marker (with ``run_id``) atomically."""
    folder = Path(folder)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MARKER):
        fsync_path(path)
        files[path.relative_to(folder).as_posix()] = path.stat().st_size
    for sub in sorted({p.parent for p in folder.rglob("*")} | {folder}):
        fsync_path(sub)
    record = {"global_step": step, "run_id": run_id, "files": files, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_text(folder / MARKER, json.dumps(record, indent=1) + "\n")
    fsync_path(folder)  # the rename itself must reach the disk


def remove_checkpoint(folder: Path) -> None:
    """Rename, then delete: a kill during the delete leaves ``deleting-…``, never a torn ``checkpoint-N``."""
    doomed = folder.with_name(DELETING_PREFIX + folder.name)
    shutil.rmtree(doomed, ignore_errors=True)
    folder.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def rotate(
    output_dir: str | Path,
    keep: int | None,
    protect: str | Path | None = None,
    written: str | Path | None = None,
    run_id: str | None = None,
) -> list[Path]:
    """Remove the oldest complete checkpoints beyond ``keep``. Returns the removed.

    Never removed: ``written`` (the checkpoint just written), ``protect`` (the best one) and the
    newest complete one. With ``run_id``, only that run's checkpoints are counted and removed.
    """
    for leftover in Path(output_dir).glob(DELETING_PREFIX + "checkpoint-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if not keep or keep <= 0:
        return []
    complete = [
        folder for _, folder in checkpoints_in(output_dir)
        if (marker := marker_of(folder)) is not None and (run_id is None or marker.get("run_id") == run_id)
    ]
    protected = {complete[-1].resolve()} if complete else set()
    for folder in (protect, written):
        if folder is not None and Path(folder).is_dir():
            protected.add(Path(folder).resolve())
    removed = []
    excess = len(complete) - max(keep, len(protected))
    for folder in complete:
        if excess <= 0:
            break
        if folder.resolve() not in protected:
            remove_checkpoint(folder)
            removed.append(folder)
            excess -= 1
    return removed


class CompletionMarker(TrainerCallback):
    """Marks each checkpoint complete once written, then rotates old ones (in place of the Trainer's rotation).

    ``run_id`` (set by :func:`vlm_grpo.runs.start_run` before training) goes into every marker.
    """

    def __init__(self, save_total_limit: int | None, run_id: str | None = None) -> None:
        self.save_total_limit = save_total_limit
        self.run_id = run_id

    def on_save(self, args, state, control, **kwargs):
        from accelerate import PartialState

        # Every process writes its part (RNG state per rank, shards): all must be done before the marker.
        PartialState().wait_for_everyone()
        if args.should_save:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            mark_complete(folder, state.global_step, run_id=self.run_id)
            rotate(args.output_dir, self.save_total_limit, state.best_model_checkpoint, written=folder, run_id=self.run_id)
        PartialState().wait_for_everyone()


class ReplaySamplerEpochs(TrainerCallback):
    """On resume, advance the train sampler's own random generator past the epochs already trained.

    TRL's ``RepeatSampler`` shuffles with a ``torch.Generator`` seeded once when the trainer is
    built and drawn again at every epoch. The Trainer restores the global RNG but not that one,
    so a run resumed in epoch ``e ≥ 1`` would see epoch 0's order again. Iterating the sampler
    ``e`` times replays exactly the draws of the uninterrupted run. Samplers without such a
    generator (HF's, which reseed per epoch) are left alone.
    """

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        if not state.global_step or train_dataloader is None or not hasattr(train_dataloader, "__len__"):
            return
        accumulation = args.gradient_accumulation_steps
        steps_per_epoch = max(-(-len(train_dataloader) // accumulation), 1)
        epochs_trained = state.global_step // steps_per_epoch
        for sampler in _seeded_samplers(train_dataloader):
            for _ in range(epochs_trained):
                for _ in sampler:  # drawing an epoch's order is what advances the sampler's generator
                    pass


def _seeded_samplers(loader) -> list:
    """Samplers under ``loader`` (through ``batch_sampler`` / ``sampler`` wrappers) that own a ``torch.Generator``."""
    import torch

    found, todo, seen = [], [loader], set()
    while todo:
        obj = todo.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if not isinstance(obj, torch.utils.data.DataLoader) and isinstance(getattr(obj, "generator", None), torch.Generator):
            found.append(obj)
            continue
        todo += [getattr(obj, name, None) for name in ("batch_sampler", "sampler")]
    return found


def make_crash_safe(trainer) -> None:
    """Install :class:`CompletionMarker` (taking over rotation) and :class:`ReplaySamplerEpochs`, once."""
    if any(isinstance(c, CompletionMarker) for c in trainer.callback_handler.callbacks):
        return
    limit = trainer.args.save_total_limit
    trainer.args.save_total_limit = None  # the Trainer would rotate before the new checkpoint is marked
    trainer.add_callback(CompletionMarker(limit))
    trainer.add_callback(ReplaySamplerEpochs())


def resume_arg(value):
    """``resume_from_checkpoint`` as given: ``latest`` (``true``), ``auto``, ``None`` (``false``) or a folder."""
    if value is True or (isinstance(value, str) and value.lower() in {"true", "latest"}):
        return LATEST
    if isinstance(value, str) and value.lower() == AUTO:
        return AUTO
    if not value or (isinstance(value, str) and value.lower() in {"false", "none", ""}):
        return None
    if not Path(value).is_dir():
        raise ValueError(
            f"resume_from_checkpoint={value!r} is not a folder; give a checkpoint-N folder, "
            "`true` (the newest complete checkpoint) or `auto` (the same, or a fresh start when there is none)"
        )
    return str(value)


def resolve_resume(value, output_dir: str | Path, is_main_process: bool = True) -> str | None:
    """The checkpoint folder to resume from, or ``None`` for a fresh start.

    ``latest`` / ``auto`` pick the newest complete checkpoint in ``output_dir``; the main process
    moves newer half-written folders aside (``incomplete-checkpoint-N``) so that nothing, the
    Trainer's own look-ups included, takes them for the latest. A folder given by path is used as
    it is, with a warning when it has no completion marker; half-written folders of ``output_dir``
    after its step are moved aside the same way (the resumed run would write into them). Which
    run's checkpoints may be taken is :mod:`vlm_grpo.runs`.
    """
    value = resume_arg(value)
    if value is None:
        return None
    if value not in (LATEST, AUTO):
        reason = incomplete_reason(value)
        if reason is not None:
            logger.warning("resuming from %s although %s; it may be incomplete", value, reason)
        match = _CHECKPOINT.match(Path(value).name)
        resumed_step = int(match.group(1)) if match else (marker_of(value) or {}).get("global_step")
        if resumed_step is not None and is_main_process:
            for step, folder in checkpoints_in(output_dir):
                if step > resumed_step and incomplete_reason(folder) is not None:
                    _move_aside(folder)
        return value
    found = checkpoints_in(output_dir)
    chosen = last_complete_checkpoint(output_dir)
    if chosen is None and value == LATEST:
        # Nothing is moved: these may be checkpoints written before markers existed.
        names = ", ".join(f.name for _, f in found) or "none"
        raise ValueError(
            f"resume_from_checkpoint=true but {output_dir} has no complete checkpoint (checkpoint folders: {names}); "
            "start without resume_from_checkpoint, use `auto` to start fresh when there is none, "
            "or give a checkpoint folder by path to use one that has no completion marker"
        )
    chosen_step = -1 if chosen is None else int(_CHECKPOINT.match(chosen.name).group(1))
    for step, folder in found:
        if step > chosen_step and is_main_process:
            _move_aside(folder)
    return None if chosen is None else str(chosen)


def _move_aside(folder: Path) -> None:
    aside = folder.with_name(INCOMPLETE_PREFIX + folder.name)
    logger.warning("skipped %s: %s; moved it to %s", folder, incomplete_reason(folder), aside.name)
    shutil.rmtree(aside, ignore_errors=True)
    folder.rename(aside)


def restore_model_weights(trainer, checkpoint: str | Path) -> bool:
    """Load a full-model checkpoint's weights into ``trainer.model`` the way ``from_pretrained`` does.

    transformers 5.23 resumes weights with a plain ``load_state_dict(strict=False)`` of the saved
    file, but ``save_pretrained`` writes Qwen2.5-VL in the released key layout (``visual.*``,
    ``model.layers.*``) while the module expects ``model.visual.*``, ``model.language_model.*``:
    no key matches, nothing is loaded, and the resumed run silently continues from the starting
    weights (huggingface/transformers#43701). Loading through ``from_pretrained`` applies the key
    conversion; the Trainer's own attempt then changes nothing. LoRA adapters (PEFT's loader) and
    DeepSpeed/FSDP checkpoints (their own loaders) are left to the Trainer. Returns whether it loaded.
    """
    checkpoint = Path(checkpoint)
    model = trainer.model
    full = any((checkpoint / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json"))
    if not full or hasattr(model, "peft_config") or trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        return False
    dtype = next(model.parameters()).dtype
    saved = type(model).from_pretrained(checkpoint, dtype=dtype, device_map="cpu")
    model.load_state_dict(saved.state_dict(), strict=True)
    del saved
    return True


class _DropMismatchWarning(logging.Filter):
    """Hides the Trainer's all-keys-missing warning once :func:`restore_model_weights` has loaded the weights."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("missing keys in the checkpoint" in text or "unexpected keys in the checkpoint" in text)


@contextlib.contextmanager
def mismatch_warning_hidden(active: bool):
    """While active, the Trainer's key-mismatch warnings (about weights already restored) are not shown."""
    trainer_logger = logging.getLogger("transformers.trainer")
    drop = _DropMismatchWarning()
    if active:
        trainer_logger.addFilter(drop)
    try:
        yield
    finally:
        trainer_logger.removeFilter(drop)


def check_save_steps(args) -> None:
    """Checkpoints must fall on TRL's generation boundaries for a resumed run to equal an uninterrupted one."""
    every = getattr(args, "steps_per_generation", None)
    iterations = getattr(args, "num_iterations", 1) or 1
    if not every or str(getattr(args, "save_strategy", "")).split(".")[-1].lower() != "steps":
        return
    micro_steps = every * iterations  # TRL generates once per this many micro-steps
    accumulation = args.gradient_accumulation_steps
    save_steps = args.save_steps
    if 0 < save_steps < 1:  # a ratio of max_steps, as the Trainer reads it
        if not args.max_steps or args.max_steps <= 0:
            return
        save_steps = math.ceil(args.max_steps * save_steps)
    save_steps = int(save_steps)
    if (save_steps * accumulation) % micro_steps:
        multiple = micro_steps // math.gcd(micro_steps, accumulation)
        raise ValueError(
            f"save_steps={args.save_steps:g} puts checkpoints inside TRL's generation buffer: completions are "
            f"generated once every steps_per_generation × num_iterations = {every} × {iterations} micro-steps, "
            f"i.e. every {micro_steps / accumulation:g} optimizer steps at gradient_accumulation_steps={accumulation}, "
            "and a run resumed between two generations regenerates them, so it no longer matches a run that was "
            f"never stopped. Set save_steps to a multiple of {multiple}."
        )


class DiskFullError(RuntimeError):
    """A write failed because the disk (or the user's quota) is full; the message says what is intact."""


def is_disk_full(err: BaseException, folder: str | Path) -> bool:
    """Whether ``err`` (or what caused it) says the disk is full.

    safetensors reports it as ``SafetensorError(... os error 28)`` and ``torch.save`` as an
    ``inline_container`` RuntimeError that names no cause; the latter counts when the disk of
    ``folder`` has almost no free space left.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _FULL_ERRNOS:
            return True
        text = str(err).lower()
        if any(t in text for t in _FULL_TEXTS):
            return True
        if "inline_container" in text and _free_bytes(folder) < _LOW_FREE_BYTES:
            return True
        err = err.__cause__ or err.__context__
    return False


def _free_bytes(folder: str | Path) -> int:
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 1 << 62


def disk_full_error(err: BaseException, output_dir: str | Path, final_save: bool = False) -> DiskFullError | None:
    """A :class:`DiskFullError` explaining ``err`` when it is a full disk, else ``None``."""
    if not is_disk_full(err, output_dir):
        return None
    output_dir = Path(output_dir)
    intact = last_complete_checkpoint(output_dir)
    intact_step = -1 if intact is None else int(_CHECKPOINT.match(intact.name).group(1))
    torn = [folder for step, folder in checkpoints_in(output_dir) if step > intact_step]
    if final_save:
        what = f"the final model could not be written to {output_dir} (training itself finished)"
    elif torn:
        what = f"checkpoint {torn[-1]} could not be written; it is incomplete and a resume will skip it"
    else:
        what = f"a file in {getattr(err, 'filename', None) or output_dir} could not be written"
    if intact is not None:
        kept = f"The previous checkpoint {intact} is complete and intact."
        how = (
            "Free some space (or set output_dir to a larger disk and copy it there), then run the same command "
            f"with --resume_from_checkpoint true to continue from {intact.name}."
        )
    else:
        kept = "No complete checkpoint had been written yet."
        how = "Free some space, then start the run again."
    return DiskFullError(f"the disk is full (or the disk quota is used up): {what}. {kept} {how} [{err}]")
