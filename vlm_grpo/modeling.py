"""One loading path for a hub id, a local checkpoint and the tiny model.

``load_model`` / ``load_processor`` resolve the checkpoint, check that it is a
vision-language family this project supports, and pick attention and dtype for
the device. ``freeze_vision`` and ``lora_config`` decide what trains.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import torch

from vlm_grpo.families import FAMILIES, LM_LINEAR_NAMES, LORA_LM_ONLY, Family
from vlm_grpo.processing import build_image_only, checkpoint_chat_template, set_pixel_bounds, torchvision_available


# The families and their records live in vlm_grpo.families (one module each); re-exported here for callers.
__all__ = ["FAMILIES", "Family", "LM_LINEAR_NAMES", "LORA_LM_ONLY", "family_of"]


class CheckpointError(ValueError):
    """A model name or folder that cannot be used; the message says what to do."""


# A hub id: `name` or `namespace/name`, each part letters, digits, `-`, `_` and `.` (Qwen/Qwen2.5-VL-3B-Instruct).
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def _looks_like_path(name: str) -> bool:
    """Whether ``name`` can only be a local path (it cannot be a hub id); dots never decide it."""
    return name.startswith((".", "/", "~")) or "\\" in name or HUB_ID.match(name) is None


#: Weights of a local checkpoint: one of these (an index names its shards, which must exist too).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
#: JSON files a checkpoint may hold, read by load_config and by load_processor; each one present
#: must parse as a JSON object.
_MODEL_JSON = ("config.json", "generation_config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json")
_PROCESSOR_JSON = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json",
    "processor_config.json", "chat_template.json",
)
_RESAVE = "copy the folder again, or re-save the checkpoint with save_pretrained"


def _read_json_file(file: Path) -> dict | None:
    """The JSON object in ``file``; None when it does not exist; CheckpointError naming it when it is broken."""
    try:
        if not file.exists():
            return None
        if not file.is_file():
            raise CheckpointError(f"{file} is not a regular file; {_RESAVE}")
        obj = json.loads(file.read_text(encoding="utf-8"))
    except CheckpointError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{file} is damaged: not valid JSON ({type(err).__name__}: {err}); {_RESAVE}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{file} is damaged: expected a JSON object, got {type(obj).__name__}; {_RESAVE}")
    return obj


def _check_json_files(path: Path, names: tuple[str, ...]) -> dict[str, dict]:
    """Parse the named JSON files of a local checkpoint; returns those present, by name."""
    found = {name: _read_json_file(path / name) for name in names}
    return {name: obj for name, obj in found.items() if obj is not None}


def _check_weights(path: Path) -> None:
    """A local checkpoint must hold its weights (every shard an index names included)."""
    present = [name for name in WEIGHT_FILES if (path / name).is_file()]
    if not present:
        raise CheckpointError(
            f"{path} has no model weights ({WEIGHT_FILES[0]} is missing; looked for {', '.join(WEIGHT_FILES)}); "
            f"{_RESAVE}"
        )
    if "model.safetensors" in present:
        _check_safetensors(path / "model.safetensors")
    index = next((name for name in present if name.endswith(".index.json")), None)
    if index is not None and not any(name == index.removesuffix(".index.json") for name in present):
        weight_map = (_read_json_file(path / index) or {}).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{path / index} is damaged: it has no 'weight_map' object; {_RESAVE}")
        for shard in sorted({str(v) for v in weight_map.values()}):
            if not (path / shard).is_file():
                raise CheckpointError(f"{path / shard} is missing (listed in {index}); {_RESAVE}")
            if shard.endswith(".safetensors"):
                _check_safetensors(path / shard)


def _check_safetensors(file: Path) -> None:
    """The file is whole (``vlm_grpo.files.safetensors_problem``: its header and its size agree): a copy or a
    save cut short is refused here, naming the file, instead of failing inside safetensors."""
    from vlm_grpo.files import safetensors_problem

    try:
        problem = safetensors_problem(file)
    except OSError as err:
        problem = f"it cannot be read ({err.strerror or err})"
    if problem:
        raise CheckpointError(
            f"{file} is truncated or corrupt: {problem} (a save or copy was cut short). Copy or save the model "
            "again, or point --model / model_name_or_path at an intact one (the complete checkpoint-N folders of "
            "a training run hold whole copies)"
        )


def load_config(name_or_path: str, *, revision: str = "main", trust_remote_code: bool = False):
    """Resolve ``name_or_path`` to a transformers config of a supported family, or raise CheckpointError.

    A local folder must also hold its weights (:data:`WEIGHT_FILES`) and no broken JSON
    file: a damaged checkpoint is refused here, naming the file, before anything loads.
    """
    from transformers import AutoConfig

    path = Path(name_or_path).expanduser()
    local = path.is_dir()
    if local:
        if not (path / "config.json").exists():
            raise CheckpointError(
                f"{path} is not a model checkpoint (no config.json). Point --model / model_name_or_path at a "
                "folder written by save_pretrained, a hub id such as Qwen/Qwen2.5-VL-3B-Instruct, or build the "
                "offline model with `vlm-grpo tiny --output DIR`."
            )
        _check_json_files(path, ("config.json",))
    elif path.exists() or _looks_like_path(name_or_path):
        raise CheckpointError(f"model folder {path} does not exist; check the path")
    try:
        config = AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"could not load a config for {name_or_path!r}: there is no folder {path.resolve()}, and as a hub id it "
            f"is not in the Hugging Face cache or could not be downloaded ({type(err).__name__}: {err})"
        ) from err
    family_of(config, name_or_path)
    if local:
        _check_json_files(path, _MODEL_JSON)
        _check_weights(path)
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
            _check_safetensors(path)  # raises, naming the file, when it is not whole
        raise err
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
    processor of the family built from the checkpoint's own files. A local folder
    must hold a tokenizer, an image processor config and a chat template
    (:func:`_check_processor_files`), and what loads must know the chat template's
    special tokens and render an image turn (:func:`_check_processor`): transformers
    would otherwise build a one-token vocabulary from a folder without tokenizer files,
    and evaluation would score it 0.0 without a word.
    """
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    config = load_config(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    family = family_of(config, name_or_path)
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        _check_processor_files(path)
    try:
        if torchvision_available():
            processor = AutoProcessor.from_pretrained(name_or_path, **kwargs)
        else:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
            image_processor = AutoImageProcessor.from_pretrained(name_or_path, **kwargs)
            template = checkpoint_chat_template(name_or_path, revision)
            stock = family.transformers_class("processor")
            processor = build_image_only(stock, image_processor, tokenizer, template)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:  # a file transformers cannot use
        raise CheckpointError(
            f"could not load the processor (tokenizer, image processor, chat template) of {name_or_path!r} "
            f"({type(err).__name__}: {err}); {_RESAVE}"
        ) from err
    _check_processor(processor, name_or_path)
    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    if min_pixels is not None or max_pixels is not None:
        set_pixel_bounds(processor, min_pixels, max_pixels)
    return processor


def _check_processor_files(path: Path) -> None:
    """A local folder holds a tokenizer, an image processor config and a chat template, and no broken JSON."""
    found = _check_json_files(path, _PROCESSOR_JSON)
    if not (path / "tokenizer.json").is_file() and not ((path / "vocab.json").is_file() and (path / "merges.txt").is_file()):
        raise CheckpointError(
            f"{path / 'tokenizer.json'} is missing: {path} has no tokenizer (no tokenizer.json, nor vocab.json + "
            "merges.txt). Copy the tokenizer files of the base model into it, or save the processor there with "
            "processor.save_pretrained"
        )
    if "preprocessor_config.json" not in found and "image_processor" not in found.get("processor_config.json", {}):
        raise CheckpointError(
            f"{path / 'preprocessor_config.json'} is missing: {path} has no image processor config (nor an "
            "'image_processor' entry in processor_config.json). Copy it from the base model, or save the processor "
            "there with processor.save_pretrained"
        )
    has_template = (
        (path / "chat_template.jinja").is_file()
        or "chat_template" in found.get("chat_template.json", {})
        or "chat_template" in found.get("tokenizer_config.json", {})
        or "chat_template" in found.get("processor_config.json", {})
    )
    if not has_template:
        raise CheckpointError(
            f"{path / 'chat_template.jinja'} is missing: {path} has no chat template (nor one in "
            "chat_template.json, tokenizer_config.json or processor_config.json). Copy it from the base model"
        )


def _check_processor(processor, name: str) -> None:
    """What loaded knows the chat template's special tokens and renders an image turn."""
    from data_prep.model_limits import TEMPLATE_SPECIAL_TOKENS

    tokenizer = processor.tokenizer

    def known(token: str) -> bool:
        token_id = tokenizer.convert_tokens_to_ids(token)
        return isinstance(token_id, int) and tokenizer.convert_ids_to_tokens(token_id) == token

    unknown = [t for t in TEMPLATE_SPECIAL_TOKENS if not known(t)]
    if unknown:
        raise CheckpointError(
            f"the tokenizer of {name!r} does not know the chat template's special tokens ({', '.join(unknown[:3])}"
            f"{' ...' if len(unknown) > 3 else ''}; its vocabulary has {len(tokenizer)} tokens): its tokenizer files "
            f"are missing or damaged (tokenizer.json); {_RESAVE}"
        )
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]
    try:
        text = processor.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    except Exception as err:  # noqa: BLE001 - a template that does not compile or render fails in many ways
        raise CheckpointError(
            f"the chat template of {name!r} (chat_template.jinja) does not render ({type(err).__name__}: {err}); "
            "copy it from the base model"
        ) from None
    if "<|image_pad|>" not in text:
        raise CheckpointError(
            f"the chat template of {name!r} (chat_template.jinja) puts no <|image_pad|> in an image turn, so the "
            "model would never see the image; copy it from the base model"
        )


def vision_module(model) -> torch.nn.Module:
    """The vision tower (with its mergers) of a supported model, PEFT-wrapped or not (``Family.vision_path``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    family = FAMILIES.get(getattr(getattr(base, "config", None), "model_type", None))
    visual = family.vision_tower(base) if family is not None else getattr(getattr(base, "model", base), "visual", None)
    if visual is None:
        raise CheckpointError(f"{type(base).__name__} has no vision tower (`model.visual`)")
    return visual


def freeze_vision(model, *, merger: bool = True) -> int:
    """Freeze the vision tower, and its merger(s) (the projectors into the LM) when ``merger`` is set.

    The mergers are the family's ``merger_prefixes`` (Qwen3-VL: ``merger`` and the DeepStack mergers
    ``deepstack_merger_list``). Returns the number of parameters frozen.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    family = family_of(base.config)
    frozen = 0
    for name, param in vision_module(model).named_parameters():
        if not merger and family.is_merger(name):
            continue
        if param.requires_grad:
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def lora_config(model_args, family: Family | None = None):
    """TRL's LoRA config from ``ModelConfig``, targeting the language model only (``Family.lora_target``)
    unless told otherwise."""
    from trl import get_peft_config

    if not model_args.use_peft:
        return None
    if model_args.lora_target_modules is None:
        target = LORA_LM_ONLY if family is None else family.lora_target
        model_args = dataclasses.replace(model_args, lora_target_modules=target)
    return get_peft_config(model_args)
