"""A Hugging Face hub cache laid out as a download leaves it, holding a local checkpoint under a hub id.

``models--<org>--<name>/blobs/<sha256>`` holds each file once, ``snapshots/<commit>/<file>`` links to it, and
``refs/main`` names the commit: what ``huggingface_hub`` reads with ``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def add_to_hub_cache(cache: Path, repo_id: str, checkpoint: Path) -> Path:
    """Put ``checkpoint``'s files in ``cache`` as the hub repo ``repo_id``; returns the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    blobs, snapshot = repo / "blobs", repo / "snapshots" / COMMIT
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in sorted(checkpoint.iterdir()):
        if not path.is_file():
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copyfile(path, blobs / digest)
        link = snapshot / path.name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(os.path.relpath(blobs / digest, snapshot), link)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def offline_env(cache: Path) -> dict[str, str]:
    """The environment of a process that may read ``cache`` and nothing else."""
    return {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
