"""`vlm-grpo eval` end to end: load, shard across processes, resume, write the three files.

For each data dir: ``metrics.json``, ``predictions.jsonl`` and ``report.html``; with
several dirs, each gets its own sub-folder and ``benchmarks.md`` / ``benchmarks.json``
hold one table across them. Under ``torchrun`` or ``accelerate launch`` each process
evaluates every N-th record and the main process writes the files, with the same
metrics as a single-process run. Predictions are appended to
``predictions.partial.rank{R}.jsonl`` as they are made, so ``--resume`` skips
finished samples after an interruption.

What a resume may merge: each output folder holds ``eval_key.json``, written before the
first prediction, naming what its predictions were made from: the data (the manifest's
``records_sha256``, which covers every image through its content name), the model (a
sampled hash of its weight and config files; the name as given for a hub id) and every
setting that changes a completion (``max_new_tokens``, sampling, ``temperature`` and
``seed`` when sampling, the resolved pixel bounds, ``box_frame``, the prompt templates).
``--resume`` keeps finished samples only when all of these match, and otherwise stops
naming what differs; ``--batch-size``, ``--task`` and ``--max-samples`` may change (only
predictions of the records now selected are kept). Without ``--resume``, an output
folder holding finished samples of an interrupted run is refused, so they are not lost.
Both checks run before the model is loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

from vlm_grpo.data import RowSet, build_rows
from vlm_grpo.files import atomic_write_text, json_text, make_output_dir, sampled_sha256
from vlm_grpo.evaluate import EvalSettings, evaluate_rows, read_predictions
from vlm_grpo.metrics import benchmark_table, compute_metrics
from vlm_grpo.modeling import family_of, load_config, load_model, load_processor
from vlm_grpo.prompts import merged_templates
from vlm_grpo.speed.features import enable_decode_speed
from vlm_grpo.tools import prepare_processor, resolve_tools


class EvalError(ValueError):
    """An evaluation that produced no result worth a score; the message says why."""


@dataclasses.dataclass
class EvalJob:
    """What `vlm-grpo eval` was asked to do."""

    model: str
    data: list[str]
    output: Path
    task: str | None = None
    max_samples: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    box_frame: str | None = None
    task_templates: dict | None = None
    resume: bool = False
    settings: EvalSettings = dataclasses.field(default_factory=EvalSettings)
    tools: list[str] | None = None  # multi-turn with these tools (as the `tools` training key)
    max_tool_calls: int = 3
    max_image_tokens: int = 1024


def _filtered(rows: RowSet, task: str | None, max_samples: int | None) -> list[int]:
    indices = [i for i in range(len(rows)) if task is None or rows.record(i).task == task]
    if task is not None and not indices:
        found = sorted({rows.record(i).task for i in range(len(rows))})
        raise ValueError(f"{rows.datasets[0].path} has no {task!r} records (it has {found}); drop --task or pick one of those")
    return indices[:max_samples] if max_samples is not None else indices


def run_eval(job: EvalJob) -> dict[str, dict]:
    """Evaluate ``job.model`` on every data dir; returns ``{dataset name: metrics.json content}``."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    config = load_config(job.model)  # fails fast on a bad model before anything heavy
    family = family_of(config, job.model)
    box_frame = job.box_frame or family.box_frame
    processor = load_processor(job.model, min_pixels=job.min_pixels, max_pixels=job.max_pixels)
    toolset = resolve_tools(job.tools, processor, max_tool_calls=job.max_tool_calls,
                            max_image_tokens=job.max_image_tokens)
    if toolset is not None:
        prepare_processor(processor, family)
    templates = merged_templates({**(toolset.templates if toolset else {}), **(job.task_templates or {})})
    names = _unique_names(job.data)
    all_rows = [build_rows([d], processor, box_frame=box_frame, templates=templates) for d in job.data]
    selections = [_filtered(rows, job.task, job.max_samples) for rows in all_rows]
    make_output_dir(job.output, "--output")  # after the checks of model and data, before the heavy load
    outs = [job.output / name if len(job.data) > 1 else job.output for name in names]
    digest = model_digest(job.model)
    keys = [eval_key(job, d, rows, processor, templates, digest) for d, rows in zip(job.data, all_rows)]
    # Every output is checked before the model loads: a refused resume costs nothing.
    finished = [_finished(out, job.resume, key, rows, indices) for out, key, rows, indices
                in zip(outs, keys, all_rows, selections)]
    if state.is_main_process:  # before any prediction, so partial files never exist without their key
        for out, key in zip(outs, keys):
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / EVAL_KEY, json.dumps(key, indent=2) + "\n")
    state.wait_for_everyone()  # every process has read the partial files before any writes to them
    model = load_model(job.model, device=state.device).eval()
    enable_decode_speed(model)  # the same tokens, without copying the key/value cache every decode step
    results: dict[str, dict] = {}
    for name, data_dir, rows, indices, out, done in zip(names, job.data, all_rows, selections, outs, finished):
        out.mkdir(parents=True, exist_ok=True)
        todo = [i for i in indices if i not in done][state.process_index :: state.num_processes]
        partial = out / f"predictions.partial.rank{state.process_index}.jsonl"
        _keep_whole_lines(partial, resume=job.resume)
        start = time.perf_counter()
        with open(partial, "a", encoding="utf-8") as sink:

            def keep(prediction: dict) -> None:
                sink.write(json_text(prediction) + "\n")
                sink.flush()

            mine = evaluate_rows(
                model, processor, rows, todo, job.settings, on_prediction=keep,
                desc=f"eval {name}", progress=state.is_main_process, toolset=toolset,
            )
        elapsed = time.perf_counter() - start
        gathered = gather_object(mine) if state.num_processes > 1 else mine
        state.wait_for_everyone()
        _check_not_all_failed([*done.values(), *gathered], data_dir, out)  # on every process, so none waits alone
        if state.is_main_process:
            predictions = sorted([*done.values(), *gathered], key=lambda p: p["index"])
            results[name] = _write_outputs(out, job, data_dir, rows, predictions, elapsed, len(gathered),
                                           family.name)
        state.wait_for_everyone()
    if state.is_main_process and len(job.data) > 1:
        table = {name: r["metrics"] for name, r in results.items()}
        atomic_write_text(job.output / "benchmarks.md", benchmark_table(table))
        atomic_write_text(job.output / "benchmarks.json", json_text(table, indent=2) + "\n")
    return results


def _check_not_all_failed(predictions: list[dict], data_dir: str, out: Path) -> None:
    """Raise :class:`EvalError` when every sample errored: a score of 0.0 would look like a result.

    Nothing is written for the dataset, and the partial files go too: the errors are not
    results to resume from.
    """
    errors = [p["error"] for p in predictions if p.get("error")]
    if not predictions or len(errors) < len(predictions):
        return
    for part in out.glob("predictions.partial.rank*.jsonl"):
        part.unlink(missing_ok=True)
    first = errors[0] if len(errors[0]) <= 300 else errors[0][:300] + "…"
    raise EvalError(
        f"{data_dir}: all {len(predictions)} samples failed, so there is no score (first error: {first}); "
        f"nothing was written to {out}. Fix the cause (the model folder, the images, the device) and run again"
    )


def _unique_names(dirs: list[str]) -> list[str]:
    names = []
    for d in dirs:
        path = Path(d).resolve()
        name = path.name if path.name not in ("val", "test", "train") else f"{path.parent.name}_{path.name}"
        while name in names:
            name += "_"
        names.append(name)
    return names


EVAL_KEY = "eval_key.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def model_digest(model: str) -> str | None:
    """A fingerprint of a local model folder's weights and config (:func:`sampled_sha256`); None for a hub id."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.suffix in _WEIGHT_SUFFIXES or path.name == "config.json"):
            digest.update(f"{path.name}:{sampled_sha256(path)}\n".encode())
    return digest.hexdigest()


def eval_key(job: EvalJob, data_dir: str, rows: RowSet, processor, templates: dict, digest: str | None) -> dict:
    """What the predictions of one output folder are made from (see the module docstring)."""
    from vlm_grpo.processing import pixel_bounds

    low, high = pixel_bounds(processor)
    settings = {"max_new_tokens": job.settings.max_new_tokens, "do_sample": job.settings.do_sample}
    if job.settings.do_sample:
        settings.update(temperature=job.settings.temperature, seed=job.settings.seed)
    if job.tools:
        settings.update(tools=list(job.tools), max_tool_calls=job.max_tool_calls, max_image_tokens=job.max_image_tokens)
    settings.update(min_pixels=low, max_pixels=high, box_frame=rows.box_frame,
                    templates_sha256=hashlib.sha256(json.dumps(templates, sort_keys=True).encode()).hexdigest())
    return {
        "data": str(Path(data_dir).resolve()),
        "records_sha256": rows.datasets[0].manifest.get("records_sha256"),
        "model": job.model,
        "model_digest": digest,
        "settings": settings,
    }


def key_differences(old: dict, new: dict) -> list[str]:
    """What differs between two :func:`eval_key` records, in words; empty when a resume may merge them."""
    found = []
    if old.get("records_sha256") != new["records_sha256"]:
        found.append(f"the data (records_sha256 {str(old.get('records_sha256'))[:12]}… of {old.get('data')}, "
                     f"now {str(new['records_sha256'])[:12]}… of {new['data']})")
    same_model = (old.get("model_digest") == new["model_digest"]) if new["model_digest"] else old.get("model") == new["model"]
    if not same_model:
        found.append(f"the model ({old.get('model')}, now {new['model']}"
                     f"{' with other weights' if old.get('model') == new['model'] else ''})")
    before, now = old.get("settings") or {}, new["settings"]
    for name in sorted(set(before) | set(now)):
        if before.get(name) != now.get(name):
            found.append(f"{name} ({before.get(name)!r}, now {now.get(name)!r})")
    return found


def _partials(out: Path) -> list[Path]:
    return sorted(out.glob("predictions.partial.rank*.jsonl"))


def _finished(out: Path, resume: bool, key: dict, rows: RowSet, indices: list[int]) -> dict[int, dict]:
    """The finished predictions in ``out`` a resume keeps (those of ``indices``); refuses what must not be merged."""
    held = {p: read_predictions(p) for p in _partials(out)}
    count = sum(len(v) for v in held.values())
    if not count:
        return {}
    names = ", ".join(p.name for p, v in held.items() if v)
    if not resume:
        raise ValueError(
            f"{out} holds {count} finished predictions of an interrupted eval ({names}); pass --resume to keep them, "
            "or delete those files (or choose another --output) to start over"
        )
    key_path = out / EVAL_KEY
    try:
        old = json.loads(key_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(
            f"--resume: {out} holds {count} finished predictions ({names}) but no readable {EVAL_KEY} saying which "
            f"data, model and settings made them ({type(err).__name__}); delete those files to start over"
        ) from None
    differences = key_differences(old if isinstance(old, dict) else {}, key)
    if differences:
        raise ValueError(
            f"--resume: the {count} finished predictions in {out} were made with other inputs than this run: "
            f"{'; '.join(differences)}. Run with the same data, model and settings, or use another --output "
            "(or delete the partial files there) to start over"
        )
    wanted = set(indices)
    done = {}
    for part, predictions in held.items():
        for prediction in predictions:
            index = prediction.get("index")
            if index in wanted:
                if prediction.get("id") != rows.record(index).id:
                    raise ValueError(
                        f"--resume: {part} has record {prediction.get('id')!r} at index {index}, where the data has "
                        f"{rows.record(index).id!r}; delete the partial files in {out} to start over"
                    )
                done[index] = prediction
    return done


def _keep_whole_lines(partial: Path, *, resume: bool) -> None:
    """Before appending: a fresh run starts the file empty; a resumed one drops a torn last line."""
    if not resume:
        partial.unlink(missing_ok=True)
    elif partial.exists():
        atomic_write_text(partial, "".join(json.dumps(p) + "\n" for p in read_predictions(partial)))


def _write_outputs(out: Path, job: EvalJob, data_dir: str, rows: RowSet, predictions, elapsed, made,
                   family: str) -> dict:
    from vlm_grpo.report import write_report

    metrics = compute_metrics(predictions)
    result = {
        "model": job.model,
        "data": str(Path(data_dir).resolve()),
        "task": job.task,
        "family": family,  # the model family and the box frame its boxes were read in
        "box_frame": rows.box_frame,
        "metrics": metrics,
        "settings": {**dataclasses.asdict(job.settings), "max_samples": job.max_samples,
                     "min_pixels": job.min_pixels, "max_pixels": job.max_pixels, "box_frame": rows.box_frame,
                     "tools": job.tools, "max_tool_calls": job.max_tool_calls, "max_image_tokens": job.max_image_tokens},
        "time_s": round(elapsed, 3),
        "samples_per_s": round(made / elapsed, 3) if elapsed > 0 and made else None,
    }
    atomic_write_text(out / "predictions.jsonl", "".join(json_text(p) + "\n" for p in predictions))
    atomic_write_text(out / "metrics.json", json_text(result, indent=2) + "\n")
    write_report(out / "report.html", result, predictions, rows)
    for part in out.glob("predictions.partial.rank*.jsonl"):
        part.unlink()
    return result
