"""Running the real ``vlm-grpo`` command in-process and checking the one-line error contract (issue #16)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from vlm_grpo.cli import main


def vlm_grpo(argv: list[str]) -> tuple[int, str, str]:
    """Run ``vlm-grpo ARGV`` through :func:`vlm_grpo.cli.main`; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse errors
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def one_error(code: int, stderr: str, *names: str) -> str:
    """Assert exit 2, no traceback and a last stderr line ``error: ...`` naming every one of ``names``; return it."""
    assert code == 2, (code, stderr)
    assert "Traceback" not in stderr, stderr
    lines = [line for line in re.split(r"[\r\n]+", stderr) if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    for name in names:
        assert name in lines[0], f"{name!r} not named in: {lines[0]}"
    return lines[0]


def leftovers(parent: Path) -> list[str]:
    """Temp files and folders a failed write may have left in ``parent``."""
    return sorted(p.name for p in parent.iterdir() if ".tmp" in p.name or ".old-" in p.name)
