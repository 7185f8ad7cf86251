"""Nothing lost, nothing mixed: the commands refuse, with one `error:` line, to destroy or merge what is not theirs.

Each table drives the real command (``vlm_grpo.cli.main``) and checks: exit 2, exactly one
``error:`` line that names the file or folder and says what to do, no traceback, and the
folder that was refused byte for byte as it was.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from vlm_grpo.cli import main as cli_main


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (folders as ``<dir>``)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def refused(capsys, argv: list[str], *names: str) -> str:
    """Run ``vlm-grpo argv``; assert exit 2 with one ``error:`` line mentioning every ``names``; return it."""
    code = cli_main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------
# prep --overwrite replaces a packed dataset and nothing else


def _prep_argv(output: Path, *extra: str) -> list[str]:
    return ["prep", "--format", "synthetic", "--task", "count", "--num", "6", "--output", str(output), "--quiet", *extra]


def _dataset(path: Path, *extra: str) -> Path:
    assert cli_main(_prep_argv(path, *extra)) == 0
    return path


def _thesis(path: Path) -> None:
    (path / "chapters").mkdir(parents=True)
    (path / "thesis.tex").write_text("\\chapter{Results}")
    (path / "chapters" / "one.tex").write_text("x")


def _checkpoint(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"\0" * 64)


def _with_notes(path: Path) -> None:
    _dataset(path)
    (path / "notes.txt").write_text("my annotations")


def _foreign_manifest(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "manifest.json").write_text('{"format_version": 1, "created_by": "someone else"}')
    (path / "records.jsonl").write_text("")


def _future_version(path: Path) -> None:
    _dataset(path)
    manifest = path / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"format_version": 1', '"format_version": 2'))


def _foreign_image(path: Path) -> None:
    _dataset(path)
    (path / "images" / "holiday.jpg").write_bytes(b"jpeg")


def _split_plus_folder(path: Path) -> None:
    _dataset(path, "--val-fraction", "0.3")
    _checkpoint(path / "checkpoint-100")


def _split_with_thesis(path: Path) -> None:
    path.mkdir()
    _dataset(path / "train")
    _thesis(path / "val")


@pytest.mark.parametrize(
    "make, why",
    [
        (_thesis, "it has no manifest.json"),
        (_checkpoint, "it has no manifest.json"),
        (_with_notes, "it holds notes.txt, which prep does not write"),
        (_foreign_manifest, "was not written by `vlm-grpo prep`"),
        (_future_version, "format_version 2"),
        (_foreign_image, "images/holiday.jpg is not an image prep stored"),
        (_split_plus_folder, "it has no manifest.json"),
        (_split_with_thesis, "val/ holds something else"),
    ],
    ids=["thesis", "checkpoint", "dataset+notes", "foreign-manifest", "future-version", "foreign-image",
         "split+checkpoint", "split-with-thesis"],
)
def test_prep_overwrite_refuses_what_is_not_a_packed_dataset(tmp_path, capsys, make, why):
    target = tmp_path / "target"
    make(target)
    capsys.readouterr()
    before = snapshot(target)
    line = refused(capsys, _prep_argv(target, "--overwrite"), str(target), why, "choose another --output")
    assert "only replaces a packed dataset" in line
    assert snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"], "a temp folder was left beside the output"


@pytest.mark.parametrize(
    "make",
    [lambda p: p.mkdir(), _dataset, lambda p: _dataset(p, "--val-fraction", "0.3")],
    ids=["empty", "dataset", "split"],
)
def test_prep_overwrite_replaces_a_packed_dataset(tmp_path, make):
    from data_prep import load_packed

    target = tmp_path / "target"
    make(target)
    assert cli_main(_prep_argv(target, "--overwrite", "--seed", "5")) == 0
    assert len(load_packed(target)) == 6 and sorted(p.name for p in tmp_path.iterdir()) == ["target"]
