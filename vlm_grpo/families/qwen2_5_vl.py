"""Qwen2.5-VL (``qwen2_5_vl``): boxes in the resized image's pixels, 28 px per LM token, window attention.

Vision tower ``model.visual`` (``Qwen2_5_VisionTransformerPretrainedModel``): 14 px patches merged 2x2 by
``visual.merger`` into the language model's width; its output is ``last_hidden_state`` (per patch) and
``pooler_output`` (per merged token). Language backbone ``model`` (``Qwen2_5_VLModel``) with
``language_model`` inside.
"""

from __future__ import annotations

from vlm_grpo.families import QWEN2_CHAT_TEMPLATE, Family, tiny_text_config, vision_token_ids
from vlm_grpo.families.tool_calls import HERMES_RESPONSE_TEMPLATE, qwen_tool_chat_template


def tiny_config(ids: dict[str, int], spec, vocab_size: int):
    """A ``Qwen2_5_VLConfig`` of ``spec``'s sizes (one full-attention block last, 56 px windows)."""
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config=tiny_text_config(ids, spec, vocab_size),
        vision_config={
            "depth": spec.vision_depth,
            "hidden_size": spec.vision_hidden,
            "intermediate_size": spec.vision_intermediate,
            "num_heads": spec.vision_heads,
            "out_hidden_size": spec.text_hidden,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [spec.vision_depth - 1],
            "tokens_per_second": 2,
        },
        **vision_token_ids(ids),
        tie_word_embeddings=True,
    )


# Qwen2.5-VL-3B-Instruct's config.json (the sizes that decide speed and memory; ../shared/qwen2_5_vl_3b_shape.json)
PUBLISHED = {
    "Qwen/Qwen2.5-VL-3B-Instruct": {
        "text_config": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                        "num_attention_heads": 16, "num_key_value_heads": 2, "max_position_embeddings": 128000,
                        "rope_parameters": {"rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]}},
        "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                          "out_hidden_size": 2048, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]},
    },
}

FAMILIES = (
    Family(
        name="qwen2_5_vl",
        model_types=("qwen2_5_vl",),
        display="Qwen2.5-VL",
        model_class="Qwen2_5_VLForConditionalGeneration",
        config_class="Qwen2_5_VLConfig",
        processor_class="Qwen2_5_VLProcessor",
        box_frame="model_pixels",
        pixels_per_token=28,
        tiny_config=tiny_config,
        chat_template=QWEN2_CHAT_TEMPLATE,
        tool_chat_template=qwen_tool_chat_template("You are a helpful assistant."),
        response_template=HERMES_RESPONSE_TEMPLATE,
        probe_vision={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                      "out_hidden_size": "text_hidden", "fullatt_block_indexes": [1]},
        published=PUBLISHED,
    ),
)
