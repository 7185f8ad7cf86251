"""Resize and normalise each distinct image once per processor call (exact).

TRL renders a batch's prompts with ``processing_class.apply_chat_template(...,
tokenize=True)`` for generation and calls the processor again for the forward
passes; both reach ``ProcessorMixin._process_images(images, **kwargs)``, which
runs the image processor on every image of the batch and builds each image's
placeholder text. With GRPO the batch holds ``num_generations`` copies of each
image (separate PIL objects: the dataset decodes a row each time it is read).

:class:`ProcessorCache` replaces ``_process_images`` on one processor
instance: it keys every image by its content (mode, size, palette,
transparency and raw pixel bytes; a dict lookup on the bytes is a hash and
then an exact comparison), runs the processor's own ``_process_images`` on the
first copy of each distinct image, and repeats the results: patch rows of
``pixel_values`` image by image, rows of ``image_grid_thw``, placeholder texts.
The image processor handles each image independently (resize, rescale,
normalise, patchify, then concatenate), so the output is identical, bit for
bit, to the plain path's.

The replacement is an instance attribute that ``ProcessorMixin.to_dict`` does
not save (only ``__init__`` arguments are), so ``save_pretrained`` writes the
same files with or without it.
"""

from __future__ import annotations

import numpy as np
import torch

from vlm_grpo.speed.vision_cache import CacheStats

# What `_process_images` returns per image (one row each) and per patch (t*h*w rows each).
PER_IMAGE_KEYS = ("image_grid_thw",)
PER_PATCH_KEYS = ("pixel_values",)


class ProcessorCache:
    """``_process_images`` of one processor, with identical images processed once per call."""

    def __init__(self, processor) -> None:
        self.processor = processor
        self.stats = CacheStats()

    def __call__(self, images, **kwargs):
        from transformers.image_utils import make_flat_list_of_images

        processor = self.processor
        plain = type(processor)._process_images.__get__(processor)
        try:
            flat = make_flat_list_of_images(images)
        except (ValueError, TypeError, IndexError, AttributeError):
            return plain(images, **kwargs)  # an input layout this cache does not know: leave it to the processor
        owners = content_owners(flat)
        unique = [i for i, owner in enumerate(owners) if owner == i]
        self.stats.calls += 1
        self.stats.requested += len(flat)
        self.stats.encoded += len(unique)
        if len(unique) == len(flat):
            return plain(images, **kwargs)
        processed, replacements = plain([flat[i] for i in unique], **kwargs)
        slot = {image: k for k, image in enumerate(unique)}
        order = [slot[owner] for owner in owners]
        if set(processed.keys()) - set(PER_IMAGE_KEYS) - set(PER_PATCH_KEYS) or "image_grid_thw" not in processed:
            self.stats.encoded += len(flat)
            return plain(images, **kwargs)  # outputs this cache cannot repeat exactly: do the plain work
        repeated = _repeat(processed, order)
        return repeated, [replacements[k] for k in order] if replacements else replacements

    def __deepcopy__(self, memo):
        # Deep-copying the processor binds the copy's cache to the copied processor. ProcessorMixin.to_dict
        # deep-copies only the attribute dict (and then drops this entry): nothing to copy then.
        twin = memo.get(id(self.processor))
        return None if twin is None else ProcessorCache(twin)


def image_key(image):
    """A hashable key equal for two images exactly when the image processor sees the same input."""
    from PIL import Image

    if isinstance(image, Image.Image):
        palette = image.getpalette() if image.mode in ("P", "PA") else None
        return ("pil", image.mode, image.size, None if palette is None else bytes(palette),
                repr(image.info.get("transparency")), image.tobytes())
    if isinstance(image, np.ndarray):
        return ("numpy", image.dtype.str, image.shape, np.ascontiguousarray(image).tobytes())
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().contiguous()
        raw = array.view(torch.int16) if array.dtype == torch.bfloat16 else array
        return ("torch", str(array.dtype), tuple(array.shape), raw.numpy().tobytes())
    return ("object", id(image))  # unknown kind: never shared


def content_owners(images: list) -> list[int]:
    """For each image, the index of the first image with the same content (itself if none)."""
    first: dict = {}
    by_id: dict[int, int] = {}  # the same object repeated: skip reading its bytes again
    owners = []
    for i, image in enumerate(images):
        owner = by_id.get(id(image))
        if owner is None:
            owner = first.setdefault(image_key(image), i)
            by_id[id(image)] = owner
        owners.append(owner)
    return owners


def _repeat(processed, order: list[int]):
    """``processed`` (for the distinct images) with each image's rows repeated in the call's order."""
    from transformers import BatchFeature

    grid = processed["image_grid_thw"]
    sizes = [int(t) * int(h) * int(w) for t, h, w in _as_list(grid)]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    patch_rows = np.concatenate([np.arange(starts[k], starts[k] + sizes[k]) for k in order])
    out = BatchFeature(dict(processed))  # the values are already arrays/tensors: no conversion
    for key in PER_IMAGE_KEYS:
        if key in out:
            out[key] = _take(out[key], np.asarray(order, dtype=np.int64))
    for key in PER_PATCH_KEYS:
        if key in out:
            out[key] = _take(out[key], patch_rows)
    return out


def _as_list(values):
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _take(values, rows: np.ndarray):
    if isinstance(values, torch.Tensor):
        return values.index_select(0, torch.from_numpy(rows).to(values.device))
    if isinstance(values, np.ndarray):
        return values[rows]
    return [values[i] for i in rows.tolist()]
