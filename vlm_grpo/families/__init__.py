"""Model families: one module per family, one :class:`Family` record each, found by ``model_type``.

Everything the project knows about a family lives in its module
(``qwen2_vl.py``, ``qwen2_5_vl.py``, ``qwen3_vl.py``, ``qwen3_5.py``): the transformers classes,
the box frame the family answers in, pixels per language-model token, where the
vision tower, its mergers and the language backbone sit, what the vision tower
returns per image (what the group image cache must carry), the LoRA target, the
freeze sets, the tiny model's config and chat template, and the transformers
releases it was tested with. Loaders (:mod:`vlm_grpo.modeling`), the tiny-model
builder (:mod:`vlm_grpo.tiny`), training's and evaluation's frame default and
both speed features (:mod:`vlm_grpo.speed`) consult only :func:`family_of` and
the record it returns.

Adding a family: write ``families/<name>.py`` with its :class:`Family` record(s)
(and a ``tiny_config`` builder), list the module in :data:`MODULES`, and add
its tests (README "Adding a model family").
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Literal

import torch

#: The special tokens of the Qwen-VL tokenizers, in the released order (Qwen2-VL, Qwen2.5-VL and Qwen3-VL share
#: them; Qwen3-VL's released tokenizer adds tool-call and think markers, which the tiny tokenizer leaves as text).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)

#: How the group image cache gathers one field of the vision tower's output back to every copy of an image:
#: ``patches`` (one row per patch), ``tokens`` (one row per merged LM token), ``tokens_per_layer`` (a list of
#: such tensors, one per DeepStack layer).
TowerField = Literal["patches", "tokens", "tokens_per_layer"]

# Attention/MLP projections of a Qwen language model. The vision tower (`visual.*`) has `qkv`/`proj`/MLP layers
# with some of the same names, so the LoRA target is a regex that matches the language model only.
LM_LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_LM_ONLY = r"^(?!.*\bvisual\b).*\.(" + "|".join(LM_LINEAR_NAMES) + r")$"


@dataclasses.dataclass(frozen=True)
class Family:
    """What the project needs to know about one model family.

    Fields:
        name: the family's name, also its main ``model_type`` (written to ``training_log.json`` and ``metrics.json``).
        model_types: the transformers ``config.model_type`` values it covers.
        display: the name people use (``Qwen2.5-VL``).
        model_class, config_class, processor_class: transformers class names.
        box_frame: the frame the family answers boxes in (DESIGN.md "Box coordinate frames").
        pixels_per_token: side in pixels of one language-model image token (``patch_size * spatial_merge_size``).
        vision_path, backbone_path: attribute paths from the ``...ForConditionalGeneration`` model to the vision tower
            and to the backbone that holds it and ``language_model`` (what the shared-prompt forward replaces).
        merger_prefixes: parameter-name prefixes, inside the vision tower, of the projector(s) into the language
            model; ``freeze_vision_merger: false`` keeps them trainable (Qwen3-VL: the merger and DeepStack mergers).
        tower_outputs: the vision tower's output fields and how each maps onto images (:data:`TowerField`).
        lora_target: the default LoRA ``target_modules`` (language model only).
        probe_vision, probe_text: ``vision_config`` / ``text_config`` overrides of the speed probes' twin
            (``"text_hidden"`` stands for the twin's language-model width, which the merger projects into).
        tiny_config: ``tiny_config(ids, spec, vocab_size)`` -> the tiny model's config (:mod:`vlm_grpo.tiny`), from
            the special-token ids of the tiny tokenizer.
        chat_template: the family's chat template for the tiny model (images as vision_start/image_pad/vision_end).
        tool_chat_template, response_template: a chat template that renders tool calls and tool responses (images
            included), and the ``tokenizer.response_template`` that parses the model's tool calls
            (:mod:`vlm_grpo.families.tool_calls`); used when ``tools`` are on and the checkpoint's own lack them.
        chat_templates: the family's named template flavours, ``chat_template`` among them (Qwen3.5: ``think``,
            ``nothink``); ``vlm-grpo tiny --template NAME`` picks one. Empty: ``chat_template`` only.
        special_tokens: the tiny tokenizer's special tokens, appended to its vocabulary in this order.
        image_processor_kwargs: the tiny model's image processor settings (patch and merge size, normalisation).
        router_logits: the model returns per-layer router logits on request (Mixture of Experts).
        published: the published checkpoints' architecture sizes by hub id, ``{"text_config": ..., "vision_config":
            ...}`` overrides of the tiny config (random-weight models of the real shape: ``scripts/gpu_check.sh``).
        not_vouched: speed features the family does not vouch for, by feature name (``group_shared_prompt``),
            each with the reason in words: the feature's probe reports it and the feature steps aside.
        tested_transformers: the transformers releases its tests passed with.
    """

    name: str
    model_types: tuple[str, ...]
    display: str
    model_class: str
    config_class: str
    processor_class: str
    box_frame: str
    pixels_per_token: int
    tiny_config: Callable
    chat_template: str
    chat_templates: dict = dataclasses.field(default_factory=dict)
    special_tokens: tuple[str, ...] = QWEN_SPECIAL_TOKENS
    vision_path: str = "model.visual"
    backbone_path: str = "model"
    merger_prefixes: tuple[str, ...] = ("merger.",)
    tower_outputs: dict = dataclasses.field(
        default_factory=lambda: {"last_hidden_state": "patches", "pooler_output": "tokens"})
    lora_target: str = LORA_LM_ONLY
    probe_vision: dict = dataclasses.field(default_factory=dict)
    probe_text: dict = dataclasses.field(default_factory=dict)
    image_processor_kwargs: dict = dataclasses.field(default_factory=lambda: {"patch_size": 14, "merge_size": 2})
    router_logits: bool = False
    published: dict = dataclasses.field(default_factory=dict)
    tool_chat_template: str | None = None
    response_template: dict | None = None
    not_vouched: dict = dataclasses.field(default_factory=dict)
    tested_transformers: tuple[str, ...] = ("5.24.0",)

    @property
    def model_type(self) -> str:
        return self.name

    def transformers_class(self, which: str = "model"):
        """The transformers class named by ``model_class`` / ``config_class`` / ``processor_class``."""
        import transformers

        return getattr(transformers, getattr(self, f"{which}_class"))

    def vision_tower(self, model) -> torch.nn.Module:
        """The vision tower of an unwrapped ``...ForConditionalGeneration`` model (PEFT-wrapped or not)."""
        return _follow(_base(model), self.vision_path)

    def backbone(self, model) -> torch.nn.Module:
        """The backbone holding the vision tower and ``language_model`` (PEFT-wrapped or not)."""
        return _follow(_base(model), self.backbone_path)

    def template(self, flavour: str | None = None) -> str:
        """The chat template of a named flavour (``None``: the default, ``chat_template``); the error lists them."""
        if flavour is None:
            return self.chat_template
        if flavour not in self.chat_templates:
            known = ", ".join(sorted(self.chat_templates)) or "none"
            raise ValueError(f"{self.display} has no chat template flavour {flavour!r}; its flavours: {known}")
        return self.chat_templates[flavour]

    def is_merger(self, name: str) -> bool:
        """Whether a parameter name inside the vision tower belongs to a projector into the language model."""
        return name.startswith(self.merger_prefixes)


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _follow(module, path: str):
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def tiny_text_config(ids: dict[str, int], spec, vocab_size: int, **extra) -> dict:
    """The ``text_config`` of a tiny Qwen decoder of ``spec``'s sizes (M-RoPE sections of 1/4, 3/8, 3/8 of half
    the head dim), token ids from the tiny tokenizer's special tokens (``ids``)."""
    head_dim = spec.text_hidden // spec.text_heads
    unit = head_dim // 16
    rope = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2 * unit, 3 * unit, 3 * unit]}
    rope.update(extra.pop("rope", {}))
    return {
        "vocab_size": vocab_size,
        "hidden_size": spec.text_hidden,
        "intermediate_size": spec.text_intermediate,
        "num_hidden_layers": spec.text_layers,
        "num_attention_heads": spec.text_heads,
        "num_key_value_heads": spec.text_kv_heads,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_parameters": rope,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": True,
        **extra,
    }


def vision_token_ids(ids: dict[str, int]) -> dict[str, int]:
    """The top-level token ids of a Qwen-VL config."""
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


#: One part of a message's content in a Qwen-VL chat template: an image or a video as vision_start/pad/vision_end
#: (numbered with ``add_vision_id``), or its text. Inside a loop over ``content``; the template sets
#: ``image_count`` and ``video_count``. The tool template renders tool responses' images with it too.
CONTENT_PART = (
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}"
)


def qwen_chat_template(default_system: str | None) -> str:
    """A Qwen-VL chat template (images and videos as vision_start/pad/vision_end), with ``default_system`` as the
    system turn added before a conversation that has none (Qwen2-VL / Qwen2.5-VL), or none (Qwen3-VL)."""
    system = (
        "{% if loop.first and message['role'] != 'system' %}"
        f"<|im_start|>system\n{default_system}<|im_end|>\n"
        "{% endif %}"
    ) if default_system else ""
    return (
        "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
        "{% for message in messages %}"
        + system
        + "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
        "{% else %}{% for content in message['content'] %}" + CONTENT_PART + "{% endfor %}<|im_end|>\n"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


# Qwen2-VL / Qwen2.5-VL's chat template (default system prompt).
QWEN2_CHAT_TEMPLATE = qwen_chat_template("You are a helpful assistant.")


#: The family modules, in the order the README's table lists them.
MODULES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5")


def _registry() -> dict[str, Family]:
    found: dict[str, Family] = {}
    for module_name in MODULES:
        module = importlib.import_module(f"{__name__}.{module_name}")
        for family in module.FAMILIES:
            for model_type in family.model_types:
                if model_type in found:
                    raise ValueError(f"model_type {model_type!r} is claimed by two families")
                found[model_type] = family
    return found


#: Every supported family, by ``model_type``.
FAMILIES: dict[str, Family] = _registry()


def get_family(name: str) -> Family:
    """The family named ``name`` (a ``model_type``); the error lists the valid names."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; supported: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]
