"""The packed format: record validation and the reader (checksums, line errors, sandboxing)."""

from __future__ import annotations

import json
import math
import os

import pytest
from PIL import Image
from prep_helpers import rec_record, write_dataset

from data_prep import synthetic
from data_prep.packing import pack
from data_prep.packed import FORMAT_VERSION, PrepError, Record, load_packed, validate_record


def _record(**overrides):
    base = rec_record()
    base.update(overrides)
    return Record(**{"meta": {}, **base})


VALID = [
    ("rec", {}),
    ("rec touching edges", {"solution": [0, 0, 32, 24]}),
    ("rec floats", {"solution": [0.5, 1.25, 31.9, 23.99]}),
    ("math", {"task": "math", "solution": "1/2"}),
    ("open", {"task": "open", "solution": "a cat"}),
    ("count zero", {"task": "count", "solution": 0}),
    ("mcq", {"task": "mcq", "solution": "C"}),
    ("user task", {"task": "my_task", "solution": {"anything": 1}}),
    ("no image math", {"task": "math", "images": [], "image_sizes": [], "solution": "4"}),
]

INVALID = [
    ("empty id", {"id": ""}, "id must be a non-empty string", "missing_field"),
    ("empty problem", {"problem": "  "}, "problem", "empty_problem"),
    ("box 3 numbers", {"solution": [1, 2, 3]}, "4 finite numbers", "invalid_solution"),
    ("box nan", {"solution": [1, 2, math.nan, 4]}, "4 finite numbers", "invalid_solution"),
    ("box bool", {"solution": [True, 2, 3, 4]}, "4 finite numbers", "invalid_solution"),
    ("box inverted", {"solution": [10, 2, 5, 12]}, "x1 < x2", "invalid_solution"),
    ("box empty", {"solution": [1, 5, 10, 5]}, "y1 < y2", "invalid_solution"),
    ("box outside", {"solution": [1, 2, 33, 12]}, "outside the 32x24 image", "box_outside_image"),
    ("box negative", {"solution": [-1, 2, 10, 12]}, "outside", "box_outside_image"),
    ("rec without image", {"images": [], "image_sizes": []}, "needs an image", "missing_image"),
    ("count negative", {"task": "count", "solution": -1}, ">= 0", "invalid_solution"),
    ("count bool", {"task": "count", "solution": True}, ">= 0", "invalid_solution"),
    ("count string", {"task": "count", "solution": "3"}, ">= 0", "invalid_solution"),
    ("mcq lower", {"task": "mcq", "solution": "c"}, "capital letter", "invalid_solution"),
    ("mcq word", {"task": "mcq", "solution": "CD"}, "capital letter", "invalid_solution"),
    ("math empty", {"task": "math", "solution": " "}, "non-empty string", "invalid_solution"),
    ("math number", {"task": "math", "solution": 3}, "non-empty string", "invalid_solution"),
    ("user task none", {"task": "x", "solution": None}, "must not be empty", "invalid_solution"),
    ("sizes mismatch", {"image_sizes": []}, "1 images but 0 image_sizes", "malformed_record"),
    ("bad size", {"image_sizes": [[0, 24]]}, "positive integers", "malformed_record"),
    ("absolute path", {"images": ["/etc/passwd"]}, "relative", "unsafe_path"),
    ("parent path", {"images": ["images/../../x.png"]}, "escapes", "unsafe_path"),
    ("windows path", {"images": ["C:\\x.png"]}, "relative", "unsafe_path"),
    ("meta not dict", {"meta": []}, "meta", "malformed_record"),
]


@pytest.mark.parametrize("name,overrides", VALID, ids=[c[0] for c in VALID])
def test_validate_record_accepts(name, overrides):
    validate_record(_record(**overrides), where="f.jsonl:1")


@pytest.mark.parametrize("name,overrides,text,reason", INVALID, ids=[c[0] for c in INVALID])
def test_validate_record_rejects(name, overrides, text, reason):
    with pytest.raises(PrepError) as info:
        validate_record(_record(**overrides), where="f.jsonl:7")
    message = str(info.value)
    assert message.startswith("f.jsonl:7"), message
    assert text in message
    assert info.value.reason == reason
    if overrides.get("id", "r1"):
        assert "'r1'" in message


def test_prep_error_is_value_error():
    assert issubclass(PrepError, ValueError)


def test_round_trip_through_pack(tmp_path):
    pack(synthetic.generate("rec", 6, seed=1), tmp_path / "ds")
    ds = load_packed(tmp_path / "ds")
    assert len(ds) == 6 and ds.tasks == {"rec"}
    assert ds.manifest["format_version"] == FORMAT_VERSION
    record = ds.records[0]
    path = ds.image_path(record, 0)
    assert path.is_absolute() and path.is_file() and path.is_relative_to(ds.path)
    image = ds.open_image(record)
    assert image.mode == "RGB" and list(image.size) == record.image_sizes[0]
    assert [r.id for r in ds] == [ds[i].id for i in range(len(ds))]


def test_missing_manifest_says_what_to_do(tmp_path):
    (tmp_path / "ds").mkdir()
    with pytest.raises(PrepError, match=r"manifest.json not found.*vlm-grpo prep"):
        load_packed(tmp_path / "ds")


def test_unsupported_format_version(tmp_path):
    ds = write_dataset(tmp_path / "ds", [rec_record()], {"images/a.png": Image.new("RGB", (32, 24))})
    manifest = json.loads((ds / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (ds / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PrepError, match="format_version 2 is not supported"):
        load_packed(ds)


def test_checksum_mismatch_names_the_file(tmp_path):
    ds = write_dataset(tmp_path / "ds", [rec_record()], {"images/a.png": Image.new("RGB", (32, 24))})
    text = (ds / "records.jsonl").read_text().replace("red", "blue")
    (ds / "records.jsonl").write_text(text)
    with pytest.raises(PrepError, match=r"records\.jsonl: checksum mismatch"):
        load_packed(ds)


def _rewrite_records(ds, lines):
    from data_prep.packed import sha256_file

    (ds / "records.jsonl").write_text("".join(line + "\n" for line in lines))
    manifest = json.loads((ds / "manifest.json").read_text())
    manifest["records_sha256"] = sha256_file(ds / "records.jsonl")
    manifest["num_records"] = len(lines)
    (ds / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "second_line,text",
    [
        ("{not json", r"records\.jsonl:2: malformed JSON"),
        ("[1, 2]", r"records\.jsonl:2: expected a JSON object"),
        (json.dumps({**rec_record("r2"), "extra": 1}), r"records\.jsonl:2: unknown record field"),
        (json.dumps({"id": "r2"}), r"records\.jsonl:2: record is missing field"),
        (json.dumps(rec_record("r1")), r"records\.jsonl:2: record 'r1': duplicate id"),
        (json.dumps(rec_record("r2", solution=[0, 0, 99, 9])), r"records\.jsonl:2: record 'r2': box .* outside"),
        (json.dumps(rec_record("r2", image="images/none.png")), r"records\.jsonl:2: record 'r2': image .* missing"),
    ],
)
def test_reader_errors_name_file_and_line(tmp_path, second_line, text):
    ds = write_dataset(tmp_path / "ds", [rec_record()], {"images/a.png": Image.new("RGB", (32, 24))})
    _rewrite_records(ds, [json.dumps(rec_record()), second_line])
    with pytest.raises(PrepError, match=text):
        load_packed(ds)


def test_record_count_must_match_manifest(tmp_path):
    ds = write_dataset(tmp_path / "ds", [rec_record()], {"images/a.png": Image.new("RGB", (32, 24))})
    manifest = json.loads((ds / "manifest.json").read_text())
    manifest["num_records"] = 5
    (ds / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PrepError, match="num_records is 5"):
        load_packed(ds)


# --- sandboxing ---------------------------------------------------------------------------


def test_reader_rejects_parent_path(tmp_path):
    Image.new("RGB", (32, 24)).save(tmp_path / "secret.png")
    ds = write_dataset(tmp_path / "ds", [rec_record("evil", image="../secret.png")])
    with pytest.raises(PrepError, match=r"record 'evil': image path '\.\./secret\.png' escapes") as info:
        load_packed(ds)
    assert info.value.reason == "unsafe_path"


def test_reader_rejects_absolute_path(tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (32, 24)).save(secret)
    ds = write_dataset(tmp_path / "ds", [rec_record("evil", image=str(secret))])
    with pytest.raises(PrepError, match=r"record 'evil': image path .* must be relative"):
        load_packed(ds)


def test_reader_rejects_escaping_symlink(tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (32, 24)).save(secret)
    ds = write_dataset(tmp_path / "ds", [rec_record("evil", image="images/link.png")])
    os.symlink(secret, ds / "images" / "link.png")
    with pytest.raises(PrepError, match=r"record 'evil': image path 'images/link\.png' resolves to .*outside"):
        load_packed(ds)


def test_reader_rejects_escaping_directory_symlink(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    Image.new("RGB", (32, 24)).save(tmp_path / "elsewhere" / "a.png")
    ds = write_dataset(tmp_path / "ds", [rec_record("evil", image="pics/a.png")])
    os.symlink(tmp_path / "elsewhere", ds / "pics")
    with pytest.raises(PrepError, match="record 'evil'.*outside"):
        load_packed(ds)


def test_reader_allows_symlink_inside(tmp_path):
    ds = write_dataset(tmp_path / "ds", [rec_record("ok", image="images/link.png")], {"images/a.png": Image.new("RGB", (32, 24))})
    os.symlink("a.png", ds / "images" / "link.png")
    loaded = load_packed(ds)
    assert loaded.open_image(loaded.records[0]).size == (32, 24)


def test_image_path_rechecks_and_bounds(tmp_path):
    ds = write_dataset(tmp_path / "ds", [rec_record()], {"images/a.png": Image.new("RGB", (32, 24))})
    loaded = load_packed(ds)
    with pytest.raises(PrepError, match="no index 1"):
        loaded.image_path(loaded.records[0], 1)
    tampered = Record(**{**loaded.records[0].to_json(), "images": ["../x.png"]})
    with pytest.raises(PrepError, match="escapes"):
        loaded.image_path(tampered, 0)


def test_open_image_missing_and_corrupt_name_the_record(tmp_path):
    ds = write_dataset(
        tmp_path / "ds",
        [rec_record("gone", image="images/gone.png"), rec_record("bad", image="images/bad.png")],
    )
    (ds / "images" / "bad.png").write_bytes(b"\x89PNG not really")
    loaded = load_packed(ds, check_images=False)
    with pytest.raises(PrepError, match="record 'gone': image images/gone.png is missing"):
        loaded.open_image(loaded.records[0])
    with pytest.raises(PrepError, match="record 'bad': image images/bad.png cannot be decoded"):
        loaded.open_image(loaded.records[1])
