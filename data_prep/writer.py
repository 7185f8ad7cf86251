"""Atomic writing of packed datasets.

:func:`atomic_output_dir` yields a fresh temporary directory *beside* the output (same
file system, so the final ``rename`` is atomic); the caller fills it; on success it is
renamed into place, on any exception (``KeyboardInterrupt`` included) it is deleted.
With ``overwrite`` an existing output is moved aside only once the new one is complete,
and restored if the final rename fails. Only a packed dataset is ever replaced
(:func:`replace_problem`): an empty folder, one packed dataset, or the ``train``/``val``
pair a split writes; any other folder is refused, naming the entry that is not prep's. :func:`write_records_and_manifest` writes the
two text files of one packed dataset into such a directory.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from data_prep.packed import (
    CONTENT_NAME, FORMAT_VERSION, IMAGES_DIR, MANIFEST_FILE, RECORDS_FILE, PrepError, Record, parse_json,
)

CREATED_BY = "vlm-grpo data_prep"
#: Characters of the output's name kept in its temp and backup siblings' names, so that an
#: output name that fits the file system's limit (255 bytes) also fits with the suffix.
_SIBLING_NAME_CHARS = 40
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def temp_sibling(output: Path, kind: str) -> Path:
    """A fresh hidden name beside ``output`` for a temp (``tmp``) or backup (``old``) directory."""
    return output.parent / f".{output.name[:_SIBLING_NAME_CHARS]}.{kind}-{secrets.token_hex(4)}"


def _is_output_path(path: Path, output: Path) -> bool:
    """Whether ``path`` is ``output``, inside it, one of its parents (being created) or a sibling temp dir."""
    path, output = Path(os.path.abspath(path)), Path(os.path.abspath(output))
    if path == output or path.is_relative_to(output) or path in output.parents:
        return True
    prefix = f".{output.name[:_SIBLING_NAME_CHARS]}."
    return path.is_relative_to(output.parent) and path.relative_to(output.parent).parts[0].startswith(prefix)


def _file_in_the_way(output: Path) -> Path | None:
    for path in [output, *output.parents]:
        try:
            if path.exists() and not path.is_dir():
                return path
        except OSError:
            continue
    return None


def output_error_message(
    err: OSError, output: Path, *, flag: str = "--output", kept: str = "Nothing was written.",
    again: str = "run the same command again",
) -> str:
    """One line saying why writing ``output`` failed with ``err`` and what to do.

    A full disk (or quota), a name too long for the file system, a regular file where a
    folder is needed, no permission; an error about a file that is not part of the output
    (an input that cannot be read) says so instead. ``kept`` says what survived, ``again``
    how to go on once the disk has room.
    """
    name = err.filename if err.filename is not None else output
    reason = err.strerror or str(err)
    kept = f" {kept}" if kept else ""
    if err.errno in _DISK_FULL:
        return (
            f"the disk is full (or the disk quota is used up): {name} could not be written.{kept} "
            f"Free some space, or choose a {flag} on another disk, then {again} [{reason}]"
        )
    if not _is_output_path(Path(os.fsdecode(name)), output):
        return f"cannot read {name} ({reason}); check that it exists and that you may read it"
    if err.errno == errno.ENAMETOOLONG:
        return f"{flag} {output}: a name in it is too long for the file system ({reason}); choose a shorter {flag}"
    blocker = _file_in_the_way(output)
    if err.errno in (errno.ENOTDIR, errno.EEXIST) and blocker is not None:
        return f"{flag} {output} cannot be created: {blocker} is a file, not a folder; choose another {flag}"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{flag} {output}: cannot write {name} ({reason}); choose a {flag} you may write to"
    return f"{flag} {output}: cannot write {name} ({reason}).{kept}"
SPLITS = ("train", "val")


def check_output(output: Path, *, overwrite: bool) -> None:
    """Refuse an output that exists (without ``overwrite``), is not a directory, or is not a packed dataset."""
    if output.is_symlink() or output.exists():
        if not output.is_dir() or output.is_symlink():
            raise PrepError(f"output {output} exists and is not a directory; choose another --output")
        if not overwrite:
            raise PrepError(f"output directory {output} already exists; pass --overwrite to replace it")
        problem = replace_problem(output)
        if problem:
            raise PrepError(
                f"--overwrite only replaces a packed dataset, and {output} is not one: {problem}. Nothing was "
                "changed; choose another --output, or move that folder away yourself if it really is to go"
            )


def replace_problem(output: Path) -> str | None:
    """Why ``--overwrite`` must not replace the existing folder ``output``, or None when it may.

    It may replace an empty folder, a packed dataset of this format (:func:`packed_problem`),
    or a folder holding exactly the ``train`` and ``val`` packed datasets of a split.
    """
    names = sorted(p.name for p in output.iterdir())
    if not names:
        return None
    if MANIFEST_FILE in names or not set(names) <= set(SPLITS):
        return packed_problem(output)
    for name in names:
        problem = packed_problem(output / name)
        if problem:
            return f"{name}/ holds something else ({problem})"
    return None


def packed_problem(directory: Path) -> str | None:
    """Why ``directory`` is not a packed dataset exactly as prep writes it, or None.

    Looked at: ``manifest.json`` (this :data:`FORMAT_VERSION`, ``created_by`` prep), and that
    nothing else is there but ``records.jsonl`` and ``images/`` of content-named files.
    The records and images themselves are not read.
    """
    if directory.is_symlink() or not directory.is_dir():
        return f"{directory.name} is not a folder"
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file() or manifest_path.is_symlink():
        return f"it has no {MANIFEST_FILE}"
    try:
        manifest = parse_json(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"its {MANIFEST_FILE} is unreadable ({exc})"
    if not isinstance(manifest, dict) or manifest.get("created_by") != CREATED_BY:
        return f"its {MANIFEST_FILE} was not written by `vlm-grpo prep`"
    if manifest.get("format_version") != FORMAT_VERSION:
        return f"its {MANIFEST_FILE} has format_version {manifest.get('format_version')!r}, not {FORMAT_VERSION}"
    for path in sorted(directory.iterdir()):
        if path.name == IMAGES_DIR and path.is_dir() and not path.is_symlink():
            for image in sorted(path.iterdir()):
                if not CONTENT_NAME.match(image.name) or image.is_symlink() or not image.is_file():
                    return f"{IMAGES_DIR}/{image.name} is not an image prep stored"
        elif path.name not in (MANIFEST_FILE, RECORDS_FILE) or path.is_symlink() or not path.is_file():
            return f"it holds {path.name}, which prep does not write"
    return None


@contextmanager
def atomic_output_dir(output: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp dir beside ``output`` that becomes ``output`` when the block succeeds.

    Nothing named ``output`` appears unless the block completes; an existing ``output``
    is replaced only with ``overwrite`` and stays intact until the new one is complete.
    """
    output = Path(output).absolute()
    check_output(output, overwrite=overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(output, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        check_output(output, overwrite=overwrite)
        _commit(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _commit(tmp: Path, output: Path) -> None:
    if not output.exists():
        try:
            os.rename(tmp, output)
        except OSError as exc:
            raise PrepError(f"cannot move the new dataset into {output} ({exc}); nothing was written") from None
        return
    old = temp_sibling(output, "old")
    os.rename(output, old)
    try:
        os.rename(tmp, output)
    except BaseException:
        os.rename(old, output)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_records_and_manifest(
    directory: Path,
    records: Iterable[Record],
    *,
    num_images: int,
    sources: list[dict[str, Any]],
    skipped: dict[str, int],
    warnings: dict[str, int],
    settings: dict[str, Any],
    split: str | None = None,
) -> dict[str, Any]:
    """Write ``records.jsonl`` and ``manifest.json`` into ``directory``; return the manifest.

    Records are written one JSON object per line, UTF-8, no NaN/Infinity; the manifest
    carries the sha256 of the exact bytes written.
    """
    digest = hashlib.sha256()
    task_counts: dict[str, int] = {}
    count = 0
    with open(directory / RECORDS_FILE, "wb") as handle:
        for record in records:
            line = (json.dumps(record.to_json(), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
            handle.write(line)
            digest.update(line)
            task_counts[record.task] = task_counts.get(record.task, 0) + 1
            count += 1
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_by": CREATED_BY,
        "split": split,
        "num_records": count,
        "num_images": num_images,
        "task_counts": dict(sorted(task_counts.items())),
        "records_sha256": digest.hexdigest(),
        "sources": sources,
        "skipped": dict(sorted(skipped.items())),
        "warnings": dict(sorted(warnings.items())),
        "settings": settings,
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest
