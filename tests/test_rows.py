"""Packed datasets -> trainer rows: images, reward columns, prompt lengths, mixing, templates."""

from __future__ import annotations

import pytest
from PIL import Image

from vlm_grpo.data import Resize, build_rows, mix, prompt_length
from vlm_grpo.prompts import TEMPLATES, merged_templates, render_prompt


@pytest.fixture(scope="module")
def processor(tiny_dir):
    from vlm_grpo.modeling import load_processor

    return load_processor(str(tiny_dir))


def test_rows_carry_images_and_reward_columns(processor, rec_data):
    rows = build_rows([str(rec_data)], processor, box_frame="model_pixels")
    row = rows.to_hf()[0]
    assert isinstance(row["images"][0], Image.Image) and row["images"][0].mode == "RGB"
    assert row["task"] == "rec" and len(row["solution"]) == 4
    assert row["box_frame"] == "model_pixels"
    assert row["image_sizes"] == [list(row["images"][0].size)]
    assert row["model_image_sizes"] == [Resize.of(processor).model_size(*row["image_sizes"][0])]
    content = row["prompt"][0]["content"]
    assert content[0] == {"type": "image"} and "<answer>" in content[1]["text"]


def test_prompt_length_counts_image_tokens_like_the_processor(processor, rec_data):
    rows = build_rows([str(rec_data)], processor, box_frame="model_pixels")
    resize = Resize.of(processor)
    for i in range(3):
        row = rows.row(i)
        text = processor.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        real = processor(text=[text], images=row["images"], return_tensors="pt")["input_ids"].shape[1]
        assert prompt_length(processor, rows.prompts[i], row["image_sizes"], resize) == real


def test_max_prompt_tokens_drops_and_counts_never_truncates(processor, rec_data):
    rows = build_rows([str(rec_data)], processor, box_frame="model_pixels")
    resize = Resize.of(processor)
    lengths = sorted(prompt_length(processor, rows.prompts[i], rows.record(i).image_sizes, resize) for i in range(len(rows)))
    limit = lengths[len(lengths) // 2]
    kept = build_rows([str(rec_data)], processor, box_frame="model_pixels", max_prompt_tokens=limit)
    assert kept.dropped_too_long == sum(n > limit for n in lengths)
    assert len(kept) + kept.dropped_too_long == len(rows)


def test_mixing_weights_set_each_datasets_share():
    pairs = mix([10, 30], [1.0, 1.0], seed=0)
    assert len(pairs) == 40
    assert sum(d == 0 for d, _ in pairs) == 20  # the small set repeated to half the mix
    assert mix([10, 30], None, seed=0) == [(0, r) for r in range(10)] + [(1, r) for r in range(30)]
    assert mix([10, 30], [1.0, 3.0], seed=5) == mix([10, 30], [1.0, 3.0], seed=5)
    with pytest.raises(ValueError, match="one per dir"):
        mix([10, 30], [1.0], seed=0)


def test_templates_render_and_reject_bad_overrides():
    text = render_prompt("rec", "  the red circle ", "norm1000")
    assert text.startswith("the red circle\n") and "0-1000" in text
    assert set(TEMPLATES) == {"rec", "math", "count", "mcq", "open", "det", "point", "zoom"}
    custom = merged_templates({"rec": "Find {question}. Box {frame}."})
    assert render_prompt("rec", "x", "original_pixels", custom) == "Find x. Box in pixels of the original image."
    with pytest.raises(ValueError, match="must contain {question}"):
        merged_templates({"rec": "no placeholder"})
    with pytest.raises(ValueError, match="unknown field"):
        merged_templates({"math": "{question} {colour}"})
    with pytest.raises(ValueError, match="no prompt template for task 'ocr'"):
        render_prompt("ocr", "q", "model_pixels")


def test_a_missing_image_fails_with_the_record_id(processor, tmp_path):
    import shutil

    from conftest import _prep

    data = tmp_path / "rec"
    _prep(data, "rec", 3)
    rows = build_rows([str(data)], processor, box_frame="model_pixels")
    shutil.rmtree(data / "images")
    with pytest.raises(ValueError, match=rows.record(0).id):
        rows.row(0)
