"""pack(): downscaling, split by image, limit, dedup, skip counts, atomic output, Ctrl-C."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from prep_helpers import leftovers, make_image

from data_prep import PackOptions, PrepError, Rejected, SourceItem, load_packed, pack, synthetic
from data_prep.packed import Record
from data_prep.split import split_by_image


def _item(rid, image, box=(1, 1, 10, 10), task="rec", problem="the thing", **extra):
    solution = list(box) if task == "rec" else extra.pop("solution")
    return SourceItem(id=rid, task=task, images=[image], problem=problem, solution=solution, origin=f"test:{rid}", **extra)


def test_max_pixels_downscales_and_rescales_boxes(tmp_path):
    src = make_image(tmp_path / "big.jpg", (800, 600), fmt="JPEG")
    summary = pack([_item("a", src, (80, 60, 400, 300))], tmp_path / "ds", PackOptions(max_pixels=120_000))
    record = load_packed(tmp_path / "ds").records[0]
    assert record.image_sizes == [[400, 300]]
    assert record.solution == [40.0, 30.0, 200.0, 150.0]
    with Image.open(tmp_path / "ds" / record.images[0]) as image:
        assert image.size == (400, 300)
    assert summary.image_size_range == {"min": [400, 300], "max": [400, 300]}
    assert load_packed(tmp_path / "ds").manifest["settings"]["max_pixels"] == 120_000


def test_split_by_image_keeps_images_apart(tmp_path):
    items = synthetic.generate("rec", 60, seed=3, image_size=64, num_shapes=(1, 2))
    # make some records share an image: reuse image objects across items
    for i in range(0, 60, 3):
        items[i + 1].images = items[i].images
    summary = pack(items, tmp_path / "ds", PackOptions(val_fraction=0.25, seed=7))
    train, val = load_packed(tmp_path / "ds" / "train"), load_packed(tmp_path / "ds" / "val")
    assert len(train) + len(val) == 60 and len(val) >= 15
    assert not {i for r in train for i in r.images} & {i for r in val for i in r.images}
    assert {p.name for p in (tmp_path / "ds").iterdir()} == {"train", "val"}
    assert train.manifest["split"] == "train" and val.manifest["split"] == "val"
    assert summary.splits["val"].num_records == len(val) and summary.num_records == 60
    again = pack(items, tmp_path / "again", PackOptions(val_fraction=0.25, seed=7))
    assert again.splits["val"].num_records == len(val)
    assert (tmp_path / "again" / "val" / "records.jsonl").read_bytes() == (tmp_path / "ds" / "val" / "records.jsonl").read_bytes()


def test_split_groups_multi_image_records():
    def rec(rid, *images):
        return Record(rid, "math", list(images), [[1, 1]] * len(images), "q", "1")

    records = [rec("a", "i1"), rec("b", "i2", "i3"), rec("c", "i3", "i4"), rec("d", "i4"), rec("e", "i5"), rec("f", "i6")]
    for seed in range(10):
        train, val = split_by_image(records, 0.3, seed)
        assert len(train) + len(val) == 6 and train and val
        train_images = {i for r in train for i in r.images}
        assert not train_images & {i for r in val for i in r.images}
        assert len({r.id for r in train} & {"b", "c", "d"}) in (0, 3)


def test_split_needs_two_images():
    records = [Record(str(i), "math", ["same"], [[1, 1]], "q", "1") for i in range(4)]
    with pytest.raises(PrepError, match="all share one image"):
        split_by_image(records, 0.5, 0)


def test_limit_and_orphan_images(tmp_path):
    summary = pack(synthetic.generate("count", 50, seed=1), tmp_path / "ds", PackOptions(limit=7, chunk_size=16))
    ds = load_packed(tmp_path / "ds")
    assert len(ds) == 7 and summary.num_records == 7
    on_disk = {f"images/{p.name}" for p in (tmp_path / "ds" / "images").iterdir()}
    assert on_disk == {i for r in ds for i in r.images}


def test_dedup_drops_exact_duplicates(tmp_path):
    make_image(tmp_path / "a.png", (20, 20))
    make_image(tmp_path / "copy.png", (20, 20))  # same pixels, same bytes
    items = [
        _item("1", tmp_path / "a.png"),
        _item("2", tmp_path / "copy.png"),  # same image content, problem and box -> duplicate
        _item("3", tmp_path / "a.png", problem="the  thing "),  # whitespace-normalised duplicate
        _item("4", tmp_path / "a.png", box=(2, 2, 9, 9)),
    ]
    summary = pack(items, tmp_path / "ds", PackOptions(dedup=True))
    assert [r.id for r in load_packed(tmp_path / "ds")] == ["1", "4"]
    assert summary.skipped == {"duplicate": 2}
    assert load_packed(tmp_path / "ds").manifest["skipped"] == {"duplicate": 2}


def test_skip_invalid_counts_reasons_and_never_writes_bad_records(tmp_path):
    make_image(tmp_path / "a.png", (20, 20))
    (tmp_path / "bad.png").write_bytes(b"junk")
    items = [
        _item("ok", tmp_path / "a.png"),
        _item("gone", tmp_path / "missing.png"),
        _item("bad", tmp_path / "bad.png"),
        _item("out", tmp_path / "a.png", box=(0, 0, 30, 10)),
        Rejected(origin="x.jsonl:5", reason="malformed_json", message="x.jsonl:5: malformed JSON line"),
        _item("ok", tmp_path / "a.png", box=(2, 2, 5, 5)),
        _item("cnt", tmp_path / "a.png", task="count", solution=-2),
    ]
    summary = pack(items, tmp_path / "ds", PackOptions(skip_invalid=True))
    ds = load_packed(tmp_path / "ds")
    assert [r.id for r in ds] == ["ok"]
    expected = {"box_outside_image": 1, "corrupt_image": 1, "duplicate_id": 1, "invalid_solution": 1,
                "malformed_json": 1, "missing_image": 1}
    assert ds.manifest["skipped"] == expected == summary.skipped
    assert "skipped      6  [box_outside_image 1, corrupt_image 1" in summary.format()
    assert len(list((tmp_path / "ds" / "images").iterdir())) == 1


def test_everything_skipped_is_an_error(tmp_path):
    items = [_item("gone", tmp_path / "missing.png")]
    with pytest.raises(PrepError, match=r"no records to write \(skipped: missing_image 1\)"):
        pack(items, tmp_path / "ds", PackOptions(skip_invalid=True))
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "clip,box,ok",
    [(False, (0, 0, 21, 20), False), (True, (-2, 0, 21.5, 20), True), (True, (0, 0, 30, 20), False)],
)
def test_clip_boxes(tmp_path, clip, box, ok):
    make_image(tmp_path / "a.png", (20, 20))
    options = PackOptions(clip_boxes=clip, clip_tolerance=3)
    if ok:
        summary = pack([_item("a", tmp_path / "a.png", box)], tmp_path / "ds", options)
        assert load_packed(tmp_path / "ds").records[0].solution == [0, 0, 20, 20]
        assert summary.warnings == {"box_clipped": 1}
    else:
        with pytest.raises(PrepError, match="record 'a': box .* is outside the 20x20 image") as info:
            pack([_item("a", tmp_path / "a.png", box)], tmp_path / "ds", options)
        assert ("--clip-tolerance" in str(info.value)) == clip
        assert not (tmp_path / "ds").exists()


def test_existing_output_needs_overwrite_and_is_replaced_atomically(tmp_path):
    out = tmp_path / "ds"
    pack(synthetic.generate("math", 3, seed=0), out)
    before = (out / "records.jsonl").read_bytes()
    with pytest.raises(PrepError, match="already exists; pass --overwrite"):
        pack(synthetic.generate("math", 4, seed=1), out)
    # a failing overwrite leaves the old dataset intact
    with pytest.raises(PrepError):
        pack([_item("x", tmp_path / "missing.png")], out, PackOptions(overwrite=True))
    assert (out / "records.jsonl").read_bytes() == before and leftovers(tmp_path) == []
    pack(synthetic.generate("math", 4, seed=1), out, PackOptions(overwrite=True))
    assert len(load_packed(out)) == 4 and leftovers(tmp_path) == []


def test_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(PrepError, match="not a directory"):
        pack(synthetic.generate("math", 1), tmp_path / "f", PackOptions(overwrite=True))


def test_keyboard_interrupt_leaves_nothing(tmp_path):
    def items():
        yield from synthetic.iter_generate("rec", 5)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pack(items(), tmp_path / "ds", PackOptions(chunk_size=2))
    assert list(tmp_path.iterdir()) == []


def test_unexpected_exception_cleans_up(tmp_path):
    def items():
        yield from synthetic.iter_generate("rec", 3)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        pack(items(), tmp_path / "ds", PackOptions(chunk_size=1))
    assert list(tmp_path.iterdir()) == []


def test_output_is_deterministic(tmp_path):
    for name in ("a", "b"):
        pack(synthetic.generate("rec", 20, seed=5), tmp_path / name, PackOptions(workers=1 if name == "a" else 3))
    assert (tmp_path / "a" / "records.jsonl").read_bytes() == (tmp_path / "b" / "records.jsonl").read_bytes()
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["num_records"] == 20 and manifest["task_counts"] == {"rec": 20}
    assert set(manifest) >= {"format_version", "records_sha256", "sources", "skipped", "warnings", "settings"}


def test_options_are_checked():
    for bad in ({"val_fraction": 1.0}, {"limit": 0}, {"max_pixels": 0}, {"workers": -1}):
        with pytest.raises(PrepError):
            PackOptions(**bad)


def test_summary_json_round_trips(tmp_path):
    summary = pack(synthetic.generate("count", 5), tmp_path / "ds")
    data = json.loads(json.dumps(summary.to_json()))
    assert data["num_records"] == 5 and data["splits"]["all"]["path"] == str(Path(tmp_path / "ds").absolute())
