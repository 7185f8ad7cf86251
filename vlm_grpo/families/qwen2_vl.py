"""Qwen2-VL (``qwen2_vl``): boxes in relative 0..1000 coordinates, 28 px per LM token, full attention per image.

Vision tower ``model.visual`` (``Qwen2VisionTransformerPretrainedModel``, sized by ``embed_dim`` and
``mlp_ratio``; ``hidden_size`` is the language model's width its merger projects into), merger
``visual.merger``; backbone ``model`` (``Qwen2VLModel``).
"""

from __future__ import annotations

from vlm_grpo.families import QWEN2_CHAT_TEMPLATE, Family, tiny_text_config, vision_token_ids
from vlm_grpo.families.tool_calls import HERMES_RESPONSE_TEMPLATE, qwen_tool_chat_template


def tiny_config(ids: dict[str, int], spec, vocab_size: int):
    """A ``Qwen2VLConfig`` of ``spec``'s sizes (MLP ratio ``vision_intermediate // vision_hidden``, at least 1)."""
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config=tiny_text_config(ids, spec, vocab_size),
        vision_config={
            "depth": spec.vision_depth,
            "embed_dim": spec.vision_hidden,
            "num_heads": spec.vision_heads,
            "mlp_ratio": max(1, spec.vision_intermediate // spec.vision_hidden),
            "hidden_size": spec.text_hidden,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        **vision_token_ids(ids),
        tie_word_embeddings=True,
    )


FAMILIES = (
    Family(
        name="qwen2_vl",
        model_types=("qwen2_vl",),
        display="Qwen2-VL",
        model_class="Qwen2VLForConditionalGeneration",
        config_class="Qwen2VLConfig",
        processor_class="Qwen2VLProcessor",
        box_frame="norm1000",
        pixels_per_token=28,
        tiny_config=tiny_config,
        chat_template=QWEN2_CHAT_TEMPLATE,
        tool_chat_template=qwen_tool_chat_template("You are a helpful assistant."),
        response_template=HERMES_RESPONSE_TEMPLATE,
        probe_vision={"depth": 2, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2, "hidden_size": "text_hidden"},
    ),
)
