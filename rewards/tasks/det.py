"""``det``: open-vocabulary detection, several boxes per answer.

Solution: a list of ``{"box": [x1, y1, x2, y2], "label": str}`` in original pixels of the
first image (``label`` optional), possibly empty. Answer: Qwen's grounding JSON
``[{"bbox_2d": [x1, y1, x2, y2], "label": "cat"}, ...]`` (``bbox``/``box`` keys too), or a
plain list of boxes ``[[x1, y1, x2, y2], ...]`` (one bare box is a list of one), in code fences
or not; ``[]`` says "none". Every box is converted from the sample's box frame to original pixels.
An answer with more than :data:`MAX_BOXES` boxes keeps its first :data:`MAX_BOXES` (COCO's
``maxDets``); an entry that is not a box makes the whole answer unparsable.

Scores (rewards ``det_f1``, ``det_ap``, ``det_odlength``; an unparsable answer scores 0.0):

- :func:`f1`: greedy one-to-one matching. Every (prediction, ground truth) pair is sorted by
  IoU, highest first (ties in answer order), and taken when neither box is used yet, its IoU
  is >= 0.5 and, where both carry a label, the labels are equal ignoring case and surrounding
  space. ``2 * matches / (n_pred + n_gt)``; both empty: 1.0.
- :func:`average_precision`: COCO AP averaged over IoU 0.50:0.05:0.95 for the one sample,
  every predicted box scored 1.0 (VLM-R1's ``od_ap``), computed by pycocotools' ``COCOeval``.
  Labels are COCO categories (case and space folded); an unlabelled prediction takes the
  sample's label when its ground truth has exactly one, an unlabelled ground-truth box is the
  category ``""``. As in COCO, a category with no ground truth in the sample is not counted,
  so a box with a label the image does not hold costs nothing here (``det_f1`` and
  ``det_odlength`` do count it). No ground truth: 1.0 when nothing is predicted, else 0.0.
- :func:`odlength`: ``det_ap * min(1, n_gt / n_pred)`` (VLM-R1's odLength: redundant boxes cost).

``COCOeval`` takes about 8 ms per completion on one CPU core; calls are serialised (a lock), and
while one runs ``sys.stdout`` is a buffer (pycocotools prints its progress), so another thread's
prints in that window are lost.

Evaluation adds, over the whole dataset and through the same ``COCOeval`` (one COCO image
per record): ``mAP`` (AP@[.5:.95], the headline), ``AP50``, ``AP75``, ``recall`` (AR with
100 detections per image) and ``mean_det_f1``; ``None`` when the data holds no ground truth.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
from collections.abc import Sequence
from typing import Any

from rewards import boxes
from rewards.parsing import _BOX_LIST, _FENCE, final_answer
from rewards.tasks.answers import check_box, is_finite_number, unwrapped
from rewards.tasks.base import REASONING, Mark, Task
from rewards.tasks.rec import box_target

MAX_BOXES = 100
"""Boxes kept from one answer (COCO evaluates at most 100 detections per image)."""
MAX_ANSWER_CHARS = 100_000
"""Answers longer than this are not parsed."""
MATCH_IOU = 0.5
_BOX_KEYS = ("bbox_2d", "bbox", "box")
# pycocotools prints its progress; its stdout is swapped out for the call, one call at a time, since two
# threads swapping sys.stdout at once could leave it pointing at a buffer.
_COCO_LOCK = threading.Lock()

Detection = dict  # {"box": [x1, y1, x2, y2], "label": str | None}


def norm_label(label: Any) -> str | None:
    """A label folded for comparison (case, surrounding and repeated space); ``None`` when absent or blank.

    >>> norm_label("  Red  Car "), norm_label(""), norm_label(None)
    ('red car', None, None)
    """
    if not isinstance(label, str):
        return None
    folded = " ".join(label.split()).casefold()
    return folded or None


def _entry(item: Any) -> Detection | None:
    if isinstance(item, dict):
        key = next((k for k in _BOX_KEYS if k in item), None)
        if key is None:
            return None
        box, label = item[key], item.get("label")
    else:
        box, label = item, None
    if not (isinstance(box, list) and len(box) == 4 and all(boxes.is_coordinate(v) for v in box)):
        return None
    return {"box": [float(v) for v in box], "label": label if isinstance(label, str) else None}


def parse_detections(answer: str | None) -> list[Detection] | None:
    """The boxes (and labels) of an answer in the model's frame, or ``None`` when it does not parse.

    >>> parse_detections('```json\\n[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}]\\n```')
    [{'box': [1.0, 2.0, 3.0, 4.0], 'label': 'cat'}]
    >>> parse_detections("[[0, 0, 5, 5], [5, 5, 9, 9]]")[1], parse_detections("[]"), parse_detections("none")
    ({'box': [5.0, 5.0, 9.0, 9.0], 'label': None}, [], None)
    """
    if answer is None or len(answer) > MAX_ANSWER_CHARS:
        return None
    body = _FENCE.sub("", answer).strip()
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        found = _BOX_LIST.findall(body)[:MAX_BOXES]
        if not found:
            return None
        obj = [[float(v) for v in box] for box in found]
    if isinstance(obj, dict):
        obj = [obj]
    if not isinstance(obj, list):
        return None
    if len(obj) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in obj):
        obj = [obj]
    out = []
    for item in obj[:MAX_BOXES]:
        entry = _entry(item)
        if entry is None:
            return None
        out.append(entry)
    return out


def parse(text: str, /, image_sizes: Any = None, model_image_sizes: Any = None,
          box_frame: str | None = None, **_: Any) -> list[Detection] | None:
    found = parse_detections(final_answer(text))
    if found is None:
        return None
    model_size = boxes.first_size(model_image_sizes)
    frame = boxes.resolve_frame(box_frame, model_size)
    size = boxes.first_size(image_sizes)
    return [{"box": boxes.to_original_pixels(d["box"], frame, size, model_size), "label": d["label"]} for d in found]


def _truth(solution: Any) -> list[Detection]:
    problem = check(solution)
    if problem:
        raise ValueError(problem)
    return [{"box": list(d["box"]), "label": d.get("label")} for d in solution]


def match_count(predicted: Sequence[Detection], truth: Sequence[Detection], iou_threshold: float = MATCH_IOU) -> int:
    """Greedy one-to-one matches (see the module docstring).

    >>> match_count([{"box": [0, 0, 10, 10], "label": "Cat "}], [{"box": [0, 0, 10, 9], "label": "cat"}])
    1
    """
    pairs = []
    for i, p in enumerate(predicted):
        for j, g in enumerate(truth):
            a, b = norm_label(p.get("label")), norm_label(g.get("label"))
            if a is not None and b is not None and a != b:
                continue
            overlap = boxes.iou(p["box"], g["box"])
            if overlap >= iou_threshold:
                pairs.append((-overlap, i, j))
    pairs.sort()
    used_p, used_g, matches = set(), set(), 0
    for _, i, j in pairs:
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            matches += 1
    return matches


def f1(predicted: list[Detection], /, solution: Any = None, **_: Any) -> float:
    """``2 * matches / (n_pred + n_gt)``; both empty: 1.0 (``det_f1``)."""
    truth = _truth(solution)
    if not predicted and not truth:
        return 1.0
    return 2.0 * match_count(predicted, truth) / (len(predicted) + len(truth))


def _categories(predicted: Sequence[Detection], truth: Sequence[Detection]) -> tuple[list[str], list[str]]:
    gt = [norm_label(g.get("label")) or "" for g in truth]
    named = {label for label in gt if label}
    fallback = next(iter(named)) if len(named) == 1 else ""
    return [norm_label(p.get("label")) or fallback for p in predicted], gt


def coco_stats(samples: Sequence[tuple[Sequence[Detection], Sequence[Detection]]]) -> list[float]:
    """pycocotools' 12 ``COCOeval.stats`` (bbox) over ``(predicted, truth)`` pairs, one COCO image each,
    every prediction scored 1.0; -1 where COCO has nothing to average.

    >>> box = {"box": [0, 0, 10, 10], "label": "cat"}
    >>> [round(v, 6) for v in coco_stats([([box], [box])])[:3]]  # COCO's 101-point sums round to 0.9999…
    [1.0, 1.0, 1.0]
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names: dict[str, int] = {}
    images, gt_anns, dt_anns = [], [], []
    for image_id, (predicted, truth) in enumerate(samples, start=1):
        images.append({"id": image_id})
        pred_cats, gt_cats = _categories(predicted, truth)
        for anns, dets, cats in ((gt_anns, truth, gt_cats), (dt_anns, predicted, pred_cats)):
            for det, cat in zip(dets, cats):
                x1, y1, x2, y2 = (float(v) for v in det["box"])
                w, h = max(0.0, x2 - x1), max(0.0, y2 - y1)
                anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": names.setdefault(cat, len(names) + 1),
                             "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0, "score": 1.0})
    categories = [{"id": i, "name": name} for name, i in names.items()]
    with _COCO_LOCK, contextlib.redirect_stdout(io.StringIO()):
        truth_coco, pred_coco = COCO(), COCO()
        truth_coco.dataset = {"images": images, "annotations": gt_anns, "categories": categories}
        pred_coco.dataset = {"images": images, "annotations": dt_anns, "categories": categories}
        truth_coco.createIndex()
        pred_coco.createIndex()
        evaluation = COCOeval(truth_coco, pred_coco, iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [float(v) for v in evaluation.stats]


def average_precision(predicted: list[Detection], /, solution: Any = None, **_: Any) -> float:
    """COCO AP@[.5:.95] of one sample (``det_ap``)."""
    truth = _truth(solution)
    if not truth:
        return 0.0 if predicted else 1.0
    return max(0.0, coco_stats([(predicted, truth)])[0])


def odlength(predicted: list[Detection], /, solution: Any = None, **_: Any) -> float:
    """``det_ap * min(1, n_gt / n_pred)`` (``det_odlength``)."""
    ap = average_precision(predicted, solution=solution)
    n_gt = len(solution)
    return ap * min(1.0, n_gt / len(predicted)) if predicted else ap


def check(solution: Any) -> str | None:
    """A list of ``{"box": [x1, y1, x2, y2], "label": str}`` (label optional), maybe empty."""
    if not isinstance(solution, list):
        return f"det solution must be a list of {{\"box\": [x1, y1, x2, y2], \"label\": ...}}, got {solution!r}"
    for k, item in enumerate(solution):
        if not isinstance(item, dict) or "box" not in item or set(item) - {"box", "label"}:
            return f"det solution item {k} must be {{\"box\": [x1, y1, x2, y2], \"label\": str}} (label optional), got {item!r}"
        if "label" in item and not isinstance(item["label"], str):
            return f"det solution item {k}: label must be a string, got {item['label']!r}"
        problem = check_box(item["box"], "det")
        if problem:
            return f"det solution item {k}: {problem}"
    return None


def read_answer(value: Any) -> list[Detection]:
    """A source's detections: ``[{"bbox_2d"|"bbox"|"box": [...], "label": ...}]``, a list of boxes, or JSON
    text of either (in answer tags or a code fence); boxes in original pixels."""
    obj = unwrapped(value)
    if isinstance(obj, dict):
        obj = [obj]
    if not isinstance(obj, list):
        raise ValueError(f"expected a list of boxes or of {{\"bbox_2d\": [...], \"label\": ...}}, got {value!r}")
    if len(obj) == 4 and all(is_finite_number(v) for v in obj):
        obj = [obj]
    out = []
    for k, item in enumerate(obj):
        if isinstance(item, dict):
            key = next((key for key in _BOX_KEYS if key in item), None)
            box, label = (item.get(key) if key else None), item.get("label", item.get("category"))
        else:
            box, label = item, None
        if not (isinstance(box, list) and len(box) == 4 and all(is_finite_number(v) for v in box)):
            raise ValueError(f"item {k} is not a box [x1, y1, x2, y2]: {item!r}")
        entry: Detection = {"box": list(box)}
        if isinstance(label, str) and label.strip():
            entry["label"] = label.strip()
        out.append(entry)
    return out


def boxes_of(solution: Any) -> list[list[float]]:
    return [list(d["box"]) for d in solution]


def with_boxes(solution: Any, new: Sequence[Sequence[float]]) -> list[Detection]:
    return [{**d, "box": list(b)} for d, b in zip(solution, new)]


def target(solution: Any, /, box_frame: str = "original_pixels", image_sizes: Any = None,
           model_image_sizes: Any = None, **_: Any) -> str:
    out = []
    for det in solution:
        entry: dict[str, Any] = {"bbox_2d": box_target(det["box"], box_frame, image_sizes, model_image_sizes)}
        if det.get("label"):
            entry["label"] = det["label"]
        out.append(entry)
    return json.dumps(out)


def metrics(predictions: Sequence[dict]) -> dict:
    samples = [(p["parsed"] or [], _truth(p["solution"])) for p in predictions]
    has_truth = any(truth for _, truth in samples)
    stats = coco_stats(samples) if has_truth else [-1.0] * 12
    figure = {name: (stats[k] if stats[k] >= 0 else None) for name, k in (("mAP", 0), ("AP50", 1), ("AP75", 2), ("recall", 8))}
    n = len(predictions)
    figure["mean_det_f1"] = sum(float(p["score"] or 0.0) for p in predictions) / n if n else 0.0
    return figure


def marks(solution: Any, parsed: Any) -> list[Mark]:
    out = []
    for dets, role in ((solution, "truth"), (parsed, "pred")):
        for det in dets if isinstance(dets, list) else []:
            box = det.get("box") if isinstance(det, dict) else None
            if isinstance(box, list) and len(box) == 4 and boxes.is_valid_box(box):
                out.append(Mark("box", list(box), role, det.get("label")))
    return out


TEMPLATE = ("{question}\n" + REASONING + ' The answer is a JSON list of every such object, '
            '[{{"bbox_2d": [x1, y1, x2, y2], "label": "name"}}, ...], {frame}; [] when there is none.')

TASK = Task(
    "det", "det_f1", parse, f1, threshold=1.0,
    template=TEMPLATE,
    check=check,
    read_answer=read_answer,
    boxes=boxes_of,
    with_boxes=with_boxes,
    target=target,
    metrics=metrics,
    headline="mAP",
    marks=marks,
)
"""``det`` as judged by ``det_f1``: correct when every box is matched (F1 = 1)."""
AP_TASK = Task("det", "det_ap", parse, average_precision, threshold=1.0)
ODLENGTH_TASK = Task("det", "det_odlength", parse, odlength, threshold=1.0)
