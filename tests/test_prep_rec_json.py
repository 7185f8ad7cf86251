"""VLM-R1 REC evaluation JSON -> packed dataset, with box/size cross-checks."""

from __future__ import annotations

import doctest
import json

import pytest
from prep_helpers import make_image, run_cli

from data_prep.packed import PrepError, load_packed
from data_prep.sources import rec_json
from data_prep.sources.common import iter_json_array


def _entry(image, problem, box, size, normalized=None, **extra):
    width, height = size
    if normalized is None:
        normalized = [round(box[0] / width * 1000), round(box[1] / height * 1000), round(box[2] / width * 1000), round(box[3] / height * 1000)]
    return {"image": image, "problem": problem, "solution": box, "normalized_solution": normalized,
            "width": width, "height": height, **extra}


def _write(tmp_path, entries):
    path = tmp_path / "refcoco_val.json"
    path.write_text("[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n")
    return path


def _setup(tmp_path):
    root = tmp_path / "coco"
    make_image(root / "train2014" / "a.jpg", (640, 427), fmt="JPEG")
    make_image(root / "train2014" / "b.jpg", (300, 200), color=(0, 0, 200), fmt="JPEG")
    entries = [
        _entry("train2014/a.jpg", "the lady with the blue shirt", [103.9, 2.1, 367.4, 408.8], (640, 427), image_id=17, ann_id=5),
        {**_entry("train2014/a.jpg", "", [0, 0, 10, 10], (640, 427)), "problem": None, "normal_caption": "a bowl"},
        _entry("train2014/b.jpg", "the left dog", [10, 10, 100, 150], (300, 200), normalized=[100, 100, 500, 500]),
        _entry("train2014/b.jpg", "the right dog", [150, 10, 290, 190], (320, 200)),
    ]
    return _write(tmp_path, entries), root


def test_rec_json_conversion_and_cross_checks(tmp_path):
    src, root = _setup(tmp_path)
    code, out, err = run_cli(["--format", "rec-json", "--input", str(src), "--image-root", str(root), "--output", str(tmp_path / "ds")])
    assert code == 0, err
    ds = load_packed(tmp_path / "ds")
    assert [r.id for r in ds] == ["refcoco_val_0", "refcoco_val_1", "refcoco_val_2", "refcoco_val_3"]
    first = ds.records[0]
    assert (first.task, first.problem, first.solution, first.image_sizes) == (
        "rec", "the lady with the blue shirt", [103.9, 2.1, 367.4, 408.8], [[640, 427]],
    )
    assert first.meta == {"source": "refcoco_val", "image_id": 17, "ann_id": 5}
    assert ds.records[1].problem == "a bowl"
    assert ds.records[0].images == ds.records[1].images
    # entry 2: normalized box disagrees; entry 3: declared width 320 but the file is 300 wide
    assert ds.manifest["warnings"] == {"box_mismatch": 1, "size_mismatch": 1}
    assert "box_mismatch 1" in out and "size_mismatch 1" in out


def test_box_tolerance_option(tmp_path):
    src, root = _setup(tmp_path)
    code, _, err = run_cli(
        ["--format", "rec-json", "--input", str(src), "--image-root", str(root), "--output", str(tmp_path / "ds"), "--box-tolerance", "500"]
    )
    assert code == 0, err
    manifest = load_packed(tmp_path / "ds").manifest
    assert manifest["warnings"] == {"size_mismatch": 1}
    assert manifest["settings"]["box_tolerance"] == 500


def test_box_disagreement_doctest():
    assert doctest.testmod(rec_json).failed == 0


def test_iter_json_array_reports_lines(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('[\n  {"a": 1},\n\n  {"a": 2}, {"a": 3}\n]')
    assert [(line, obj["a"]) for line, obj in iter_json_array(path)] == [(2, 1), (4, 2), (4, 3)]


@pytest.mark.parametrize(
    "text,line,what",
    [
        ('[\n {"a": 1},\n {"a": 2,}\n]', 3, "malformed JSON"),
        ('[\n {"a": 1}\n {"a": 2}\n]', 3, "expected ','"),
        ('{"a": 1}', 1, "expected a JSON array"),
        ('[\n {"a": 1}\n] trailing', 3, "unexpected text"),
    ],
)
def test_iter_json_array_errors(tmp_path, text, line, what):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(PrepError, match=f"x.json:{line}: {what}"):
        list(iter_json_array(path))
