"""det_f1, det_ap, det_odlength and point_in_box: table-driven cases (frames, empty answers, labels),
and det_ap against pycocotools' own COCOeval run the documented way (loadRes) on a batch of cases."""

from __future__ import annotations

import contextlib
import io
import json
import random

import pytest

import rewards
from rewards.tasks import det

IMAGE = [[200, 100]]   # original [w, h]
MODEL = [[100, 50]]    # the processor's resize: model_pixels = original / 2
CAT = {"box": [0, 0, 100, 50], "label": "cat"}
DOG = {"box": [100, 50, 200, 100], "label": "dog"}


def _answer(value) -> str:
    return f"<think>…</think><answer>{value if isinstance(value, str) else json.dumps(value)}</answer>"


def _score(name, completion, solution, frame="original_pixels", task="det"):
    return rewards.get(name)([completion], solution=[solution], image_sizes=[IMAGE], model_image_sizes=[MODEL],
                             box_frame=[frame], task=[task])[0]


F1_CASES = [
    # (name, answer, solution, frame, expected det_f1)
    ("exact, labelled", [{"bbox_2d": [0, 0, 100, 50], "label": "cat"}], [CAT], "original_pixels", 1.0),
    ("plain box list", [[0, 0, 100, 50], [100, 50, 200, 100]], [CAT, DOG], "original_pixels", 1.0),
    ("one bare box", [0, 0, 100, 50], [CAT], "original_pixels", 1.0),
    ("code fence", '```json\n[{"bbox_2d": [0, 0, 100, 50], "label": "cat"}]\n```', [CAT], "original_pixels", 1.0),
    ("model_pixels frame", [{"bbox_2d": [0, 0, 50, 25], "label": "cat"}], [CAT], "model_pixels", 1.0),
    ("model_pixels box read as original", [{"bbox_2d": [0, 0, 50, 25], "label": "cat"}], [CAT], "original_pixels", 0.0),
    ("norm1000 frame", [{"bbox_2d": [500, 500, 1000, 1000], "label": "dog"}], [DOG], "norm1000", 1.0),
    ("label case and space ignored", [{"bbox_2d": [0, 0, 100, 50], "label": "  CAT "}], [CAT], "original_pixels", 1.0),
    ("wrong label never matches", [{"bbox_2d": [0, 0, 100, 50], "label": "dog"}], [CAT], "original_pixels", 0.0),
    ("unlabelled prediction matches a labelled truth", [[0, 0, 100, 50]], [CAT], "original_pixels", 1.0),
    ("unlabelled truth matches a labelled prediction", [{"bbox_2d": [0, 0, 100, 50], "label": "x"}],
     [{"box": [0, 0, 100, 50]}], "original_pixels", 1.0),
    ("one of two found", [[0, 0, 100, 50]], [CAT, DOG], "original_pixels", 2 / 3),
    ("one extra box", [[0, 0, 100, 50], [150, 0, 200, 40]], [CAT], "original_pixels", 2 / 3),
    ("IoU 0.5 matches", [[0, 0, 50, 50]], [{"box": [0, 0, 100, 50]}], "original_pixels", 1.0),
    ("IoU below 0.5 does not", [[0, 0, 49, 50]], [{"box": [0, 0, 100, 50]}], "original_pixels", 0.0),
    ("duplicates match once", [[0, 0, 100, 50]] * 3, [CAT], "original_pixels", 0.5),
    ("both empty", [], [], "original_pixels", 1.0),
    ("empty answer, objects present", [], [CAT], "original_pixels", 0.0),
    ("boxes where there is none", [[0, 0, 100, 50]], [], "original_pixels", 0.0),
    ("unparsable", "a cat, top left", [CAT], "original_pixels", 0.0),
    ("unparsable when none expected", "nothing here", [], "original_pixels", 0.0),
    ("an entry that is not a box", [[0, 0, 100, 50], "cat"], [CAT], "original_pixels", 0.0),
    ("no answer block", "[[0, 0, 100, 50]]", [CAT], "original_pixels", 0.0),
]


@pytest.mark.parametrize("name, answer, solution, frame, expected", F1_CASES, ids=[c[0] for c in F1_CASES])
def test_det_f1(name, answer, solution, frame, expected):
    completion = answer if name == "no answer block" else _answer(answer)
    assert _score("det_f1", completion, solution, frame) == pytest.approx(expected)


def test_det_f1_greedy_takes_the_best_pair_first():
    # prediction 0 overlaps truth A (IoU 0.6) and B (0.9); prediction 1 overlaps only B (0.55).
    # Greedy by IoU pairs p0-B first, then p1 has nothing left: one match, not two.
    truth = [{"box": [0, 0, 10, 10]}, {"box": [20, 0, 30, 10]}]
    predicted = [{"box": [20, 0, 29, 10], "label": None}, {"box": [24.5, 0, 30, 10], "label": None}]
    assert det.match_count(predicted, truth) == 1
    assert det.f1(predicted, solution=truth) == pytest.approx(0.5)


AP_CASES = [
    # (name, answer, solution, frame, det_ap, det_odlength)
    ("exact", [[0, 0, 100, 50]], [CAT], "original_pixels", 1.0, 1.0),
    ("exact in norm1000", [[0, 0, 500, 500]], [CAT], "norm1000", 1.0, 1.0),
    ("exact in model_pixels", [[50, 25, 100, 50]], [DOG], "model_pixels", 1.0, 1.0),
    ("a duplicate costs odlength, not AP", [[0, 0, 100, 50], [0, 0, 100, 50]], [CAT], "original_pixels", 1.0, 0.5),
    ("both empty", [], [], "original_pixels", 1.0, 1.0),
    ("boxes where there is none", [[0, 0, 100, 50]], [], "original_pixels", 0.0, 0.0),
    ("nothing predicted", [], [CAT], "original_pixels", 0.0, 0.0),
    ("unparsable", "cat", [CAT], "original_pixels", 0.0, 0.0),
    ("wrong label", [{"bbox_2d": [0, 0, 100, 50], "label": "dog"}], [CAT], "original_pixels", 0.0, 0.0),
    ("IoU 0.5 counts at one threshold of ten", [[0, 0, 50, 50]], [{"box": [0, 0, 100, 50]}], "original_pixels", 0.1, 0.1),
    ("half found", [[0, 0, 100, 50]], [CAT, {"box": [100, 0, 200, 50], "label": "cat"}], "original_pixels", 0.504950495, 0.504950495),
]


@pytest.mark.parametrize("name, answer, solution, frame, ap, odlength", AP_CASES, ids=[c[0] for c in AP_CASES])
def test_det_ap_and_odlength(name, answer, solution, frame, ap, odlength):
    completion = _answer(answer)
    assert _score("det_ap", completion, solution, frame) == pytest.approx(ap, abs=1e-6)
    assert _score("det_odlength", completion, solution, frame) == pytest.approx(odlength, abs=1e-6)


def _reference_ap(predicted, truth):
    """AP@[.5:.95] the way pycocotools documents it: a ground-truth dataset, loadRes on the detections."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    labels = sorted({g["label"] for g in truth} | {p["label"] for p in predicted})
    cat = {name: i + 1 for i, name in enumerate(labels)}
    xywh = lambda b: [b[0], b[1], b[2] - b[0], b[3] - b[1]]  # noqa: E731
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": 1}], "categories": [{"id": i, "name": n} for n, i in cat.items()],
                      "annotations": [{"id": k + 1, "image_id": 1, "category_id": cat[g["label"]], "bbox": xywh(g["box"]),
                                       "area": (g["box"][2] - g["box"][0]) * (g["box"][3] - g["box"][1]), "iscrowd": 0}
                                      for k, g in enumerate(truth)]}
        gt.createIndex()
        dt = gt.loadRes([{"image_id": 1, "category_id": cat[p["label"]], "bbox": xywh(p["box"]), "score": 1.0}
                         for p in predicted])
        evaluation = COCOeval(gt, dt, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats[0]


def _random_box(rng):
    x, y = rng.uniform(0, 150), rng.uniform(0, 70)
    return [round(x, 1), round(y, 1), round(x + rng.uniform(5, 50), 1), round(y + rng.uniform(5, 30), 1)]


def test_det_ap_agrees_with_cocoeval_on_a_batch_of_cases():
    rng = random.Random(0)
    checked = 0
    for _ in range(60):
        truth = [{"box": _random_box(rng), "label": rng.choice(["cat", "dog"])} for _ in range(rng.randint(1, 5))]
        predicted = []
        for g in truth:  # jittered copies, some dropped, some relabelled
            if rng.random() < 0.8:
                box = [v + rng.uniform(-6, 6) for v in g["box"]]
                box[2], box[3] = max(box[2], box[0] + 1), max(box[3], box[1] + 1)
                predicted.append({"box": box, "label": g["label"] if rng.random() < 0.9 else "dog"})
        predicted += [{"box": _random_box(rng), "label": rng.choice(["cat", "dog"])} for _ in range(rng.randint(0, 3))]
        if not predicted:
            continue
        rng.shuffle(predicted)
        completion = _answer([{"bbox_2d": p["box"], "label": p["label"]} for p in predicted])
        ours = _score("det_ap", completion, truth)
        assert ours == pytest.approx(max(0.0, _reference_ap(predicted, truth)), abs=1e-9)
        checked += 1
    assert checked >= 50


def test_dataset_level_coco_metrics_match_cocoeval():
    truth = [[CAT, DOG], [CAT]]
    predicted = [[{"box": [0, 0, 100, 50], "label": "cat"}], [{"box": [0, 0, 90, 50], "label": "cat"}]]
    predictions = [{"task": "det", "parsed": p, "solution": t, "score": det.f1(p, solution=t), "correct": False}
                   for p, t in zip(predicted, truth)]
    figures = det.metrics(predictions)
    stats = det.coco_stats(list(zip(predicted, truth)))
    assert figures["mAP"] == stats[0] and figures["AP50"] == stats[1] and figures["AP75"] == stats[2]
    assert figures["recall"] == stats[8]
    assert figures["mean_det_f1"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert det.metrics([{"task": "det", "parsed": [], "solution": [], "score": 1.0, "correct": True}])["mAP"] is None


BOX = [40, 20, 60, 40]  # original pixels of a 200x100 image
POINT_CASES = [
    # (name, answer, frame, expected)
    ("inside", [50, 30], "original_pixels", 1.0),
    ("on the left edge", [40, 30], "original_pixels", 1.0),
    ("on a corner", [60, 40], "original_pixels", 1.0),
    ("just outside", [60.01, 30], "original_pixels", 0.0),
    ("point_2d object", {"point_2d": [50, 30]}, "original_pixels", 1.0),
    ("a list of one point object", [{"point_2d": [50, 30]}], "original_pixels", 1.0),
    ("tuple text", "(50, 30)", "original_pixels", 1.0),
    ("a box counts as its centre", [30, 10, 70, 50], "original_pixels", 1.0),
    ("a box whose centre is outside", [0, 0, 40, 20], "original_pixels", 0.0),
    ("model_pixels", [25, 15], "model_pixels", 1.0),
    ("model_pixels point read as original", [25, 15], "original_pixels", 0.0),
    ("norm1000", [250, 300], "norm1000", 1.0),
    ("norm1000 outside", [250, 500], "norm1000", 0.0),
    ("unparsable", "the OK button", "original_pixels", 0.0),
    ("empty answer", "", "original_pixels", 0.0),
    ("three numbers", [1, 2, 3], "original_pixels", 0.0),
]


@pytest.mark.parametrize("name, answer, frame, expected", POINT_CASES, ids=[c[0] for c in POINT_CASES])
def test_point_in_box(name, answer, frame, expected):
    assert _score("point_in_box", _answer(answer), BOX, frame, task="point") == expected


def test_task_rewards_do_not_apply_to_other_tasks():
    assert _score("det_f1", _answer([[0, 0, 1, 1]]), [0, 0, 10, 10], task="rec") is None
    assert _score("point_in_box", _answer([1, 1]), [CAT], task="det") is None
    assert _score("iou", _answer([0, 0, 1, 1]), BOX, task="point") is None
    accuracy = rewards.get("accuracy")
    assert accuracy([_answer([50, 30]), _answer([[0, 0, 100, 50]])], solution=[BOX, [CAT]], task=["point", "det"],
                    image_sizes=[IMAGE] * 2, box_frame=["original_pixels"] * 2) == [1.0, 1.0]


@pytest.mark.parametrize("name", ["det_f1", "det_ap", "det_odlength", "point_in_box"])
def test_malformed_completions_score_zero(name):
    malformed = [None, 42, {}, [], "", "<answer>", "<answer>[[1e999, 0, 1, 1]]</answer>", "<answer>" + "[" * 5000 + "</answer>",
                 "<answer>" + json.dumps([[0, 0, 1, 1]] * 500) + "</answer>"]
    task, solution = ("point", BOX) if name == "point_in_box" else ("det", [CAT])
    out = rewards.get(name)(malformed, solution=[solution] * len(malformed), task=[task] * len(malformed),
                            image_sizes=[IMAGE] * len(malformed), box_frame=["original_pixels"] * len(malformed))
    assert all(v == 0.0 for v in out), out


def test_det_ap_from_several_threads_leaves_stdout_alone():
    import sys
    import threading

    real, results = sys.stdout, []

    def work():
        for _ in range(20):
            results.append(_score("det_ap", _answer([[0, 0, 100, 50]]), [CAT]))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sys.stdout is real and len(results) == 80 and min(results) == pytest.approx(1.0)
