"""Cold start for tool use: supervised fine-tuning on tool-use traces, so a small policy calls the tool in the
right format before GRPO.

A trace is built from a record whose solution names the region to look at (the zoom task's ``box``):
the prompt with the tool listed, an assistant turn that calls ``zoom_in`` on that box (in the family's box
frame, rounded; after a ``<think>`` of the record's ``meta.zoom_thinking`` when it has one, e.g. "the purple
circle", the phrase a box answer of the rec task follows), the tool turn with the real crop (the same :class:`~vlm_grpo.tools.zoom.ZoomEnvironment`
GRPO runs), and the final ``<think>…</think><answer>…</answer>``. Every other record (odd row index)
becomes a direct trace instead: the task's own prompt, without tools, answered at once, so the same
policy can be evaluated with and without the tool. The loss covers the assistant turns only.

TRL's ``SFTTrainer`` is not used here: its vision collator renders images of the prompt only (a crop in a
tool turn of the completion would lose its pixels). :class:`ToolTraceCollator` renders each turn with
the processor (images expanded to their tokens) and concatenates them, the same ids TRL's GRPO tool loop
builds (prompt ids + completion ids + tool suffix ids).
"""

from __future__ import annotations

import torch

from rewards.boxes import from_original_pixels
from rewards.tasks import TASKS
from vlm_grpo.data import RowSet
from vlm_grpo.generation import user_message
from vlm_grpo.prompts import render_prompt
from vlm_grpo.sft import answer_text, thinking_text


def _final(row: dict, meta: dict) -> dict:
    return {"role": "assistant", "content": f"<think>{thinking_text(row, meta)}</think><answer>{answer_text(row)}</answer>"}


def tool_trace(row: dict, meta: dict, toolset, direct: bool) -> dict:
    """One trace: ``messages`` (images as placeholders), ``images`` (in order), ``tools`` (listed or not)."""
    if direct or not isinstance(row["solution"], dict) or "box" not in row["solution"]:
        text = render_prompt(row["task"], row["problem"], row["box_frame"], {row["task"]: TASKS[row["task"]].template})
        messages = user_message(text, len(row["images"])) + [_final(row, meta)]
        return {"messages": messages, "images": list(row["images"]), "tools": False}
    box = from_original_pixels(row["solution"]["box"], row["box_frame"], row["image_sizes"][0],
                               row["model_image_sizes"][0])
    bbox = [int(round(v)) for v in box]
    environment = toolset.environment()
    environment.reset(**row)
    content = environment.zoom_in(bbox)
    crops = [part["image"] for part in content if part.get("type") == "image"]
    call = {"type": "function", "function": {"name": "zoom_in", "arguments": {"bbox_2d": bbox}}}
    before = f"<think>{meta['zoom_thinking']}</think>" if meta.get("zoom_thinking") else ""
    messages = [*row["prompt"], {"role": "assistant", "content": before, "tool_calls": [call]},
                {"role": "tool", "name": "zoom_in",
                 "content": [{"type": "image"} if p.get("type") == "image" else p for p in content]},
                _final(row, meta)]
    return {"messages": messages, "images": list(row["images"]) + crops, "tools": True}


def trace_dataset(rows: RowSet, toolset):
    """A ``datasets.Dataset`` of traces (decoded on access): tool traces on even rows, direct ones on odd."""

    def make(i: int) -> dict:
        return tool_trace(rows.row(i), rows.record(i).meta, toolset, direct=i % 2 == 1)

    return rows.to_hf(make)


class ToolTraceCollator:
    """Traces -> model inputs: ``input_ids``, ``attention_mask``, ``labels`` (assistant turns only),
    ``mm_token_type_ids``, ``pixel_values``, ``image_grid_thw`` (right-padded)."""

    def __init__(self, processor, schemas) -> None:
        self.processor, self.schemas = processor, schemas

    def segments(self, trace: dict) -> list[tuple[str, bool]]:
        """The trace's text cut at the assistant turns: ``(text, is_assistant)`` in order."""
        tools = self.schemas if trace["tools"] else None
        render = self.processor.apply_chat_template
        messages, out, done = trace["messages"], [], ""
        for k, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = render(messages[:k], tools=tools, add_generation_prompt=True, tokenize=False)
            upto = render(messages[: k + 1], tools=tools, tokenize=False)
            out += [(before[len(done):], False), (upto[len(before):], True)]
            done = upto
        return out

    def encode(self, trace: dict) -> dict:
        ids, labels, kinds, pixels, grids = [], [], [], [], []
        images = list(trace["images"])
        for text, trained in self.segments(trace):
            count = text.count("<|image_pad|>")
            mine, images = images[:count], images[count:]
            enc = self.processor(text=[text], images=mine or None, return_tensors="pt")
            seg = enc["input_ids"][0].tolist()
            ids += seg
            labels += seg if trained else [-100] * len(seg)
            kinds += enc["mm_token_type_ids"][0].tolist() if "mm_token_type_ids" in enc else [0] * len(seg)
            if mine:
                pixels.append(enc["pixel_values"])
                grids.append(enc["image_grid_thw"])
        return {"ids": ids, "labels": labels, "kinds": kinds, "pixels": pixels, "grids": grids}

    def __call__(self, traces: list[dict]) -> dict:
        encoded = [self.encode(t) for t in traces]
        width = max(len(e["ids"]) for e in encoded)
        pad = self.processor.tokenizer.pad_token_id

        def padded(key, value):
            return torch.tensor([e[key] + [value] * (width - len(e[key])) for e in encoded])

        batch = {
            "input_ids": padded("ids", pad),
            "attention_mask": torch.tensor([[1] * len(e["ids"]) + [0] * (width - len(e["ids"])) for e in encoded]),
            "labels": padded("labels", -100),
            "mm_token_type_ids": padded("kinds", 0),
        }
        pixels = [p for e in encoded for p in e["pixels"]]
        if pixels:
            batch["pixel_values"] = torch.cat(pixels)
            batch["image_grid_thw"] = torch.cat([g for e in encoded for g in e["grids"]])
        return batch


def build_tool_sft_trainer(args, model, prepared):
    """A transformers ``Trainer`` on tool-use traces of ``prepared.rows`` (``prepared.tools`` set)."""
    from transformers import Trainer

    toolset = prepared.tools
    return Trainer(model=model, args=args, train_dataset=trace_dataset(prepared.rows, toolset),
                   data_collator=ToolTraceCollator(prepared.processor, toolset.schemas()),
                   processing_class=prepared.processor)
