"""The task modules' contract, on rows from the real builders: every built-in task is complete,
SFT targets score full marks under the rewards in every box frame, eval and the report work on
det and point data, and a task a user registers in a plugin module works in prep, train and eval."""

from __future__ import annotations

import json
import textwrap

import pytest
from PIL import Image
from prep_helpers import make_image, run_cli
from rows_helpers import score_rows, trainer_rows

import rewards
from rewards.tasks import BUILTIN_TASKS, TASKS, Mark
from vlm_grpo.cli import main as cli_main
from vlm_grpo.prompts import check_template
from vlm_grpo.sft import answer_text


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_every_builtin_task_is_complete(name):
    task = TASKS[name]
    check_template(name, task.template)
    assert task.metric in rewards.names()  # the reward that scores it exists
    assert (task.boxes is None) == (task.with_boxes is None)
    if name in ("rec", "det", "point"):
        assert task.boxes is not None and task.marks is not None and "{frame}" in task.template


@pytest.fixture(scope="module")
def det_point_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("det_point")
    out = {}
    for task in ("det", "point"):
        code, _, err = run_cli(["--format", "synthetic", "--task", task, "--num", "12", "--num-shapes", "2-4",
                                "--output", str(root / task)])
        assert code == 0, err
        out[task] = root / task
    return out


REWARD = {"rec": "iou", "det": "det_f1", "point": "point_in_box"}


@pytest.mark.parametrize("frame", ["model_pixels", "norm1000", "original_pixels"])
@pytest.mark.parametrize("task", ["rec", "det", "point"])
def test_sft_targets_score_full_marks_in_every_frame(task, frame, det_point_data, rec_data, tiny_processor):
    data = rec_data if task == "rec" else det_point_data[task]
    rows = trainer_rows([data], tiny_processor, box_frame=frame)
    completions = [f"<think>x</think><answer>{answer_text(row)}</answer>" for row in rows]
    scores = score_rows(rewards.get(REWARD[task]), rows, completions)
    if task == "rec":
        assert min(scores) > 0.85  # rounding to integer pixels of the frame
    else:
        assert scores == [1.0] * len(rows)
    if task == "det":
        assert min(score_rows(rewards.get("det_ap"), rows, completions)) > 0.6
        assert any(row["solution"] == [] for row in rows) and "[]" in completions[[r["solution"] for r in rows].index([])]


def test_eval_and_report_on_det_and_point(tiny_dir, det_point_data, tmp_path):
    root = tmp_path / "shots"
    make_image(root / "a.png", (120, 90))
    (tmp_path / "ss.json").write_text(json.dumps([
        {"img_filename": "a.png", "bbox": [10, 10, 30, 20], "instruction": "the OK button", "data_type": "text",
         "data_source": "shop"},
        {"img_filename": "a.png", "bbox": [50, 40, 20, 20], "instruction": "the gear icon", "data_type": "icon",
         "data_source": "forum"},
    ]))
    code, _, err = run_cli(["--format", "screenspot", "--input", str(tmp_path / "ss.json"), "--image-root", str(root),
                            "--output", str(tmp_path / "ss")])
    assert code == 0, err
    out = tmp_path / "eval"
    assert cli_main(["eval", "--model", str(tiny_dir), "--data", str(det_point_data["det"]), str(det_point_data["point"]),
                     str(tmp_path / "ss"), "--output", str(out), "--max-new-tokens", "8"]) == 0
    det_metrics = json.loads((out / "det" / "metrics.json").read_text())["metrics"]
    assert det_metrics["metric"] == "mAP"
    assert set(det_metrics["by_task"]["det"]) >= {"mAP", "AP50", "AP75", "recall", "mean_det_f1"}
    point_metrics = json.loads((out / "ss" / "metrics.json").read_text())["metrics"]
    assert point_metrics["metric"] == "accuracy"
    assert set(point_metrics["by_task"]["point"]["by_data_type"]) == {"text", "icon"}
    assert set(point_metrics["by_task"]["point"]["by_data_source"]) == {"shop", "forum"}
    for name in ("det", "point", "ss"):
        html = (out / name / "report.html").read_text()
        assert html.count('class="card') >= 2 and "data:image/png;base64," in html


def test_marks_are_drawn_with_their_colours():
    from vlm_grpo.report import GT_COLOUR, PRED_COLOUR, draw_marks

    image = Image.new("RGB", (100, 100), (255, 255, 255))
    marks = TASKS["det"].marks([{"box": [10, 10, 50, 50], "label": "cat"}], [{"box": [60, 60, 90, 90], "label": None}])
    marks += TASKS["point"].marks([0, 0, 5, 5], [30.0, 80.0])
    assert [m.kind for m in marks] == ["box", "box", "box", "point"]
    thumb = draw_marks(image, marks, size=100)
    assert thumb.getpixel((10, 30)) == GT_COLOUR and thumb.getpixel((60, 75)) == PRED_COLOUR
    assert thumb.getpixel((30, 75)) == PRED_COLOUR  # the cross of the click
    assert TASKS["rec"].marks([0, 0, 5, 5], None) == [Mark("box", [0, 0, 5, 5], "truth")]


PLUGIN = textwrap.dedent(
    '''
    """A user task: the answer is a colour name; scored by the user's reward 'colour_hit'."""
    import rewards
    from rewards.parsing import final_answer, normalize_text
    from rewards.tasks import Task, judge, register_task

    def parse(text, **_):
        answer = final_answer(text)
        return normalize_text(answer) if answer else None

    def score(answer, solution=None, **_):
        return float(answer == normalize_text(solution))

    def check(solution):
        return None if solution in ("red", "green", "blue") else f"colour solution must be red, green or blue, got {solution!r}"

    TASK = register_task(Task("colour", "colour_hit", parse, score, check=check,
                              template="{question}\\nAnswer with <answer>colour</answer>."))

    @rewards.register("colour_hit")
    def colour_hit(completions, **columns):
        return [judge(TASK, c, solution=s).score for c, s in zip(completions, columns["solution"])]
    '''
)


def test_a_plugin_task_works_in_prep_train_and_eval(tiny_dir, tmp_path):
    plugin = tmp_path / "colour_task.py"
    plugin.write_text(PLUGIN)
    root = tmp_path / "imgs"
    lines = []
    for i, colour in enumerate(["red", "green", "blue", "red"] * 2):
        make_image(root / f"{i}.png", (56, 56), color={"red": (220, 0, 0), "green": (0, 200, 0), "blue": (0, 0, 230)}[colour])
        lines.append({"id": i, "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>What colour is the image?"}, {"from": "gpt", "value": colour}]})
    lines[-1]["conversations"][1]["value"] = "purple"
    src = tmp_path / "colours.jsonl"
    src.write_text("\n".join(json.dumps(line) for line in lines))
    argv = ["--format", "vlm-r1", "--task", "colour", "--input", str(src), "--image-root", str(root)]
    code, _, err = run_cli([*argv, "--task-module", str(plugin), "--output", str(tmp_path / "bad")])
    assert code == 2 and "colour solution must be red, green or blue" in err  # the plugin's own check ran
    code, _, err = run_cli([*argv, "--task-module", str(plugin), "--skip-invalid", "--output", str(tmp_path / "data")])
    assert code == 0, err

    out = tmp_path / "run"
    code = cli_main(["train", "--config", "scripts/configs/tiny_cpu.yaml", "--model_name_or_path", str(tiny_dir),
                     "--train_data", str(tmp_path / "data"), "--output_dir", str(out), "--task_modules", str(plugin),
                     "--reward_funcs", "colour_hit", "format", "accuracy", "--max_steps", "1", "--save_steps", "100",
                     "--max_completion_length", "8", "--per_device_train_batch_size", "4", "--num_generations", "4",
                     "--report_to", "none", "--dataloader_num_workers", "0"])
    assert code == 0
    assert "rewards/colour_hit/mean" in (out / "training_log.json").read_text()
    code = cli_main(["eval", "--model", str(tiny_dir), "--data", str(tmp_path / "data"), "--output", str(tmp_path / "eval"),
                     "--task-module", str(plugin), "--max-new-tokens", "8"])
    assert code == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert metrics["by_task"]["colour"]["count"] == 7
    predictions = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert "Answer with <answer>colour</answer>." in predictions[0]["prompt"]  # the plugin's template


def test_sft_then_grpo_on_det_and_point(tiny_dir, det_point_data, tmp_path, capsys):
    for task, reward in (("det", "det_odlength"), ("point", "point_in_box")):
        data, sft_out, grpo_out = det_point_data[task], tmp_path / f"sft_{task}", tmp_path / f"grpo_{task}"
        assert cli_main(["sft", "--model_name_or_path", str(tiny_dir), "--train_data", str(data), "--output_dir",
                         str(sft_out), "--max_steps", "1", "--per_device_train_batch_size", "4", "--report_to", "none",
                         "--use_cpu", "true"]) == 0
        assert cli_main(["train", "--config", "scripts/configs/tiny_cpu.yaml", "--model_name_or_path", str(sft_out),
                         "--train_data", str(data), "--output_dir", str(grpo_out), "--reward_funcs", "format", reward,
                         "--max_steps", "1", "--save_steps", "100", "--max_completion_length", "8",
                         "--per_device_train_batch_size", "4", "--num_generations", "4", "--report_to", "none",
                         "--dataloader_num_workers", "0"]) == 0
        assert f"rewards/{reward}/mean" in (grpo_out / "training_log.json").read_text()
    printed = capsys.readouterr().out
    assert printed.count("SFT done: 1 steps") == 2 and printed.count("GRPO done: 1 steps") == 2
