"""Evaluation metrics from per-sample predictions: pure functions over plain dicts.

A prediction (one line of ``predictions.jsonl``) has at least ``task``, ``correct``
(bool), ``score`` (IoU for REC, F1 for det, 0/1 otherwise), ``parse_ok``, ``format_ok`` and
``source``; a failed generation has ``error`` set and counts as wrong, unparsed and
badly formatted. Accuracies come with a 95% Wilson score interval.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

from rewards.tasks import TASKS


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (well-behaved at 0%, 100% and small n).

    >>> [round(x, 3) for x in wilson_interval(8, 10)]
    [0.49, 0.943]
    """
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize(predictions: Sequence[dict]) -> dict:
    """Metrics of one group of predictions (one task, or one task and source)."""
    n = len(predictions)
    correct = sum(bool(p["correct"]) for p in predictions)
    low, high = wilson_interval(correct, n)
    out = {
        "count": n,
        "correct": correct,
        "accuracy": correct / n if n else 0.0,
        "accuracy_ci95": [low, high],
        "format_rate": sum(bool(p["format_ok"]) for p in predictions) / n if n else 0.0,
        "parse_failure_rate": sum(not p["parse_ok"] for p in predictions) / n if n else 0.0,
        "errors": sum(1 for p in predictions if p.get("error")),
    }
    if any("tool_calls" in p for p in predictions):  # a multi-turn eval with tools
        out.update(tool_figures(predictions))
    task = TASKS.get(predictions[0]["task"]) if predictions else None
    if task is not None and task.metrics is not None and all(p["task"] == task.name for p in predictions):
        out.update(task.metrics(predictions))  # the task's own figures (rec: acc@0.5, mean_iou; det: mAP …)
    return out


TOOL_KEYS = ("tool_call_rate", "tool_success_rate", "calls_per_sample", "crops_per_sample", "accuracy_with_tool",
             "accuracy_without_tool")


def tool_figures(predictions: Sequence[dict]) -> dict:
    """Tool use over predictions that carry ``tool_calls`` (each ``{"ok": bool, ...}``) and ``crops``.

    ``tool_call_rate``: share of samples with at least one call; ``tool_success_rate``: share of calls that
    succeeded; ``calls_per_sample`` and ``crops_per_sample`` (successful zooms); ``accuracy_with_tool`` /
    ``accuracy_without_tool``: accuracy of the samples with at least one successful call / with none.

    >>> figures = tool_figures([{"correct": True, "tool_calls": [{"ok": True}], "crops": [[0, 0, 9, 9]]},
    ...                         {"correct": False, "tool_calls": [{"ok": False}, {"ok": True}], "crops": [[1, 1, 5, 5]]},
    ...                         {"correct": True, "tool_calls": [], "crops": []}])
    >>> figures["tool_call_rate"], figures["tool_success_rate"], figures["crops_per_sample"]
    (0.6666666666666666, 0.6666666666666666, 0.6666666666666666)
    >>> figures["accuracy_with_tool"], figures["accuracy_without_tool"]
    (0.5, 1.0)
    """
    n = len(predictions)
    calls = [c for p in predictions for c in p.get("tool_calls") or []]
    zoomed = [p for p in predictions if any(c.get("ok") for c in p.get("tool_calls") or [])]
    plain = [p for p in predictions if p not in zoomed]
    return {
        "tool_call_rate": sum(bool(p.get("tool_calls")) for p in predictions) / n if n else 0.0,
        "tool_success_rate": sum(bool(c.get("ok")) for c in calls) / len(calls) if calls else 0.0,
        "calls_per_sample": len(calls) / n if n else 0.0,
        "crops_per_sample": sum(len(p.get("crops") or []) for p in predictions) / n if n else 0.0,
        "accuracy_with_tool": sum(bool(p["correct"]) for p in zoomed) / len(zoomed) if zoomed else None,
        "accuracy_without_tool": sum(bool(p["correct"]) for p in plain) / len(plain) if plain else None,
    }


def _group(predictions: Iterable[dict], key) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for p in predictions:
        groups[key(p)].append(p)
    return dict(sorted(groups.items()))


def compute_metrics(predictions: Sequence[dict]) -> dict:
    """Per-task metrics, each with a per-source breakdown when the task mixes sources.

    The top-level ``metric``/``value`` pair is the headline number: when every prediction is
    one task with a headline (:attr:`rewards.tasks.Task.headline`: rec ``mean_iou``, det ``mAP``),
    that figure, else ``accuracy`` over all predictions.
    """
    by_task = {}
    for task, preds in _group(predictions, lambda p: p["task"]).items():
        entry = summarize(preds)
        sources = _group(preds, lambda p: str(p.get("source") or ""))
        if len(sources) > 1:
            entry["by_source"] = {source: summarize(group) for source, group in sources.items()}
        by_task[task] = entry
    overall = summarize(predictions) if predictions else summarize([])
    only = TASKS.get(next(iter(by_task))) if len(by_task) == 1 else None
    headline = only.headline if only is not None and only.headline else None
    value = by_task[only.name].get(headline) if headline else None
    if value is None:  # no headline, or none to give (det data without any ground-truth box)
        headline, value = "accuracy", overall["accuracy"]
    return {
        "metric": headline,
        "value": value,
        "count": overall["count"],
        "accuracy": overall["accuracy"],
        "accuracy_ci95": overall["accuracy_ci95"],
        "format_rate": overall["format_rate"],
        "parse_failure_rate": overall["parse_failure_rate"],
        "errors": overall["errors"],
        **{k: overall[k] for k in TOOL_KEYS if k in overall},
        "by_task": by_task,
    }


def benchmark_table(results: dict[str, dict]) -> str:
    """A markdown table across benchmarks: one row per dataset, its headline and accuracy figures."""
    lines = [
        "| benchmark | n | metric | value | accuracy | 95% CI | format |",
        "|---|---:|---|---:|---:|---|---:|",
    ]
    for name, m in results.items():
        low, high = m["accuracy_ci95"]
        lines.append(
            f"| {name} | {m['count']} | {m['metric']} | {m['value']:.4f} | {100 * m['accuracy']:.1f}% "
            f"| {100 * low:.1f}–{100 * high:.1f}% | {100 * m['format_rate']:.1f}% |"
        )
    return "\n".join(lines) + "\n"
