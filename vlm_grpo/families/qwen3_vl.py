"""Qwen3-VL, dense (``qwen3_vl``) and Mixture of Experts (``qwen3_vl_moe``).

- Boxes: relative 0..1000 coordinates (``norm1000``; Qwen staff in QwenLM/Qwen3-VL issue 1427).
- 16 px patches merged 2x2: 32 px per language-model token (Qwen2/2.5-VL: 28).
- Vision tower ``model.visual`` (``Qwen3VLVisionModel``): full attention within each image, learned position
  embeddings resampled to each image's grid, and DeepStack: after the blocks listed in
  ``deepstack_visual_indexes`` a merger of its own (``visual.deepstack_merger_list.*``) projects the hidden
  states into the language model's width. The tower returns ``last_hidden_state`` (per patch),
  ``pooler_output`` (per merged token, from ``visual.merger``) and ``deepstack_features`` (one per-token
  tensor per DeepStack layer); the backbone adds the k-th DeepStack tensor to the hidden states at the image
  positions after the k-th decoder layer. Every one of them depends on an image's own patches and grid only,
  so the group image cache carries all three, gathered per image.
- Backbone ``model`` (``Qwen3VLModel`` / ``Qwen3VLMoeModel``), ``language_model`` inside; the cache argument is
  ``cache`` in transformers 5.24 (``past_key_values`` before).
- MoE: each decoder MLP is a router (``mlp.gate``, a ``Qwen3VLMoeTextTopKRouter``) and fused experts
  (``mlp.experts``: ``gate_up_proj`` / ``down_proj`` are 3-D parameters, not ``nn.Linear``). The default LoRA
  target (language-model linears) adapts the attention projections (and the MLP of ``mlp_only_layers``); the
  router and the experts stay frozen under LoRA and train in a full fine-tune. The router's load-balancing loss:
  TRL's ``GRPOTrainer`` sees ``output_router_logits`` in the text config, asks for the router logits in the
  training forward and adds ``router_aux_loss_coef`` (the config's 0.001 unless the GRPO config sets
  ``router_aux_loss_coef``) times ``aux_loss`` to the loss.
"""

from __future__ import annotations

from vlm_grpo.families import Family, qwen_chat_template, tiny_text_config, vision_token_ids
from vlm_grpo.families.tool_calls import HERMES_RESPONSE_TEMPLATE, qwen_tool_chat_template

# Qwen3-VL's chat template, reduced to what this project renders (no tools; no default system prompt).
CHAT_TEMPLATE = qwen_chat_template(None)

TINY_MOE = {"num_experts": 4, "num_experts_per_tok": 2, "decoder_sparse_step": 1, "mlp_only_layers": [],
            "router_aux_loss_coef": 0.001, "output_router_logits": False}


def vision_config(spec, deepstack: bool = True) -> dict:
    """The tiny Qwen3-VL tower's ``vision_config`` of ``spec``'s sizes; ``deepstack=False``: the same tower without
    DeepStack (Qwen3.5's)."""
    config = {
        "depth": spec.vision_depth,
        "hidden_size": spec.vision_hidden,
        "intermediate_size": spec.vision_intermediate,
        "num_heads": spec.vision_heads,
        "out_hidden_size": spec.text_hidden,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 64,  # an 8x8 learned grid, resampled to each image's grid
        # DeepStack after every block but the last two of a deep tower (4B: [5, 11, 17] of 24); the tiny tower
        # of 2 blocks feeds both, so the list is exercised with more than one entry
        "deepstack_visual_indexes": list(range(min(spec.vision_depth, spec.text_layers, 3))),
    }
    if not deepstack:
        del config["deepstack_visual_indexes"]
    return config


def _text(ids, spec, vocab_size: int, **extra) -> dict:
    head_dim = spec.text_hidden // spec.text_heads
    return tiny_text_config(ids, spec, vocab_size, head_dim=head_dim,
                            rope={"rope_theta": 5_000_000.0, "mrope_interleaved": True}, **extra)


def tiny_config(ids: dict[str, int], spec, vocab_size: int):
    """A ``Qwen3VLConfig`` of ``spec``'s sizes."""
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(text_config=_text(ids, spec, vocab_size), vision_config=vision_config(spec),
                         **vision_token_ids(ids), tie_word_embeddings=True)


def tiny_moe_config(ids: dict[str, int], spec, vocab_size: int):
    """A ``Qwen3VLMoeConfig`` of ``spec``'s sizes: 4 experts, 2 per token, experts half the dense MLP width."""
    from transformers import Qwen3VLMoeConfig

    text = _text(ids, spec, vocab_size, moe_intermediate_size=max(8, spec.text_intermediate // 2), **TINY_MOE)
    return Qwen3VLMoeConfig(text_config=text, vision_config=vision_config(spec), **vision_token_ids(ids),
                            tie_word_embeddings=True)


# Qwen3-VL-4B-Instruct's config.json (the sizes that decide speed and memory)
PUBLISHED = {
    "Qwen/Qwen3-VL-4B-Instruct": {
        "text_config": {"vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                        "max_position_embeddings": 262144,
                        "rope_parameters": {"rope_theta": 5_000_000.0, "mrope_section": [24, 20, 20]}},
        "vision_config": {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
                          "out_hidden_size": 2560, "num_position_embeddings": 2304,
                          "deepstack_visual_indexes": [5, 11, 17]},
    },
}

_COMMON = dict(
    processor_class="Qwen3VLProcessor",
    box_frame="norm1000",
    pixels_per_token=32,
    chat_template=CHAT_TEMPLATE,
    tool_chat_template=qwen_tool_chat_template(None),
    response_template=HERMES_RESPONSE_TEMPLATE,
    image_processor_kwargs={"patch_size": 16, "merge_size": 2, "image_mean": [0.5] * 3, "image_std": [0.5] * 3},
    merger_prefixes=("merger.", "deepstack_merger_list."),
    tower_outputs={"last_hidden_state": "patches", "pooler_output": "tokens", "deepstack_features": "tokens_per_layer"},
    probe_vision={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                  "out_hidden_size": "text_hidden", "num_position_embeddings": 64, "deepstack_visual_indexes": [0, 1]},
)

FAMILIES = (
    Family(name="qwen3_vl", model_types=("qwen3_vl",), display="Qwen3-VL",
           model_class="Qwen3VLForConditionalGeneration", config_class="Qwen3VLConfig",
           tiny_config=tiny_config, published=PUBLISHED, **_COMMON),
    Family(name="qwen3_vl_moe", model_types=("qwen3_vl_moe",), display="Qwen3-VL MoE",
           model_class="Qwen3VLMoeForConditionalGeneration", config_class="Qwen3VLMoeConfig",
           tiny_config=tiny_moe_config, router_logits=True,
           probe_text={"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                       "mlp_only_layers": [], "decoder_sparse_step": 1},
           **_COMMON),
)
