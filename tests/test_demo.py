"""`vlm-grpo demo`: every stage runs through the public commands and writes its files; the shipped policy."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from safetensors import safe_open

from vlm_grpo.cli import main as cli_main
from vlm_grpo.commands.demo import SHIPPED_POLICY


def test_quick_demo_writes_summary_reports_and_plot(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--quick", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| held-out REC | before GRPO | after GRPO |" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "mean_iou" and summary["policy"] == str(SHIPPED_POLICY)
    for side in ("before", "after"):
        metrics = summary[side]["metrics"]
        assert metrics["count"] == 24 and "mean_iou" in metrics["by_task"]["rec"]
        assert (out / f"eval_{side}" / "report.html").exists()
    assert set(summary["seconds"]) == {"policy", "data", "eval_before", "grpo", "eval_after"}
    assert Image.open(out / "rewards.png").size[0] > 100
    manifest = json.loads((out / "data" / "train" / "manifest.json").read_text())
    synthetic = manifest["settings"]["synthetic"]
    assert synthetic["background"] == "tiles" and synthetic["answer_box"] == "tight"  # the demo's task, through prep
    assert (out / "data" / "val" / "manifest.json").exists()
    assert summary["plan"]["grpo_steps"] == 4
    history = json.loads((out / "grpo" / "training_log.json").read_text())
    assert any("rewards/iou/mean" in h for h in history)  # GRPO ran with the iou reward
    assert [h["step"] for h in history if "reward" in h] == [1, 2, 3, 4]  # a curve, not one point
    assert all(f["active"] for f in history[0]["run"]["speed_features"].values())  # both speed features on
    assert "smoke test" in summary["note"] and summary["note"] in printed  # 4 steps measure nothing: it says so
    # The starting policy already answers in the format and finds shapes: it was pre-trained on this task.
    assert summary["before"]["metrics"]["by_task"]["rec"]["format_rate"] == 1.0
    assert summary["before"]["metrics"]["by_task"]["rec"]["mean_iou"] > 0.2


@pytest.mark.parametrize("task, reward, figure", [("det", "det_f1", "mAP"), ("point", "point_in_box", "accuracy")])
def test_quick_demo_runs_det_and_point(tmp_path, capsys, task, reward, figure):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--quick", "--task", task, "--output", str(out)]) == 0
    assert f"| held-out {task.upper()} | before GRPO | after GRPO |" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == task and summary["metric"] == figure and "rec policy" in summary["note"]
    for side in ("before", "after"):
        metrics = summary[side]["metrics"]
        assert metrics["metric"] == figure and set(metrics["by_task"]) == {task}
        assert 'class="card' in (out / f"eval_{side}" / "report.html").read_text()
    history = json.loads((out / "grpo" / "training_log.json").read_text())
    assert any(f"rewards/{reward}/mean" in h for h in history)
    if task == "point":  # the rec policy's boxes count as their centre: it clicks some shapes already
        assert summary["before"]["metrics"]["accuracy"] > 0.2


def test_shipped_policy_is_small_bf16_and_finds_held_out_shapes(tmp_path):
    weights = SHIPPED_POLICY / "model.safetensors"
    assert sum(p.stat().st_size for p in SHIPPED_POLICY.iterdir()) < 20 * 2**20
    with safe_open(str(weights), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    data, report = tmp_path / "cells", tmp_path / "eval"
    assert cli_main(["prep", "--format", "synthetic", "--task", "rec", "--num", "40", "--seed", "99", "--quiet",
                     "--output", str(data), "--image-size", "112", "--grid", "28", "--num-shapes", "1",
                     "--size-range", "12-24", "--background", "tiles"]) == 0
    assert cli_main(["eval", "--model", str(SHIPPED_POLICY), "--data", str(data), "--output", str(report),
                     "--batch-size", "20", "--max-new-tokens", "48"]) == 0
    rec = json.loads((report / "metrics.json").read_text())["metrics"]["by_task"]["rec"]
    assert rec["format_rate"] == 1.0 and rec["acc@0.5"] >= 0.3  # it localises partly (0.52 on its val split)


def test_make_policy_quick_pretrains_exports_bf16_and_the_demo_starts_from_it(tmp_path, capsys):
    made = tmp_path / "made"
    assert cli_main(["demo", "--make-policy", "--quick", "--output", str(made)]) == 0
    printed = capsys.readouterr().out
    assert "held-out REC: mean IoU" in printed and "to ship it" in printed
    export = made / "policy_bf16"
    assert not (export / "training_log.json").exists() and (export / "tokenizer.json").exists()
    with safe_open(str(export / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    out = tmp_path / "demo"
    assert cli_main(["demo", "--quick", "--policy", str(export), "--output", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["policy"] == str(export)


def test_demo_without_a_starting_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(SystemExit, match="--make-policy"):
        cli_main(["demo", "--quick", "--policy", str(tmp_path / "nothing"), "--output", str(tmp_path / "o")])
