"""Evaluation: the command's three files, metrics on hand-made predictions, the report, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from vlm_grpo.cli import main as cli_main
from vlm_grpo.metrics import compute_metrics, wilson_interval


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_eval_writes_consistent_files_for_rec_and_math(tiny_dir, rec_data, math_data, tmp_path, capsys):
    out = tmp_path / "eval"
    code = cli_main([
        "eval", "--model", str(tiny_dir), "--data", str(rec_data), str(math_data), "--output", str(out),
        "--batch-size", "8", "--max-new-tokens", "8",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mean_iou" in printed and "accuracy" in printed
    for name, task, count in (("rec", "rec", 24), ("math", "math", 16)):
        metrics = json.loads((out / name / "metrics.json").read_text())
        predictions = _read_jsonl(out / name / "predictions.jsonl")
        assert len(predictions) == metrics["metrics"]["count"] == count
        assert metrics["metrics"]["by_task"][task]["count"] == count
        assert len({p["id"] for p in predictions}) == count
        assert metrics["samples_per_s"] > 0 and metrics["model"] == str(tiny_dir)
        assert set(predictions[0]) >= {"id", "prompt", "completion", "parsed", "score", "correct"}
        html = (out / name / "report.html").read_text()
        assert html.count('class="card') == count and "data:image/png;base64," in html
        assert not list((out / name).glob("predictions.partial*"))
    table = (out / "benchmarks.md").read_text()
    assert "| rec | 24 | mean_iou" in table and "| math | 16 | accuracy" in table


def _prediction(task, correct, score=None, source="a", parse_ok=True, format_ok=True):
    return {"task": task, "correct": correct, "score": score if score is not None else float(correct),
            "parse_ok": parse_ok, "format_ok": format_ok, "source": source}


def test_metrics_of_a_perfect_and_a_mixed_predictor():
    perfect = [_prediction("rec", True, 1.0) for _ in range(10)]
    m = compute_metrics(perfect)
    assert m["metric"] == "mean_iou" and m["value"] == 1.0
    assert m["by_task"]["rec"]["acc@0.5"] == 1.0 and m["format_rate"] == 1.0
    mixed = [_prediction("math", i < 3, source="s1" if i % 2 else "s2") for i in range(6)]
    mixed.append(_prediction("math", False, parse_ok=False, format_ok=False, source="s1"))
    m = compute_metrics(mixed)
    assert m["metric"] == "accuracy" and m["value"] == pytest.approx(3 / 7)
    assert m["parse_failure_rate"] == pytest.approx(1 / 7)
    assert set(m["by_task"]["math"]["by_source"]) == {"s1", "s2"}
    assert m["accuracy_ci95"] == pytest.approx(list(wilson_interval(3, 7)))


def test_perfect_answers_score_100_and_a_box_in_the_wrong_frame_is_caught(tiny_dir, rec_data):
    from vlm_grpo.data import build_rows
    from vlm_grpo.evaluate import judge_row
    from vlm_grpo.modeling import load_processor
    from vlm_grpo.sft import target_text

    processor = load_processor(str(tiny_dir), min_pixels=200 * 200, max_pixels=200 * 200)  # model size != original
    rows = build_rows([str(rec_data)], processor, box_frame="model_pixels")
    preds = []
    for i in range(len(rows)):
        row = rows.row(i, with_images=False)
        preds.append(judge_row(row, target_text(row, {}), i))
    assert compute_metrics(preds)["by_task"]["rec"]["acc@0.5"] == 1.0
    # The same answers read as original pixels (the classic frame bug) must not score as correct.
    wrong = []
    for i in range(len(rows)):
        row = rows.row(i, with_images=False)
        answer = target_text(row, {})
        wrong.append(judge_row({**row, "box_frame": "original_pixels"}, answer, i))
    assert compute_metrics(wrong)["by_task"]["rec"]["mean_iou"] < 0.9


def test_report_draws_truth_and_prediction_boxes():
    from vlm_grpo.report import GT_COLOUR, PRED_COLOUR, draw_boxes

    image = Image.new("RGB", (100, 100), (255, 255, 255))
    thumb = draw_boxes(image, truth=[10, 10, 50, 50], predicted=[60, 60, 90, 90], size=100)
    assert thumb.getpixel((10, 30)) == GT_COLOUR
    assert thumb.getpixel((60, 75)) == PRED_COLOUR
    assert thumb.getpixel((30, 30)) == (255, 255, 255)


@pytest.mark.parametrize("case", ["model", "data", "task"])
def test_bad_input_is_reported_before_generation(tiny_dir, rec_data, tmp_path, capsys, case):
    args = {"model": str(tiny_dir), "data": str(rec_data), "task": None}
    expected = {"model": "does not exist", "data": "manifest.json", "task": "no 'math' records"}[case]
    if case == "model":
        args["model"] = str(tmp_path / "missing_model")
    elif case == "data":
        (tmp_path / "empty").mkdir()
        args["data"] = str(tmp_path / "empty")
    else:
        args["task"] = "math"
    argv = ["eval", "--model", args["model"], "--data", args["data"], "--output", str(tmp_path / "out")]
    argv += ["--task", args["task"]] if args["task"] else []
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_resume_skips_finished_samples(tiny_dir, rec_data, tmp_path):
    from vlm_grpo.eval_run import EvalJob, run_eval
    from vlm_grpo.evaluate import EvalSettings

    out = tmp_path / "eval"
    settings = EvalSettings(batch_size=4, max_new_tokens=4)
    full = run_eval(EvalJob(str(tiny_dir), [str(rec_data)], out, settings=settings))
    predictions = _read_jsonl(out / "predictions.jsonl")
    # Simulate an interrupted run: half the predictions in a partial file, nothing else.
    (out / "predictions.partial.rank0.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions[:10]) + '{"torn')
    for name in ("predictions.jsonl", "metrics.json", "report.html"):
        (out / name).unlink()
    resumed = run_eval(EvalJob(str(tiny_dir), [str(rec_data)], out, resume=True, settings=settings))
    name = next(iter(resumed))
    assert resumed[name]["metrics"] == full[name]["metrics"]
    assert _read_jsonl(out / "predictions.jsonl") == predictions


def test_two_processes_give_the_same_metrics_as_one(tiny_dir, rec_data, tmp_path):
    single, double = tmp_path / "one", tmp_path / "two"
    common = ["--model", str(tiny_dir), "--data", str(rec_data), "--batch-size", "4", "--max-new-tokens", "6"]
    assert cli_main(["eval", *common, "--output", str(single)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "vlm_grpo.cli", "eval", *common, "--output", str(double)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    one = json.loads((single / "metrics.json").read_text())["metrics"]
    two = json.loads((double / "metrics.json").read_text())["metrics"]
    assert one == two
    assert _read_jsonl(single / "predictions.jsonl") == _read_jsonl(double / "predictions.jsonl")


def test_a_sample_that_fails_to_generate_is_recorded_and_the_run_goes_on(tiny_dir, rec_data, tmp_path, monkeypatch):
    import vlm_grpo.evaluate as evaluate
    from vlm_grpo.eval_run import EvalJob, run_eval
    from vlm_grpo.evaluate import EvalSettings

    real = evaluate._generate_batch
    poisoned = "synthetic-rec-s0-000003"

    def flaky(model, processor, batch, settings):
        if any(row["id"] == poisoned for row in batch):
            raise RuntimeError("CUDA error: device-side assert (simulated)")
        return real(model, processor, batch, settings)

    monkeypatch.setattr(evaluate, "_generate_batch", flaky)
    out = tmp_path / "eval"
    result = run_eval(EvalJob(str(tiny_dir), [str(rec_data)], out, settings=EvalSettings(batch_size=8, max_new_tokens=4)))
    predictions = _read_jsonl(out / "predictions.jsonl")
    assert len(predictions) == 24
    failed = [p for p in predictions if p["error"]]
    assert [p["id"] for p in failed] == [poisoned] and "simulated" in failed[0]["error"]
    assert next(iter(result.values()))["metrics"]["errors"] == 1
