"""One loading path for a hub id, a local checkpoint and the tiny model.

``load_model`` / ``load_processor`` resolve the checkpoint, check that it is a
vision-language family this project supports, and pick attention and dtype for
the device. ``freeze_vision`` and ``lora_config`` decide what trains.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import torch

from vlm_grpo.processing import build_image_only, read_chat_template, set_pixel_bounds, torchvision_available


@dataclasses.dataclass(frozen=True)
class Family:
    """What the project needs to know about a model family."""

    model_type: str
    processor_class: str  # the transformers processor class name
    box_frame: str  # the frame the family answers boxes in (see DESIGN.md)


FAMILIES: dict[str, Family] = {
    "qwen2_5_vl": Family("qwen2_5_vl", "Qwen2_5_VLProcessor", "model_pixels"),
    "qwen2_vl": Family("qwen2_vl", "Qwen2VLProcessor", "norm1000"),
}

# Attention/MLP projections of the language model. The vision tower (`visual.*`) has its own
# `qkv`/`proj`/MLP layers with some of the same names, so the default LoRA target is a regex
# that matches the language model only.
LM_LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_LM_ONLY = r"^(?!.*\bvisual\b).*\.(" + "|".join(LM_LINEAR_NAMES) + r")$"


class CheckpointError(ValueError):
    """A model name or folder that cannot be used; the message says what to do."""


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).suffix != "" or name.count("/") > 1


def load_config(name_or_path: str, *, revision: str = "main", trust_remote_code: bool = False):
    """Resolve ``name_or_path`` to a transformers config of a supported family, or raise CheckpointError."""
    from transformers import AutoConfig

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise CheckpointError(
                f"{path} is not a model checkpoint (no config.json). Point --model / model_name_or_path at a "
                "folder written by save_pretrained, a hub id such as Qwen/Qwen2.5-VL-3B-Instruct, or build the "
                "offline model with `vlm-grpo tiny --output DIR`."
            )
    elif path.exists() or _looks_like_path(name_or_path):
        raise CheckpointError(f"model folder {path} does not exist; check the path")
    try:
        config = AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"could not load a config for {name_or_path!r}: it is not a local folder, and it is not in the "
            f"Hugging Face cache or could not be downloaded ({type(err).__name__}: {err})"
        ) from err
    family_of(config, name_or_path)
    return config


def family_of(config, name: str = "") -> Family:
    model_type = getattr(config, "model_type", None)
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    supported = ", ".join(sorted(FAMILIES))
    vision = getattr(config, "vision_config", None) is not None
    what = "a vision-language model of an unsupported family" if vision else "not a vision-language checkpoint"
    raise CheckpointError(
        f"{name or 'the checkpoint'} has model_type {model_type!r}, {what}. Supported families: {supported}."
    )


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_attention(device: torch.device | str) -> str:
    """``flash_attention_2`` on CUDA when flash-attn is importable, else ``sdpa``."""
    if torch.device(device).type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """bf16 on GPU and fp32 on CPU unless ``dtype`` says otherwise ("auto" counts as unset)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    try:
        resolved = getattr(torch, dtype)
    except AttributeError:
        resolved = None
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use bfloat16, float16, float32 or auto")
    return resolved


def load_model(
    name_or_path: str,
    *,
    dtype: str | torch.dtype | None = None,
    attn_implementation: str | None = None,
    device: torch.device | str | None = None,
    revision: str = "main",
    trust_remote_code: bool = False,
):
    """Load a supported vision-language model for conditional generation.

    When loading a local folder fails and one of its ``*.safetensors`` files is not whole (a save
    or copy cut short), the error is a :class:`CheckpointError` naming that file.
    """
    from transformers import AutoModelForImageTextToText

    from vlm_grpo.files import safetensors_problem

    device = torch.device(device) if device is not None else default_device()
    load_config(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            name_or_path,
            revision=revision,
            dtype=resolve_dtype(dtype, device),
            attn_implementation=attn_implementation or default_attention(device),
            trust_remote_code=trust_remote_code,
        )
    except Exception as err:
        folder = Path(name_or_path).expanduser()
        for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            problem = safetensors_problem(path)
            if problem:
                raise CheckpointError(
                    f"{path} is truncated or corrupt: {problem} (a save or copy was cut short). Copy or save the "
                    "model again, or point --model / model_name_or_path at an intact one (the complete "
                    "checkpoint-N folders of a training run hold whole copies)"
                ) from err
        raise
    return model.to(device)


def load_processor(
    name_or_path: str,
    *,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    revision: str = "main",
    trust_remote_code: bool = False,
):
    """Load the checkpoint's processor, left-padded, with the given resize bounds.

    With torchvision this is plain ``AutoProcessor``; without it, an image-only
    processor of the family built from the checkpoint's own files.
    """
    import transformers
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    config = load_config(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    family = family_of(config, name_or_path)
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    if torchvision_available():
        processor = AutoProcessor.from_pretrained(name_or_path, **kwargs)
    else:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        image_processor = AutoImageProcessor.from_pretrained(name_or_path, **kwargs)
        template = read_chat_template(Path(name_or_path)) if Path(name_or_path).is_dir() else None
        stock = getattr(transformers, family.processor_class)
        processor = build_image_only(stock, image_processor, tokenizer, template)
    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    if min_pixels is not None or max_pixels is not None:
        set_pixel_bounds(processor, min_pixels, max_pixels)
    return processor


def vision_module(model) -> torch.nn.Module:
    """The vision tower (with its merger) of a Qwen-VL model, PEFT-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", base)
    visual = getattr(inner, "visual", None)
    if visual is None:
        raise CheckpointError(f"{type(base).__name__} has no vision tower (`model.visual`)")
    return visual


def freeze_vision(model, *, merger: bool = True) -> int:
    """Freeze the vision tower, and its merger (the projector into the LM) when ``merger`` is set.

    Returns the number of parameters frozen.
    """
    visual = vision_module(model)
    frozen = 0
    for name, param in visual.named_parameters():
        if not merger and name.startswith("merger."):
            continue
        if param.requires_grad:
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def lora_config(model_args):
    """TRL's LoRA config from ``ModelConfig``, targeting the language model only unless told otherwise."""
    from trl import get_peft_config

    if not model_args.use_peft:
        return None
    if model_args.lora_target_modules is None:
        model_args = dataclasses.replace(model_args, lora_target_modules=LORA_LM_ONLY)
    return get_peft_config(model_args)
