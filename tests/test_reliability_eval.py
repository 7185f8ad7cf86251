"""Evaluation under faults (issue #10): a sample that fails is recorded and the run goes on;
an interrupted run resumes without recomputing finished samples.

`tests/test_eval.py` already covers a batch whose generation raises and a resume from a
hand-written partial file. Here: completions that do not parse (garbage, megabytes,
interleaved tags), an image that cannot be decoded (a pickle payload, never unpickled), a
run interrupted for real (Ctrl-C in the middle of the generation loop) and resumed, with
the generation calls counted so that a finished sample provably is not generated again.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image
from prep_helpers import rec_record, write_dataset

import vlm_grpo.evaluate as evaluate
from vlm_grpo.eval_run import EvalJob, run_eval
from vlm_grpo.evaluate import EvalSettings

SETTINGS = EvalSettings(batch_size=4, max_new_tokens=4)
N = 12  # the first 12 of the 24 records: three batches


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


class CountingGenerator:
    """Wraps the real batch generator: records the ids it generated for, and can fail on cue."""

    def __init__(self, real, *, replace=None, interrupt_after=None):
        self.real, self.replace, self.interrupt_after = real, replace or {}, interrupt_after
        self.generated: list[str] = []

    def __call__(self, model, processor, batch, settings):
        if self.interrupt_after is not None and len(self.generated) >= self.interrupt_after:
            raise KeyboardInterrupt  # Ctrl-C while generating
        texts = self.real(model, processor, batch, settings)
        self.generated += [row["id"] for row in batch]
        return [self.replace.get(row["id"], text) for row, text in zip(batch, texts)]


GARBAGE = {
    "synthetic-rec-s0-000001": "<answer>[NaN, 1e999, 5, 5]</answer>",
    "synthetic-rec-s0-000002": "</answer><answer>" * 100_000,
    "synthetic-rec-s0-000004": "\x00\ufffd" + "{" * 1_000_000,  # decode() never yields lone surrogates
}


def test_completions_that_do_not_parse_are_recorded_as_failures(tiny_dir, rec_data, tmp_path, monkeypatch):
    generator = CountingGenerator(evaluate._generate_batch, replace=GARBAGE)
    monkeypatch.setattr(evaluate, "_generate_batch", generator)
    job = EvalJob(str(tiny_dir), [str(rec_data)], tmp_path / "eval", max_samples=N, settings=SETTINGS)
    result = next(iter(run_eval(job).values()))
    predictions = {p["id"]: p for p in _read_jsonl(tmp_path / "eval" / "predictions.jsonl")}
    assert len(predictions) == N
    for rid in GARBAGE:
        p = predictions[rid]
        assert (p["parse_ok"], p["score"], p["correct"], p["error"]) == (False, 0.0, False, None)
    assert result["metrics"]["parse_failure_rate"] >= len(GARBAGE) / N
    assert "report.html" in {p.name for p in (tmp_path / "eval").iterdir()}


def test_an_undecodable_image_is_recorded_and_the_run_goes_on(tiny_dir, tmp_path):
    records = [rec_record(f"r{i}", image=f"images/{i}.png") for i in range(3)]
    ds = write_dataset(tmp_path / "ds", records, {f"images/{i}.png": Image.new("RGB", (32, 24)) for i in (0, 2)})
    (ds / "images" / "1.png").write_bytes(b"\x80\x04\x95 a pickle, not an image")
    result = next(iter(run_eval(EvalJob(str(tiny_dir), [str(ds)], tmp_path / "eval", settings=SETTINGS)).values()))
    predictions = {p["id"]: p for p in _read_jsonl(tmp_path / "eval" / "predictions.jsonl")}
    assert predictions["r1"]["error"] and "cannot be decoded as PNG or JPEG" in predictions["r1"]["error"]
    assert predictions["r0"]["error"] is None and predictions["r2"]["error"] is None
    assert result["metrics"]["errors"] == 1 and result["metrics"]["count"] == 3


def test_an_interrupted_eval_resumes_without_recomputing(tiny_dir, rec_data, tmp_path, monkeypatch):
    real = evaluate._generate_batch
    full_gen = CountingGenerator(real)
    monkeypatch.setattr(evaluate, "_generate_batch", full_gen)
    run_eval(EvalJob(str(tiny_dir), [str(rec_data)], tmp_path / "full", max_samples=N, settings=SETTINGS))
    reference = _read_jsonl(tmp_path / "full" / "predictions.jsonl")

    out = tmp_path / "eval"
    first = CountingGenerator(real, interrupt_after=8)  # two batches of 4, then Ctrl-C
    monkeypatch.setattr(evaluate, "_generate_batch", first)
    with pytest.raises(KeyboardInterrupt):
        run_eval(EvalJob(str(tiny_dir), [str(rec_data)], out, max_samples=N, settings=SETTINGS))
    partial = _read_jsonl(out / "predictions.partial.rank0.jsonl")
    assert sorted(p["id"] for p in partial) == sorted(first.generated) and len(partial) == 8
    assert not (out / "predictions.jsonl").exists()

    second = CountingGenerator(real)
    monkeypatch.setattr(evaluate, "_generate_batch", second)
    run_eval(EvalJob(str(tiny_dir), [str(rec_data)], out, max_samples=N, resume=True, settings=SETTINGS))
    assert set(second.generated).isdisjoint(first.generated)  # nothing finished was generated again
    assert sorted(first.generated + second.generated) == sorted(full_gen.generated)
    assert _read_jsonl(out / "predictions.jsonl") == reference
