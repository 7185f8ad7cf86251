"""`vlm-grpo prep` under bad input (issue #10), always through the real CLI (`data_prep.cli.main`).

The contract checked for every input (:func:`prep`): exit 2 with an ``error: …`` line that
names the input file (or image) and no traceback, and no output directory or temp dir left
behind; or exit 0 and a dataset that ``load_packed`` accepts and whose every image decodes
as RGB, with bad records counted under ``--skip-invalid``.

Image policy (see ``data_prep/images.py``): CMYK, paletted, grayscale, LA/RGBA/PA, 16-bit
and float images are **converted** to 8-bit RGB (alpha composited on white); formats
outside ``SOURCE_FORMATS`` (EPS, ICO, …) are **rejected** as ``unsupported_image``; empty,
truncated and non-image files as ``corrupt_image``; images over ``PIL.Image.MAX_IMAGE_PIXELS``
as ``decompression_bomb`` before their pixels are decoded.

Fast tier: hand-picked cases per source format and image fault that the older
``test_prep_*`` tables do not cover. Slow tier: the seeded fuzzer of
``tests/reliability_fuzz.py``, ``RELIABILITY_FUZZ_N`` (default 1000) inputs per format,
figures written to ``prep_fuzz.json`` for ``docs/RELIABILITY.md``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from prep_helpers import leftovers, run_cli
from reliability_figures import REPO, bounded, write_area
from reliability_fuzz import _FORMATS, _MODES, MAKERS, encodable_pairs, encode, png_with_size, write_shared

from data_prep.packed import load_packed

HANG_S = 60.0  # hang detector only; a normal run takes milliseconds
_WHOLE_RUN = re.compile(r"no records to write|holds no records")


@dataclass
class Outcome:
    kind: str  # "packed" | "error"
    records: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    message: str = ""


def prep(argv: list[str], out: Path, names: list[str]) -> Outcome:
    """Run prep once and check the contract of the module docstring (AssertionError if broken)."""
    code, stdout, stderr = bounded(lambda: run_cli([*argv, "--output", str(out)]), HANG_S, f"prep {argv}")
    assert "Traceback" not in stderr, stderr
    if code == 0:
        ds = load_packed(out)
        for record in ds:
            for i in range(len(record.images)):
                assert ds.open_image(record, i).mode == "RGB"
        return Outcome("packed", len(ds), dict(ds.manifest["skipped"]))
    assert code == 2, (code, stdout, stderr)
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), stderr
    assert any(name in last for name in names) or _WHOLE_RUN.search(last), f"error does not say where: {last}"
    assert not out.exists() and leftovers(out.parent) == [], "partial output left behind"
    return Outcome("error", message=last)


# --- fast tier: one case per fault, per format -----------------------------------------------


def _vlm(tmp: Path, *lines: str | dict, images: dict[str, bytes] | None = None) -> list[str]:
    (tmp / "src").mkdir(parents=True, exist_ok=True)
    write_shared(tmp / "src")
    for name, data in (images or {}).items():
        (tmp / "src" / name).write_bytes(data)
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    (tmp / "src" / "d.jsonl").write_bytes(text.encode("utf-8", "surrogatepass"))
    return ["--format", "vlm-r1", "--input", str(tmp / "src" / "d.jsonl")]


def _line(rid: str = "x", image: object = "ok.png", answer: object = "[1, 1, 9, 9]", question: object = "<image>a",
          method: object = "iou") -> dict:
    return {"id": rid, "image": image, "accu_reward_method": method,
            "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}


GOOD = _line("good")

VLM_CASES = [
    # name, bad line (raw JSON text or object), expected message, skip reason
    ("NaN in a box", '{"id": "n", "image": "ok.png", "accu_reward_method": "iou", "conversations": [{"from": "human", '
     '"value": "a"}, {"from": "gpt", "value": [NaN, 1, 9, 9]}]}', r"d\.jsonl:2: rec answer: expected a box",
     "invalid_solution"),
    ("Infinity as a count", '{"id": "i", "accu_reward_method": "count", "conversations": [{"from": "human", '
     '"value": "How many?"}, {"from": "gpt", "value": Infinity}]}', r"d\.jsonl:2: count answer", "invalid_solution"),
    ("400-digit box number", _line("h", answer=[1, 1, 10**400, 9]), r"d\.jsonl:2: rec answer: expected a box",
     "invalid_solution"),
    ("5000-digit integer", '{"id": 9' + "9" * 5000 + "}", r"d\.jsonl:2: malformed JSON line", "malformed_json"),
    ("nesting 100k deep", "[" * 100_000, r"d\.jsonl:2: malformed JSON line \(nested too deeply\)", "malformed_json"),
    ("negative box", _line("neg", answer="[-4, 1, 9, 9]"), r"d\.jsonl:2: record 'neg': box .* outside",
     "box_outside_image"),
    ("1e308 box", _line("big", answer="[1, 1, 1e308, 9]"), r"d\.jsonl:2: record 'big': box .* outside",
     "box_outside_image"),
    ("NaN method kept in meta", '{"id": "m", "image": "ok.png", "accu_reward_method": NaN, "conversations": '
     '[{"from": "human", "value": "a"}, {"from": "gpt", "value": "[1, 1, 9, 9]"}]}',
     r"d\.jsonl:2: record 'm': cannot be stored as JSON text", "malformed_record"),
    ("NaN answer, task inferred", '{"id": "u", "conversations": [{"from": "human", "value": "a"}, '
     '{"from": "gpt", "value": NaN}]}', r"d\.jsonl:2: open answer: expected a finite number", "invalid_solution"),
    ("lone surrogate in the question", _line("s", question="<image>\ud800 what"),
     r"d\.jsonl:2: record 's': cannot be stored as JSON text", "malformed_record"),
    ("NUL in the image path", _line("z", image="ok\x00.png"), r"d\.jsonl:2: record 'z': image path .* not a valid "
     "file name", "missing_image"),
    ("surrogate in the image path", _line("q", image="\udcff.png"), r"d\.jsonl:2: record 'q': image .*",
     "missing_image"),
    ("non-UTF-8 bytes", '{"id": "\udcff"}', r"d\.jsonl:2: malformed JSON line \('utf-8' codec", "malformed_json"),
    ("wrong type: conversations is a dict", '{"id": "w", "conversations": {"from": "human"}}',
     r"d\.jsonl:2: 'conversations' must be a list", "missing_field"),
    ("wrong type: image is a number", _line("t", image=7), r"d\.jsonl:2: 'image' must be a path", "malformed_record"),
    ("duplicate id", _line("good", answer="[2, 2, 9, 9]"), r"d\.jsonl:2: record 'good': duplicate id",
     "duplicate_id"),
    ("zero-byte image", _line("e", image="empty.png"), r"record 'e': image .*empty\.png is empty \(0 bytes\)",
     "corrupt_image"),
    ("text file named .jpg", _line("t", image="bad.jpg"), r"record 't': image .*bad\.jpg is not a readable image",
     "corrupt_image"),
    ("truncated JPEG", _line("j", image="cut.jpg"), r"record 'j': image .*cut\.jpg is corrupt or truncated",
     "corrupt_image"),
    ("truncated PNG", _line("p", image="cut.png"), r"record 'p': image .*cut\.png is corrupt or truncated",
     "corrupt_image"),
    ("decompression bomb (real Pillow limit)", _line("b", image="bomb.png"),
     r"record 'b': image .*bomb\.png has 400000000 pixels, over Pillow's decompression-bomb limit",
     "decompression_bomb"),
    ("/dev/zero as the image (outside the image root)", _line("dz", image="/dev/zero"),
     r"record 'dz': image '/dev/zero' resolves to /dev/zero, outside the image root", "image_outside_root"),
    ("EPS (would run Ghostscript)", _line("g", image="pic.eps"),
     r"record 'g': image .*pic\.eps is in EPS format, which prep does not decode", "unsupported_image"),
]
_EXTRA_IMAGES = {"bomb.png": png_with_size(20_000, 20_000),
                 "pic.eps": encode(Image.new("RGB", (8, 8), (1, 2, 3)), "EPS")}


@pytest.mark.parametrize("name,line,message,reason", VLM_CASES, ids=[c[0] for c in VLM_CASES])
def test_vlm_r1_bad_data(tmp_path, name, line, message, reason):
    argv = _vlm(tmp_path, GOOD, line, images=_EXTRA_IMAGES)
    outcome = prep(argv, tmp_path / "out", ["d.jsonl"])
    assert outcome.kind == "error" and re.search(message, outcome.message), outcome.message
    skipped = prep([*argv, "--skip-invalid"], tmp_path / "out", ["d.jsonl"])
    assert (skipped.kind, skipped.records, skipped.skipped) == ("packed", 1, {reason: 1})


def test_dev_zero_allowed_outside_root_is_still_refused(tmp_path):
    argv = _vlm(tmp_path, GOOD, _line("dz", image="/dev/zero"))
    outcome = prep([*argv, "--allow-images-outside-root"], tmp_path / "out", ["d.jsonl"])
    assert re.search(r"record 'dz': image /dev/zero is not a regular file", outcome.message), outcome.message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_and_directory_named_as_images(tmp_path):
    argv = _vlm(tmp_path, GOOD, _line("f", image="pipe.png"), _line("d", image="folder.png"))
    os.mkfifo(tmp_path / "src" / "pipe.png")  # reading it would block forever
    (tmp_path / "src" / "folder.png").mkdir()
    outcome = prep(argv, tmp_path / "out", ["d.jsonl"])
    assert re.search(r"d\.jsonl:2: record 'f': image .*pipe\.png is not a regular file", outcome.message)
    skipped = prep([*argv, "--skip-invalid"], tmp_path / "out", ["d.jsonl"])
    assert (skipped.records, skipped.skipped) == (1, {"missing_image": 2})


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("empty file", b"", r"the input holds no records"),
        ("blank lines only", b"\n \n\t\n", r"the input holds no records"),
        ("UTF-16 file", json.dumps(GOOD).encode("utf-16"), r"d\.jsonl:1: malformed JSON line"),
        ("UTF-16 file, --skip-invalid", json.dumps(GOOD).encode("utf-16"), r"no records to write \(skipped: malformed"),
    ],
)
def test_vlm_r1_whole_file_problems(tmp_path, name, content, message):
    _vlm(tmp_path, GOOD)
    (tmp_path / "src" / "d.jsonl").write_bytes(content)
    flags = ["--skip-invalid"] if name != "UTF-16 file" else []
    outcome = prep(["--format", "vlm-r1", "--input", str(tmp_path / "src" / "d.jsonl"), *flags],
                   tmp_path / "out", ["d.jsonl"])
    assert outcome.kind == "error" and re.search(message, outcome.message), outcome.message


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("empty file", "", r"refs\.json:1: expected a JSON array"),
        ("empty array", "[]", r"the input holds no records"),
        ("truncated", '[{"image": "ok.png", "problem": "a", "solution": [1, 1, 9, 9]},\n{"image": "ok', r"refs\.json:2"),
        ("nesting 100k deep", "[" * 100_000, r"refs\.json:1: malformed JSON \(nested too deeply\)"),
        ("5000-digit width", '[{"image": "ok.png", "problem": "a", "solution": [1, 1, 9, 9], "width": 9' + "9" * 5000
         + "}]", r"refs\.json:1: malformed JSON \(Exceeds the limit"),
        ("not UTF-8", '[{"image": "ok.png", "problem": "\udcff"}]', r"refs\.json: not UTF-8 text"),
    ],
)
def test_rec_json_whole_file_problems(tmp_path, name, text, message):
    write_shared(tmp_path / "src")
    (tmp_path / "src" / "refs.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    outcome = prep(["--format", "rec-json", "--input", str(tmp_path / "src" / "refs.json"), "--skip-invalid"],
                   tmp_path / "out", ["refs.json"])
    assert outcome.kind == "error" and re.search(message, outcome.message), outcome.message


@pytest.mark.parametrize(
    "name,bad,message,reason",
    [
        ("NaN in solution", '{"image": "ok.png", "problem": "b", "solution": [NaN, 1, 9, 9]}',
         r"refs\.json:2 \[item 1\]: rec answer: expected a box", "invalid_solution"),
        ("huge width, NaN meta", '{"image": "ok.png", "problem": "b", "solution": [1, 1, 9, 9], "width": 1e308, '
         '"height": 32, "ann": NaN}', r"refs\.json:2 \[item 1\]: record 'refs_1': cannot be stored as JSON",
         "malformed_record"),
        ("string as solution", '{"image": "ok.png", "problem": "b", "solution": "left"}',
         r"refs\.json:2 \[item 1\]: rec answer", "invalid_solution"),
        ("problem is a list", '{"image": "ok.png", "problem": ["b"], "solution": [1, 1, 9, 9]}',
         r"refs\.json:2 \[item 1\]: missing field 'problem'", "missing_field"),
    ],
)
def test_rec_json_bad_records(tmp_path, name, bad, message, reason):
    write_shared(tmp_path / "src")
    text = '[{"image": "ok.png", "problem": "a", "solution": [1, 1, 9, 9]},\n' + bad + "]"
    (tmp_path / "src" / "refs.json").write_text(text)
    argv = ["--format", "rec-json", "--input", str(tmp_path / "src" / "refs.json")]
    outcome = prep(argv, tmp_path / "out", ["refs.json"])
    assert outcome.kind == "error" and re.search(message, outcome.message), outcome.message
    skipped = prep([*argv, "--skip-invalid"], tmp_path / "out", ["refs.json"])
    assert (skipped.records, skipped.skipped) == (1, {reason: 1})


def _parquet(tmp: Path, columns: dict) -> list[str]:
    write_shared(tmp / "src")
    pq.write_table(pa.table(columns), tmp / "src" / "t.parquet")
    return ["--format", "parquet", "--input", str(tmp / "src" / "t.parquet")]


def test_parquet_bad_cells_are_counted(tmp_path):
    png = (write_shared(tmp_path / "src") / "ok.png").read_bytes()
    argv = _parquet(tmp_path, {
        "image": [png, png, png, png, b"", png],
        "question": ["What is 2+1?", "What is 2+1?", "What is 2+1?", "What is 2+1?", "What is 2+1?", None],
        "answer": [3.0, float("nan"), float("inf"), 3.0, 3.0, 3.0],
        "score": [1.0, 1.0, 1.0, float("nan"), 1.0, 1.0],  # a meta column: NaN cannot be stored
    })
    outcome = prep(argv, tmp_path / "out", ["t.parquet"])
    assert outcome.kind == "error" and re.search(r"t\.parquet row 1: open answer: expected a finite", outcome.message)
    skipped = prep([*argv, "--skip-invalid"], tmp_path / "out", ["t.parquet"])
    assert skipped.records == 1
    assert skipped.skipped == {"invalid_solution": 2, "malformed_record": 1, "corrupt_image": 1, "empty_problem": 1}


def test_parquet_image_struct_with_text_bytes(tmp_path):
    argv = _parquet(tmp_path, {"image": [{"bytes": "not binary", "path": None}], "question": ["q"], "answer": ["a"]})
    outcome = prep(argv, tmp_path / "out", ["t.parquet"])
    assert re.search(r"t\.parquet row 0: the image cell's 'bytes' must be binary, got str", outcome.message)


@pytest.mark.parametrize("damage", ["truncated", "zero bytes", "garbage"])
def test_parquet_damaged_file(tmp_path, damage):
    argv = _parquet(tmp_path, {"image": [b"x"] * 200, "question": ["q"] * 200, "answer": ["a"] * 200})
    path = tmp_path / "src" / "t.parquet"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "zero bytes": b"", "garbage": b"PAR1" + b"\x07" * 500}[damage])
    outcome = prep([*argv, "--skip-invalid"], tmp_path / "out", ["t.parquet"])
    assert re.search(r"t\.parquet: not a readable Parquet file", outcome.message), outcome.message


def test_hf_disk_damaged_arrow_file(tmp_path):
    import datasets

    png = (write_shared(tmp_path / "src") / "ok.png").read_bytes()
    target = tmp_path / "src" / "hf"
    datasets.Dataset.from_dict({"image": [png], "question": ["q"], "answer": ["a"]}).save_to_disk(str(target))
    arrow = next(target.glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:100])
    outcome = prep(["--format", "hf-disk", "--input", str(target)], tmp_path / "out", ["hf"])
    assert outcome.kind == "error", outcome


@pytest.mark.parametrize(
    "mode,fmt",
    [("CMYK", "JPEG"), ("CMYK", "TIFF"), ("P", "PNG"), ("P", "GIF"), ("LA", "PNG"), ("RGBA", "PNG"), ("RGBA", "WEBP"),
     ("I;16", "PNG"), ("I;16", "TIFF"), ("F", "TIFF"), ("1", "BMP"), ("L", "PPM")],
)
def test_image_modes_are_converted_to_rgb(tmp_path, mode, fmt):
    image = Image.fromarray(np.full((12, 16), 40000, dtype=np.uint16)) if mode == "I;16" else \
        Image.new("RGB", (16, 12), (250, 10, 10)).convert(mode)
    argv = _vlm(tmp_path, GOOD, _line("m", image=f"m.{fmt.lower()}"), images={f"m.{fmt.lower()}": encode(image, fmt)})
    outcome = prep(argv, tmp_path / "out", ["d.jsonl"])
    assert (outcome.kind, outcome.records) == ("packed", 2)
    ds = load_packed(tmp_path / "out")
    record = next(r for r in ds if r.id == "m")
    assert record.image_sizes == [[16, 12]] and record.images[0].endswith((".png", ".jpg"))


# --- slow tier: the seeded fuzzer ------------------------------------------------------------


def _fuzz(fmt: str, tmp: Path, n: int) -> dict:
    """Run ``n`` generated inputs of one format; return its figures (raises on a broken contract)."""
    shared = write_shared(tmp / "shared")
    counts: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    made: Counter = Counter()  # what the image generator actually encoded
    failures: list[str] = []
    slowest = 0.0
    for i in range(n):
        rng = random.Random(f"{fmt}-{i}")
        case = tmp / f"case{i}"
        argv, names = MAKERS[fmt](rng, case, shared, *([made] if fmt == "images" else []))
        if rng.random() < 0.5:
            argv.append("--skip-invalid")
        start = time.perf_counter()
        try:
            outcome = prep(argv, case / "out", names)
        except Exception:  # a traceback, a partial output or an unclear message: a bug to fix
            failures.append(f"{fmt} #{i} (random.Random('{fmt}-{i}')): {traceback.format_exc(limit=-3)}")
            counts["broken"] += 1
            continue
        finally:
            slowest = max(slowest, time.perf_counter() - start)
        counts[outcome.kind] += 1
        counts["records kept"] += outcome.records
        skipped.update(outcome.skipped)
        shutil.rmtree(case, ignore_errors=True)
    return {"counts": counts, "skipped": skipped, "failures": failures, "slowest": slowest, "made": made}


_CASE_LABELS = {
    "vlm-r1": "vlm-r1 JSONL (mutated fields and bytes)",
    "rec-json": "rec-json array (mutated fields and bytes)",
    "parquet": "Parquet tables (mixed cell types, damaged files)",
    "hf-disk": "hf-disk datasets (mixed cell types, damaged files)",
    "images": "images ({pairs} mode x format pairs Pillow writes, of {modes} modes x {formats} formats; "
              "mutated bytes, bombs)",
}


def _assert_image_coverage(made: Counter, n: int) -> str:
    """Every input was encoded in a writable pair, and at n >= 1000 every writable pair was made."""
    pairs = encodable_pairs()
    encoded = {k: v for k, v in made.items() if isinstance(k, tuple)}
    damage = {k: v for k, v in made.items() if isinstance(k, str)}
    assert sum(encoded.values()) == n and set(encoded) <= set(pairs)
    assert sum(damage.values()) == n and damage["intact"] > n // 3
    if n >= 1000:  # 98 pairs drawn uniformly: each ~10 times in 1000 (the seeded run: at least 4)
        assert set(encoded) == set(pairs), sorted(set(pairs) - set(encoded))
    return (f"{len(encoded)} of {len(pairs)} writable pairs encoded, {damage['intact']} intact, "
            f"{damage['bytes mutated']} with mutated bytes, {damage['bomb']} bombs, {damage['not an image']} not images")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_fuzz_prep_every_format(tmp_path, monkeypatch):
    import datasets

    datasets.disable_progress_bars()
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    n = int(os.environ.get("RELIABILITY_FUZZ_N", "1000"))
    rows, failures, started = [], [], time.perf_counter()
    for fmt, label in _CASE_LABELS.items():
        t0 = time.perf_counter()
        result = _fuzz(fmt, tmp_path / fmt, n)
        c = result["counts"]
        if fmt == "images":
            label = label.format(pairs=len(encodable_pairs()), modes=len(_MODES), formats=len(_FORMATS))
            generated = _assert_image_coverage(result["made"], n)
        else:
            generated = None
        top = ", ".join(f"{reason} {count}" for reason, count in result["skipped"].most_common(4)) or "none"
        rows.append({
            "case": label, "tried": n,
            "outcome": f"{c['error']} clean errors, {c['packed']} packed, {c['broken']} broken",
            "clean error (exit 2)": c["error"], "packed (exit 0)": c["packed"],
            "records skipped": sum(result["skipped"].values()), "top skip reasons": top,
            "broken": c["broken"], "slowest input s": round(result["slowest"], 2),
            "wall s": round(time.perf_counter() - t0, 1),
            **({"generated": generated} if generated else {}),
        })
        failures += result["failures"]
    assert not failures, f"{len(failures)} broken inputs; first ones:\n" + "\n".join(failures[:5])
    assert all(row["broken"] == 0 for row in rows) and sum(row["tried"] for row in rows) == 5 * n
    write_area(
        "prep_fuzz", "Bad data: `vlm-grpo prep` fuzzing", rows, wall_s=time.perf_counter() - started,
        command="RELIABILITY_FUZZ_N=1000 .venv/bin/python -m pytest -q -m slow tests/test_reliability_prep.py",
        notes=("Seeded generators in `tests/reliability_fuzz.py` (input *i* of format *f* comes from "
               "`random.Random('f-i')`), run in-process through `data_prep.cli.main`, half of them with "
               "`--skip-invalid`. *Broken* means a traceback, a partial output dir, or an error that does not "
               "name the input; a clean error is exit 2 with one `error: <file>:<line>: …` line. Every packed "
               "output was re-read with `load_packed` and each of its images decoded."),
    )


# --- the figures file and docs/RELIABILITY.md -------------------------------------------------


def test_figures_render_into_the_reliability_report(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.setenv("RELIABILITY_RESULTS", str(tmp_path / "results"))
    write_area("b_area", "Second area", [{"case": "x", "tried": 3, "outcome": "ok", "max s": 0.25}], wall_s=1.04)
    write_area("a_area", "First area", [{"case": "y", "tried": 1000, "outcome": "fine"}], notes="A note.")
    with pytest.raises(ValueError, match="lacks"):
        write_area("bad", "Bad", [{"case": "z"}])
    spec = importlib.util.spec_from_file_location("reliability_report", REPO / "scripts" / "reliability_report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    assert report.main(["--output", str(tmp_path / "R.md")]) == 0
    text = (tmp_path / "R.md").read_text()
    assert text.index("## First area") < text.index("## Second area")  # unknown slugs: file-name order
    assert "| case | tried | outcome | max s |" in text and "| x | 3 | ok | 0.25 |" in text
    assert "1,003 generated inputs and injected faults in 2 area(s)" in text and "A note." in text and "(took 1 s)" in text
    assert "make test-slow && .venv/bin/python scripts/reliability_report.py" in text


def _report_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("reliability_report", REPO / "scripts" / "reliability_report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    return report


def test_the_reliability_doc_is_the_scripts_output_unedited():
    """docs/RELIABILITY.md is rendered, not written: its checksum line matches, its preface is the
    script's, and it says at which commit and on which date it was rendered."""
    report = _report_module()
    doc = (REPO / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")
    assert report.check_stamp(doc), "docs/RELIABILITY.md was edited by hand: rerun " + report.RERUN
    assert doc.startswith("# Reliability\n\n" + report.PREFACE)
    assert re.search(r"rendered at commit `[0-9a-f]{7,}` on \d{4}-\d{2}-\d{2},", doc)
    assert "-dirty`" not in doc  # rendered from figures of committed tests
    assert report.check_stamp(report.stamp("x\n")) and not report.check_stamp(report.stamp("x\n").replace("x", "y"))
