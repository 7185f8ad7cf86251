"""Prep for the det and point tasks: COCO instances, VLM-R1's OVD JSONL, ScreenSpot JSON, synthetic
det/point, every box rescaled by --max-pixels, and bad solutions refused naming the record."""

from __future__ import annotations

import json

import pytest
from prep_helpers import make_image, run_cli, vlm_line, write_jsonl

from data_prep.packed import PrepError, Record, load_packed, validate_record


def _coco(tmp_path):
    root = tmp_path / "imgs"
    make_image(root / "1.jpg", (200, 100), fmt="JPEG")
    make_image(root / "2.png", (100, 100))
    make_image(root / "3.png", (50, 50))
    data = {
        "images": [{"id": 1, "file_name": "1.jpg", "width": 200, "height": 100},
                   {"id": 2, "file_name": "2.png", "width": 100, "height": 100},
                   {"id": 3, "file_name": "3.png", "width": 50, "height": 50}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 18, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 20], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [100, 50, 50, 50], "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 18, "bbox": [0, 0, 20, 20], "iscrowd": 0},
            {"id": 4, "image_id": 2, "category_id": 18, "bbox": [5, 5, 10, 10], "iscrowd": 0},
            {"id": 5, "image_id": 2, "category_id": 1, "bbox": [0, 0, 100, 100], "iscrowd": 1},
        ],
    }
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps(data))
    return path, root


def test_coco_one_record_per_image_and_category(tmp_path):
    src, root = _coco(tmp_path)
    code, out, err = run_cli(["--format", "coco", "--input", str(src), "--image-root", str(root), "--output", str(tmp_path / "ds")])
    assert code == 0, err
    ds = load_packed(tmp_path / "ds")
    by_id = {r.id: r for r in ds}
    assert sorted(by_id) == ["instances_val_1_1", "instances_val_1_18", "instances_val_2_18"]  # image 3 has none
    cats = by_id["instances_val_1_1"]
    assert cats.task == "det" and cats.problem == "Locate every cat in the image."
    assert cats.solution == [{"box": [10, 10, 50, 30], "label": "cat"}, {"box": [100, 50, 150, 100], "label": "cat"}]
    assert by_id["instances_val_2_18"].solution == [{"box": [5, 5, 15, 15], "label": "dog"}]  # the crowd box left out
    assert ds.manifest["warnings"].get("crowd_skipped") == 1  # image 2's crowd annotation


def test_coco_negatives_ask_about_absent_categories(tmp_path):
    src, root = _coco(tmp_path)
    argv = ["--format", "coco", "--coco-negatives", "1", "--input", str(src), "--image-root", str(root)]
    code, _, err = run_cli([*argv, "--output", str(tmp_path / "ds")])
    assert code == 0, err
    by_id = {r.id: r for r in load_packed(tmp_path / "ds")}
    assert by_id["instances_val_2_1"].solution == [] and by_id["instances_val_2_1"].problem == "Locate every cat in the image."
    negatives = sorted(rid for rid, r in by_id.items() if r.solution == [])
    # image 1 holds both categories (none absent), image 2 lacks cat, image 3 lacks both (one is asked)
    assert negatives[0] == "instances_val_2_1" and len(negatives) == 2 and negatives[1].startswith("instances_val_3_")
    assert all(by_id[rid].meta["negative"] for rid in negatives)
    code, _, err = run_cli([*argv, "--output", str(tmp_path / "again")])
    assert code == 0 and sorted(by_id) == sorted(r.id for r in load_packed(tmp_path / "again"))  # the same pick


def test_coco_one_record_per_image_and_max_pixels_rescales_every_box(tmp_path):
    src, root = _coco(tmp_path)
    code, _, err = run_cli(["--format", "coco", "--coco-records", "image", "--input", str(src), "--image-root", str(root),
                            "--output", str(tmp_path / "ds"), "--max-pixels", "5000"])
    assert code == 0, err
    by_id = {r.id: r for r in load_packed(tmp_path / "ds")}
    assert sorted(by_id) == ["instances_val_1", "instances_val_2", "instances_val_3"]
    assert by_id["instances_val_3"].solution == []  # an image with no object teaches "none"
    assert by_id["instances_val_1"].problem == "Locate every object of these categories: cat, dog."
    record = by_id["instances_val_1"]
    (w, h), = record.image_sizes
    assert w * h <= 5000 and (w, h) != (200, 100)
    sx, sy = w / 200, h / 100
    expected = [[10 * sx, 10 * sy, 50 * sx, 30 * sy], [100 * sx, 50 * sy, 150 * sx, 100 * sy], [0, 0, 20 * sx, 20 * sy]]
    for got, want in zip(record.solution, expected):
        assert got["box"] == pytest.approx(want, abs=0.01)
    assert [d["label"] for d in record.solution] == ["cat", "cat", "dog"]


def test_vlm_r1_ovd_jsonl_is_det(tmp_path):
    root = tmp_path / "imgs"
    make_image(root / "a.png", (100, 80))
    answer = '```json\n[{"bbox_2d": [1, 2, 30, 40], "label": "person"}, {"bbox_2d": [50, 10, 90, 70], "label": "kite"}]\n```'
    rows = [
        vlm_line(1, "a.png", "<image>Please carefully check the image and detect the following objects: [person, kite].",
                 answer, "od_ap"),
        vlm_line(2, "a.png", "<image>Detect: [bus].", "[]", "odLength"),
        vlm_line(3, "a.png", "<image>Find the boxes.", "[[1, 2, 30, 40], [50, 10, 90, 70]]"),  # inferred: several boxes
    ]
    src = write_jsonl(tmp_path / "ovd.jsonl", rows)
    code, _, err = run_cli(["--format", "vlm-r1", "--input", str(src), "--image-root", str(root), "--output", str(tmp_path / "ds")])
    assert code == 0, err
    by_id = {r.id: r for r in load_packed(tmp_path / "ds")}
    assert {r.task for r in by_id.values()} == {"det"}
    assert by_id["1"].solution == [{"box": [1, 2, 30, 40], "label": "person"}, {"box": [50, 10, 90, 70], "label": "kite"}]
    assert by_id["2"].solution == []
    assert by_id["3"].solution == [{"box": [1, 2, 30, 40]}, {"box": [50, 10, 90, 70]}]


def test_screenspot_xywh_boxes_and_data_type(tmp_path):
    root = tmp_path / "shots"
    make_image(root / "web_1.png", (400, 300))
    items = [
        {"img_filename": "web_1.png", "bbox": [42, 110, 197, 70], "instruction": "view the details",
         "data_type": "text", "data_source": "shop"},
        {"img_filename": "web_1.png", "bbox": [93, 74, 86, 132], "instruction": "previous photo",
         "data_type": "icon", "data_source": "shop"},
    ]
    src = tmp_path / "screenspot_web.json"
    src.write_text(json.dumps(items))
    code, _, err = run_cli(["--format", "screenspot", "--input", str(src), "--image-root", str(root),
                            "--output", str(tmp_path / "ds")])
    assert code == 0, err
    records = list(load_packed(tmp_path / "ds"))
    assert [r.task for r in records] == ["point", "point"]
    assert records[0].solution == [42, 110, 239, 180] and records[1].solution == [93, 74, 179, 206]
    assert records[0].meta == {"source": "screenspot_web", "data_type": "text", "data_source": "shop"}
    # read as corners, both boxes are inverted (y2 < y1): refused, naming the record
    code, _, err = run_cli(["--format", "screenspot", "--screenspot-bbox", "xyxy", "--input", str(src),
                            "--image-root", str(root), "--output", str(tmp_path / "ds2")])
    assert code == 2 and "screenspot_web_0" in err and "inverted" in err


@pytest.mark.parametrize("task", ["det", "point"])
def test_synthetic_det_and_point(tmp_path, task):
    code, _, err = run_cli(["--format", "synthetic", "--task", task, "--num", "40", "--num-shapes", "2-5",
                            "--output", str(tmp_path / "ds"), "--max-pixels", "6000"])
    assert code == 0, err
    records = list(load_packed(tmp_path / "ds"))
    assert {r.task for r in records} == {task}
    if task == "det":
        counts = [len(r.solution) for r in records]
        assert 0 in counts and max(counts) >= 2  # some images hold none of the asked shape, some several
        kind = records[1].problem.split()[2]
        assert all(d["label"] == kind for d in records[1].solution)
    for r in records:  # every box inside the stored (downscaled) image
        (w, h), = r.image_sizes
        for box in ([d["box"] for d in r.solution] if task == "det" else [r.solution]):
            assert 0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h


BAD = [
    ("det", {"box": [0, 0, 5, 5]}, "must be a list"),
    ("det", [{"bbox_2d": [0, 0, 5, 5]}], "item 0"),
    ("det", [{"box": [0, 0, 5, 5], "label": 3}], "label must be a string"),
    ("det", [{"box": [5, 0, 1, 5]}], "inverted"),
    ("det", [{"box": [0, 0, 5, 50]}], "outside the 32x24 image"),
    ("point", [1, 2, 3], "4 finite numbers"),
    ("point", [0, 0, 40, 5], "outside the 32x24 image"),
]


@pytest.mark.parametrize("task, solution, message", BAD, ids=[f"{t}: {m}" for t, _, m in BAD])
def test_bad_det_and_point_solutions_are_refused(task, solution, message):
    record = Record(id="r1", task=task, images=["images/a.png"], image_sizes=[[32, 24]], problem="q", solution=solution)
    with pytest.raises(PrepError, match=message) as info:
        validate_record(record, where="x.jsonl:1")
    assert "'r1'" in str(info.value)
