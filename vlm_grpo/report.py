"""A self-contained HTML report: metrics on top, then a gallery of samples, failures first.

Images are embedded as base64 PNG thumbnails with what each task draws
(``Task.marks``: rec's boxes, det's every box with its label, point's box and
click) in green for the ground truth and red for the prediction (original pixels,
scaled with the thumbnail); in a multi-turn eval with tools, the regions a sample
zoomed in on are drawn in blue and shown cut from the original under the image,
with each tool call and its outcome. Buttons filter the gallery to correct or incorrect samples.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from PIL import Image, ImageDraw

from rewards.tasks import TASKS, Mark
from vlm_grpo.data import RowSet
from vlm_grpo.files import atomic_write_text

GT_COLOUR = (0, 200, 0)
PRED_COLOUR = (230, 0, 0)
CROP_COLOUR = (0, 90, 230)  # a region the model zoomed in on (a zoom_in call that succeeded)
CROP_THUMB = 96
THUMB = 320  # longest side of an embedded image, px
MAX_SAMPLES = 500  # gallery size cap; metrics always cover every sample


def draw_boxes(image: Image.Image, truth=None, predicted=None, size: int = THUMB) -> Image.Image:
    """A thumbnail of ``image`` with the boxes (original-pixel coordinates) drawn on it."""
    marks = [Mark("box", list(box), role) for box, role in ((truth, "truth"), (predicted, "pred"))
             if _is_box(box) and box[2] > box[0] and box[3] > box[1]]
    return draw_marks(image, marks, size)


def draw_marks(image: Image.Image, marks: list[Mark], size: int = THUMB) -> Image.Image:
    """A thumbnail of ``image`` with a task's marks (original pixels) drawn on it: boxes as
    rectangles, points as a cross in a circle, each label written at its top left."""
    scale = size / max(image.size)  # small synthetic images are enlarged too, so boxes stay visible
    thumb = image.convert("RGB").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    draw = ImageDraw.Draw(thumb)
    for mark in marks:
        colour = {"truth": GT_COLOUR, "crop": CROP_COLOUR}.get(mark.role, PRED_COLOUR)
        xy = [v * scale for v in mark.xy]
        if mark.kind == "point":
            x, y = xy
            draw.ellipse([x - 5, y - 5, x + 5, y + 5], outline=colour, width=2)
            draw.line([x - 7, y, x + 7, y], fill=colour, width=1)
            draw.line([x, y - 7, x, y + 7], fill=colour, width=1)
        else:
            draw.rectangle(xy, outline=colour, width=2)
        if mark.label:
            draw.text((xy[0] + 2, xy[1] + 1), mark.label[:40], fill=colour)
    return thumb


def _crops_html(image: Image.Image, crops: list) -> str:
    """The regions a sample zoomed in on, each cut from the original image, in a row under it."""
    if not crops:
        return ""
    tiles = []
    for k, box in enumerate(crops):
        crop = image.convert("RGB").crop(tuple(int(v) for v in box))
        scale = CROP_THUMB / max(crop.size)
        crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))))
        tiles.append(f'<figure><img src="{_data_uri(crop)}" alt="zoom {k + 1}"><figcaption>zoom {k + 1} '
                     f'{html.escape(json.dumps(list(box)))}</figcaption></figure>')
    return f'<div class="crops">{"".join(tiles)}</div>'


def _is_box(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value)


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _card(prediction: dict, rows: RowSet) -> str:
    ok = bool(prediction["correct"])
    image_html = ""
    try:
        record = rows.record(prediction["index"])
        if record.images:
            task = TASKS.get(prediction["task"])
            marks = task.marks(prediction["solution"], prediction["parsed"]) if task is not None and task.marks else []
            image = rows.image(prediction["index"])
            crops = [c for c in prediction.get("crops") or [] if _is_box(c)]
            marks += [Mark("box", list(c), "crop", f"zoom {k + 1}") for k, c in enumerate(crops)]
            thumb = draw_marks(image, marks)
            image_html = f'<img src="{_data_uri(thumb)}" alt="{html.escape(str(prediction["id"]))}">'
            image_html += _crops_html(image, crops)
    except Exception as err:  # the report never fails on one unreadable image
        image_html = f"<p class=err>image unavailable: {html.escape(str(err))}</p>"
    score = prediction["score"]
    score_text = f"{score:.3f}" if isinstance(score, (int, float)) else "–"
    fields = [
        ("id", prediction["id"]),
        ("task", prediction["task"]),
        ("score", score_text),
        ("solution", json.dumps(prediction["solution"])),
        ("parsed", json.dumps(prediction["parsed"])),
    ]
    if prediction.get("tool_calls") is not None:
        calls = prediction["tool_calls"]
        fields.append(("tool calls", "; ".join(
            f"{c.get('name')}({json.dumps(c.get('arguments'))}) {'ok' if c.get('ok') else c.get('error')}"
            for c in calls) or "none"))
    if prediction.get("error"):
        fields.append(("error", prediction["error"]))
    meta = "".join(f"<dt>{k}</dt><dd>{html.escape(str(v))}</dd>" for k, v in fields)
    return (
        f'<div class="card {"ok" if ok else "bad"}">{image_html}<dl>{meta}</dl>'
        f"<details><summary>prompt and completion</summary><pre>{html.escape(prediction['prompt'])}</pre>"
        f"<pre>{html.escape(prediction['completion'])}</pre></details></div>"
    )


_FIGURES = (("mean_iou", "mean IoU"), ("mAP", "mAP@[.5:.95]"), ("AP50", "AP50"), ("AP75", "AP75"),
            ("recall", "recall"), ("mean_det_f1", "mean det F1"), ("tool_call_rate", "tool-call rate"),
            ("tool_success_rate", "successful calls"), ("crops_per_sample", "crops per sample"))


def _metrics_table(metrics: dict) -> str:
    rows = []
    for task, m in metrics["by_task"].items():
        low, high = m["accuracy_ci95"]
        extra = "".join(f", {label} {m[key]:.3f}" for key, label in _FIGURES if isinstance(m.get(key), (int, float)))
        extra += "".join(f", {html.escape(k)} {100 * v['accuracy']:.1f}% (n={v['count']})"
                         for group in ("by_data_type", "by_data_source") for k, v in m.get(group, {}).items())
        rows.append(
            f"<tr><td>{html.escape(task)}</td><td>{m['count']}</td><td>{100 * m['accuracy']:.1f}% "
            f"({100 * low:.1f}–{100 * high:.1f}%){extra}</td><td>{100 * m['format_rate']:.1f}%</td>"
            f"<td>{100 * m['parse_failure_rate']:.1f}%</td><td>{m['errors']}</td></tr>"
        )
    return (
        "<table><tr><th>task</th><th>n</th><th>accuracy (95% CI)</th><th>format</th><th>parse failures</th>"
        "<th>errors</th></tr>" + "".join(rows) + "</table>"
    )


STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
.gallery{display:flex;flex-wrap:wrap;gap:12px}.card{border:2px solid #ccc;padding:8px;width:340px}
.card.ok{border-color:#3a3}.card.bad{border-color:#c33}.card img{max-width:320px;display:block}
dt{font-weight:bold;float:left;clear:left;margin-right:.5em}dd{margin:0}pre{white-space:pre-wrap;font-size:12px}
.legend span{padding:0 6px;margin-right:8px}.err{color:#c33}
.crops{display:flex;gap:6px;flex-wrap:wrap}.crops figure{margin:4px 0}.crops figcaption{font-size:11px}
"""

SCRIPT = """
function show(kind){document.querySelectorAll('.card').forEach(c=>{
 c.style.display=(kind==='all'||c.classList.contains(kind))?'':'none';});}
"""


def render_report(result: dict, predictions: list[dict], rows: RowSet) -> str:
    """The report page as a string."""
    metrics = result["metrics"]
    ordered = sorted(predictions, key=lambda p: (bool(p["correct"]), p["index"]))[:MAX_SAMPLES]
    cards = "".join(_card(p, rows) for p in ordered)
    shown = f"showing {len(ordered)} of {len(predictions)} samples" if len(ordered) < len(predictions) else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>vlm-grpo eval</title>"
        f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>"
        f"<h1>Evaluation</h1><p>model <code>{html.escape(result['model'])}</code><br>"
        f"data <code>{html.escape(result['data'])}</code></p>"
        f"<p><b>{html.escape(metrics['metric'])}: {metrics['value']:.4f}</b> over {metrics['count']} samples</p>"
        f"{_metrics_table(metrics)}"
        f"<p class=legend><span style='border:2px solid rgb{GT_COLOUR}'>ground truth</span>"
        f"<span style='border:2px solid rgb{PRED_COLOUR}'>prediction</span>"
        f"<span style='border:2px solid rgb{CROP_COLOUR}'>zoomed in (crops under the image)</span> {shown}</p>"
        f"<p><button onclick=\"show('all')\">all</button> <button onclick=\"show('bad')\">incorrect</button> "
        f"<button onclick=\"show('ok')\">correct</button></p>"
        f"<div class=gallery>{cards}</div></body></html>"
    )


def write_report(path: Path, result: dict, predictions: list[dict], rows: RowSet) -> None:
    atomic_write_text(path, render_report(result, predictions, rows))
