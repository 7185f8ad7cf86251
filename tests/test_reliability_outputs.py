"""Raw tracebacks where a one-line ``error:`` is promised (issue #16), through the real commands.

- a full disk (ENOSPC) while ``prep`` or ``eval`` writes, simulated by wrapping the write;
- output paths that cannot be made (under a regular file, a name too long for the file
  system) for ``prep``, ``eval``, ``tiny``, ``train``, ``sft`` and ``demo``;
- model folders with a missing or broken file: refused naming the file, never a silent
  one-token vocabulary and a score of 0.0;
- an eval run whose every sample errored: exit 2, no score;
- every size a user can type has a bound whose error says why.

The contract (:func:`cli_helpers.one_error`): exit 2, exactly one ``error:`` line that names
what is wrong, no traceback, and nothing half-written left behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from cli_helpers import leftovers, one_error, vlm_grpo

import data_prep.images
import data_prep.writer
import vlm_grpo.eval_run as eval_run
import vlm_grpo.evaluate as evaluate

PREP = ["prep", "--format", "synthetic", "--task", "rec", "--num", "6", "--quiet"]


def _full(filename) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))


class _FullFile:
    """A real file whose writes fail with ENOSPC once ``budget`` bytes are written."""

    def __init__(self, handle, budget: int) -> None:
        self.handle, self.budget = handle, budget

    def write(self, data):
        if len(data) > self.budget:
            self.handle.write(data[: self.budget])
            raise _full(self.handle.name)
        self.budget -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def _full_open(budget: int, match: str = ""):
    def fake_open(file, mode="r", *args, **kwargs):
        handle = open(file, mode, *args, **kwargs)
        return _FullFile(handle, budget) if ("w" in mode or "a" in mode) and match in str(file) else handle

    return fake_open


# --- a full disk --------------------------------------------------------------------------


def _image_write_fails(monkeypatch):
    def write_once(path, data):
        Path(path).write_bytes(data[:10])  # half-written, inside the temp dir
        raise _full(path)

    monkeypatch.setattr(data_prep.images, "_write_once", write_once)


def _manifest_write_fails(monkeypatch):
    real = Path.write_text

    def write_text(self, text, *args, **kwargs):
        if self.name == "manifest.json":
            raise _full(self)
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)


PREP_FULL = {
    "an image": (_image_write_fails, "images/"),
    "records.jsonl": (lambda mp: mp.setattr(data_prep.writer, "open", _full_open(100), raising=False), "records.jsonl"),
    "manifest.json": (_manifest_write_fails, "manifest.json"),
}


@pytest.mark.parametrize("overwrite", [False, True], ids=["new output", "--overwrite of an existing one"])
@pytest.mark.parametrize("where", list(PREP_FULL))
def test_prep_on_a_full_disk(tmp_path, monkeypatch, where, overwrite):
    out = tmp_path / "ds"
    if overwrite:
        assert vlm_grpo([*PREP, "--output", str(out)])[0] == 0
        before = sorted(p.name for p in out.rglob("*"))
    patch, named = PREP_FULL[where]
    patch(monkeypatch)
    code, _, err = vlm_grpo([*PREP, "--output", str(out), *(["--overwrite"] if overwrite else [])])
    one_error(code, err, "the disk is full", named, "Nothing was written", "--output")
    assert leftovers(tmp_path) == []
    if overwrite:
        assert sorted(p.name for p in out.rglob("*")) == before  # the old dataset is intact
    else:
        assert not out.exists()


def _fake_generator(text="<answer>[1, 1, 9, 9]</answer>", calls=None):
    def generate(model, processor, batch, settings):
        if calls is not None:
            calls.extend(row["id"] for row in batch)
        return [text] * len(batch)

    return generate


def test_eval_on_a_full_disk_keeps_what_was_done_and_resumes(tiny_dir, rec_data, tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(evaluate, "_generate_batch", _fake_generator(calls=calls))
    real = eval_run.atomic_write_text

    def atomic_write_text(path, text):
        if path.name == "predictions.jsonl":
            raise _full(path)
        return real(path, text)

    monkeypatch.setattr(eval_run, "atomic_write_text", atomic_write_text)
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(tiny_dir), "--data", str(rec_data), "--output", str(out), "--max-samples", "6",
            "--batch-size", "3"]
    code, _, err = vlm_grpo(argv)
    one_error(code, err, "the disk is full", "predictions.jsonl", "predictions.partial", "--resume")
    assert not (out / "metrics.json").exists() and (out / "predictions.partial.rank0.jsonl").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp file left
    monkeypatch.setattr(eval_run, "atomic_write_text", real)
    done = len(calls)
    code, _, err = vlm_grpo([*argv, "--resume"])
    assert code == 0, err
    assert len(calls) == done  # nothing generated again
    assert json.loads((out / "metrics.json").read_text())["metrics"]["count"] == 6


def test_eval_on_a_disk_that_fills_while_predictions_stream(tiny_dir, rec_data, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "_generate_batch", _fake_generator())
    monkeypatch.setattr(eval_run, "open", _full_open(300, "partial"), raising=False)
    out = tmp_path / "eval"
    code, _, err = vlm_grpo(["eval", "--model", str(tiny_dir), "--data", str(rec_data), "--output", str(out),
                             "--max-samples", "6"])
    one_error(code, err, "the disk is full", "predictions.partial.rank0.jsonl", "--resume")
    assert not (out / "metrics.json").exists()


# --- output paths that cannot be made -----------------------------------------------------


def _argv(command: str, out: Path, tiny_dir: Path, rec_data: Path) -> tuple[list[str], str]:
    """The command line writing to ``out``, and how the error names the output option."""
    if command == "prep":
        return [*PREP, "--output", str(out)], "--output"
    if command == "eval":
        return ["eval", "--model", str(tiny_dir), "--data", str(rec_data), "--output", str(out)], "--output"
    if command in ("tiny", "demo"):
        return [command, "--output", str(out), *(["--quick"] if command == "demo" else [])], "--output"
    return [command, "--model_name_or_path", str(tiny_dir), "--train_data", str(rec_data), "--output_dir", str(out),
            "--use_cpu", "true", "--report_to", "none", "--max_steps", "1"], "output_dir"


PATHS = {
    "under a regular file": (lambda tmp: tmp / "afile" / "out", "is a file, not a folder"),
    "deep under a regular file": (lambda tmp: tmp / "afile" / "a" / "b", "is a file, not a folder"),
    "a name too long": (lambda tmp: tmp / ("x" * 300), "too long"),
    "a folder name too long": (lambda tmp: tmp / ("y" * 300) / "out", "too long"),
}
COMMANDS = ["prep", "eval", "tiny", "train", "sft", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("path", list(PATHS))
def test_output_paths_that_cannot_be_made(tiny_dir, rec_data, tmp_path, command, path):
    (tmp_path / "afile").write_text("not a folder\n")
    make, says = PATHS[path]
    argv, flag = _argv(command, make(tmp_path), tiny_dir, rec_data)
    code, _, err = vlm_grpo(argv)
    one_error(code, err, flag, says)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert (tmp_path / "afile").read_text() == "not a folder\n"


def test_a_long_output_name_that_fits_the_file_system_works(tmp_path):
    out = tmp_path / ("z" * 250)  # its temp sibling must fit too
    code, _, err = vlm_grpo([*PREP, "--output", str(out)])
    assert code == 0, err
    code, _, err = vlm_grpo(["tiny", "--output", str(tmp_path / ("t" * 250))])
    assert code == 0, err


def test_tiny_on_a_full_disk_leaves_no_half_written_checkpoint(tmp_path, monkeypatch):
    from safetensors import torch as safetensors_torch

    def save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)
        raise _full(filename)

    monkeypatch.setattr(safetensors_torch, "save_file", save_file)
    import transformers.modeling_utils as modeling_utils

    monkeypatch.setattr(modeling_utils, "safe_save_file", save_file, raising=False)
    code, _, err = vlm_grpo(["tiny", "--output", str(tmp_path / "tiny")])
    one_error(code, err, "the disk is full", "Nothing was written")
    assert list(tmp_path.iterdir()) == []


# --- model folders with a missing or broken file -----------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


MODEL_FAULTS = {
    # name: (what is done to a copy of the tiny checkpoint, what the error names)
    "no tokenizer files": (lambda d: [(d / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")],
                           "tokenizer.json is missing"),
    "no tokenizer.json": (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json is missing"),
    "tokenizer.json not JSON": (lambda d: (d / "tokenizer.json").write_text("{oops"), "tokenizer.json is damaged"),
    "tokenizer.json empty object": (lambda d: (d / "tokenizer.json").write_text("{}"), "could not load the processor"),
    "tokenizer.json a folder": (lambda d: ((d / "tokenizer.json").unlink(), (d / "tokenizer.json").mkdir()),
                                "tokenizer.json is not a regular file"),
    "tokenizer without the special tokens": (
        lambda d: (d / "tokenizer.json").write_text(json.dumps({**json.loads((d / "tokenizer.json").read_text()),
                                                                "added_tokens": []})),
        "does not know the chat template's special tokens"),
    "no image processor config": (
        lambda d: [(d / n).unlink() for n in ("preprocessor_config.json", "processor_config.json")],
        "preprocessor_config.json is missing"),
    "preprocessor_config.json not JSON": (lambda d: (d / "preprocessor_config.json").write_text("{"),
                                          "preprocessor_config.json is damaged"),
    "no chat template": (lambda d: (d / "chat_template.jinja").unlink(), "chat_template.jinja is missing"),
    "chat template does not compile": (lambda d: (d / "chat_template.jinja").write_text("{% for %}"),
                                       "chat_template.jinja) does not render"),
    "chat template without the image": (lambda d: (d / "chat_template.jinja").write_text("{{ messages[0].role }}"),
                                        "puts no <|image_pad|>"),
    "config.json not JSON": (lambda d: (d / "config.json").write_text("{"), "config.json is damaged"),
    "config.json a list": (lambda d: (d / "config.json").write_text("[]"), "config.json is damaged"),
    "no weights": (lambda d: (d / "model.safetensors").unlink(), "model.safetensors is missing"),
    "truncated weights": (lambda d: _truncate(d / "model.safetensors"), "model.safetensors is truncated or corrupt"),
    "empty weights": (lambda d: (d / "model.safetensors").write_bytes(b""), "model.safetensors is truncated or corrupt"),
    "generation_config.json not JSON": (lambda d: (d / "generation_config.json").write_text("nan"),
                                        "generation_config.json is damaged"),
}


@pytest.mark.parametrize("fault", list(MODEL_FAULTS))
def test_model_folders_with_a_missing_or_broken_file(tiny_dir, rec_data, tmp_path, fault):
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    damage, says = MODEL_FAULTS[fault]
    damage(model)
    out = tmp_path / "eval"
    code, _, err = vlm_grpo(["eval", "--model", str(model), "--data", str(rec_data), "--output", str(out),
                             "--max-samples", "2"])
    one_error(code, err, str(model), says)
    assert not out.exists()


def test_train_refuses_a_model_without_tokenizer_files(tiny_dir, rec_data, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    (model / "tokenizer.json").unlink()
    argv, _ = _argv("train", tmp_path / "run", model, rec_data)
    code, _, err = vlm_grpo(argv)
    one_error(code, err, "tokenizer.json is missing")


# --- an eval whose every sample errored ---------------------------------------------------


def test_an_eval_whose_every_sample_failed_has_no_score(tiny_dir, rec_data, tmp_path, monkeypatch):
    def broken(model, processor, batch, settings):
        raise RuntimeError("CUDA error: out of memory (simulated)")

    monkeypatch.setattr(evaluate, "_generate_batch", broken)
    out = tmp_path / "eval"
    code, stdout, err = vlm_grpo(["eval", "--model", str(tiny_dir), "--data", str(rec_data), "--output", str(out),
                                  "--max-samples", "4"])
    one_error(code, err, str(rec_data), "all 4 samples failed", "no score", "out of memory (simulated)")
    assert "accuracy" not in stdout
    assert not (out / "metrics.json").exists() and not list(out.glob("predictions*"))


def test_an_eval_where_some_samples_failed_still_scores(tiny_dir, rec_data, tmp_path, monkeypatch):
    real = _fake_generator()

    def flaky(model, processor, batch, settings):
        if any(row["id"].endswith("000001") for row in batch):
            raise RuntimeError("simulated")
        return real(model, processor, batch, settings)

    monkeypatch.setattr(evaluate, "_generate_batch", flaky)
    code, _, err = vlm_grpo(["eval", "--model", str(tiny_dir), "--data", str(rec_data), "--output",
                             str(tmp_path / "eval"), "--max-samples", "4"])
    assert code == 0, err


# --- unbounded sizes ----------------------------------------------------------------------

SIZES = [
    # command line, what the error names, why
    ([*PREP, "--image-size", "60000x60000"], "image_size must be at most 4096x4096", "GiB"),
    ([*PREP, "--image-size", "100000x16"], "image_size must be at most", "drawn in memory"),
    ([*PREP[:-3], "--num", str(10**8), "--quiet"], "--num must be 1..10,000,000", "in memory"),
    ([*PREP[:-3], "--num", "0", "--quiet"], "--num must be 1..", "in memory"),
    ([*PREP, "--num-shapes", "1-100000"], "num_shapes must be at most 100", "per image"),
    ([*PREP, "--max-pixels", "10"], "--max-pixels must be at least 784", "one image token"),
    ([*PREP, "--workers", "100000"], "--workers must be 0..64", "memory"),
    ([*PREP, "--box-tolerance", "nan"], "--box-tolerance must be a number >= 0", ""),
    (["eval", "--batch-size", "0"], "--batch-size must be 1..4096", "generated at once"),
    (["eval", "--batch-size", "1000000"], "--batch-size must be 1..4096", "generated at once"),
    (["eval", "--max-new-tokens", "10000000"], "--max-new-tokens must be 1..32768", "context"),
    (["eval", "--max-samples", "0"], "--max-samples must be at least 1", ""),
    (["eval", "--max-samples", "-3"], "--max-samples must be at least 1", ""),
    (["eval", "--min-pixels", "0"], "--min-pixels 0 is out of range", "0x0"),
    (["eval", "--max-pixels", str(10**12)], "--max-pixels 1000000000000 is out of range", "context"),
    (["eval", "--sample", "--temperature", "0"], "--temperature must be a positive number", ""),
    (["eval", "--sample", "--temperature", "nan"], "--temperature must be a positive number", ""),
    (["eval", "--sample", "--seed", str(2**64)], "--seed must be 0..2**63-1", "64-bit"),
    (["tiny", "--seed", "-1"], "seed must be 0..2**63-1", "64-bit"),
    (["eval", "--task-templates", "{not json"], "--task-templates is not valid JSON", ""),
    (["eval", "--task-templates", '["x"]'], "--task-templates must be a JSON object", ""),
    (["tiny", "--text-hidden", "1000000"], "text_hidden must be 16..4096", "in memory"),
    (["tiny", "--text-layers", "0"], "text_layers must be 1..64", ""),
    (["tiny", "--vision-depth", "100000"], "vision_depth must be 1..64", ""),
    (["tiny", "--min-pixels", "0"], "min_pixels must be 784..", "image token"),
    (["tiny", "--max-pixels", str(10**12)], "max_pixels must be 784..12845056", ""),
]


@pytest.mark.parametrize("argv,names,why", SIZES, ids=[" ".join(a[:1] + a[-2:]) for a, _, _ in SIZES])
def test_every_size_has_a_bound_that_says_why(tiny_dir, rec_data, tmp_path, argv, names, why):
    argv = list(argv)
    if argv[0] == "eval":
        argv += ["--model", str(tiny_dir), "--data", str(rec_data)]
    argv += ["--output", str(tmp_path / "out")] if "--output" not in argv else []
    code, _, err = vlm_grpo(argv)
    one_error(code, err, names, why)
    assert not (tmp_path / "out").exists()
