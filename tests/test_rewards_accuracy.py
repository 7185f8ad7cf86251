"""iou, rec_acc, exact_match, mcq, count, accuracy and tasks.judge: tables per box frame."""

import pytest

import rewards
from rewards.tasks import TASKS, Judgement, Task, judge, register_task

IMAGE = [[640, 480]]
MODEL = [[320, 240]]
SOL = [100, 100, 300, 300]  # original pixels
SOL_NORM = [64, 48, 320, 240]  # = norm1000 [100, 100, 500, 500] on 640x480


def answer(box):
    return f"<think>r</think><answer>{box}</answer>"


# (completion, per-sample columns, expected IoU)
REC_CASES = [
    # original_pixels
    (answer([100, 100, 300, 300]), dict(box_frame="original_pixels", solution=SOL), 1.0),
    (answer([200, 100, 400, 300]), dict(box_frame="original_pixels", solution=SOL), 1 / 3),
    (answer([-100, 100, 300, 300]), dict(box_frame="original_pixels", solution=SOL), 0.5),  # spills out
    (answer([100, 100, 700, 300]), dict(box_frame="original_pixels", solution=SOL), 1 / 3),  # past the right edge
    (answer([300, 100, 100, 300]), dict(box_frame="original_pixels", solution=SOL), 0.0),  # degenerate
    (answer([100, 100, 100, 300]), dict(box_frame="original_pixels", solution=SOL), 0.0),  # zero width
    # model_pixels: model image is half the original
    (answer([50, 50, 150, 150]), dict(box_frame="model_pixels", solution=SOL), 1.0),
    (answer([100, 50, 200, 150]), dict(box_frame="model_pixels", solution=SOL), 1 / 3),
    # the same numbers read as original pixels would score 1.0
    (answer([100, 100, 300, 300]), dict(box_frame="model_pixels", solution=SOL), 10000 / 190000),
    # norm1000
    (answer([100, 100, 500, 500]), dict(box_frame="norm1000", solution=SOL_NORM), 1.0),
    (answer([300, 100, 700, 500]), dict(box_frame="norm1000", solution=SOL_NORM), 1 / 3),
    (answer([100.0, 100.0, 500.0, 500.0]), dict(box_frame="norm1000", solution=SOL_NORM), 1.0),
    # missing box_frame: model_pixels when model_image_sizes is present, else original_pixels
    (answer([50, 50, 150, 150]), dict(solution=SOL), 1.0),
    (answer([100, 100, 300, 300]), dict(solution=SOL, model_image_sizes=None), 1.0),
    (answer([100, 100, 300, 300]), dict(box_frame=None, solution=SOL, model_image_sizes=None), 1.0),
    # answer forms
    (answer('{"bbox_2d": [50, 50, 150, 150], "label": "x"}'), dict(solution=SOL), 1.0),
    (answer('```json\n[{"bbox_2d": [50, 50, 150, 150]}, {"bbox_2d": [0, 0, 1, 1]}]\n```'), dict(solution=SOL), 1.0),
    ([{"role": "assistant", "content": answer([50, 50, 150, 150])}], dict(solution=SOL), 1.0),
    (answer([0, 0, 1, 1]) + answer([50, 50, 150, 150]), dict(solution=SOL), 1.0),  # the last block wins
    ("[50, 50, 150, 150]", dict(solution=SOL), 0.0),  # no answer block
    (answer("the man on the left"), dict(solution=SOL), 0.0),
    (answer("[1, 2, 3]"), dict(solution=SOL), 0.0),
    ("", dict(solution=SOL), 0.0),
    (None, dict(solution=SOL), 0.0),
]


def columns_for(sample):
    base = dict(task="rec", image_sizes=IMAGE, model_image_sizes=MODEL)
    base.update(sample)
    return {key: [value] for key, value in base.items()}


@pytest.mark.parametrize("completion, sample, expected", REC_CASES)
def test_iou_and_rec_acc(completion, sample, expected):
    columns = columns_for(sample)
    assert rewards.get("iou")([completion], **columns) == [pytest.approx(expected)]
    assert rewards.get("rec_acc")([completion], **columns) == [1.0 if expected >= 0.5 else 0.0]
    assert rewards.get("accuracy")([completion], **columns) == [pytest.approx(expected)]


def test_iou_batch_mixed_tasks_and_frames():
    completions = [answer([50, 50, 150, 150]), answer([100, 100, 500, 500]), "<answer>3</answer>", answer([1, 1, 2, 2])]
    out = rewards.get("iou")(
        completions,
        task=["rec", "rec", "math", "my_rec"],
        solution=[SOL, SOL_NORM, "3", [1, 1, 2, 2]],
        image_sizes=[IMAGE] * 4,
        model_image_sizes=[MODEL] * 4,
        box_frame=["model_pixels", "norm1000", "model_pixels", "original_pixels"],
        trainer_state=object(),
    )
    assert out == [pytest.approx(1.0), pytest.approx(1.0), None, 1.0]


def test_rec_data_errors_raise():
    iou = rewards.get("iou")
    with pytest.raises(ValueError, match="model_image_size"):
        iou([answer([1, 1, 2, 2])], solution=[SOL], image_sizes=[IMAGE], box_frame=["model_pixels"])
    with pytest.raises(ValueError, match="rec solution"):
        iou([answer([1, 1, 2, 2])], solution=[[1, 2, 3]], box_frame=["original_pixels"])
    with pytest.raises(ValueError, match="unknown box_frame"):
        iou([answer([1, 1, 2, 2])], solution=[SOL], box_frame=["pixels"])


@pytest.mark.parametrize(
    "completion, solution, expected",
    [
        ("<answer>Paris</answer>", "paris", 1.0),
        ("<answer>  The  Red car. </answer>", "the red car", 1.0),
        ("<answer>paris</answer>", ["Lyon", "Paris"], 1.0),
        (r"<answer>\boxed{Paris}</answer>", "Paris", 1.0),
        ("<answer>Paris, France</answer>", "Paris", 0.0),
        ("<answer></answer>", "Paris", 0.0),
        ("Paris", "Paris", 0.0),
        (None, "Paris", 0.0),
    ],
)
def test_exact_match(completion, solution, expected):
    assert rewards.get("exact_match")([completion], solution=[solution]) == [expected]


@pytest.mark.parametrize(
    "answer_text, solution, expected",
    [
        ("B", "B", 1.0), ("(B)", "B", 1.0), ("B.", "B", 1.0), ("B) 12", "B", 1.0), ("the answer is B", "B", 1.0),
        ("b", "B", 1.0), ("B", "(B)", 1.0), (r"\boxed{B}", "B", 1.0), ("C", "B", 0.0), ("A cat", "A", 0.0),
        ("", "B", 0.0),
    ],
)
def test_mcq(answer_text, solution, expected):
    assert rewards.get("mcq")([f"<answer>{answer_text}</answer>"], solution=[solution]) == [expected]


@pytest.mark.parametrize(
    "answer_text, solution, expected",
    [
        ("3", 3, 1.0), ("three", 3, 1.0), ("There are 3 cubes.", "3", 1.0), ("twenty", 20, 1.0),
        ("3.0", 3, 1.0), ("4", 3, 0.0), ("a few", 3, 0.0), ("twenty-one", 21, 0.0),
    ],
)
def test_count(answer_text, solution, expected):
    assert rewards.get("count")([f"<answer>{answer_text}</answer>"], solution=[solution]) == [expected]


def test_task_rewards_skip_other_tasks():
    columns = dict(task=["rec", "mcq", "count", "open", "math"], solution=[SOL, "B", 3, "x", "1"])
    completions = ["<answer>B</answer>"] * 5
    assert rewards.get("mcq")(completions, **columns) == [None, 1.0, None, None, None]
    assert rewards.get("count")(completions, **columns)[:3] == [None, None, 0.0]
    assert rewards.get("exact_match")(completions, **columns) == [None, None, None, 0.0, None]


def test_accuracy_dispatch():
    completions = [answer([50, 50, 150, 150]), "<answer>0.5</answer>", "<answer>three</answer>",
                   "<answer>(C)</answer>", "<answer>Paris</answer>", "<answer>x</answer>", "<answer>x</answer>"]
    out = rewards.get("accuracy")(
        completions,
        task=["rec", "math", "count", "mcq", "open", "caption", None],
        solution=[SOL, r"\frac{1}{2}", 3, "C", "paris", "x", "x"],
        image_sizes=[IMAGE] * 7,
        model_image_sizes=[MODEL] * 7,
        box_frame=["model_pixels"] * 7,
    )
    assert out == [pytest.approx(1.0), 1.0, 1.0, 1.0, 1.0, None, None]
    assert rewards.get("accuracy")(["<answer>x</answer>"], solution=["x"]) == [None]  # no task column


def test_judge():
    verdict = judge("rec", answer([50, 50, 150, 150]), solution=SOL, image_sizes=IMAGE,
                    model_image_sizes=MODEL, box_frame="model_pixels", task="rec", id="r1")
    assert verdict == Judgement(parsed=[100.0, 100.0, 300.0, 300.0], parse_ok=True, score=1.0, correct=True)
    assert judge("rec", answer("none"), solution=SOL) == Judgement(None, False, 0.0, False)
    assert judge("rec", answer([300, 100, 100, 300]), solution=SOL).parse_ok is False  # degenerate
    assert judge("count", "<answer>two</answer>", solution=3) == Judgement(2, True, 0.0, False)
    assert judge("mcq", "<answer>(b)</answer>", solution="B").parsed == "B"
    assert judge("open", "<answer>Paris.</answer>", solution="paris").parsed == "paris"
    with pytest.raises(KeyError, match="known tasks: count, det, math, mcq, open, point, rec"):
        judge("nope", "x")


def test_register_task():
    task = Task("yesno", "exact_match", TASKS["open"].parse, TASKS["open"].score)
    register_task(task)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_task(task)
        assert judge("yesno", "<answer>Yes</answer>", solution="yes").correct
        # exact_match scores the new task (same metric), mcq does not
        assert rewards.get("exact_match")(["<answer>yes</answer>"], task=["yesno"], solution=["yes"]) == [1.0]
        assert rewards.get("mcq")(["<answer>yes</answer>"], task=["yesno"], solution=["A"]) == [None]
    finally:
        del TASKS["yesno"]


MALFORMED = [None, 42, 3.5, {}, [], [{}], [{"role": "assistant"}], "", "<answer>", "</answer><answer>",
             "<answer>\x00\ud800</answer>", b"<answer>1</answer>", object()]


@pytest.mark.parametrize("name", ["format", "format_box", "iou", "rec_acc", "exact_match", "mcq", "count",
                                  "accuracy", "math", "repetition"])
def test_malformed_completions_score_zero_or_none(name):
    columns = dict(task=["rec"] * len(MALFORMED), solution=[SOL] * len(MALFORMED),
                   image_sizes=[IMAGE] * len(MALFORMED), box_frame=["original_pixels"] * len(MALFORMED))
    if name in ("exact_match", "mcq", "count", "math"):
        columns["task"] = [None] * len(MALFORMED)
        columns["solution"] = ["1"] * len(MALFORMED)
    out = rewards.get(name)(MALFORMED, **columns)
    assert len(out) == len(MALFORMED)
    assert all(v in (0.0, None) for v in out)
