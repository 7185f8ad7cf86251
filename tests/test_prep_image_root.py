"""Source images stay inside the image root (issue #16, "files it should not read").

A source file is data: a VLM-R1 line, a rec-json element or a table cell naming
``/abs/path``, ``../..`` or a symlink out of ``--image-root`` (default: the input's folder)
must not get that file copied into the dataset. Every case goes through the real
``vlm-grpo prep``: exit 2 with one ``error:`` line naming the input, the record and the
flag that allows it; a counted ``image_outside_root`` skip under ``--skip-invalid``; and a
packed dataset only with ``--allow-images-outside-root``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import leftovers, one_error, vlm_grpo
from prep_helpers import image_bytes

from data_prep.packed import load_packed

SECRET = image_bytes((20, 20), (1, 2, 3))


def _layout(tmp: Path) -> tuple[Path, Path]:
    """``src/`` (the input's folder, with ok.png and two symlinks out) and ``secret/s.png`` outside it."""
    src, secret = tmp / "src", tmp / "secret"
    src.mkdir()
    secret.mkdir()
    (src / "ok.png").write_bytes(image_bytes((20, 20)))
    (secret / "s.png").write_bytes(SECRET)
    os.symlink(secret / "s.png", src / "link.png")
    os.symlink(secret, src / "linkdir")
    os.symlink("ok.png", src / "inside.png")  # a link that stays inside is fine
    return src, secret


def _vlm_r1(src: Path, image: str) -> list[str]:
    lines = [{"id": "good", "image": "ok.png", "conversations": [{"from": "human", "value": "<image>a"},
                                                                   {"from": "gpt", "value": "[1, 1, 9, 9]"}]},
             {"id": "evil", "image": image, "conversations": [{"from": "human", "value": "<image>b"},
                                                              {"from": "gpt", "value": "[1, 1, 9, 9]"}]}]
    (src / "d.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return ["--format", "vlm-r1", "--input", str(src / "d.jsonl")]


def _rec_json(src: Path, image: str) -> list[str]:
    items = [{"id": "good", "image": "ok.png", "problem": "a", "solution": [1, 1, 9, 9]},
             {"id": "evil", "image": image, "problem": "b", "solution": [1, 1, 9, 9]}]
    (src / "refs.json").write_text(json.dumps(items, indent=1))
    return ["--format", "rec-json", "--input", str(src / "refs.json")]


def _table(cell):
    return pa.table({"id": ["good", "evil"], "image": [image_bytes((20, 20)), None], "question": ["q", "r"],
                     "answer": ["3", "3"]}).set_column(1, "image", pa.array([{"bytes": image_bytes((20, 20)),
                                                                                  "path": None}, cell]))


def _parquet(src: Path, image: str) -> list[str]:
    pq.write_table(pa.table({"id": ["good", "evil"], "image": ["ok.png", image], "question": ["q", "r"],
                             "answer": ["3", "3"]}), src / "t.parquet")
    return ["--format", "parquet", "--input", str(src / "t.parquet")]


def _parquet_struct(src: Path, image: str) -> list[str]:
    pq.write_table(_table({"bytes": None, "path": image}), src / "t.parquet")
    return ["--format", "parquet", "--input", str(src / "t.parquet")]


def _hf_disk(src: Path, image: str) -> list[str]:
    import datasets

    datasets.Dataset(_table({"bytes": None, "path": image})).save_to_disk(str(src / "hf"))
    for name in ("ok.png", "link.png", "linkdir", "inside.png"):
        os.rename(src / name, src / "hf" / name)  # hf-disk's default image root is the dataset folder
    return ["--format", "hf-disk", "--input", str(src / "hf")]


FORMATS = {"vlm-r1": (_vlm_r1, "d.jsonl"), "rec-json": (_rec_json, "refs.json"), "parquet": (_parquet, "t.parquet"),
           "parquet struct": (_parquet_struct, "t.parquet"), "hf-disk": (_hf_disk, "hf")}
ESCAPES = {  # how a source names the file outside: name -> image name (SECRET is the absolute path)
    "absolute path": "SECRET",
    "dot-dot": "../secret/s.png",
    "dot-dot deep": "../src/../secret/s.png",
    "symlink to a file": "link.png",
    "symlink to a folder": "linkdir/s.png",
}
CASES = [(fmt, escape) for fmt in FORMATS for escape in ESCAPES if not (fmt == "hf-disk" and "dot-dot" in escape)]


@pytest.mark.parametrize("fmt,escape", CASES, ids=[f"{f}: {e}" for f, e in CASES])
def test_images_outside_the_root_are_refused(tmp_path, fmt, escape):
    src, secret = _layout(tmp_path)
    make, input_name = FORMATS[fmt]
    image = str(secret / "s.png") if ESCAPES[escape] == "SECRET" else ESCAPES[escape]
    argv = make(src, image)
    out = tmp_path / "out"
    code, _, err = vlm_grpo(["prep", *argv, "--output", str(out), "--quiet"])
    line = one_error(code, err, input_name, "record 'evil'", "outside the image root", "--allow-images-outside-root")
    assert "s.png" in line
    assert not out.exists() and leftovers(tmp_path) == []

    code, _, err = vlm_grpo(["prep", *argv, "--output", str(out), "--quiet", "--skip-invalid"])
    assert code == 0, err
    ds = load_packed(out)
    assert [r.id for r in ds] == ["good"] and ds.manifest["skipped"] == {"image_outside_root": 1}

    code, _, err = vlm_grpo(["prep", *argv, "--output", str(tmp_path / "allowed"), "--quiet",
                             "--allow-images-outside-root"])
    assert code == 0, err
    ds = load_packed(tmp_path / "allowed")
    evil = next(r for r in ds if r.id == "evil")
    assert (ds.path / evil.images[0]).read_bytes() == SECRET
    assert ds.manifest["settings"]["allow_images_outside_root"] is True


def test_explicit_image_root_confines_too(tmp_path):
    src, secret = _layout(tmp_path)
    (secret / "ok.png").write_bytes(image_bytes((20, 20)))
    argv = _vlm_r1(src, "../secret/s.png")
    out = ["--output", str(tmp_path / "o"), "--quiet"]
    code, _, err = vlm_grpo(["prep", *argv, "--image-root", str(src), *out])
    one_error(code, err, "d.jsonl", "record 'evil'", "outside the image root")
    code, _, err = vlm_grpo(["prep", *argv, "--image-root", str(secret), *out])  # ../secret/s.png is then inside
    assert code == 0 and len(load_packed(tmp_path / "o")) == 2, err


@pytest.mark.parametrize("image", ["inside.png", "ABS_OK", "./ok.png", "linkdir/../ok.png"])
def test_names_that_stay_inside_are_read(tmp_path, image):
    src, _ = _layout(tmp_path)
    argv = _vlm_r1(src, str(src / "ok.png") if image == "ABS_OK" else image)
    code, _, err = vlm_grpo(["prep", *argv, "--output", str(tmp_path / "out"), "--quiet"])
    if image == "linkdir/../ok.png":  # the OS resolves linkdir first: ../ok.png of secret/ is tmp/ok.png
        one_error(code, err, "record 'evil'", "outside the image root")
        return
    assert code == 0, err
    assert len(load_packed(tmp_path / "out")) == 2
