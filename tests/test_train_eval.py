"""Evaluation during training, through `vlm-grpo train` as a user runs it: the step's own log survives it,
two `val` splits (what `prep --val-fraction` writes) keep their own metrics, the console shows them, and
`eval_strategy` works."""

from __future__ import annotations

import json

import pytest

from data_prep.cli import main as prep_main
from vlm_grpo.cli import main as cli_main


@pytest.fixture(scope="module")
def two_val_splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("splits")
    for name, seed in (("shapes_a", 1), ("shapes_b", 2)):
        assert prep_main(["--format", "synthetic", "--task", "rec", "--num", "12", "--seed", str(seed),
                          "--val-fraction", "0.5", "--output", str(root / name), "--quiet"]) == 0
    return root / "shapes_a" / "val", root / "shapes_b" / "val"


def _train(tiny_dir, rec_data, out, *extra):
    return cli_main(["train", "--config", "scripts/configs/tiny_cpu.yaml", "--model_name_or_path", str(tiny_dir),
                     "--train_data", str(rec_data), "--output_dir", str(out), "--max_steps", "2",
                     "--save_strategy", "no", "--report_to", "none", "--eval_max_samples", "2", *extra])


@pytest.mark.parametrize("schedule", [["--eval_steps", "1"], ["--eval_strategy", "steps", "--eval_steps", "1"]])
def test_eval_data_keeps_the_loss_and_each_split_its_metrics(tiny_dir, rec_data, two_val_splits, tmp_path, capsys,
                                                             schedule):
    a, b = two_val_splits
    assert _train(tiny_dir, rec_data, tmp_path / "run", "--eval_data", str(a), str(b), *schedule) == 0
    history = json.loads((tmp_path / "run" / "training_log.json").read_text())
    steps = [h for h in history if "loss" in h]
    assert [h["step"] for h in steps] == [1, 2] and all("grad_norm" in h and "learning_rate" in h for h in steps)
    for name in ("shapes_a/val", "shapes_b/val"):
        assert [h["step"] for h in history if f"eval_{name}/mean_iou" in h] == [1, 2], name
    out = capsys.readouterr().out
    assert "eval step 2 shapes_a/val (2 records): accuracy" in out and "eval step 2 shapes_b/val" in out


def test_eval_strategy_without_eval_data_says_what_to_set(tiny_dir, rec_data, tmp_path, capsys):
    assert _train(tiny_dir, rec_data, tmp_path / "run", "--eval_strategy", "steps") == 2
    err = capsys.readouterr().err
    assert "error: eval_strategy=steps needs eval_data" in err and "Traceback" not in err


def test_eval_strategy_epoch_evaluates_at_the_end_of_each_epoch(tiny_dir, rec_data, two_val_splits, tmp_path):
    a, _ = two_val_splits
    assert _train(tiny_dir, rec_data, tmp_path / "run", "--eval_data", str(a), "--eval_strategy", "epoch",
                  "--max_steps", "-1", "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
                  "--num_generations", "4") == 0
    history = json.loads((tmp_path / "run" / "training_log.json").read_text())
    evaluated = [h["step"] for h in history if "eval_val/mean_iou" in h]
    last = max(h["step"] for h in history if "loss" in h)
    assert evaluated == [last]
