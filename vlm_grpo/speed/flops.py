"""Forward FLOPs of a Qwen2.5-VL, Qwen3-VL or Qwen3.5 sequence, split into vision tower and language model.

Pure arithmetic on architecture sizes, used to size benchmark models that keep a
real checkpoint's ratio of vision to language compute. Conventions: a
multiply-add is 2 FLOPs; matmuls and attention scores/values are counted;
norms, activations, rotary embeddings and softmax are not. Qwen3.5's linear-attention
(Gated DeltaNet) layers are counted as their projections, their depthwise convolution
and the delta rule in its recurrent form (per token and value head, four
``k_dim x v_dim`` products: decay, read, write, output); its full-attention layers'
query projection is twice as wide (the output gate).

>>> v = VisionShape(hidden=1280, depth=32, intermediate=3420, out_hidden=2048, window_size=112, full_blocks=4)
>>> round(vision_flops(v, image_tokens=1000) / 1e12, 2)
5.49
>>> q3 = VisionShape(hidden=1024, depth=24, intermediate=4096, out_hidden=2560, window_size=None, full_blocks=24,
...                  patch_size=16, gated_mlp=False, deepstack_mergers=3)
>>> round(vision_flops(q3, image_tokens=1000) / 1e12, 2)
4.22
"""

from __future__ import annotations

import dataclasses


def _getter(config):
    """``get(key, default)`` over a config object or a dict."""
    return config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)


@dataclasses.dataclass(frozen=True)
class VisionShape:
    """Sizes of a Qwen2.5-VL or Qwen3-VL vision tower (``vision_config``) that decide its FLOPs."""

    hidden: int
    depth: int
    intermediate: int
    out_hidden: int
    window_size: int | None  # pixels; window attention spans (window_size / patch_size)^2 patches; None: no windows
    full_blocks: int  # blocks with full (whole-image) attention
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    in_channels: int = 3
    gated_mlp: bool = True  # Qwen2.5-VL: gate/up/down (3 matmuls); Qwen3-VL: fc1/fc2 (2)
    deepstack_mergers: int = 0  # Qwen3-VL: mergers of their own after the DeepStack blocks

    @classmethod
    def of(cls, config) -> VisionShape:
        """From a ``vision_config`` object or dict."""
        get = _getter(config)
        deepstack = get("deepstack_visual_indexes")
        windows = get("window_size") if deepstack is None else None  # Qwen3-VL, Qwen3.5: full attention throughout
        return cls(
            hidden=get("hidden_size"),
            depth=get("depth"),
            intermediate=get("intermediate_size"),
            out_hidden=get("out_hidden_size"),
            window_size=windows,
            full_blocks=len(get("fullatt_block_indexes") or []) if windows else get("depth"),
            patch_size=get("patch_size", 14),
            temporal_patch_size=get("temporal_patch_size", 2),
            merge_size=get("spatial_merge_size", 2),
            in_channels=get("in_channels", 3) or 3,
            gated_mlp=get("window_size") is not None,  # Qwen2.5-VL's gated MLP; Qwen3-VL / Qwen3.5: fc1/fc2
            deepstack_mergers=len(deepstack or []),
        )


@dataclasses.dataclass(frozen=True)
class TextShape:
    """Sizes of a Qwen2/Qwen3-style decoder (``text_config``) that decide its FLOPs."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    head_dim: int | None = None  # None: hidden / heads (Qwen3-VL-4B: 128, with 32 heads of a 2560-wide model)
    linear_layers: int = 0  # Qwen3.5: Gated DeltaNet layers among ``layers`` (the others: gated full attention)
    linear_key_heads: int = 0
    linear_value_heads: int = 0
    linear_key_dim: int = 0
    linear_value_dim: int = 0
    linear_kernel: int = 4

    @classmethod
    def of(cls, config) -> TextShape:
        """From a ``text_config`` object or dict."""
        get = _getter(config)
        return cls(
            hidden=get("hidden_size"),
            layers=get("num_hidden_layers"),
            heads=get("num_attention_heads"),
            kv_heads=get("num_key_value_heads"),
            intermediate=get("intermediate_size"),
            vocab=get("vocab_size"),
            head_dim=get("head_dim"),
            linear_layers=sum(kind == "linear_attention" for kind in get("layer_types") or []),
            linear_key_heads=get("linear_num_key_heads") or 0,
            linear_value_heads=get("linear_num_value_heads") or 0,
            linear_key_dim=get("linear_key_head_dim") or 0,
            linear_value_dim=get("linear_value_head_dim") or 0,
            linear_kernel=get("linear_conv_kernel_dim") or 4,
        )


def vision_flops(shape: VisionShape, image_tokens: int) -> float:
    """Forward FLOPs of the vision tower (patch embedding, blocks, merger) for one image.

    ``image_tokens`` is the number of merged tokens the language model sees; the
    tower runs on ``merge_size**2`` times as many patches. Window attention is
    counted as full windows (edge windows are smaller in reality).
    """
    patches = image_tokens * shape.merge_size**2
    h = shape.hidden
    patch_dim = shape.in_channels * shape.temporal_patch_size * shape.patch_size**2
    window = patches if shape.window_size is None else min(patches, (shape.window_size // shape.patch_size) ** 2)
    embed = 2 * patches * patch_dim * h
    mlp_matmuls = 3 if shape.gated_mlp else 2
    dense_per_block = 2 * patches * (4 * h * h + mlp_matmuls * h * shape.intermediate)  # qkv+proj, MLP
    attention_window = 4 * patches * window * h  # scores and weighted values
    attention_full = 4 * patches * patches * h
    blocks = (
        shape.depth * dense_per_block
        + (shape.depth - shape.full_blocks) * attention_window
        + shape.full_blocks * attention_full
    )
    merged = 4 * h
    merger = (1 + shape.deepstack_mergers) * 2 * image_tokens * (merged * merged + merged * shape.out_hidden)
    return float(embed + blocks + merger)


def text_flops(shape: TextShape, tokens: int, logit_tokens: int) -> float:
    """Forward FLOPs of the decoder over a ``tokens``-long sequence (causal), with logits for ``logit_tokens``."""
    h = shape.hidden
    head_dim = shape.head_dim or h // shape.heads
    q_dim, kv_dim = shape.heads * head_dim, shape.kv_heads * head_dim
    gate = 2 if shape.linear_layers else 1  # Qwen3.5's full attention projects a query and an output gate
    mlp = 2 * 3 * h * shape.intermediate
    dense_per_token = 2 * (gate * h * q_dim + 2 * h * kv_dim + q_dim * h) + mlp
    attention = 2 * 2 * q_dim * tokens * (tokens + 1) // 2  # causal: each token attends to its prefix
    lm_head = 2 * logit_tokens * h * shape.vocab
    full_layers = shape.layers - shape.linear_layers
    return float(full_layers * (tokens * dense_per_token + attention)
                 + shape.linear_layers * tokens * (_linear_attention_per_token(shape) + mlp) + lm_head)


def _linear_attention_per_token(shape: TextShape) -> int:
    """One Gated DeltaNet layer, per token: q/k/v, z, b/a and output projections, the convolution over q/k/v and
    the recurrent delta rule."""
    h = shape.hidden
    key, value = shape.linear_key_heads * shape.linear_key_dim, shape.linear_value_heads * shape.linear_value_dim
    conv = 2 * key + value
    projections = 2 * h * (conv + value + 2 * shape.linear_value_heads) + 2 * value * h
    rule = 2 * 4 * shape.linear_value_heads * shape.linear_key_dim * shape.linear_value_dim
    return projections + 2 * conv * shape.linear_kernel + rule


def vision_text_ratio(
    vision: VisionShape, text: TextShape, image_tokens: int, text_tokens: int, completion_tokens: int
) -> float:
    """Vision-tower FLOPs over language-model FLOPs for one sequence: one image, prompt text and a completion.

    The language model runs on ``image_tokens + text_tokens + completion_tokens``
    tokens and computes logits for the completion only (as TRL's log-prob passes do).
    """
    lm = text_flops(text, image_tokens + text_tokens + completion_tokens, completion_tokens)
    return vision_flops(vision, image_tokens) / lm
