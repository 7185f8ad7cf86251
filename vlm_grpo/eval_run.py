"""`vlm-grpo eval` end to end: load, shard across processes, resume, write the three files.

For each data dir: ``metrics.json``, ``predictions.jsonl`` and ``report.html``; with
several dirs, each gets its own sub-folder and ``benchmarks.md`` / ``benchmarks.json``
hold one table across them. Under ``torchrun`` or ``accelerate launch`` each process
evaluates every N-th record and the main process writes the files, with the same
metrics as a single-process run. Predictions are appended to
``predictions.partial.rank{R}.jsonl`` as they are made, so ``--resume`` skips
finished samples after an interruption.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from vlm_grpo.data import RowSet, build_rows
from vlm_grpo.files import atomic_write_text, json_text, make_output_dir
from vlm_grpo.evaluate import EvalSettings, evaluate_rows, read_predictions
from vlm_grpo.metrics import benchmark_table, compute_metrics
from vlm_grpo.modeling import family_of, load_config, load_model, load_processor
from vlm_grpo.prompts import merged_templates


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
    templates = merged_templates(job.task_templates)
    processor = load_processor(job.model, min_pixels=job.min_pixels, max_pixels=job.max_pixels)
    names = _unique_names(job.data)
    all_rows = [build_rows([d], processor, box_frame=box_frame, templates=templates) for d in job.data]
    selections = [_filtered(rows, job.task, job.max_samples) for rows in all_rows]
    make_output_dir(job.output, "--output")  # after the checks of model and data, before the heavy load
    model = load_model(job.model, device=state.device).eval()
    results: dict[str, dict] = {}
    for name, data_dir, rows, indices in zip(names, job.data, all_rows, selections):
        out = job.output / name if len(job.data) > 1 else job.output
        out.mkdir(parents=True, exist_ok=True)
        done = _resumed(out) if job.resume else {}
        todo = [i for i in indices if i not in done][state.process_index :: state.num_processes]
        partial = out / f"predictions.partial.rank{state.process_index}.jsonl"
        start = time.perf_counter()
        with open(partial, "a", encoding="utf-8") as sink:

            def keep(prediction: dict) -> None:
                sink.write(json_text(prediction) + "\n")
                sink.flush()

            mine = evaluate_rows(
                model, processor, rows, todo, job.settings, on_prediction=keep,
                desc=f"eval {name}", progress=state.is_main_process,
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


def _resumed(out: Path) -> dict[int, dict]:
    done = {}
    for part in sorted(out.glob("predictions.partial.rank*.jsonl")):
        for prediction in read_predictions(part):
            done[prediction["index"]] = prediction
    return done


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
                     "min_pixels": job.min_pixels, "max_pixels": job.max_pixels, "box_frame": rows.box_frame},
        "time_s": round(elapsed, 3),
        "samples_per_s": round(made / elapsed, 3) if elapsed > 0 and made else None,
    }
    atomic_write_text(out / "predictions.jsonl", "".join(json_text(p) + "\n" for p in predictions))
    atomic_write_text(out / "metrics.json", json_text(result, indent=2) + "\n")
    write_report(out / "report.html", result, predictions, rows)
    for part in out.glob("predictions.partial.rank*.jsonl"):
        part.unlink()
    return result
