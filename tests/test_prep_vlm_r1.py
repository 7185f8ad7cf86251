"""VLM-R1 training JSONL -> packed dataset, plus the shared question/answer/task rules."""

from __future__ import annotations

import json

import pytest
from prep_helpers import make_image, run_cli, tree_digest, vlm_line, write_jsonl

from data_prep.packed import PrepError, load_packed
from data_prep.sources.common import clean_question, coerce_solution, infer_task, parse_box

REC_PREFIX = "Please provide the bounding box coordinate of the region this sentence describes: "


def _source(tmp_path):
    root = tmp_path / "coco"
    make_image(root / "a.jpg", (640, 480), fmt="JPEG")
    make_image(root / "b.png", (100, 80), color=(0, 0, 255))
    make_image(root / "c.png", (50, 40), color=(0, 255, 0))
    rows = [
        vlm_line(7, "a.jpg", f"<image>{REC_PREFIX}the man in red.", "<answer>[10, 20.5, 300, 400]</answer>", "default"),
        vlm_line("x8", "b.png", "<image>Where is the dog?", "[0, 0, 100, 80]", "iou"),
        vlm_line(9, ["b.png", "c.png"], "<image><image>What number of green balls are there?", "3"),
        vlm_line(10, "c.png", "<image>What is 1/2 + 1/4?", "<answer> 3/4 </answer>", "math"),
        vlm_line(11, "c.png", "<image>Which one? A. cat B. dog", "(B)", "mcq"),
        vlm_line(None, "c.png", "<image>Describe the colour.", "green"),
    ]
    return write_jsonl(tmp_path / "train.jsonl", rows), root


def test_vlm_r1_conversion(tmp_path):
    src, root = _source(tmp_path)
    before = tree_digest(tmp_path)
    code, out, err = run_cli(["--format", "vlm-r1", "--input", str(src), "--image-root", str(root), "--output", str(tmp_path / "ds")])
    assert code == 0, err
    after = tree_digest(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("ds/")} == before  # sources untouched
    ds = load_packed(tmp_path / "ds")
    by_id = {r.id: r for r in ds}
    assert list(by_id) == ["7", "x8", "9", "10", "11", "train_6"]

    rec = by_id["7"]
    assert (rec.task, rec.problem, rec.solution) == ("rec", "the man in red", [10, 20.5, 300, 400])
    assert rec.image_sizes == [[640, 480]] and rec.images[0].endswith(".jpg")
    assert rec.meta == {"source": "train", "accu_reward_method": "default"}
    assert (by_id["x8"].task, by_id["x8"].solution) == ("rec", [0, 0, 100, 80])

    count = by_id["9"]
    assert (count.task, count.solution, count.problem) == ("count", 3, "What number of green balls are there?")
    assert count.image_sizes == [[100, 80], [50, 40]] and len(count.images) == 2
    assert (by_id["10"].task, by_id["10"].solution) == ("math", "3/4")
    assert (by_id["11"].task, by_id["11"].solution) == ("mcq", "B")
    assert (by_id["train_6"].task, by_id["train_6"].solution) == ("open", "green")
    assert ds.manifest["task_counts"] == {"count": 1, "math": 1, "mcq": 1, "open": 1, "rec": 2}
    assert ds.manifest["sources"] == [{"format": "vlm-r1", "input": str(src), "image_root": str(root)}]
    assert "records" in out and "6  [count 1, math 1, mcq 1, open 1, rec 2]" in out
    assert len({r.images[0] for r in ds}) == 3  # b.png and c.png stored once


def test_task_option_overrides_everything(tmp_path):
    root = tmp_path / "img"
    make_image(root / "a.png")
    src = write_jsonl(tmp_path / "d.jsonl", [vlm_line(1, "a.png", "<image>How many?", "3", "math")])
    code, _, err = run_cli(["--format", "vlm-r1", "--input", str(src), "--image-root", str(root), "--output", str(tmp_path / "o"), "--task", "open"])
    assert code == 0, err
    assert load_packed(tmp_path / "o").records[0].solution == "3"


def test_several_inputs_each_with_its_root(tmp_path):
    make_image(tmp_path / "r1" / "x.png", (30, 30), color=(1, 2, 3))
    make_image(tmp_path / "r2" / "x.png", (60, 20), color=(4, 5, 6))
    a = write_jsonl(tmp_path / "a.jsonl", [vlm_line(1, "x.png", "<image>the thing", "[1, 1, 5, 5]")])
    b = write_jsonl(tmp_path / "b.jsonl", [vlm_line(1, "x.png", "<image>the other thing", "[1, 1, 50, 5]")])
    argv = ["--format", "vlm-r1", "--input", str(a), str(b), "--image-root", str(tmp_path / "r1"), str(tmp_path / "r2")]

    code, _, err = run_cli([*argv, "--output", str(tmp_path / "clash")])
    assert code == 2 and "b.jsonl:1: record '1': duplicate id (first seen at" in err and "a.jsonl:1" in err
    assert not (tmp_path / "clash").exists()

    code, _, err = run_cli([*argv, "--output", str(tmp_path / "ok"), "--prefix-ids"])
    assert code == 0, err
    ds = load_packed(tmp_path / "ok")
    assert [(r.id, r.image_sizes) for r in ds] == [("a/1", [[30, 30]]), ("b/1", [[60, 20]])]
    assert len(ds.manifest["sources"]) == 2


def test_one_image_root_for_all_and_default_root(tmp_path):
    make_image(tmp_path / "x.png")
    a = write_jsonl(tmp_path / "a.jsonl", [vlm_line("a", "x.png", "<image>the red", "[1, 1, 5, 5]")])
    b = write_jsonl(tmp_path / "b.jsonl", [vlm_line("b", "x.png", "<image>the red", "[1, 1, 5, 6]")])
    code, _, err = run_cli(["--format", "vlm-r1", "--input", str(a), "--input", str(b), "--output", str(tmp_path / "o")])
    assert code == 0, err  # default root: each input's directory
    code, _, err = run_cli(
        ["--format", "vlm-r1", "--input", str(a), str(b), "--image-root", str(tmp_path), str(tmp_path), str(tmp_path), "--output", str(tmp_path / "p")]
    )
    assert code == 2 and "one per input" in err


@pytest.mark.parametrize(
    "text,expected",
    [
        (f"<image>{REC_PREFIX}the man in red.", "the man in red"),
        ("<image>please provide the bounding box coordinate of the region this sentence describes:  a  dog", "a dog"),
        ("<image>What is this? Output the final answer in JSON format.", "What is this?"),
        ("<image>\nWhat is 2+2?", "What is 2+2?"),
        ("What is this.", "What is this."),
    ],
)
def test_clean_question(text, expected):
    assert clean_question(text) == expected


@pytest.mark.parametrize(
    "problem,answer,task",
    [
        ("the man", "[1, 2, 3, 4]", "rec"),
        ("the man", "<answer>[1, 2, 3, 4]</answer>", "rec"),
        ("the man", '{"bbox_2d": [1, 2, 3, 4]}', "rec"),
        ("the man", [1, 2, 3, 4], "rec"),
        ("Which? (A) x (B) y", "B", "mcq"),
        ("Which letter is shown?", "B", "open"),
        ("How many cats?", "3", "count"),
        ("What number of balls are there?", "<answer> 0 </answer>", "count"),
        ("What is 2+2?", "4", "math"),
        ("Find x.", "\\frac{1}{2}", "math"),
        ("Find x.", "-1.5", "math"),
        ("What colour?", "red", "open"),
    ],
)
def test_infer_task(problem, answer, task):
    assert infer_task(problem, answer) == task


@pytest.mark.parametrize(
    "task,value,expected",
    [
        ("rec", "<answer>[1, 2, 3, 4]</answer>", [1, 2, 3, 4]),
        ("rec", [{"bbox_2d": [1, 2, 3, 4], "label": "dog"}], [1, 2, 3, 4]),
        ("count", "<answer>5</answer>", 5),
        ("count", 2.0, 2),
        ("mcq", "(c)", "C"),
        ("mcq", "D.", "D"),
        ("math", 12, "12"),
        ("open", "<answer> yes </answer>", "yes"),
    ],
)
def test_coerce_solution(task, value, expected):
    assert coerce_solution(task, value, where="f:1") == expected


@pytest.mark.parametrize(
    "task,value", [("rec", "[1, 2, 3]"), ("rec", "a dog"), ("count", "-1"), ("count", "two"), ("mcq", "AB"), ("math", "  ")]
)
def test_coerce_solution_rejects(task, value):
    with pytest.raises(PrepError, match="f:1") as info:
        coerce_solution(task, value, where="f:1")
    assert info.value.reason == "invalid_solution"


def test_parse_box_non_boxes():
    assert parse_box("[1, 2, 3, 4, 5]") is None
    assert parse_box(json.dumps([1, 2, "x", 4])) is None
    assert parse_box("<answer>nope</answer>") is None
