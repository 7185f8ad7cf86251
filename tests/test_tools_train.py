"""Multi-turn GRPO with the zoom_in tool on TRL's real GRPOTrainer (environment_factory, its tool loop, its
training forward), the tiny model, synthetic zoom data. The policy's sampling is scripted (a hand-written
``generate`` that answers each turn with a fixed text), so the rollouts hold known tool calls: a good
one, an inverted box, one past the call limit and one whose JSON does not parse. Everything after the
tokens is TRL's: parsing the calls, the environment, the tool responses, the rewards, the loss."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.conftest import _prep

BASE = [
    "--config", "scripts/configs/tiny_cpu.yaml",
    "--max_completion_length", "400",
    "--per_device_train_batch_size", "4",
    "--num_generations", "4",
    "--report_to", "none",
    "--dataloader_num_workers", "0",
    "--save_strategy", "no",
    "--rollout_log_steps", "1",
    "--tools", "zoom_in",
    "--max_tool_calls", "1",
    "--reward_funcs", "format", "accuracy", "tool_bonus",
]


@pytest.fixture(scope="module")
def zoom_one(tmp_path_factory):
    """One zoom record (448x448, drawn at 112 and enlarged 4x): every rollout of a step is about it."""
    path = tmp_path_factory.mktemp("data") / "zoom"
    _prep(path, "zoom", 1, extra=("--image-size", "112", "--grid", "28", "--num-shapes", "1", "--size-range",
                                  "12-24", "--background", "tiles"))
    return path


def _call(box, **extra) -> str:
    arguments = json.dumps({"bbox_2d": box, **extra})
    return '<tool_call>\n{"name": "zoom_in", "arguments": %s}\n</tool_call>' % arguments


class ScriptedGenerate:
    """``model.generate`` replaced: rollout ``k`` of a group follows ``scripts[k]``, one text per turn."""

    def __init__(self, model, tokenizer, scripts: list[list[str]]) -> None:
        self.model, self.tokenizer, self.scripts = model, tokenizer, scripts
        self.calls = 0

    def __call__(self, input_ids, attention_mask=None, **kwargs):
        rows = []
        for r, ids in enumerate(input_ids.tolist()):
            text = self.tokenizer.decode(ids)
            turn = text.count("<tool_response>")
            script = self.scripts[r] if turn == 0 else next(s for s in self.scripts if s[0] in text)
            rows.append(self.tokenizer(script[min(turn, len(script) - 1)] + "<|im_end|>")["input_ids"])
        self.calls += 1
        width = max(map(len, rows))
        pad = self.tokenizer.pad_token_id
        completion = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
        return torch.cat([input_ids, completion.to(input_ids.device)], 1)


def test_zoom_rollouts_through_trl(tiny_dir, zoom_one, tmp_path, caplog):
    from trl import GRPOConfig

    from data_prep.packed import load_packed
    from vlm_grpo.config import GRPO_DEFAULTS, parse
    from vlm_grpo.speed import cache_stats
    from vlm_grpo.train import build_grpo_trainer, run_training

    record = load_packed(zoom_one).records[0]
    answer, box = record.solution["answer"], record.solution["box"]  # box in original (448 px) pixels
    model_box = [round(v * 112 / 448) for v in box]  # in the frame of the 112 px image the policy sees
    out = tmp_path / "run"
    argv = [*BASE, "--model_name_or_path", str(tiny_dir), "--train_data", str(zoom_one),
            "--output_dir", str(out), "--max_steps", "1", "--max_pixels", str(112 * 112)]
    with caplog.at_level("WARNING"):
        trainer, prepared = build_grpo_trainer(*parse(GRPOConfig, GRPO_DEFAULTS, argv))
    # one console line says what the group-shared prompt does under multi-turn rollouts
    assert sum("group_shared_prompt steps aside" in r.getMessage() for r in caplog.records) == 1
    assert trainer.args.max_tool_calling_iterations == 2  # max_tool_calls + 1: a call past it gets its error
    assert prepared.rows.model_image_sizes[0] == [[112, 112]]
    final = f"<think>zoomed</think><answer>{answer}</answer>"
    scripts = [
        ['<tool_call>\n{"name": "zoom_in", "arguments": {"bbox_2d": [1, 2</tool_call>'],  # JSON that does not parse
        [_call(model_box), final],  # a good call, then the right answer
        [_call([60, 60, 10, 10]), final],  # an inverted box: an error text back, then the right answer
        [_call(model_box, label="dot"), _call(model_box), final],  # a second call past max_tool_calls=1
    ]
    model = trainer.model
    model.generate = ScriptedGenerate(model, prepared.processor.tokenizer, scripts)
    grids = []  # what the vision tower encodes in each call: prompt images, and crops where rollouts zoomed
    hook = model.model.visual.register_forward_pre_hook(
        lambda module, args, kwargs: grids.append(kwargs.get("grid_thw", args[1] if len(args) > 1 else None)),
        with_kwargs=True)
    received = []
    original = trainer.reward_funcs[2]

    def spy(completions, **columns):
        received.append((completions, columns))
        return original(completions, **columns)

    spy.__name__ = original.__name__
    trainer.reward_funcs[2] = spy
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    run_training(trainer, None)
    hook.remove()

    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(math.isfinite(v) for v in losses)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)

    # what the rewards received: the whole conversation of each rollout, the tool's responses inside
    completions, columns = received[-1]
    assert [c[-1]["content"] for c in completions[1:]] == [final] * 3
    tool_messages = [[m for m in c if m["role"] == "tool"] for c in completions]
    assert tool_messages[0] == []  # unparsable JSON: TRL keeps it as text, no tool turn, the run goes on
    assert tool_messages[1][0]["content"][0]["type"] == "image"
    crop = tool_messages[1][0]["content"][0]["image"]
    # the shape's box cut from the 448 px original (about 50..100 px a side), upscaled to max_pixels
    assert 0.8 * 112 * 112 <= crop.size[0] * crop.size[1] <= 112 * 112
    assert "empty or inverted" in tool_messages[2][0]["content"]
    assert tool_messages[3][0]["content"][0]["type"] == "image" and "no calls left" in tool_messages[3][1]["content"]
    assert columns["images"][0][0].size == (448, 448)  # reset() got the original image

    # what each reward made of them: accuracy on the final answer, the bonus only with a successful call
    logged = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()][-4:]
    assert [r["rewards"]["accuracy"] for r in logged] == [0.0, 1.0, 1.0, 1.0]
    assert [r["rewards"]["tool_bonus"] for r in logged] == [0.0, 1.0, 0.0, 1.0]
    assert [[c["ok"] for c in r["tool_calls"]] for r in logged] == [[], [True], [False], [True, False]]
    assert logged[1]["tool_calls"][0]["arguments"] == {"bbox_2d": model_box}

    # the crops reached the training forward: each step's forward asked for 1 + 1 + 1 + 2 images (each
    # rollout's own image, and the two successful crops), and the group image cache (on) encoded the distinct
    # ones: the shared image once, the two identical crops once
    stats = cache_stats(model)
    steps = trainer.state.global_step
    assert (stats.calls, stats.requested, stats.encoded) == (steps, 6 * steps, 2 * steps)
    assert len(grids) == steps and all(len(g) == 2 for g in grids)
