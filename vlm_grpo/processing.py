"""Processor loading that works with and without torchvision.

transformers >= 5.4 needs torchvision for the video processor of Qwen-VL
processors, and refuses to build the processor at all without one. Training and
evaluation here use images only, so where torchvision is missing the processor
is assembled from its parts: the checkpoint's tokenizer, its PIL image processor
and its chat template, in an image-only subclass of the family's processor.

What this subclass saves is what a stock processor of the family saves, under
the stock class name, plus the legacy ``preprocessor_config.json`` that released
Qwen-VL checkpoints ship (the stock video processor falls back to it). So a
folder saved here loads with plain ``AutoProcessor`` wherever torchvision exists.
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path

PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


def torchvision_available() -> bool:
    return importlib.util.find_spec("torchvision") is not None


@cache
def image_only_class(stock_class: type) -> type:
    """A subclass of ``stock_class`` (e.g. ``Qwen2_5_VLProcessor``) without the video processor."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # ProcessorMixin pairs positional sub-processors with `get_attributes()`, which no longer
        # lists `video_processor` (it is not in this signature), so the None is dropped there.
        stock_class.__init__(
            self,
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )

    def save_pretrained(self, save_directory, **kwargs):
        out = stock_class.save_pretrained(self, save_directory, **kwargs)
        self.image_processor.save_pretrained(save_directory)
        _rename_processor_class(Path(save_directory), type(self).__name__, stock_class.__name__)
        return out

    return type(
        f"ImageOnly{stock_class.__name__}",
        (stock_class,),
        {"__init__": __init__, "save_pretrained": save_pretrained, "__doc__": image_only_class.__doc__},
    )


def _rename_processor_class(folder: Path, ours: str, stock: str) -> None:
    for name in PROCESSOR_FILES:
        path = folder / name
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        if data.get("processor_class", ours) == ours:
            data["processor_class"] = stock
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_chat_template(folder: Path) -> str | None:
    """The chat template a checkpoint ships: ``chat_template.jinja`` or ``chat_template.json``."""
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text()
    legacy = folder / "chat_template.json"
    if legacy.exists():
        return json.loads(legacy.read_text()).get("chat_template")
    return None


def checkpoint_chat_template(name_or_path: str, revision: str = "main") -> str | None:
    """The chat template of a local checkpoint folder or a hub id (from the Hugging Face cache, or downloaded)."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        return read_chat_template(folder)
    from huggingface_hub import hf_hub_download

    for filename in ("chat_template.jinja", "chat_template.json"):
        try:
            path = Path(hf_hub_download(name_or_path, filename, revision=revision))
        except Exception:  # noqa: BLE001 - not in this repo (or not reachable): the tokenizer's template, if any
            continue
        return read_chat_template(path.parent)
    return None


def build_image_only(stock_class: type, image_processor, tokenizer, chat_template: str | None):
    """Assemble an image-only processor of ``stock_class`` from its parts."""
    template = chat_template or getattr(tokenizer, "chat_template", None)
    return image_only_class(stock_class)(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)


def check_pixel_bounds(
    min_pixels: int | None, max_pixels: int | None, *, names: tuple[str, str] = ("min_pixels", "max_pixels")
) -> None:
    """Each bound, when given, lies in ``TOKEN_PIXELS..MAX_PROCESSOR_PIXELS`` (:mod:`data_prep.model_limits`);
    ``names`` are how the user spelled them (``--min-pixels`` on a command line)."""
    from data_prep.model_limits import MAX_PROCESSOR_PIXELS, TOKEN_PIXELS

    for name, value in zip(names, (min_pixels, max_pixels)):
        if value is not None and not TOKEN_PIXELS <= value <= MAX_PROCESSOR_PIXELS:
            raise ValueError(
                f"{name} {value} is out of range: it must be {TOKEN_PIXELS} (28x28 px, one image token; below it "
                f"smart_resize can make a 0x0 image) to {MAX_PROCESSOR_PIXELS:,} (16,384 image tokens, Qwen2.5-VL's "
                "own max_pixels; above it one image fills the model's context)"
            )


def set_pixel_bounds(processor, min_pixels: int | None, max_pixels: int | None) -> None:
    """Set the image processor's resize bounds (smart_resize's min/max pixels) in place."""
    check_pixel_bounds(min_pixels, max_pixels)
    image_processor = processor.image_processor
    size = dict(image_processor.size)
    if min_pixels is not None:
        size["shortest_edge"] = int(min_pixels)
    if max_pixels is not None:
        size["longest_edge"] = int(max_pixels)
    if size["shortest_edge"] > size["longest_edge"]:
        raise ValueError(
            f"min_pixels={size['shortest_edge']} is larger than max_pixels={size['longest_edge']}; "
            "lower min_pixels or raise max_pixels"
        )
    image_processor.size = type(image_processor.size)(**size) if not isinstance(image_processor.size, dict) else size


def pixel_bounds(processor) -> tuple[int, int]:
    size = processor.image_processor.size
    get = size.get if isinstance(size, dict) else lambda k: getattr(size, k)
    return int(get("shortest_edge")), int(get("longest_edge"))
