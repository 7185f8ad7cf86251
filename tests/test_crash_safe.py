"""Crash-safe training: completion markers, resume from the last complete checkpoint, disk full, exact resume.

Fast tests run in the default suite. The slow test (`make test-slow`) kills real `vlm-grpo train`
processes with SIGKILL during generation, backward and checkpoint writes, resumes each time, and
writes its figures to ``$RELIABILITY_RESULTS/training.json`` (default ``build/reliability/``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from vlm_grpo import checkpoints
from vlm_grpo.checkpoints import MARKER, incomplete_reason, mark_complete, resolve_resume, rotate
from vlm_grpo.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
SHORT_ANSWER = textwrap.dedent(
    '''
    def short_answer(completions, **columns):
        """Prefers shorter completions, so a random policy's group has reward variance and the weights move."""
        texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
        return [1.0 / (1.0 + len(t)) for t in texts]
    '''
)


def _argv(tiny_dir, data, out, reward_file, *extra):
    """`vlm-grpo train` keys: one prompt of 4 completions per step, checkpoints every step."""
    return [
        "--config", str(REPO / "scripts/configs/tiny_cpu.yaml"),
        "--model_name_or_path", str(tiny_dir), "--train_data", str(data), "--output_dir", str(out),
        "--reward_funcs", "format", f"{reward_file}:short_answer",
        "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "12",
        "--report_to", "none", "--seed", "0", "--save_steps", "1", "--save_total_limit", "2", *extra,
    ]


@pytest.fixture(scope="module")
def reward_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rewards") / "short.py"
    path.write_text(SHORT_ANSWER)
    return path


def _prep(path: Path, num: int) -> Path:
    from data_prep.cli import main as prep_main

    argv = ["--format", "synthetic", "--task", "rec", "--num", str(num), "--seed", "0", "--output", str(path), "--quiet"]
    assert prep_main(argv) == 0
    return path


@pytest.fixture(scope="module")
def four_records(tmp_path_factory):
    """4 records: one epoch is 4 optimizer steps at one prompt per step."""
    return _prep(tmp_path_factory.mktemp("data") / "rec4", 4)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


# ---------------------------------------------------------------------------------------------
# Markers, resume resolution and rotation on plain folders


def _fake_checkpoint(out: Path, step: int, complete: bool) -> Path:
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * 100)
    (folder / "optimizer.pt").write_bytes(b"o" * 50)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if complete:
        mark_complete(folder, step)
    return folder


def test_marker_lists_every_file_and_its_size(tmp_path):
    folder = _fake_checkpoint(tmp_path, 3, complete=True)
    marker = json.loads((folder / MARKER).read_text())
    assert marker["global_step"] == 3
    assert marker["files"] == {"model.safetensors": 100, "optimizer.pt": 50, "trainer_state.json": 18}
    assert incomplete_reason(folder) is None
    assert not list(folder.glob(".*tmp*")), "the marker's temp file was left behind"


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda f: (f / MARKER).unlink(), "has no checkpoint_complete.json"),
        (lambda f: (f / MARKER).write_text("{not json"), "unreadable"),
        (lambda f: (f / "optimizer.pt").unlink(), "optimizer.pt is missing"),
        (lambda f: (f / "model.safetensors").write_bytes(b"w" * 10), "model.safetensors has 10 bytes"),
    ],
)
def test_a_damaged_checkpoint_is_not_complete(tmp_path, damage, reason):
    folder = _fake_checkpoint(tmp_path, 2, complete=True)
    damage(folder)
    assert reason in incomplete_reason(folder)


def test_resume_skips_half_written_checkpoints_and_moves_them_aside(tmp_path, caplog):
    out = tmp_path / "run"
    _fake_checkpoint(out, 2, complete=True)
    _fake_checkpoint(out, 4, complete=True)
    _fake_checkpoint(out, 6, complete=False)  # killed while being written
    torn = _fake_checkpoint(out, 8, complete=True)
    (torn / "optimizer.pt").write_bytes(b"o")  # its marker no longer matches
    with caplog.at_level(logging.WARNING, logger="vlm_grpo.checkpoints"):
        chosen = resolve_resume("true", out)
    assert chosen == str(out / "checkpoint-4")
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint-2", "checkpoint-4", "incomplete-checkpoint-6", "incomplete-checkpoint-8",
    ]
    text = caplog.text
    assert "skipped" in text and "checkpoint-6" in text and "has no checkpoint_complete.json" in text
    assert "checkpoint-8" in text and "optimizer.pt has 1 bytes" in text
    # HF's own look-up no longer sees the torn folders either
    from transformers.trainer_utils import get_last_checkpoint

    assert get_last_checkpoint(str(out)) == str(out / "checkpoint-4")


def test_resume_with_no_complete_checkpoint(tmp_path, caplog):
    out = tmp_path / "run"
    _fake_checkpoint(out, 2, complete=False)
    with pytest.raises(ValueError, match="has no complete checkpoint .*checkpoint-2.*`auto`"):
        resolve_resume("true", out)
    assert resolve_resume("auto", out) is None  # a fresh start; the torn folder is moved aside
    assert not (out / "checkpoint-2").exists() and (out / "incomplete-checkpoint-2").is_dir()
    assert resolve_resume("auto", tmp_path / "never_created") is None
    assert resolve_resume(None, out) is None and resolve_resume("false", out) is None
    with pytest.raises(ValueError, match="is not a folder"):
        resolve_resume(str(tmp_path / "nope"), out)
    with caplog.at_level(logging.WARNING, logger="vlm_grpo.checkpoints"):
        assert resolve_resume(str(out / "incomplete-checkpoint-2"), out) == str(out / "incomplete-checkpoint-2")
    assert "may be incomplete" in caplog.text


def test_rotation_keeps_the_newest_complete_and_never_touches_unmarked(tmp_path):
    out = tmp_path / "run"
    for step in (1, 2, 3, 4):
        _fake_checkpoint(out, step, complete=True)
    _fake_checkpoint(out, 5, complete=False)  # being written right now
    (out / "deleting-checkpoint-0").mkdir()  # left by a kill during an earlier removal
    # as the Trainer counts it: the limit includes the newest complete one and the protected (best) one
    removed = rotate(out, keep=2, protect=out / "checkpoint-1")
    assert [p.name for p in removed] == ["checkpoint-2", "checkpoint-3"]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-1", "checkpoint-4", "checkpoint-5"]
    assert [p.name for p in rotate(out, keep=1)] == ["checkpoint-1"]
    assert rotate(out, keep=None) == []


@pytest.mark.parametrize(
    "keys, message",
    [
        (dict(num_iterations=2, save_steps=1), "Set save_steps to a multiple of 2"),
        (dict(num_iterations=1, steps_per_generation=4, gradient_accumulation_steps=2, save_steps=3),
         "Set save_steps to a multiple of 2"),
        (dict(num_iterations=3, save_steps=0.5, max_steps=10), "Set save_steps to a multiple of 3"),
    ],
)
def test_save_steps_inside_the_generation_buffer_is_refused(keys, message):
    args = SimpleNamespace(**{
        "save_strategy": "steps", "steps_per_generation": 1, "gradient_accumulation_steps": 1, "max_steps": -1, **keys
    })
    with pytest.raises(ValueError, match=message):
        checkpoints.check_save_steps(args)


@pytest.mark.parametrize(
    "keys",
    [
        dict(num_iterations=2, save_steps=4),
        dict(num_iterations=1, steps_per_generation=4, gradient_accumulation_steps=2, save_steps=2),
        dict(num_iterations=2, save_steps=1, save_strategy="epoch"),
    ],
)
def test_save_steps_on_generation_boundaries_is_accepted(keys):
    args = SimpleNamespace(**{
        "save_strategy": "steps", "steps_per_generation": 1, "gradient_accumulation_steps": 1, "max_steps": -1, **keys
    })
    checkpoints.check_save_steps(args)


# ---------------------------------------------------------------------------------------------
# Disk full


@pytest.mark.parametrize(
    "err, free, full",
    [
        (OSError(errno.ENOSPC, "No space left on device"), 10**12, True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), 10**12, True),
        # what safetensors raises on a full disk (checked on a 64 KiB tmpfs)
        (RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"), 10**12, True),
        # what torch.save raises on a full disk: no cause named, so the free space decides
        (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"), 0, True),
        (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"), 10**12, False),
        (OSError(errno.EACCES, "Permission denied"), 0, False),
        (ValueError("some bug"), 0, False),
    ],
)
def test_disk_full_is_recognised(tmp_path, monkeypatch, err, free, full):
    monkeypatch.setattr(checkpoints, "_free_bytes", lambda folder: free)
    assert checkpoints.is_disk_full(err, tmp_path) is full
    wrapped = RuntimeError("while saving")
    wrapped.__cause__ = err
    assert checkpoints.is_disk_full(wrapped, tmp_path) is full


def test_disk_full_during_the_final_save_names_the_checkpoint_to_resume(tmp_path):
    _fake_checkpoint(tmp_path, 4, complete=True)
    err = checkpoints.disk_full_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path, final_save=True)
    text = str(err)
    assert "the final model could not be written" in text and "checkpoint-4 is complete and intact" in text
    assert "--resume_from_checkpoint true" in text


def _fail_optimizer_save_in(monkeypatch, folder_name: str):
    """torch.save raises ENOSPC when the Trainer writes optimizer.pt into ``folder_name`` (the model is already there)."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and Path(f).parent.name == folder_name and Path(f).name == "optimizer.pt":
            Path(f).write_bytes(b"half")  # the start of the file reached the disk
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_disk_full_while_saving_a_checkpoint(tiny_dir, four_records, reward_file, tmp_path, monkeypatch, capsys, caplog):
    out = tmp_path / "run"
    _fail_optimizer_save_in(monkeypatch, "checkpoint-2")
    code = cli_main(["train", *_argv(tiny_dir, four_records, out, reward_file, "--max_steps", "3")])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: the disk is full" in err and "Traceback" not in err
    assert f"checkpoint {out / 'checkpoint-2'} could not be written" in err
    assert f"The previous checkpoint {out / 'checkpoint-1'} is complete and intact" in err
    assert "--resume_from_checkpoint true" in err and "checkpoint-1" in err
    assert incomplete_reason(out / "checkpoint-1") is None
    assert "has no checkpoint_complete.json" in incomplete_reason(out / "checkpoint-2")
    # space freed: the same command resumes from checkpoint-1, never from the half-written checkpoint-2
    monkeypatch.undo()
    code = cli_main(["train", *_argv(tiny_dir, four_records, out, reward_file, "--max_steps", "3"),
                     "--resume_from_checkpoint", "true"])
    captured = capsys.readouterr()
    assert code == 0
    assert f"resuming from {out / 'checkpoint-1'}" in captured.out and "GRPO done: 3 steps" in captured.out
    assert "skipped" in caplog.text and "checkpoint-2" in caplog.text
    assert json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3


# ---------------------------------------------------------------------------------------------
# Exact resume


class Interrupted(Exception):
    pass


def _train(argv, resume=None, stop_at=None):
    from transformers import TrainerCallback
    from trl import GRPOConfig

    from vlm_grpo.config import GRPO_DEFAULTS, parse
    from vlm_grpo.train import build_grpo_trainer, run_training

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == stop_at:  # before this step's checkpoint is written
                raise Interrupted

    trainer, _ = build_grpo_trainer(*parse(GRPOConfig, GRPO_DEFAULTS, argv))
    if stop_at:
        trainer.add_callback(StopAt())
    try:
        run_training(trainer, resume)
    except Interrupted:
        return None
    return trainer


def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(tiny_dir, four_records, reward_file, tmp_path, capsys):
    """6 steps over 4 records (two epochs); the interrupted run resumes in the second epoch.

    This needs three things the Trainer does not do on its own for Qwen2.5-VL under TRL: the
    weights restored with the key conversion, the sampler's own generator advanced past epoch 0,
    and the checkpoint on a generation boundary.
    """
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    _train(_argv(tiny_dir, four_records, straight, reward_file, "--max_steps", "6"))
    assert _train(_argv(tiny_dir, four_records, broken, reward_file, "--max_steps", "6"), stop_at=6) is None
    assert sorted(p.name for p in broken.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-5"]  # limit 2
    assert all(incomplete_reason(p) is None for p in broken.glob("checkpoint-*"))
    trainer = _train(_argv(tiny_dir, four_records, broken, reward_file, "--max_steps", "6"), resume="true")
    assert f"resuming from {broken / 'checkpoint-5'}" in capsys.readouterr().out
    assert trainer.state.global_step == 6
    resumed, uninterrupted, start = _weights(broken), _weights(straight), _weights(Path(tiny_dir))
    moved = max((uninterrupted[k] - start[k]).abs().max().item() for k in uninterrupted.keys() & start.keys())
    assert moved > 1e-4, "training did not move the weights: the comparison would prove nothing"
    diff = _max_diff(resumed, uninterrupted)
    assert diff <= 1e-6, f"resumed and uninterrupted final weights differ by up to {diff:.3g}"
