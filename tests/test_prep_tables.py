"""Parquet and save_to_disk sources: bytes, path and HF Image cells, column options."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prep_helpers import image_bytes, leftovers, make_image, run_cli

from data_prep.packed import load_packed


def _parquet(path, columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_raw_bytes_column(tmp_path):
    src = _parquet(
        tmp_path / "geo.parquet",
        {
            "image": [image_bytes((32, 24), fmt="PNG"), image_bytes((20, 10), fmt="JPEG")],
            "question": ["<image>Find x.", "What is the area?"],
            "answer": ["12", "3\\sqrt{2}"],
            "difficulty": [1, 2],
        },
    )
    code, _, err = run_cli(["--format", "parquet", "--input", str(src), "--output", str(tmp_path / "ds")])
    assert code == 0, err
    ds = load_packed(tmp_path / "ds")
    assert [(r.id, r.task, r.solution, r.image_sizes) for r in ds] == [
        ("geo_0", "math", "12", [[32, 24]]),
        ("geo_1", "math", "3\\sqrt{2}", [[20, 10]]),
    ]
    assert ds.records[0].problem == "Find x."
    assert ds.records[0].meta == {"difficulty": 1, "source": "geo", "row": 0}
    assert ds.records[1].images[0].endswith(".jpg")


def test_parquet_hf_image_dicts_and_empty_cell(tmp_path):
    make_image(tmp_path / "imgs" / "p.png", (40, 30), color=(9, 9, 9))
    cells = [
        {"bytes": image_bytes((32, 24)), "path": "ignored.png"},  # bytes win
        {"bytes": None, "path": "p.png"},  # path, relative to --image-root
        {"bytes": None, "path": None},
    ]
    src = _parquet(
        tmp_path / "hf" / "train.parquet",
        {"image": cells, "question": ["How many sides?", "q2", "q3"], "answer": ["4", "x", "y"]},
    )
    argv = ["--format", "parquet", "--input", str(src), "--image-root", str(tmp_path / "imgs")]
    code, _, err = run_cli([*argv, "--output", str(tmp_path / "a")])
    assert code == 2 and "train.parquet row 2: the image cell is empty" in err
    code, _, err = run_cli([*argv, "--output", str(tmp_path / "b"), "--skip-invalid"])
    assert code == 0, err
    ds = load_packed(tmp_path / "b")
    assert [(r.task, r.solution, r.image_sizes) for r in ds] == [("count", 4, [[32, 24]]), ("open", "x", [[40, 30]])]
    assert ds.manifest["skipped"] == {"missing_image": 1}


def test_parquet_path_column_list_images_and_custom_columns(tmp_path):
    make_image(tmp_path / "data" / "img" / "a.png", (20, 20))
    make_image(tmp_path / "data" / "img" / "b.png", (30, 10), color=(0, 0, 255))
    src = _parquet(
        tmp_path / "data" / "part-0.parquet",
        {
            "uid": ["q1", "q2"],
            "pics": [["img/a.png", "img/b.png"], ["img/b.png"]],
            "prompt": ["Which is bigger? A. left B. right", "the blue bar"],
            "target": ["A", "[0, 0, 30, 10]"],
            "kind": ["mcq", "rec"],
        },
    )
    argv = ["--format", "parquet", "--input", str(tmp_path / "data"), "--output", str(tmp_path / "ds"),
            "--image-column", "pics", "--problem-column", "prompt", "--solution-column", "target",
            "--id-column", "uid", "--task-column", "kind"]
    code, _, err = run_cli(argv)
    assert code == 0, err
    ds = load_packed(tmp_path / "ds")
    assert [(r.id, r.task, r.solution, len(r.images)) for r in ds] == [("q1", "mcq", "A", 2), ("q2", "rec", [0, 0, 30, 10], 1)]
    assert src.exists()


def test_parquet_missing_column_lists_available(tmp_path):
    src = _parquet(tmp_path / "t.parquet", {"picture": [b"x"], "question": ["q"], "answer": ["a"]})
    code, _, err = run_cli(["--format", "parquet", "--input", str(src), "--output", str(tmp_path / "o")])
    assert code == 2
    assert "t.parquet: no image column (looked for decoded_image, image, images)" in err
    assert "available columns: picture, question, answer" in err and "--image-column" in err
    code, _, err = run_cli(["--format", "parquet", "--input", str(src), "--output", str(tmp_path / "o"), "--image-column", "img"])
    assert code == 2 and "column 'img' (--image-column) not found" in err
    assert not (tmp_path / "o").exists() and leftovers(tmp_path) == []


def test_hf_disk_image_feature_and_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    make_image(tmp_path / "src" / "a.png", (24, 24), color=(255, 0, 0))
    features = datasets.Features(
        {"image": datasets.Image(), "problem": datasets.Value("string"), "solution": datasets.Value("string")}
    )
    train = datasets.Dataset.from_dict(
        {
            "image": [str(tmp_path / "src" / "a.png"), {"bytes": image_bytes((10, 12)), "path": None}],
            "problem": ["<image>the red square", "How many dots?"],
            "solution": ["[0, 0, 24, 24]", "<answer>2</answer>"],
        },
        features=features,
    )
    single = tmp_path / "single"
    train.save_to_disk(str(single))
    code, _, err = run_cli(["--format", "hf-disk", "--input", str(single), "--output", str(tmp_path / "a")])
    assert code == 0, err
    ds = load_packed(tmp_path / "a")
    assert [(r.task, r.solution, r.image_sizes) for r in ds] == [("rec", [0, 0, 24, 24], [[24, 24]]), ("count", 2, [[10, 12]])]
    assert ds.records[0].problem == "the red square"

    both = tmp_path / "both"
    datasets.DatasetDict({"train": train, "test": train.select([1])}).save_to_disk(str(both))
    code, _, err = run_cli(["--format", "hf-disk", "--input", str(both), "--output", str(tmp_path / "b")])
    assert code == 2 and "choose a split with --split (available: train, test)" in err
    code, _, err = run_cli(["--format", "hf-disk", "--input", str(both), "--split", "test", "--output", str(tmp_path / "b")])
    assert code == 0, err
    assert len(load_packed(tmp_path / "b")) == 1

    code, _, err = run_cli(["--format", "hf-disk", "--input", str(tmp_path / "src"), "--output", str(tmp_path / "c")])
    assert code == 2 and "not a dataset saved with datasets.save_to_disk" in err
