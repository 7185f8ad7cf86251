"""`vlm-grpo demo --quick`: every stage runs through the public commands and writes its files."""

from __future__ import annotations

import json

from PIL import Image

from vlm_grpo.cli import main as cli_main


def test_quick_demo_writes_summary_reports_and_plot(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--quick", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| held-out REC | before GRPO | after GRPO |" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "mean_iou"
    for side in ("before", "after"):
        metrics = summary[side]["metrics"]
        assert metrics["count"] == 24 and "mean_iou" in metrics["by_task"]["rec"]
        assert (out / f"eval_{side}" / "report.html").exists()
    assert set(summary["seconds"]) == {"policy", "data", "sft", "eval_before", "grpo", "eval_after"}
    assert Image.open(out / "rewards.png").size[0] > 100
    manifest = json.loads((out / "data" / "train" / "manifest.json").read_text())
    assert manifest["settings"]["synthetic"]["background"] == "tiles"  # the demo's task, through prep's options
    assert (out / "data" / "val" / "manifest.json").exists()
    assert summary["plan"]["sft_steps"] == 30 and summary["after"]["metrics"]["by_task"]["rec"]["format_rate"] >= 0
    history = json.loads((out / "grpo" / "training_log.json").read_text())
    assert any("rewards/iou/mean" in h for h in history)  # GRPO ran with the iou reward
