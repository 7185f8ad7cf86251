"""Qwen3.5, dense (``qwen3_5``) and Mixture of Experts (``qwen3_5_moe``): natively multimodal, hybrid attention.

What is known offline, from the transformers 5.24 sources (``models/qwen3_5*``: config defaults, the modeling
code) and the chat templates TRL 1.16 ships (``trl/chat_templates/qwen3_5_{think,nothink}.jinja``):

- Boxes: relative 0..1000 (``norm1000``), as Qwen2-VL and Qwen3-VL. Evidence: the vision tower and processor
  are Qwen3-VL's (``Qwen3VLProcessor``, the same ``Qwen2VLImageProcessor``, 16 px patches, 2x2 merge, learned
  position grid resampled per image), whose grounding answers are 0..1000 (QwenLM/Qwen3-VL issue 1427); nothing
  in the Qwen3.5 sources changes the frame. It is this one line (``box_frame`` below); a user with other
  evidence sets ``box_frame`` in the config.
- 16 px patches merged 2x2: 32 px per language-model token. The tower (``Qwen3_5VisionModel``) has no DeepStack:
  it returns ``last_hidden_state`` (per patch) and ``pooler_output`` (per merged token, from ``visual.merger``)
  only, so the group image cache carries those two, as on Qwen2.5-VL.
- Vocabulary: 248,320 ids; the config's token ids are ``vision_start`` 248053, ``vision_end`` 248054,
  ``image_pad`` 248056, ``video_pad`` 248057 (Qwen2/2.5/3-VL: 151652 ... 151656): the same special tokens in
  the same order, after a larger BPE vocabulary. The tiny tokenizer appends them in that order and the tiny
  config reads the ids back from it.
- Language model: hybrid. ``text_config.layer_types`` lists ``linear_attention`` (Gated DeltaNet: a causal
  depthwise convolution of kernel ``linear_conv_kernel_dim`` = 4 over the q/k/v projections, then the gated
  delta rule) and ``full_attention`` (gated softmax attention, ``head_dim`` 256, rotary on a quarter of it,
  interleaved M-RoPE); by default every fourth layer is full attention. The cache (a ``DynamicCache`` built
  from the config) holds keys/values for the full-attention layers and, per linear-attention layer, a
  convolution state (the last 4 pre-convolution inputs) and a recurrent state (``(heads, k_dim, v_dim)``).
  The group-shared prompt's forward carries both kinds from the prefix to every completion
  (:mod:`vlm_grpo.speed.prefix_cache`), but the family does not vouch for it yet (:data:`SHARED_PROMPT_BLOCKER`):
  it steps aside with one warning and training takes the plain path. Padding-free packing, fragile for these
  layers (packed rows would share a recurrent state unless the kernel gets the sequence boundaries), never
  happens here: TRL's SFT refuses ``padding_free`` for vision datasets, and GRPO pads. Padding: the linear layers zero the hidden states of padded positions
  (``apply_mask_to_padding_states``), so left padding leaves the states as if the row started later.
- Backbone ``model`` (``Qwen3_5Model`` / ``Qwen3_5MoeModel``), ``language_model`` inside; the cache argument
  is ``cache`` in transformers 5.24.
- LoRA: the language model's attention and MLP projections as on the other families, plus the linear-attention
  projections ``in_proj_qkv``, ``in_proj_z`` and ``out_proj`` (``in_proj_a`` / ``in_proj_b``, one output per
  head, stay frozen).
- MoE: every decoder MLP is a router (``mlp.gate``), fused experts (``mlp.experts``, 3-D parameters) and a
  shared expert (``mlp.shared_expert``, ``nn.Linear`` projections, adapted by LoRA) with its sigmoid gate. The
  router's load-balancing loss reaches TRL as on Qwen3-VL MoE (``output_router_logits``).
- Chat templates: two published flavours, the same but for the generation prompt. ``think`` (the default of
  the 4B models and up) ends the generation prompt with ``<think>\\n``: a completion starts *inside* the
  thinking block and has no opening tag. ``nothink`` (2B and below) ends it with an empty, closed
  ``<think>\\n\\n</think>\\n\\n``: a completion writes its own ``<think>`` if it thinks. Either template
  renders a final assistant turn as ``<think>\\n{reasoning}\\n</think>\\n\\n{content}``. The tiny model is built
  with either (``vlm-grpo tiny --family qwen3_5 --template nothink``; default ``think``), from TRL's copies of
  the released templates, verbatim. Which one a checkpoint uses is never assumed from its family: it is read off
  the rendered generation prompt (:func:`vlm_grpo.prompts.opens_think`).
"""

from __future__ import annotations

from vlm_grpo.families import LM_LINEAR_NAMES, Family, tiny_text_config, vision_token_ids
from vlm_grpo.families.qwen3_vl import vision_config  # the same tower, without DeepStack

#: Why the group-shared prompt steps aside on Qwen3.5 (measured on the tiny models and the probe's twin, fp32, CPU).
SHARED_PROMPT_BLOCKER = (
    "linear-attention layers: with each layer's conv/recurrent states carried from the prefix, log-probs agree "
    "within 1e-6 and sampling is identical, but the gradients of the Gated DeltaNet decay parameters (A_log, "
    "dt_bias, in_proj_a) differ by up to 6e-4 relative; transformers' fp32 chunked delta rule does not reproduce "
    "them either when only its chunk size changes (64 vs 32: 2.5e-4), so they cannot be shown exact within 1e-5"
)
# The error grows with the decays' strength: with A drawn from 0.01..1 (transformers initialises 0.01..16) every
# gradient agrees within 4e-6, with 0.01..4 within 4e-5 (tests/test_speed_qwen3_5.py). A trained checkpoint's
# decays decide its conditioning; the probe's random twin cannot vouch for them, hence the family does not.

LINEAR_ATTENTION_NAMES = ("in_proj_qkv", "in_proj_z", "out_proj")
LORA_TARGET = r"^(?!.*\bvisual\b).*\.(" + "|".join(LM_LINEAR_NAMES + LINEAR_ATTENTION_NAMES) + r")$"

TINY_MOE = {"num_experts": 4, "num_experts_per_tok": 2, "router_aux_loss_coef": 0.001, "output_router_logits": False}


def chat_templates() -> dict[str, str]:
    """The released Qwen3.5 chat templates by flavour: TRL's copies (``trl/chat_templates/qwen3_5_*.jinja``, which
    TRL also recognises for SFT), read from its package folder without importing TRL (seconds at import time)."""
    import importlib.util
    from pathlib import Path

    folder = Path(importlib.util.find_spec("trl").submodule_search_locations[0]) / "chat_templates"
    return {name: (folder / f"qwen3_5_{name}.jinja").read_text(encoding="utf-8") for name in ("think", "nothink")}


def layer_types(layers: int, interval: int = 4) -> list[str]:
    """Full attention every ``interval``-th layer, linear attention elsewhere (Qwen3.5's default pattern); a tiny
    model with fewer layers than ``interval`` still ends in one full-attention layer, so both kinds are built."""
    interval = max(2, min(interval, layers))
    return ["linear_attention" if (i + 1) % interval else "full_attention" for i in range(layers)]


def _text(ids, spec, vocab_size: int, **extra) -> dict:
    # head_dim is its own setting (4B: 256 with hidden 2560 and 16 heads); a quarter of it is rotary, so 32 gives
    # 8 rotary dims, 4 frequencies, split 2/1/1 over the interleaved temporal/height/width sections
    return tiny_text_config(
        ids, spec, vocab_size, head_dim=32, layer_types=layer_types(spec.text_layers),
        linear_conv_kernel_dim=4, linear_num_key_heads=2, linear_num_value_heads=4,
        linear_key_head_dim=16, linear_value_head_dim=16,
        rope={"rope_theta": 10_000_000.0, "mrope_section": [2, 1, 1], "mrope_interleaved": True,
              "partial_rotary_factor": 0.25},
        **extra,
    )


def tiny_config(ids: dict[str, int], spec, vocab_size: int):
    """A ``Qwen3_5Config`` of ``spec``'s sizes (linear attention, then full attention every fourth layer)."""
    from transformers import Qwen3_5Config

    return Qwen3_5Config(text_config=_text(ids, spec, vocab_size),
                         vision_config=vision_config(spec, deepstack=False),
                         **vision_token_ids(ids), tie_word_embeddings=True)


def tiny_moe_config(ids: dict[str, int], spec, vocab_size: int):
    """A ``Qwen3_5MoeConfig`` of ``spec``'s sizes: 4 experts, 2 per token, and a shared expert."""
    from transformers import Qwen3_5MoeConfig

    width = max(8, spec.text_intermediate // 2)
    text = _text(ids, spec, vocab_size, moe_intermediate_size=width, shared_expert_intermediate_size=width,
                 **TINY_MOE)
    text.pop("intermediate_size")
    return Qwen3_5MoeConfig(text_config=text, vision_config=vision_config(spec, deepstack=False),
                            **vision_token_ids(ids), tie_word_embeddings=True)


# Qwen3.5-4B's config.json as third-party copies of it give it (read offline in public code; the hub was not reached):
# text 32 layers (full attention every fourth), the vision tower Qwen3-VL-4B's without DeepStack.
PUBLISHED = {
    "Qwen/Qwen3.5-4B": {
        "text_config": {"vocab_size": 248320, "hidden_size": 2560, "intermediate_size": 9216, "num_hidden_layers": 32,
                        "num_attention_heads": 16, "num_key_value_heads": 4, "head_dim": 256,
                        "layer_types": layer_types(32), "linear_conv_kernel_dim": 4, "linear_num_key_heads": 16,
                        "linear_num_value_heads": 32, "linear_key_head_dim": 128, "linear_value_head_dim": 128,
                        "rope_parameters": {"rope_theta": 10_000_000.0, "mrope_section": [11, 11, 10],
                                            "mrope_interleaved": True, "partial_rotary_factor": 0.25}},
        "vision_config": {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
                          "out_hidden_size": 2560, "num_position_embeddings": 2304, "patch_size": 16},
    },
}

_TEMPLATES = chat_templates()

_COMMON = dict(
    processor_class="Qwen3VLProcessor",
    box_frame="norm1000",
    pixels_per_token=32,
    chat_template=_TEMPLATES["think"],
    chat_templates=_TEMPLATES,
    image_processor_kwargs={"patch_size": 16, "merge_size": 2, "image_mean": [0.5] * 3, "image_std": [0.5] * 3},
    lora_target=LORA_TARGET,
    not_vouched={"group_shared_prompt": SHARED_PROMPT_BLOCKER},
    probe_vision={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                  "out_hidden_size": "text_hidden", "num_position_embeddings": 64},
)

# The speed probes' twin keeps one layer of each kind, with small linear-attention heads.
PROBE_TEXT = {"layer_types": ["linear_attention", "full_attention"], "linear_num_key_heads": 2,
              "linear_num_value_heads": 2, "linear_key_head_dim": 16, "linear_value_head_dim": 16}
PROBE_MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
             "shared_expert_intermediate_size": 32}

FAMILIES = (
    Family(name="qwen3_5", model_types=("qwen3_5",), display="Qwen3.5",
           model_class="Qwen3_5ForConditionalGeneration", config_class="Qwen3_5Config",
           tiny_config=tiny_config, probe_text=PROBE_TEXT, published=PUBLISHED, **_COMMON),
    Family(name="qwen3_5_moe", model_types=("qwen3_5_moe",), display="Qwen3.5 MoE",
           model_class="Qwen3_5MoeForConditionalGeneration", config_class="Qwen3_5MoeConfig",
           tiny_config=tiny_moe_config, router_logits=True,
           probe_text={**PROBE_TEXT, **PROBE_MOE},
           **_COMMON),
)
