"""The offline tiny Qwen2.5-VL: build, save, load, generate, image token accounting."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from PIL import Image

from vlm_grpo.generation import generate, user_message
from vlm_grpo.modeling import load_model, load_processor
from vlm_grpo.tiny import SPECIAL_TOKENS, TinySpec, build_tiny

# What a released Qwen2.5-VL checkpoint folder holds (tokenizer.json-based tokenizer).
CHECKPOINT_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
}


def test_saved_folder_looks_like_a_checkpoint(tiny_dir):
    names = {p.name for p in tiny_dir.iterdir()}
    assert CHECKPOINT_FILES <= names
    assert "chat_template.jinja" in names
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        assert json.loads((tiny_dir / name).read_text())["processor_class"] == "Qwen2_5_VLProcessor", name
    preprocessor = json.loads((tiny_dir / "preprocessor_config.json").read_text())
    assert preprocessor["image_processor_type"] == "Qwen2VLImageProcessor"
    assert preprocessor["size"] == {"shortest_edge": 56 * 56, "longest_edge": 224 * 224}


def test_round_trip_gives_identical_weights_and_matching_token_ids(tiny_dir):
    built, _ = build_tiny(None, TinySpec())
    loaded = load_model(str(tiny_dir))
    processor = load_processor(str(tiny_dir))
    built_state = built.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, built_state[name]), name
    params = sum(p.numel() for p in loaded.parameters())
    assert 100_000 <= params <= 5_000_000
    tok, cfg = processor.tokenizer, loaded.config
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    assert cfg.text_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert cfg.text_config.vocab_size == len(tok)
    for token in SPECIAL_TOKENS:  # each special token is one id, never split
        assert len(tok.encode(token, add_special_tokens=False)) == 1, token


def test_chat_template_matches_qwen25_vl(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    text = processor.apply_chat_template(user_message("Where is the dog?"), add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Where is the dog?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_generate_a_group_for_an_image(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    image = Image.new("RGB", (120, 90), (10, 200, 30))
    out = generate(
        model, processor, [user_message("Locate the green square.")], [[image]],
        max_new_tokens=12, do_sample=True, num_return_sequences=4, seed=0,
    )
    assert len(out.texts) == 4
    assert all(isinstance(t, str) for t in out.texts)
    assert all(1 <= n <= 12 for n in out.completion_tokens)
    again = generate(
        model, processor, [user_message("Locate the green square.")], [[image]],
        max_new_tokens=12, do_sample=True, num_return_sequences=4, seed=0,
    )
    assert again.texts == out.texts  # fixed seed, same samples


def _expected_grid(width: int, height: int, min_pixels: int, max_pixels: int, factor: int = 28) -> tuple[int, int]:
    """smart_resize, written out: round to multiples of 28, then scale into [min, max] pixels."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h // 14, w // 14


@pytest.mark.parametrize("size", [(112, 112), (100, 80), (640, 427), (30, 20), (224, 56), (57, 301)])
def test_image_tokens_follow_the_processor_resize(tiny_model_and_processor, size):
    model, processor = tiny_model_and_processor
    text = processor.apply_chat_template(user_message("q"), add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=[Image.new("RGB", size)], return_tensors="pt")
    grid_h, grid_w = _expected_grid(*size, 56 * 56, 224 * 224)
    assert enc["image_grid_thw"].tolist() == [[1, grid_h, grid_w]]
    assert enc["pixel_values"].shape[0] == grid_h * grid_w
    n_pad = int((enc["input_ids"] == model.config.image_token_id).sum())
    assert n_pad == grid_h * grid_w // 4  # 2x2 patches merge into one token


def test_processor_pixel_bounds_are_configurable(tiny_dir):
    processor = load_processor(str(tiny_dir), min_pixels=28 * 28, max_pixels=56 * 56)
    text = processor.apply_chat_template(user_message("q"), add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=[Image.new("RGB", (400, 400))], return_tensors="pt")
    assert enc["image_grid_thw"].tolist() == [[1, 4, 4]]
    assert processor.tokenizer.padding_side == "left"
    with pytest.raises(ValueError, match="min_pixels"):
        load_processor(str(tiny_dir), min_pixels=10_000, max_pixels=5_000)


def test_cli_builds_the_tiny_model(tmp_path):
    out = tmp_path / "tiny"
    run = subprocess.run(
        [sys.executable, "-m", "vlm_grpo.cli", "tiny", "--output", str(out)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "parameters) written to" in run.stdout
    assert (out / "model.safetensors").exists()
    again = subprocess.run(
        [sys.executable, "-m", "vlm_grpo.cli", "tiny", "--output", str(out)], capture_output=True, text=True
    )
    assert again.returncode == 2
    assert "--overwrite" in again.stderr and "Traceback" not in again.stderr


def test_cli_help_lists_commands():
    run = subprocess.run([sys.executable, "-m", "vlm_grpo.cli", "--help"], capture_output=True, text=True)
    assert run.returncode == 0
    for command in ("tiny", "prep", "demo"):
        assert command in run.stdout
