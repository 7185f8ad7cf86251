"""README's commands, run as written: the CPU example block (only data/ and runs/ moved to a temporary folder),
and the option names README's tables promise."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_block(marker: str) -> str:
    """The fenced block between ``<!-- marker -->`` and ``<!-- /marker -->``."""
    match = re.search(rf"<!-- {marker} -->\s*```bash\n(.*?)```\s*<!-- /{marker} -->", README, re.S)
    assert match, f"README has no {marker} block"
    return match.group(1)


def test_the_cpu_example_runs_as_written_and_learns_from_varied_rewards(tmp_path):
    script = readme_block("cpu-example")
    script = re.sub(r"(?<![\w/.])(data|runs)/", lambda m: f"{tmp_path}/{m.group(1)}/", script)
    script = script.replace("source .venv/bin/activate", f"source {Path(sys.executable).parent}/activate")
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    history = json.loads((tmp_path / "runs" / "rec_cpu" / "training_log.json").read_text())
    steps = [h for h in history if "reward" in h]
    assert len(steps) == 4 and any(h["frac_reward_zero_std"] < 1.0 for h in steps)  # a learning signal
    assert "no learning signal" not in run.stderr
    metrics = json.loads((tmp_path / "runs" / "rec_cpu" / "eval" / "metrics.json").read_text())
    assert metrics["metrics"]["by_task"]["rec"]["format_rate"] > 0.5


def test_the_random_tiny_model_is_told_it_has_no_learning_signal(tmp_path):
    script = readme_block("cpu-example").replace("vlm_grpo/assets/demo_policy", "runs/tiny")
    script = script.split("vlm-grpo eval")[0].replace("\nvlm-grpo prep", "\nvlm-grpo tiny --output runs/tiny\nvlm-grpo prep")
    script = re.sub(r"(?<![\w/.])(data|runs)/", lambda m: f"{tmp_path}/{m.group(1)}/", script)
    script = script.replace("source .venv/bin/activate", f"source {Path(sys.executable).parent}/activate")
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("the policy gets no learning signal") == 1, run.stderr[-3000:]


def test_a_second_config_is_refused_with_what_to_do(capsys):
    from vlm_grpo.cli import main

    assert main(["train", "--config", "scripts/configs/rec.yaml", "--config", "scripts/configs/tiny_cpu.yaml"]) == 2
    err = capsys.readouterr().err
    assert "error: --config is given twice" in err and "set CONFIG=your.yaml" in err


def test_every_project_key_in_the_readme_table_is_a_real_key():
    import dataclasses

    from vlm_grpo.config import DataArguments, RewardArguments, VisionArguments

    keys = {f.name for cls in (DataArguments, VisionArguments, RewardArguments) for f in dataclasses.fields(cls)}
    table = README.split("`vlm-grpo train --help` lists the project's keys:")[1].split("\n\n")[1]
    named = re.findall(r"^\| `(\w+)`", table, re.M) + re.findall(r"^\| `\w+`, `(\w+)`", table, re.M)
    assert named and set(named) <= keys, set(named) - keys
