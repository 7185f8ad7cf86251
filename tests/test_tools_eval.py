"""Evaluation with tools (multi-turn, batched, the training environment and limits), its metrics and report;
`vlm-grpo demo --task zoom --quick`."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import _prep
from vlm_grpo.cli import main as cli_main

ZOOM = ("--image-size", "112", "--grid", "28", "--num-shapes", "1", "--size-range", "12-24", "--background", "tiles")


@pytest.fixture(scope="module")
def zoom_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "zoom"
    _prep(path, "zoom", 4, extra=ZOOM)
    return path


class Replies:
    """``model.generate`` replaced: prompt row ``r`` of the first turn follows ``scripts[r]``; later turns are
    found by the text of their first reply."""

    def __init__(self, tokenizer, scripts):
        self.tokenizer, self.scripts, self.batches = tokenizer, scripts, []

    def __call__(self, input_ids, attention_mask=None, **kwargs):
        rows = []
        self.batches.append(len(input_ids))
        for r, ids in enumerate(input_ids.tolist()):
            text = self.tokenizer.decode(ids)
            turn = text.count("<tool_response>")
            script = self.scripts[r] if turn == 0 else next(s for s in self.scripts if s[0] in text)
            rows.append(self.tokenizer(script[min(turn, len(script) - 1)] + "<|im_end|>")["input_ids"])
        width = max(map(len, rows))
        pad = self.tokenizer.pad_token_id
        return torch.cat([input_ids, torch.tensor([row + [pad] * (width - len(row)) for row in rows])], 1)


def _call(box, **extra) -> str:
    return '<tool_call>\n{"name": "zoom_in", "arguments": %s}\n</tool_call>' % json.dumps({"bbox_2d": box, **extra})


def test_eval_with_tools_records_calls_crops_and_tool_metrics(tiny_dir, zoom_data, tmp_path):
    from vlm_grpo.data import build_rows
    from vlm_grpo.evaluate import EvalSettings, evaluate_rows
    from vlm_grpo.metrics import compute_metrics
    from vlm_grpo.modeling import family_of, load_model, load_processor
    from vlm_grpo.prompts import merged_templates
    from vlm_grpo.report import render_report
    from vlm_grpo.tools import prepare_processor, resolve_tools

    processor = load_processor(str(tiny_dir), max_pixels=112 * 112)
    model = load_model(str(tiny_dir), device="cpu")
    toolset = resolve_tools(["zoom_in"], processor, max_tool_calls=1)
    prepare_processor(processor, family_of(model.config))
    rows = build_rows([str(zoom_data)], processor, box_frame="model_pixels",
                      templates=merged_templates(toolset.templates))
    assert "call zoom_in" in rows.prompts[0]  # the tool's template describes it
    boxes = [[round(v / 4) for v in rows.record(i).solution["box"]] for i in range(len(rows))]
    answers = [rows.record(i).solution["answer"] for i in range(len(rows))]
    final = lambda i: f"<think>seen</think><answer>{answers[i]}</answer>"  # noqa: E731
    # length_order sorts rows by their prompts; every prompt here has the same image size and similar text
    scripts_by_row = {
        0: [_call(boxes[0]), final(0)],
        1: ["<think>no need</think><answer>purple</answer>"],
        2: [_call([50, 50, 10, 10], label="x"), final(2)],
        3: [_call(boxes[3], label="y"), _call(boxes[3]), final(3)],
    }
    from vlm_grpo.evaluate import length_order

    model.generate = Replies(processor.tokenizer, [scripts_by_row[i] for i in length_order(rows, range(len(rows)))])
    predictions = evaluate_rows(model, processor, rows, list(range(len(rows))), EvalSettings(batch_size=4,
                                max_new_tokens=64), progress=False, toolset=toolset)
    by_index = {p["index"]: p for p in predictions}
    assert [len(by_index[i]["tool_calls"]) for i in range(4)] == [1, 0, 1, 2]
    assert [[c["ok"] for c in by_index[i]["tool_calls"]] for i in range(4)] == [[True], [], [False], [True, False]]
    assert "empty or inverted" in by_index[2]["tool_calls"][0]["error"]
    assert "no calls left" in by_index[3]["tool_calls"][1]["error"]
    assert [len(by_index[i]["crops"]) for i in range(4)] == [1, 0, 0, 1]
    assert [by_index[i]["correct"] for i in range(4)] == [True, answers[1] == "purple", True, True]
    assert model.generate.batches == [4, 3, 1]  # batched: every row, the three that called, the one again
    metrics = compute_metrics(predictions)
    assert metrics["tool_call_rate"] == 0.75 and metrics["crops_per_sample"] == 0.5
    assert metrics["tool_success_rate"] == 0.5 and metrics["by_task"]["zoom"]["calls_per_sample"] == 1.0
    result = {"model": "m", "data": "d", "metrics": metrics}
    page = render_report(result, predictions, rows)
    assert page.count('alt="zoom 1"') == 2 and "tool calls" in page and "no calls left" in page


def test_quick_zoom_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--task", "zoom", "--quick", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| held-out ZOOM | before GRPO | after GRPO |" in printed and "| tool-call rate |" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "zoom" and "smoke test" in summary["note"]
    for side in ("before", "after"):
        assert {"tool_call_rate", "crops_per_sample"} <= set(summary[side]["with_tool"])
        assert "tool_call_rate" not in summary[side]["without_tool"]
    assert set(summary["seconds"]) == {"policy", "data", "sft", "eval_before_tool", "eval_before_plain", "grpo",
                                       "eval_after_tool", "eval_after_plain"}
    history = json.loads((out / "grpo" / "training_log.json").read_text())
    assert any("rewards/tool_bonus/mean" in h for h in history)
    assert all(f["active"] for f in history[0]["run"]["speed_features"].values())  # both speed features on


def test_tool_use_traces_for_the_cold_start(tiny_dir, zoom_data):
    from vlm_grpo.data import build_rows
    from vlm_grpo.modeling import family_of, load_config, load_processor
    from vlm_grpo.prompts import merged_templates
    from vlm_grpo.tools import prepare_processor, resolve_tools
    from vlm_grpo.tools.sft import ToolTraceCollator, trace_dataset

    processor = load_processor(str(tiny_dir), max_pixels=112 * 112)
    toolset = resolve_tools(["zoom_in"], processor)
    prepare_processor(processor, family_of(load_config(str(tiny_dir))))
    rows = build_rows([str(zoom_data)], processor, box_frame="model_pixels", templates=merged_templates(toolset.templates))
    traces = trace_dataset(rows, toolset)
    zoomed, direct = traces[0], traces[1]
    call = zoomed["messages"][1]
    box = rows.record(0).solution["box"]
    assert call["tool_calls"][0]["function"]["arguments"] == {"bbox_2d": [round(v / 4) for v in box]}
    assert call["content"] == f"<think>{rows.record(0).meta['zoom_thinking']}</think>"
    assert zoomed["tools"] and len(zoomed["images"]) == 2 and zoomed["messages"][2]["role"] == "tool"
    assert not direct["tools"] and len(direct["images"]) == 1 and len(direct["messages"]) == 2
    assert "zoom_in" not in direct["messages"][0]["content"][-1]["text"]  # the task's own prompt, no tool
    batch = ToolTraceCollator(processor, toolset.schemas())([zoomed, direct])
    tokenizer = processor.tokenizer
    trained = [tokenizer.decode([t for t, l in zip(ids, labels) if l != -100])
               for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist())]
    answer = rows.record(0).solution["answer"]
    assert trained[0].startswith("<think>") and '"name": "zoom_in"' in trained[0]
    assert trained[0].endswith(f"<answer>{answer}</answer><|im_end|>\n")
    assert "<tool_response>" not in trained[0] and "<|image_pad|>" not in trained[0]  # the crop is input, not target
    assert trained[1].startswith("<think>") and "zoom_in" not in trained[1]
    assert len(batch["image_grid_thw"]) == 3  # zoomed: its image and the crop; direct: its image
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((batch["input_ids"] == image_pad).sum()) == int(batch["image_grid_thw"].prod(-1).sum()) // 4
