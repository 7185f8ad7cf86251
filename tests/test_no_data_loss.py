"""Nothing lost, nothing mixed: the commands refuse, with one `error:` line, to destroy or merge what is not theirs.

Each table drives the real command (``vlm_grpo.cli.main``) and checks: exit 2, exactly one
``error:`` line that names the file or folder and says what to do, no traceback, and the
folder that was refused byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import re
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
    lines = [line for line in re.split(r"[\r\n]", err) if line.startswith("error:")]  # progress bars use \r
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


# ---------------------------------------------------------------------------------------------
# A packed image swapped or edited after prep is an error naming the record


def _copy_dataset(rec_data: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(rec_data, target)
    return target


def _first_image(ds: Path) -> tuple[str, Path]:
    from data_prep import load_packed

    record = load_packed(ds).records[0]
    return record.id, ds / record.images[0]


def _swap_same_size(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        size = image.size
    Image.new("RGB", size, (1, 2, 3)).save(path, format="PNG")


def _swap_other_size(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (64, 40), (1, 2, 3)).save(path, format="PNG")


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "tamper, why",
    [
        (_swap_same_size, "does not match its content hash"),
        (_swap_other_size, "does not match its content hash"),
        (_flip_a_byte, "does not match its content hash"),
    ],
    ids=["same-size", "other-size", "byte-flipped"],
)
def test_eval_stops_on_a_packed_image_changed_after_prep(tiny_dir, rec_data, tmp_path, capsys, tamper, why):
    ds = _copy_dataset(rec_data, tmp_path / "rec")
    rid, image = _first_image(ds)
    tamper(image)
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(tiny_dir), "--data", str(ds), "--output", str(out), "--max-new-tokens", "2"]
    refused(capsys, argv, f"record {rid!r}", image.name, why, "re-run `vlm-grpo prep`")
    assert not (out / "metrics.json").exists() and not (out / "predictions.jsonl").exists()


def test_a_hand_named_image_of_another_size_is_refused_by_its_size(tiny_dir, tmp_path, capsys):
    from PIL import Image
    from prep_helpers import rec_record, write_dataset

    ds = write_dataset(tmp_path / "ds", [rec_record("r1", image="images/a.png", size=(32, 24))],
                       {"images/a.png": Image.new("RGB", (32, 24))})
    Image.new("RGB", (48, 24)).save(ds / "images" / "a.png")  # swapped: the box was made for 32x24
    argv = ["eval", "--model", str(tiny_dir), "--data", str(ds), "--output", str(tmp_path / "eval")]
    refused(capsys, argv, "record 'r1'", "images/a.png is 48x24 but the record says 32x24", "re-run `vlm-grpo prep`")


def test_train_stops_on_a_packed_image_changed_after_prep(tiny_dir, rec_data, tmp_path, capsys):
    ds = _copy_dataset(rec_data, tmp_path / "rec")
    for path in (ds / "images").iterdir():  # every image, so the first batch meets one
        _swap_other_size(path)
    argv = ["train", "--config", str(Path(__file__).parents[1] / "scripts/configs/tiny_cpu.yaml"),
            "--model_name_or_path", str(tiny_dir), "--train_data", str(ds), "--output_dir", str(tmp_path / "run"),
            "--max_steps", "1", "--report_to", "none", "--save_strategy", "no"]
    refused(capsys, argv, str(ds), "does not match its content hash", "re-run `vlm-grpo prep`")
    assert not (tmp_path / "run" / "model.safetensors").exists()


# ---------------------------------------------------------------------------------------------
# eval --resume merges only predictions of the same data, model and settings


EVAL = ["--max-samples", "8", "--batch-size", "4", "--max-new-tokens", "3"]


@pytest.fixture(scope="module")
def interrupted_eval(tiny_dir, rec_data, tmp_path_factory):
    """An eval output as Ctrl-C leaves it: ``eval_key.json`` and 4 finished predictions in a partial file."""
    out = tmp_path_factory.mktemp("eval") / "out"
    assert cli_main(["eval", "--model", str(tiny_dir), "--data", str(rec_data), "--output", str(out), *EVAL]) == 0
    lines = (out / "predictions.jsonl").read_text().splitlines()
    (out / "predictions.partial.rank0.jsonl").write_text("\n".join(lines[:4]) + "\n")
    for name in ("predictions.jsonl", "metrics.json", "report.html"):
        (out / name).unlink()
    return out, lines


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("other") / "model"
    assert cli_main(["tiny", "--output", str(path), "--seed", "7"]) == 0
    return path


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _retrained_in_place(ctx) -> list[str]:
    """The partial results were made from a model folder that was then trained again (same path, new weights)."""
    import json

    model = _copy(ctx["tiny_dir"], ctx["tmp_path"] / "model")
    key = json.loads((ctx["out"] / "eval_key.json").read_text())
    (ctx["out"] / "eval_key.json").write_text(json.dumps({**key, "model": str(model)}))
    (model / "model.safetensors").write_bytes((ctx["other_model"] / "model.safetensors").read_bytes())
    return ["--model", str(model)]


@pytest.mark.parametrize(
    "change, why",
    [
        (lambda ctx: ["--data", str(ctx["math_data"])], "the data (records_sha256"),
        (lambda ctx: ["--model", str(ctx["other_model"])], "the model ("),
        (_retrained_in_place, "with other weights"),
        (lambda ctx: ["--max-new-tokens", "5"], "max_new_tokens (3, now 5)"),
        (lambda ctx: ["--sample"], "do_sample (False, now True)"),
        (lambda ctx: ["--max-pixels", "6272"], "max_pixels ("),
        (lambda ctx: ["--box-frame", "norm1000"], "box_frame ('model_pixels', now 'norm1000')"),
        (lambda ctx: ["--task-templates", '{"rec": "Find {question}. Answer in <answer></answer>."}'],
         "templates_sha256"),
    ],
    ids=["data", "model", "retrained-in-place", "max-new-tokens", "sampling", "max-pixels", "box-frame", "templates"],
)
def test_eval_resume_refuses_predictions_of_other_inputs(
    tiny_dir, rec_data, math_data, other_model, interrupted_eval, tmp_path, capsys, change, why
):
    out = _copy(interrupted_eval[0], tmp_path / "out")
    ctx = {"tiny_dir": tiny_dir, "math_data": math_data, "other_model": other_model, "tmp_path": tmp_path, "out": out}
    argv = {"--model": str(tiny_dir), "--data": str(rec_data)}
    extra = change(ctx)
    while extra and extra[0] in argv:  # a changed --model / --data replaces the original
        argv[extra[0]] = extra[1]
        extra = extra[2:]
    before = snapshot(out)
    command = ["eval", *[v for kv in argv.items() for v in kv], "--output", str(out), *EVAL, *extra, "--resume"]
    refused(capsys, command, str(out), "4 finished predictions", why, "same data, model and settings")
    assert snapshot(out) == before


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda out: (out / "eval_key.json").unlink(), "no readable eval_key.json"),
        (lambda out: (out / "eval_key.json").write_text("{torn"), "no readable eval_key.json"),
    ],
    ids=["no-key", "torn-key"],
)
def test_eval_resume_without_a_key_refuses(tiny_dir, rec_data, interrupted_eval, tmp_path, capsys, damage, why):
    out = _copy(interrupted_eval[0], tmp_path / "out")
    damage(out)
    before = snapshot(out)
    argv = ["eval", "--model", str(tiny_dir), "--data", str(rec_data), "--output", str(out), *EVAL, "--resume"]
    refused(capsys, argv, str(out), why, "delete those files to start over")
    assert snapshot(out) == before


def test_eval_without_resume_keeps_finished_predictions(tiny_dir, rec_data, interrupted_eval, tmp_path, capsys):
    out = _copy(interrupted_eval[0], tmp_path / "out")
    before = snapshot(out)
    argv = ["eval", "--model", str(tiny_dir), "--data", str(rec_data), "--output", str(out), *EVAL]
    refused(capsys, argv, str(out), "4 finished predictions of an interrupted eval", "pass --resume")
    assert snapshot(out) == before


def test_eval_resume_with_a_new_batch_size_and_fewer_samples_keeps_only_the_selection(
    tiny_dir, rec_data, interrupted_eval, tmp_path
):
    import json

    out = _copy(interrupted_eval[0], tmp_path / "out")
    argv = ["eval", "--model", str(tiny_dir), "--data", str(rec_data), "--output", str(out),
            "--max-new-tokens", "3", "--batch-size", "2", "--max-samples", "6", "--resume"]
    assert cli_main(argv) == 0
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["index"] for p in predictions] == list(range(6))
    assert json.loads((out / "metrics.json").read_text())["metrics"]["count"] == 6
    full = [json.loads(line) for line in interrupted_eval[1]]
    assert [p["completion"] for p in predictions] == [p["completion"] for p in full[:6]]


# ---------------------------------------------------------------------------------------------
# The final model is saved atomically; a truncated or corrupt safetensors is a clean error

REPO = Path(__file__).resolve().parents[1]
COMMON = ["--max_steps", "1", "--report_to", "none", "--per_device_train_batch_size", "4", "--save_strategy", "no"]
KEYS = {
    "train": ["--config", str(REPO / "scripts/configs/tiny_cpu.yaml"), *COMMON, "--num_generations", "4",
              "--max_completion_length", "8"],
    "sft": [*COMMON, "--use_cpu", "true"],
}


def _interrupt_the_weights_write(monkeypatch):
    """The final save's safetensors write reaches half the file, then the run is interrupted (Ctrl-C or a kill)."""
    import transformers.modeling_utils as modeling_utils

    real = modeling_utils.safe_save_file

    def torn(tensors, filename, *args, **kwargs):
        real(tensors, filename, *args, **kwargs)
        with open(filename, "r+b") as handle:
            handle.truncate(Path(filename).stat().st_size // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(modeling_utils, "safe_save_file", torn)


@pytest.mark.parametrize("command", ["train", "sft"])
def test_a_final_save_cut_short_leaves_the_previous_model_whole(tiny_dir, rec_data, tmp_path, monkeypatch, command):
    from vlm_grpo.files import safetensors_problem

    out = _copy(tiny_dir, tmp_path / "run")  # the model a previous run saved here
    before, inode = snapshot(out), (out / "model.safetensors").stat().st_ino
    _interrupt_the_weights_write(monkeypatch)
    argv = [command, *KEYS[command], "--model_name_or_path", str(tiny_dir), "--train_data", str(rec_data), "--output_dir", str(out)]
    assert cli_main(argv) == 130
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k in before} == before, "a file of the previous model was changed"
    assert safetensors_problem(out / "model.safetensors") is None
    assert not list(out.glob(".saving-*")), "the temporary folder of the save was left behind"
    monkeypatch.undo()
    assert cli_main(argv) == 0  # the same command, not interrupted, replaces the model (renamed into place)
    assert safetensors_problem(out / "model.safetensors") is None
    assert (out / "model.safetensors").stat().st_ino != inode and (out / "training_log.json").is_file()


def _cut(at):
    def cut(path: Path) -> None:
        size = path.stat().st_size
        with open(path, "r+b") as handle:
            handle.truncate(at(size))

    return cut


@pytest.mark.parametrize(
    "damage, why",
    [
        (_cut(lambda n: 0), "fewer than a safetensors header needs"),
        (_cut(lambda n: 100), "more than the 100 bytes the file has"),
        (_cut(lambda n: n // 2), "but its header describes"),
        (_cut(lambda n: n - 1), "but its header describes"),
        (lambda p: p.write_bytes(b"\xff" * 1000), "more than the 1000 bytes"),
        (lambda p: p.write_bytes((8).to_bytes(8, "little") + b"not json"), "not the JSON table of tensors"),
    ],
    ids=["empty", "header-cut", "half", "one-byte-short", "garbage", "bad-header"],
)
def test_eval_names_a_truncated_or_corrupt_weights_file(tiny_dir, rec_data, tmp_path, capsys, damage, why):
    model = _copy(tiny_dir, tmp_path / "model")
    damage(model / "model.safetensors")
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(model), "--data", str(rec_data), "--output", str(out), "--max-samples", "2"]
    refused(capsys, argv, str(model / "model.safetensors"), "truncated or corrupt", why, "Copy or save the model again")
    assert not (out / "metrics.json").exists()


# ---------------------------------------------------------------------------------------------
# A run and the output_dir of another run: refused before the model loads, or said and done


def _ckpt(out: Path, step: int, run_id: str | None = "run-A", complete: bool = True) -> Path:
    """A fake ``checkpoint-N`` written by ``run_id`` (``None``: a marker from before run ids)."""
    import json

    from vlm_grpo.checkpoints import MARKER, mark_complete

    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * 10)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if complete:
        mark_complete(folder, step, run_id=run_id)
        if run_id is None:
            marker = json.loads((folder / MARKER).read_text())
            del marker["run_id"]
            (folder / MARKER).write_text(json.dumps(marker))
    return folder


def _rollouts(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "rollouts.jsonl").write_text('{"step": 1, "id": "x", "rewards": {}}\n')


@pytest.mark.parametrize("command", ["train", "sft"])
@pytest.mark.parametrize(
    "setup, resume, why",
    [
        (lambda out, o: _ckpt(out, 4), None, "checkpoint-4 (run run-A)"),
        (lambda out, o: _ckpt(out, 3, complete=False), None, "checkpoint-3 (not complete)"),
        (lambda out, o: _rollouts(out), None, "rollouts.jsonl (a rollout log)"),
        (lambda out, o: (_ckpt(out, 2, "run-A"), _ckpt(out, 4, "run-B")), "true", "belong to several runs"),
        (lambda out, o: _ckpt(out, 4, None), "true", "carry no run id"),
        (lambda out, o: _ckpt(out, 4, None), "auto", "carry no run id"),
        (lambda out, o: (_ckpt(out, 2), _ckpt(out, 4)), "{out}/checkpoint-2", "checkpoint-4 (run run-A)"),
        (lambda out, o: (_ckpt(o, 3, "run-B"), _ckpt(out, 4)), "{other}/checkpoint-3", "checkpoint-4 (run run-A)"),
    ],
    ids=["fresh-over-checkpoint", "fresh-over-torn", "fresh-over-rollouts", "latest-of-two-runs",
         "latest-without-run-id", "auto-without-run-id", "path-with-newer", "path-into-other-run"],
)
def test_a_run_refuses_another_runs_output_dir_before_loading_the_model(
    tiny_dir, rec_data, tmp_path, capsys, monkeypatch, command, setup, resume, why
):
    import vlm_grpo.train

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output_dir was checked")

    monkeypatch.setattr(vlm_grpo.train, "load_policy", no_model)
    out, other = tmp_path / "run", tmp_path / "other"
    setup(out, other)
    before = snapshot(out)
    argv = [command, *KEYS[command], "--model_name_or_path", str(tiny_dir), "--train_data", str(rec_data),
            "--output_dir", str(out), "--save_strategy", "steps"]
    if resume:
        argv += ["--resume_from_checkpoint", resume.format(out=out, other=other)]
    line = refused(capsys, argv, str(out), why)
    assert "--overwrite_output_dir true" in line or "by path" in line
    assert snapshot(out) == before


def test_rotation_never_deletes_the_checkpoint_just_written_nor_another_runs(tmp_path):
    from vlm_grpo.checkpoints import rotate

    out = tmp_path / "run"
    _ckpt(out, 9, "run-A")  # another run's, numbered higher
    one = _ckpt(out, 1, "run-B")
    assert rotate(out, keep=1, written=one, run_id="run-B") == []
    assert rotate(out, keep=1, written=one) == []  # without a run id too: the one just written stays
    two = _ckpt(out, 2, "run-B")
    assert rotate(out, keep=1, written=two, run_id="run-B") == [one]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2", "checkpoint-9"]


def _run_id(folder: Path) -> str:
    import json

    return json.loads((folder / "checkpoint_complete.json").read_text())["run_id"]


def test_overwrite_then_resume_keeps_one_run_and_says_whose(tiny_dir, rec_data, tmp_path, capsys):
    import json

    out = tmp_path / "run"
    base = ["train", *KEYS["train"], "--model_name_or_path", str(tiny_dir), "--train_data", str(rec_data),
            "--output_dir", str(out), "--save_strategy", "steps", "--save_steps", "1", "--rollout_log_steps", "1"]
    # the case: a run leaves checkpoint-2 (save_total_limit 1) ...
    assert cli_main([*base, "--max_steps", "2", "--save_total_limit", "1"]) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    first = _run_id(out / "checkpoint-2")
    capsys.readouterr()
    # ... a fresh run there is refused (above); with --overwrite_output_dir it deletes and says so
    assert cli_main([*base, "--max_steps", "2", "--save_total_limit", "2", "--overwrite_output_dir", "true"]) == 0
    printed = capsys.readouterr().out
    assert f"overwrite_output_dir: deleted checkpoint-2, rollouts.jsonl, training_log.json from {out}" in printed
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    second = _run_id(out / "checkpoint-2")
    assert second != first and _run_id(out / "checkpoint-1") == second
    # killed before checkpoint-2 was marked: resume continues this run from checkpoint-1 and says whose
    (out / "checkpoint-2" / "checkpoint_complete.json").unlink()
    assert cli_main([*base, "--max_steps", "2", "--save_total_limit", "1", "--resume_from_checkpoint", "true"]) == 0
    printed = capsys.readouterr().out
    assert f"resuming from {out / 'checkpoint-1'} (run {second}, step 1, written " in printed
    assert "dropped 4 lines after step 2" not in printed and "dropped 4 lines after step 1 from rollouts.jsonl" in printed
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]  # rotation: the new one stays
    assert _run_id(out / "checkpoint-2") == second
    steps = [json.loads(line)["step"] for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert steps == [1] * 4 + [2] * 4, "the redone step was logged twice"


class _FakeTrainer:
    """What :func:`vlm_grpo.runs.start_run` reads of a trainer."""

    def __init__(self, output_dir: Path) -> None:
        from types import SimpleNamespace

        from vlm_grpo.checkpoints import CompletionMarker

        self.args = SimpleNamespace(output_dir=str(output_dir))
        self.marker = CompletionMarker(2)
        self.callback_handler = SimpleNamespace(callbacks=[self.marker])

    def is_world_process_zero(self) -> bool:
        return True


def test_auto_starting_over_drops_the_rollouts_it_redoes(tmp_path, capsys):
    import json

    from vlm_grpo.runs import start_run

    out = tmp_path / "run"
    _ckpt(out, 2, complete=False)  # the only checkpoint of the requeued job was torn
    (out / "rollouts.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2)) + '{"step": 3')
    trainer = _FakeTrainer(out)
    plan = start_run(trainer, "auto")
    assert plan.checkpoint is None and trainer.marker.run_id == plan.run_id
    assert (out / "rollouts.jsonl").read_text() == "" and (out / "incomplete-checkpoint-2").is_dir()
    assert "dropped 3 lines after step 0 from rollouts.jsonl" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, folder",
    [(["demo", "--quick"], "policy"), (["demo", "--quick", "--make-policy"], "policy_bf16")],
    ids=["demo", "make-policy"],
)
def test_the_demo_replaces_only_model_folders_of_its_own(tmp_path, capsys, argv, folder):
    out = tmp_path / "mine"
    _thesis(out / folder)
    before = snapshot(out)
    refused(capsys, [*argv, "--output", str(out)], str(out / folder), "not a model folder", "choose another --output")
    assert snapshot(out) == before


# ---------------------------------------------------------------------------------------------
# Slow tier: random output_dir states and random folders under prep --overwrite


_KINDS = ("run-A", "run-B", "legacy", "torn", "damaged")


def _random_output_dir(rng, out: Path, external: Path) -> dict[str, str]:
    """Up to 4 checkpoints of random kinds (and maybe rollouts, a set-aside folder); returns step name -> kind."""
    kinds = {}
    for step in rng.sample(range(1, 10), rng.randint(0, 4)):
        kind = rng.choice(_KINDS)
        folder = _ckpt(out, step, {"run-A": "run-A", "run-B": "run-B"}.get(kind), complete=kind != "torn")
        if kind == "damaged":
            (folder / "model.safetensors").write_bytes(b"w")
        kinds[folder.name] = kind
    if rng.random() < 0.3:
        _rollouts(out)
    if rng.random() < 0.2 and not (out / "checkpoint-1").exists():
        _ckpt(out, 1, complete=False).rename(out / "incomplete-checkpoint-1")  # set aside by an earlier resume
    if not external.exists():
        _ckpt(external, 5, "run-C")
    return kinds


def _check_run_start(rng, out: Path, external: Path, kinds: dict[str, str]) -> str:
    """One random start in ``out``; asserts the invariants and returns the outcome's name."""
    from vlm_grpo.checkpoints import checkpoints_in, mark_complete, marker_of, rotate
    from vlm_grpo.runs import start_run

    paths = [out / name for name in kinds] + [external / "checkpoint-5"]
    resume = rng.choice([None, "true", "auto", str(rng.choice(paths))])
    overwrite = rng.random() < 0.3
    before = snapshot(out) if out.exists() else {}
    complete = {name: kind for name, kind in kinds.items() if kind in ("run-A", "run-B", "legacy")}
    try:
        plan = start_run(_FakeTrainer(out), resume, overwrite)
    except ValueError as err:
        assert str(out) in str(err) or "resume_from_checkpoint" in str(err), str(err)
        assert (snapshot(out) if out.exists() else {}) == before, f"refused, yet {out} changed"
        reasons = {"another run's output": "fresh run, another run's output there", "several runs": "several runs",
                   "no run id": "checkpoints without a run id", "newer than": "path with newer or other runs' beside it",
                   "no complete checkpoint": "`true` with nothing complete"}
        return "refused: " + next((v for k, v in reasons.items() if k in str(err)), "other")
    left = {folder.name: marker_of(folder) for _, folder in checkpoints_in(out)}
    if resume is None:
        assert not left and not list(out.glob("rollouts*.jsonl")) if out.exists() else True
        outcome = "fresh (after deleting another run's output)" if before else "fresh"
    elif plan.checkpoint is None:
        assert resume == "auto" and not complete, (resume, kinds)
        assert all(m is None for m in left.values()) and not left, left
        outcome = "auto: fresh, nothing complete to resume"
    else:
        chosen = Path(plan.checkpoint)
        chosen_id = (marker_of(chosen) or {}).get("run_id")
        if resume in ("true", "auto"):
            newest = max(complete, key=lambda n: int(n.split("-")[1]))
            assert chosen.name == newest and len({complete[n] for n in complete}) == 1, (kinds, chosen)
        else:
            assert plan.checkpoint == resume
        for name, marker in left.items():
            if out / name != chosen:  # older half-written folders may stay: the run never writes them again
                assert int(name.split("-")[1]) <= plan.step, f"{name}, newer than {chosen}, left where the run writes"
                assert marker is None or marker.get("run_id") == chosen_id, f"{name} of another run beside {chosen}"
        if not overwrite:
            gone = [n for n in complete if not (out / n).exists() and out / n != chosen]
            assert not gone, f"deleted {gone} without --overwrite_output_dir"
        outcome = "resumed" + (" (after deleting what was in the way)" if overwrite and before != snapshot(out) else "")
    # the run's first save, then rotation with a limit of 1: the checkpoint just written stays
    step = (plan.step or 0) + 1
    written = out / f"checkpoint-{step}"
    written.mkdir(parents=True, exist_ok=True)
    (written / "model.safetensors").write_bytes(b"n" * 5)
    mark_complete(written, step, run_id=plan.run_id)
    rotate(out, 1, written=written, run_id=plan.run_id)
    assert marker_of(written) is not None
    return outcome


@pytest.mark.slow
def test_random_output_dirs_never_lose_or_mix_a_run(tmp_path, capsys):
    import random
    import shutil
    import time
    from collections import Counter

    from reliability_figures import write_area

    rng, started, tally = random.Random("output-dirs"), time.perf_counter(), Counter()
    external = tmp_path / "external"
    for i in range(600):
        out = tmp_path / f"o{i}"
        kinds = _random_output_dir(rng, out, external) if rng.random() < 0.9 else {}
        tally[_check_run_start(rng, out, external, kinds)] += 1
        shutil.rmtree(out, ignore_errors=True)
    capsys.readouterr()
    rows = [{"case": f"output_dir start: {name}", "tried": n, "outcome": "invariants held"} for name, n in sorted(tally.items())]
    write_area("output_dirs", "Runs and their output_dir", rows, wall_s=time.perf_counter() - started,
               command=".venv/bin/python -m pytest -q -m slow tests/test_no_data_loss.py",
               notes="600 random output_dir states (checkpoints of two runs, from before run ids, torn, damaged; rollout "
                     "logs) x resume (none, true, auto, a path inside or outside) x overwrite_output_dir. Checked: a "
                     "refusal changes nothing; a resume takes the newest complete checkpoint of the one run present, "
                     "and no checkpoint of another run or a newer one stays beside it; nothing complete is deleted "
                     "without --overwrite_output_dir; the first checkpoint written survives rotation with a limit of 1.")


def _random_tree(rng, root: Path, template: Path, split: Path) -> bool:
    """A folder prep --overwrite may meet; returns whether it is one that may be replaced."""
    import shutil

    base = rng.choice(["empty", "dataset", "split", "junk"])
    if base == "empty":
        root.mkdir()
    elif base == "junk":
        _thesis(root)
    else:
        shutil.copytree(template if base == "dataset" else split, root)
    if rng.random() < 0.5:
        return base != "junk"
    dirs = [p for p in [root, *root.rglob("*")] if p.is_dir()]
    where = rng.choice(dirs)
    taint = rng.choice(["file", "dir", "manifest", "image-name", "symlink"])
    if taint == "file":
        (where / rng.choice(["notes.txt", "model.safetensors", ".hidden", "records.jsonl.bak"])).write_text("mine")
    elif taint == "dir":
        (where / rng.choice(["checkpoint-100", "chapters", "val2"])).mkdir(exist_ok=True)
    elif taint == "manifest":
        (where / "manifest.json").write_text(rng.choice(["{}", "[1]", "{not json", '{"created_by": "x"}']))
    elif taint == "image-name":
        (where / "images").mkdir(exist_ok=True)
        (where / "images" / rng.choice(["cat.jpg", "a" * 64 + ".gif", "b" * 63 + ".png"])).write_bytes(b"x")
    else:
        (where / "link").symlink_to(root.parent)
    return False


@pytest.mark.slow
def test_random_folders_under_prep_overwrite(tmp_path, capsys):
    import random
    import shutil
    import time
    from collections import Counter

    from reliability_figures import write_area

    template, split = _dataset(tmp_path / "template"), _dataset(tmp_path / "split", "--val-fraction", "0.3")
    rng, started, tally = random.Random("prep-overwrite"), time.perf_counter(), Counter()
    for i in range(200):
        root = tmp_path / f"t{i}"
        replaceable = _random_tree(rng, root, template, split)
        before = snapshot(root)
        code = cli_main(_prep_argv(root, "--overwrite"))
        err = capsys.readouterr().err
        assert "Traceback" not in err
        if replaceable:
            assert code == 0, err
            tally["packed dataset, split or empty: replaced"] += 1
        else:
            assert code == 2 and "only replaces a packed dataset" in err and str(root) in err, err
            assert snapshot(root) == before, f"{root} changed although refused"
            tally["anything else: refused, unchanged"] += 1
        shutil.rmtree(root, ignore_errors=True)
    rows = [{"case": f"prep --overwrite: {name}", "tried": n, "outcome": "as expected"} for name, n in sorted(tally.items())]
    write_area("prep_overwrite", "prep --overwrite", rows, wall_s=time.perf_counter() - started,
               command=".venv/bin/python -m pytest -q -m slow tests/test_no_data_loss.py",
               notes="200 folders: empty, a packed dataset, a train/val split or a thesis, half of them with one thing "
                     "added (a file, a folder, a foreign manifest, a foreign image name, a symlink) anywhere inside.")


@pytest.mark.slow
def test_random_damage_to_a_weights_file(tiny_dir, tmp_path):
    import random
    import time
    from collections import Counter

    from reliability_figures import write_area

    from vlm_grpo.modeling import CheckpointError, load_model

    model = _copy(tiny_dir, tmp_path / "model")
    whole = (model / "model.safetensors").read_bytes()
    header = int.from_bytes(whole[:8], "little")
    rng, started, tally = random.Random("weights-damage"), time.perf_counter(), Counter()
    damages = {
        "cut at a random byte": lambda b: b[: rng.randrange(len(b))],
        "junk appended": lambda b: b + bytes(rng.randrange(1, 100)),
        "random header length": lambda b: rng.randrange(1 << 20).to_bytes(8, "little") + b[8:],
        "one header byte changed": lambda b: (lambda j: b[:j] + bytes([rng.randrange(256)]) + b[j + 1:])(
            rng.randrange(8, 8 + header)),
        "one tensor byte flipped": lambda b: (lambda j: b[:j] + bytes([b[j] ^ 0xFF]) + b[j + 1:])(
            rng.randrange(8 + header, len(b))),
    }
    for i in range(150):
        name = rng.choice(sorted(damages))
        damaged = damages[name](whole)
        (model / "model.safetensors").write_bytes(damaged)
        try:
            load_model(str(model), device="cpu")
            outcome = "loaded (the damage is in tensor values or header padding: not detectable from the header)"
            assert len(damaged) == len(whole), f"#{i} {name}: a file of another length loaded"
        except CheckpointError as err:
            assert str(model / "model.safetensors") in str(err)
            outcome = "CheckpointError naming the file"
        tally[name, outcome] += 1
    rows = [{"case": f"model.safetensors: {name}", "tried": n, "outcome": outcome}
            for (name, outcome), n in sorted(tally.items())]
    write_area("weights_damage", "Damaged weights files", rows, wall_s=time.perf_counter() - started,
               command=".venv/bin/python -m pytest -q -m slow tests/test_no_data_loss.py",
               notes="150 damaged copies of the tiny model's model.safetensors loaded with load_model (what eval and "
                     "train use): no raw SafetensorError; every file of the wrong length is refused naming it.")
