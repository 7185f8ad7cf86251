"""Run a worker script on two CPU ranks (gloo) with torchrun, on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def run_two_ranks(tmp_path: Path, worker_source: str, *argv: str) -> str:
    """Write ``worker_source`` to a file, run it on 2 ranks with ``argv``, assert both print ``rank N ok``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = tmp_path / "ddp_worker.py"
    script.write_text(worker_source)
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         str(script), *argv],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "rank 0 ok" in run.stdout and "rank 1 ok" in run.stdout, run.stdout
    return run.stdout
