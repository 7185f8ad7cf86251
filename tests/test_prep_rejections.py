"""Every rejection reason, through the CLI: exit 2, a message naming the file and line
(or record id) and what is wrong, no traceback, and nothing written. With
--skip-invalid, record-level problems are skipped and counted instead."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from prep_helpers import leftovers, make_image, run_cli, tree_digest, vlm_line, write_jsonl

from data_prep.packed import load_packed

GOOD = vlm_line("good", "ok.png", "<image>the red square", "[1, 1, 10, 10]")


@dataclass
class Case:
    name: str
    build: Callable[[Path], list[str]]  # writes the inputs, returns the argv (without --output)
    message: str  # regex the error message must match (location + what)
    reason: str | None  # skip reason under --skip-invalid; None: fatal even with --skip-invalid


def _vlm(lines, **images):
    def build(tmp: Path) -> list[str]:
        make_image(tmp / "src" / "ok.png", (32, 32))
        for name, writer in images.items():
            writer(tmp / "src" / name.replace("_", "."))
        src = write_jsonl(tmp / "src" / "d.jsonl", [GOOD, *lines])
        return ["--format", "vlm-r1", "--input", str(src)]

    return build


def _corrupt(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")


def _truncated(path: Path) -> None:
    make_image(path, (64, 64), fmt="JPEG")
    path.write_bytes(path.read_bytes()[:200])


def _big(path: Path) -> None:
    make_image(path, (80, 80))  # over the 5000-pixel limit patched in by the tests


def _huge(path: Path) -> None:
    make_image(path, (200, 200))  # over twice that limit: Pillow itself refuses to open it


def _rec_json(build_text):
    def build(tmp: Path) -> list[str]:
        make_image(tmp / "src" / "ok.png", (32, 32))
        src = tmp / "src" / "refs.json"
        src.write_text(build_text)
        return ["--format", "rec-json", "--input", str(src)]

    return build


def _parquet_without_image(tmp: Path) -> list[str]:
    (tmp / "src").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"question": ["q"], "answer": ["a"]}), tmp / "src" / "t.parquet")
    return ["--format", "parquet", "--input", str(tmp / "src" / "t.parquet")]


D = r".*d\.jsonl:2"
CASES = [
    Case("missing image", _vlm([vlm_line("m", "nope.png", "<image>the dog", "[1, 1, 5, 5]")]),
         D + r": record 'm': image .*nope\.png not found", "missing_image"),
    Case("corrupt image", _vlm([vlm_line("c", "bad.png", "<image>the dog", "[1, 1, 5, 5]")], bad_png=_corrupt),
         D + r": record 'c': image .*bad\.png .*(corrupt|not a readable)", "corrupt_image"),
    Case("truncated image", _vlm([vlm_line("t", "cut.jpg", "<image>the dog", "[1, 1, 5, 5]")], cut_jpg=_truncated),
         D + r": record 't': image .*cut\.jpg is corrupt or truncated", "corrupt_image"),
    Case("decompression bomb", _vlm([vlm_line("b", "big.png", "<image>the dog", "[1, 1, 5, 5]")], big_png=_big),
         D + r": record 'b': image .*big\.png has 80x80 pixels, over Pillow's decompression-bomb limit",
         "decompression_bomb"),
    Case("decompression bomb 2x", _vlm([vlm_line("b", "huge.png", "<image>the dog", "[1, 1, 5, 5]")], huge_png=_huge),
         D + r": record 'b': image .*huge\.png has 40000 pixels, over Pillow's decompression-bomb limit",
         "decompression_bomb"),
    Case("malformed JSON line", _vlm(['{"id": "x", "image": ']), D + r": malformed JSON line", "malformed_json"),
    Case("not an object", _vlm(["[1, 2]"]), D + r": expected a JSON object", "malformed_record"),
    Case("no conversations", _vlm([{"id": "n", "image": "ok.png"}]), D + r": missing field 'conversations'",
         "missing_field"),
    Case("box outside image", _vlm([vlm_line("o", "ok.png", "<image>the dog", "[1, 1, 40, 5]")]),
         D + r": record 'o': box \[1, 1, 40, 5\] is outside the 32x32 image \(pass --clip-boxes", "box_outside_image"),
    Case("inverted box", _vlm([vlm_line("i", "ok.png", "<image>the dog", "[9, 1, 5, 5]")]),
         D + r": record 'i': box \[9, 1, 5, 5\] is empty or inverted", "invalid_solution"),
    Case("bad box answer", _vlm([vlm_line("a", "ok.png", "<image>the dog", "somewhere left", "iou")]),
         D + r": rec answer: expected a box", "invalid_solution"),
    Case("empty question", _vlm([vlm_line("e", "ok.png", "<image>  ", "4", "math")]),
         D + r": record 'e': problem \(the question\) is empty", "empty_problem"),
    Case("empty answer", _vlm([vlm_line("e", "ok.png", "<image>What?", "<answer> </answer>", "math")]),
         D + r": math answer: the answer is empty", "invalid_solution"),
    Case("negative count", _vlm([vlm_line("n", "ok.png", "<image>How many?", "-3", "count")]),
         D + r": count answer: expected an integer count >= 0", "invalid_solution"),
    Case("bad mcq letter", _vlm([vlm_line("q", "ok.png", "<image>Which?", "maybe", "mcq")]),
         D + r": mcq answer: expected a choice letter", "invalid_solution"),
    Case("duplicate id", _vlm([vlm_line("good", "ok.png", "<image>the blue square", "[1, 1, 9, 9]")]),
         D + r": record 'good': duplicate id \(first seen at .*d\.jsonl:1\)", "duplicate_id"),
    Case("rec-json box outside", _rec_json(
        '[{"image": "ok.png", "problem": "a", "solution": [1, 1, 9, 9]},\n'
        ' {"image": "ok.png", "problem": "b", "solution": [1, 1, 99, 9]}]'),
         r".*refs\.json:2 \[item 1\]: record 'refs_1': box .* outside the 32x32 image", "box_outside_image"),
    Case("rec-json malformed file", _rec_json('[{"image": "ok.png"},\n {"image": ]'),
         r".*refs\.json:2: malformed JSON", None),
    Case("unknown format", lambda tmp: ["--format", "yolo", "--input", str(tmp)],
         r"unknown format 'yolo'; choose one of: vlm-r1, rec-json, parquet, hf-disk, coco, screenspot, synthetic", None),
    Case("missing column", _parquet_without_image, r".*t\.parquet: no image column", None),
    Case("missing input file", lambda tmp: ["--format", "vlm-r1", "--input", str(tmp / "none.jsonl")],
         r"input .*none\.jsonl not found", None),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rejection_fails_cleanly(tmp_path, monkeypatch, case):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    argv = case.build(tmp_path)
    before = tree_digest(tmp_path)
    code, out, err = run_cli([*argv, "--output", str(tmp_path / "out")])
    assert code == 2, (out, err)
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.match("error: " + case.message, err), err
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    assert tree_digest(tmp_path) == before  # sources untouched


@pytest.mark.parametrize("case", [c for c in CASES if c.reason], ids=[c.name for c in CASES if c.reason])
def test_skip_invalid_counts_instead(tmp_path, monkeypatch, case):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    argv = case.build(tmp_path)
    code, out, err = run_cli([*argv, "--output", str(tmp_path / "out"), "--skip-invalid"])
    assert code == 0, err
    ds = load_packed(tmp_path / "out")
    assert len(ds) == 1
    assert ds.manifest["skipped"] == {case.reason: 1}
    assert f"{case.reason} 1" in out


@pytest.mark.parametrize("case", [c for c in CASES if not c.reason], ids=[c.name for c in CASES if not c.reason])
def test_whole_input_problems_fail_even_with_skip_invalid(tmp_path, case):
    code, _, err = run_cli([*case.build(tmp_path), "--output", str(tmp_path / "out"), "--skip-invalid"])
    assert code == 2 and re.match("error: " + case.message, err), err
    assert not (tmp_path / "out").exists()
