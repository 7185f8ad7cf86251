"""GRPO runs that can fail: images the processor resizes, rewards that vary, weights that move and are saved.

The starting policy is the shipped demo policy (``vlm_grpo/assets/demo_policy``), which answers
boxes in the frame of the image it sees. Its images here are 224x168 with ``max_pixels`` = 112x84,
so the processor halves them and a box must be scaled by 2 to match the solution: a frame
conversion turned the wrong way, or a model size that is not the processor's, scores ~0 where the
policy scores ~0.5 (greedy mean IoU 0.51 on this data). Its IoUs vary inside each group (sampling
at temperature 1), so the weights move, and the saved final model must be the trained one.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from rows_helpers import trainer_rows
from transformers import TrainerCallback

from rewards.boxes import iou
from rewards.parsing import completion_text, final_answer, parse_box
from vlm_grpo.commands.demo import SHIPPED_POLICY

ORIGINAL = (224, 168)
MODEL = (112, 84)  # what smart_resize makes of 224x168 within MAX_PIXELS (factor 28)
MAX_PIXELS = MODEL[0] * MODEL[1]
ARGS = [
    "--config", "scripts/configs/tiny_cpu.yaml", "--model_name_or_path", str(SHIPPED_POLICY),
    "--max_pixels", str(MAX_PIXELS), "--freeze_vision", "true", "--reward_funcs", "format", "iou",
    "--per_device_train_batch_size", "32", "--num_generations", "4", "--max_completion_length", "48",
    "--learning_rate", "1e-4", "--max_steps", "2", "--save_strategy", "no", "--report_to", "none",
    "--rollout_log_steps", "1", "--seed", "0",
]


@pytest.fixture(scope="module")
def resized_rec(tmp_path_factory):
    """The demo's layout (one shape per grid cell, position-coding tiles) at twice the demo's size, 4x3 cells."""
    from conftest import _prep

    path = tmp_path_factory.mktemp("data") / "rec224"
    _prep(path, "rec", 32, seed=3, extra=("--image-size", "x".join(map(str, ORIGINAL)), "--grid", "56",
                                          "--num-shapes", "1", "--size-range", "24-48", "--background", "tiles"))
    return path


class FinalWeights(TrainerCallback):
    """The trained weights at the end of training (LoRA merged into a copy), before the final save."""

    def __init__(self) -> None:
        self.weights: dict[str, torch.Tensor] = {}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        trained = copy.deepcopy(model)
        if hasattr(trained, "merge_and_unload"):
            trained = trained.merge_and_unload()
        self.weights = {n: p.detach().clone() for n, p in trained.named_parameters()}


def _train(out, *extra):
    from trl import GRPOConfig

    from vlm_grpo.config import GRPO_DEFAULTS, parse
    from vlm_grpo.modeling import load_model
    from vlm_grpo.train import build_grpo_trainer, run_training

    trainer, prepared = build_grpo_trainer(*parse(GRPOConfig, GRPO_DEFAULTS, [*ARGS, "--output_dir", str(out), *extra]))
    final = FinalWeights()
    trainer.add_callback(final)
    run_training(trainer, None)
    start = dict(load_model(str(SHIPPED_POLICY)).named_parameters())
    saved = dict(load_model(str(out)).named_parameters())
    return trainer, prepared, start, final.weights, saved


def _assert_moved_and_saved(start, trained, saved):
    assert trained.keys() == saved.keys() == start.keys()
    moved = [n for n in trained if not torch.equal(trained[n], start[n])]
    assert moved and all(".visual." not in f".{n}" for n in moved), moved[:5]  # the vision tower is frozen
    assert any("language_model" in n for n in moved)
    different = [n for n in trained if not torch.equal(saved[n], trained[n])]
    assert not different, f"the saved final model is not the trained one: {different[:5]}"


def test_processor_resizes_and_rows_say_so(resized_rec):
    from vlm_grpo.modeling import load_processor

    processor = load_processor(str(SHIPPED_POLICY), max_pixels=MAX_PIXELS)
    rows = trainer_rows([resized_rec], processor)
    grid = processor.image_processor(images=[rows[0]["images"][0]], return_tensors="pt")["image_grid_thw"][0]
    seen = [int(grid[2]) * processor.image_processor.patch_size, int(grid[1]) * processor.image_processor.patch_size]
    assert seen == list(MODEL)  # the real processor's output, not our Resize rule
    assert all(r["image_sizes"] == [list(ORIGINAL)] and r["model_image_sizes"] == [list(MODEL)] for r in rows)


def test_resized_images_train_in_the_model_frame_and_the_trained_weights_are_saved(resized_rec, tmp_path):
    out = tmp_path / "run"
    trainer, prepared, start, trained, saved = _train(out, "--train_data", str(resized_rec))
    assert prepared.box_frame == "model_pixels"
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == 64 and {r["step"] for r in rollouts} == {1, 2}
    # Each logged IoU is the policy's box scaled by original / model size (224/112, 168/84), worked out here.
    sx, sy = ORIGINAL[0] / MODEL[0], ORIGINAL[1] / MODEL[1]
    for r in rollouts:
        box = parse_box(final_answer(completion_text(r["completion"])))
        expected = 0.0 if box is None else iou([box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy], r["solution"])
        assert r["rewards"]["iou"] == pytest.approx(expected, abs=1e-9), r
    logged = [h["rewards/iou/mean"] for h in trainer.state.log_history if "rewards/iou/mean" in h]
    # sampled at temperature 1 this policy scores 0.2-0.4 per step here; in a wrong frame ~0
    assert len(logged) == 2 and sum(logged) / 2 > 0.1, logged
    assert max(h["rewards/iou/std"] for h in trainer.state.log_history if "rewards/iou/std" in h) > 0
    _assert_moved_and_saved(start, trained, saved)


def test_lora_training_saves_the_merged_trained_model(resized_rec, tmp_path):
    _, _, start, trained, saved = _train(tmp_path / "lora", "--train_data", str(resized_rec), "--use_peft", "true",
                                         "--lora_r", "8", "--lora_alpha", "16", "--learning_rate", "1e-3")
    _assert_moved_and_saved(start, trained, saved)


def test_sft_targets_on_resized_images_are_in_the_model_frame_and_score_full_iou(resized_rec):
    from rows_helpers import score_rows

    import rewards
    from vlm_grpo.data import build_rows
    from vlm_grpo.modeling import load_processor
    from vlm_grpo.sft import sft_dataset

    processor = load_processor(str(SHIPPED_POLICY), max_pixels=MAX_PIXELS)
    rows = trainer_rows([resized_rec], processor)
    targets = sft_dataset(build_rows([str(resized_rec)], processor, box_frame="model_pixels"))
    completions = [targets[i]["completion"][0]["content"] for i in range(len(targets))]
    for row, text in zip(rows, completions):
        box = parse_box(final_answer(text))
        x1, y1, x2, y2 = row["solution"]
        expected = [x1 * MODEL[0] / ORIGINAL[0], y1 * MODEL[1] / ORIGINAL[1], x2 * MODEL[0] / ORIGINAL[0],
                    y2 * MODEL[1] / ORIGINAL[1]]
        assert box == [round(v) for v in expected]
    assert min(score_rows(rewards.get("iou"), rows, completions)) > 0.8  # only integer rounding in the model frame
