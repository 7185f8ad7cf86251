"""What a reward receives in a real `vlm-grpo train` run: every column README promises, the shipped example scoring.

The probe reward is a user file named on the command line as `file.py:function`, as README shows; it writes
what TRL hands it to a JSON file, and the test reads that, so nothing about the columns is hand-fed.
"""

from __future__ import annotations

import json
import math

from vlm_grpo.cli import main as cli_main
from vlm_grpo.data import ROW_COLUMNS

PROBE = '''
import json
from PIL import Image

def probe(completions, **columns):
    seen = {name: [type(v).__name__ for v in values] for name, values in columns.items() if isinstance(values, list)}
    seen["_images_are_pil"] = all(isinstance(i, Image.Image) for row in columns["images"] for i in row)
    seen["_problems"] = columns.get("problem")
    seen["_n"] = len(completions)
    with open(OUT, "a") as handle:
        handle.write(json.dumps(seen) + "\\n")
    return [0.0] * len(completions)
'''


def test_a_reward_receives_every_promised_column_and_colour_match_scores(tiny_dir, rec_data, tmp_path, capsys):
    seen_file = tmp_path / "seen.jsonl"
    reward_file = tmp_path / "probe_reward.py"
    reward_file.write_text(f"OUT = {str(seen_file)!r}\n" + PROBE)
    out = tmp_path / "run"
    argv = ["train", "--config", "scripts/configs/tiny_cpu.yaml", "--model_name_or_path", str(tiny_dir),
            "--train_data", str(rec_data), "--output_dir", str(out), "--max_steps", "1", "--save_strategy", "no",
            "--report_to", "none", "--reward_funcs", "format", "iou", "rewards.examples.colour_match:colour_match",
            f"{reward_file}:probe"]
    assert cli_main(argv) == 0, capsys.readouterr().err
    seen = json.loads(seen_file.read_text().splitlines()[0])
    promised = set(ROW_COLUMNS) - {"prompt"}  # TRL keeps the prompt for itself
    assert promised <= set(seen), f"missing columns: {promised - set(seen)}"
    assert seen["_images_are_pil"] and all(isinstance(p, str) and p for p in seen["_problems"])
    assert {len(seen[name]) for name in promised} == {seen["_n"]}  # aligned with the completions
    history = json.loads((out / "training_log.json").read_text())
    colour = [h["rewards/colour_match/mean"] for h in history if "rewards/colour_match/mean" in h]
    assert colour and all(math.isfinite(v) for v in colour), "colour_match scored None on every sample"
