"""The `prep` command: wiring into a parent parser, synthetic end to end, options, benchmark."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from prep_helpers import run_cli

from data_prep import load_packed
from data_prep.cli import add_arguments, main, run

ROOT = Path(__file__).resolve().parents[1]


def test_wired_as_a_subcommand(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="vlm-grpo")
    sub = parser.add_subparsers(dest="command", required=True)
    add_arguments(sub.add_parser("prep"))
    args = parser.parse_args(
        ["prep", "--format", "synthetic", "--task", "count", "--num", "12", "--output", str(tmp_path / "ds"), "--quiet"]
    )
    assert run(args) == 0
    assert "records      12  [count 12]" in capsys.readouterr().out
    assert len(load_packed(tmp_path / "ds")) == 12


def test_synthetic_end_to_end_with_split(tmp_path):
    argv = ["--format", "synthetic", "--task", "rec", "--num", "40", "--seed", "3", "--image-size", "140x112",
            "--grid", "28", "--num-shapes", "2-5", "--colors", "red,blue", "--shape-kinds", "circle,square",
            "--background", "noise", "--referring", "color", "--val-fraction", "0.2", "--output", str(tmp_path / "ds")]
    code, out, err = run_cli(argv)
    assert code == 0, err
    train, val = load_packed(tmp_path / "ds" / "train"), load_packed(tmp_path / "ds" / "val")
    assert len(train) + len(val) == 40 and len(val) >= 8
    assert all(r.image_sizes == [[140, 112]] for r in train)
    assert {r.problem.split()[1] for r in train} <= {"red", "blue"} and all(r.problem.endswith(" shape") for r in train)
    settings = train.manifest["settings"]
    assert settings["synthetic"]["grid"] == 28 and settings["num"] == 40 and settings["val_fraction"] == 0.2
    assert train.manifest["sources"] == [{"format": "synthetic", "input": None, "image_root": None}]
    assert "records (train)" in out and "records (val)" in out and "output size" in out


def test_limit_max_pixels_and_overwrite_via_cli(tmp_path):
    base = ["--format", "synthetic", "--task", "rec", "--num", "30", "--image-size", "200", "--output", str(tmp_path / "ds")]
    assert run_cli([*base, "--limit", "5", "--max-pixels", "10000"])[0] == 0
    ds = load_packed(tmp_path / "ds")
    assert len(ds) == 5 and ds.records[0].image_sizes == [[100, 100]]
    code, _, err = run_cli(base)
    assert code == 2 and "already exists; pass --overwrite" in err
    assert run_cli([*base, "--overwrite", "--dedup"])[0] == 0
    assert len(load_packed(tmp_path / "ds")) == 30


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--format", "synthetic", "--task", "ocr"], "--format synthetic needs --task, one of: rec, count, math"),
        (["--format", "vlm-r1"], "--format vlm-r1 needs --input"),
        (["--format", "synthetic", "--task", "rec", "--val-fraction", "1.5"], "--val-fraction must be in [0, 1)"),
        (["--format", "synthetic", "--task", "rec", "--colors", "pink"], "synthetic config: colors must be from"),
    ],
)
def test_bad_options_are_clear_errors(tmp_path, argv, message):
    code, _, err = run_cli([*argv, "--output", str(tmp_path / "o")])
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for option in ("--format", "--input", "--image-root", "--output", "--task", "--skip-invalid", "--max-pixels",
                   "--clip-boxes", "--val-fraction", "--limit", "--dedup", "--overwrite", "--image-column", "--grid"):
        assert option in text


def test_progress_bar_goes_to_stderr(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "data_prep.cli", "--format", "synthetic", "--task", "math", "--num", "5",
         "--output", str(tmp_path / "ds")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "prep:" in proc.stderr and "rec" in proc.stderr
    assert proc.stdout.startswith("output")


def test_importing_data_prep_loads_no_heavy_modules():
    code = "import sys, data_prep; print(sorted(m for m in ('pyarrow', 'datasets', 'torch') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_bench_script_small(tmp_path):
    proc = subprocess.run(
        [sys.executable, "scripts/bench_prep.py", "--num", "200", "--task", "count"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["records"] == 200 and figures["records_per_s"] > 0


@pytest.mark.slow
def test_bench_script_full_under_a_minute():
    proc = subprocess.run([sys.executable, "scripts/bench_prep.py"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["records"] == 10_000 and figures["generate_pack_s"] < 60


def test_output_may_not_contain_the_sources(tmp_path):
    from prep_helpers import make_image, vlm_line, write_jsonl

    make_image(tmp_path / "data" / "a.png")
    src = write_jsonl(tmp_path / "data" / "d.jsonl", [vlm_line(1, "a.png", "<image>the red", "[1, 1, 5, 5]")])
    code, _, err = run_cli(["--format", "vlm-r1", "--input", str(src), "--output", str(tmp_path / "data"), "--overwrite"])
    assert code == 2 and "contains the input" in err
    assert src.exists() and (tmp_path / "data" / "a.png").exists()
