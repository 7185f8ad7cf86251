"""Slow tier for issue #16: seeded generators for chat-template tokens in text fields, output
paths, and damaged model folders (``tests/reliability_fuzz.py``), each run through the real
``vlm-grpo`` command with the one-line error contract of ``tests/cli_helpers.py``.

``RELIABILITY_FUZZ_N`` (default 1000) inputs for the text fields and output paths, a tenth
of that for model folders (each case loads the tiny model); figures go to
``templates_fuzz.json``, ``outputs_fuzz.json`` and ``model_folders_fuzz.json`` for
``docs/RELIABILITY.md``.
"""

from __future__ import annotations

import os
import random
import shutil
import time
import traceback
from collections import Counter
from pathlib import Path

import pytest
from cli_helpers import one_error, vlm_grpo
from reliability_figures import bounded, write_area
from reliability_fuzz import damage_model_folder, make_output_path, make_special_tokens, write_shared

from data_prep.model_limits import special_token_in
from data_prep.packed import load_packed

HANG_S = 120.0
N = int(os.environ.get("RELIABILITY_FUZZ_N", "1000"))
RERUN = "RELIABILITY_FUZZ_N=1000 .venv/bin/python -m pytest -q -m slow tests/test_reliability_fuzz16.py"


def _run(argv: list[str]) -> tuple[int, str, str]:
    return bounded(lambda: vlm_grpo(argv), HANG_S, f"vlm-grpo {argv[:3]}")


def _tmp_leftovers(path: Path) -> list[str]:
    """Temp siblings a failed write left in the nearest existing folder above ``path``."""
    for parent in path.parents:
        try:
            if parent.is_dir():
                return [p.name for p in parent.iterdir() if ".tmp" in p.name or ".old-" in p.name]
        except OSError:
            continue
    return []


@pytest.mark.slow
def test_fuzz_special_tokens_in_text_fields(tmp_path):
    shared = write_shared(tmp_path / "shared")
    counts, failures, started = Counter(), [], time.perf_counter()
    for i in range(N):
        rng = random.Random(f"tokens-{i}")
        case = tmp_path / f"case{i}"
        argv, names = make_special_tokens(rng, case, shared)
        flags = ["--skip-invalid"] if rng.random() < 0.5 else []
        out = case / "out"
        try:
            code, _, err = _run(["prep", *argv, *flags, "--output", str(out), "--quiet"])
            if code == 0:
                ds = load_packed(out)
                for record in ds:
                    assert not special_token_in(record.problem) and not special_token_in(str(record.solution))
                counts["packed"] += 1
                counts["records kept"] += len(ds)
                counts["special_token skips"] += ds.manifest["skipped"].get("special_token", 0)
            else:
                line = one_error(code, err)
                assert any(name in line for name in names) or "no records to write" in line, line
                assert not out.exists()
                counts["error"] += 1
        except Exception:  # noqa: BLE001 - a traceback, a token that got through, an unclear message
            failures.append(f"tokens #{i}: {traceback.format_exc(limit=-3)}")
            counts["broken"] += 1
        shutil.rmtree(case, ignore_errors=True)
    write_area("templates_fuzz", "Chat-template tokens in text fields: `vlm-grpo prep`", [{
        "case": "questions/answers holding special tokens or near misses (vlm-r1, rec-json, Parquet)", "tried": N,
        "outcome": f"{counts['error']} clean errors, {counts['packed']} packed, {counts['broken']} broken",
        "special_token skips": counts["special_token skips"], "records kept": counts["records kept"],
    }], wall_s=time.perf_counter() - started, command=RERUN,
        notes="Input *i* comes from `random.Random('tokens-i')`; every packed dataset was re-read and no kept "
              "record holds a token of `data_prep.model_limits.TEMPLATE_SPECIAL_TOKENS`.")
    assert not failures, f"{len(failures)} broken; first ones:\n" + "\n".join(failures[:5])


@pytest.mark.slow
def test_fuzz_output_paths(tmp_path):
    counts, failures, started = Counter(), [], time.perf_counter()
    for i in range(N):
        rng = random.Random(f"outputs-{i}")
        case = tmp_path / f"case{i}"
        out = make_output_path(rng, case)
        command = "tiny" if i % 25 == 0 else "prep"  # tiny takes ~2 s a build
        argv = ["tiny", "--output", str(out), "--overwrite"] if command == "tiny" else \
            ["prep", "--format", "synthetic", "--task", "rec", "--num", "2", "--quiet", "--output", str(out)]
        try:
            code, _, err = _run(argv)
            if code == 0:
                if command == "prep":
                    load_packed(out)
                counts["written"] += 1
            else:
                line = one_error(code, err)
                assert "output" in line, f"the error does not name the output: {line}"
                counts["error"] += 1
            assert _tmp_leftovers(out) == [], "a temp dir was left behind"
            assert (case / "FILE").read_text() == "a regular file\n"
        except Exception:  # noqa: BLE001
            failures.append(f"outputs #{i} ({command} {out}): {traceback.format_exc(limit=-3)}")
            counts["broken"] += 1
        shutil.rmtree(case, ignore_errors=True)
    write_area("outputs_fuzz", "Output paths: `vlm-grpo prep` and `tiny`", [{
        "case": "1-4 segments: long names (200-300 chars), a regular file or a link to one, a symlink loop, "
                "odd characters", "tried": N,
        "outcome": f"{counts['error']} clean errors, {counts['written']} written, {counts['broken']} broken",
    }], wall_s=time.perf_counter() - started, command=RERUN,
        notes="Input *i* comes from `random.Random('outputs-i')`; every 25th runs `tiny`, the others `prep`.")
    assert not failures, f"{len(failures)} broken; first ones:\n" + "\n".join(failures[:5])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_fuzz_model_folders(tiny_dir, rec_data, tmp_path):
    n = max(1, N // 10)
    counts, failures, started, kinds = Counter(), [], time.perf_counter(), Counter()
    for i in range(n):
        rng = random.Random(f"models-{i}")
        model = tmp_path / f"model{i}"
        shutil.copytree(tiny_dir, model)
        done = damage_model_folder(rng, model)
        kinds.update(d.split()[0] for d in done)
        out = tmp_path / f"eval{i}"
        try:
            code, _, err = _run(["eval", "--model", str(model), "--data", str(rec_data), "--output", str(out),
                                 "--max-samples", "2", "--max-new-tokens", "4"])
            if code == 0:
                counts["evaluated"] += 1
            else:
                line = one_error(code, err)
                assert str(model) in line, f"the error does not name the model folder: {line}"
                assert not (out / "metrics.json").exists()
                counts["error"] += 1
        except Exception:  # noqa: BLE001
            failures.append(f"models #{i} ({', '.join(done)}): {traceback.format_exc(limit=-3)}")
            counts["broken"] += 1
        shutil.rmtree(model, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    write_area("model_folders_fuzz", "Damaged model folders: `vlm-grpo eval`", [{
        "case": "1-3 damages to the tiny checkpoint: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())),
        "tried": n,
        "outcome": f"{counts['error']} clean errors, {counts['evaluated']} evaluated, {counts['broken']} broken",
    }], wall_s=time.perf_counter() - started, command=RERUN,
        notes="Case *i* comes from `random.Random('models-i')`. An error must name the model folder; "
              "*evaluated* means the damage did not matter (a byte of tensor data, an unused file).")
    assert not failures, f"{len(failures)} broken; first ones:\n" + "\n".join(failures[:5])
