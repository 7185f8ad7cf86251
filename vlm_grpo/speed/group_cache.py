"""Switch the group image cache on and off for a model and its processor.

``enable_group_image_cache(model, processor)`` installs both halves:

- on the model's vision tower (found through DDP/DeepSpeed/FSDP wrappers,
  ``torch.compile`` and PEFT), forward hooks that encode each distinct image
  of a call once (:mod:`vlm_grpo.speed.vision_cache`);
- on the processor, a ``_process_images`` that resizes and normalises each
  distinct image of a call once (:mod:`vlm_grpo.speed.processor_cache`).

Both are exact, idempotent, and undone by ``disable_group_image_cache``, after
which the model and processor run their plain code path again. TRL builds its
reference model separately: enable the cache on ``trainer.ref_model`` too.
"""

from __future__ import annotations

import contextlib

import torch

from vlm_grpo.speed.processor_cache import ProcessorCache
from vlm_grpo.speed.vision_cache import CacheStats, TowerCache

ATTRIBUTE = "_group_image_cache"  # where a tower keeps its TowerCache (a plain attribute, not module state)


def enable_group_image_cache(model=None, processor=None) -> None:
    """Encode (model) and preprocess (processor) each distinct image once per call. Idempotent."""
    if model is not None:
        tower = vision_tower(model)
        if not isinstance(getattr(tower, ATTRIBUTE, None), TowerCache):
            cache = TowerCache(model_family(model).tower_outputs)
            tower.register_forward_pre_hook(cache.before, with_kwargs=True)
            tower.register_forward_hook(cache.after, with_kwargs=True, always_call=True, prepend=True)
            setattr(tower, ATTRIBUTE, cache)
    if processor is not None and not isinstance(processor.__dict__.get("_process_images"), ProcessorCache):
        processor._process_images = ProcessorCache(processor)


def disable_group_image_cache(model=None, processor=None) -> None:
    """Remove the cache: the model and processor take their plain path again. Idempotent."""
    if model is not None:
        tower = vision_tower(model)
        cache = tower.__dict__.pop(ATTRIBUTE, None)
        if cache is not None:
            _remove_hooks(tower, cache)
    if processor is not None and isinstance(processor.__dict__.get("_process_images"), ProcessorCache):
        del processor.__dict__["_process_images"]


def cache_stats(model_or_processor) -> CacheStats | None:
    """The live counters of a model's (or a processor's) cache, or ``None`` when it is off."""
    owner = model_or_processor
    if isinstance(owner.__dict__.get("_process_images"), ProcessorCache):
        return owner.__dict__["_process_images"].stats
    if isinstance(owner, torch.nn.Module) or hasattr(owner, "get_base_model"):
        cache = getattr(vision_tower(owner), ATTRIBUTE, None)
        return cache.stats if isinstance(cache, TowerCache) else None
    return None


def is_enabled(model_or_processor) -> bool:
    return cache_stats(model_or_processor) is not None


@contextlib.contextmanager
def group_image_cache(model=None, processor=None, *, enabled: bool = True):
    """Run a block with the cache on (or off, ``enabled=False``), then restore each object's previous state."""
    before = {id(x): is_enabled(x) for x in (model, processor) if x is not None}
    (enable_group_image_cache if enabled else disable_group_image_cache)(model, processor)
    try:
        yield
    finally:
        for obj, switch in ((model, "model"), (processor, "processor")):
            if obj is None or before[id(obj)] == enabled:
                continue
            restore = enable_group_image_cache if before[id(obj)] else disable_group_image_cache
            restore(**{switch: obj})


def vision_tower(model) -> torch.nn.Module:
    """The vision tower of a Qwen-VL model, through DDP/DeepSpeed/FSDP, ``torch.compile`` and PEFT wrappers."""
    from vlm_grpo.modeling import vision_module

    return vision_module(unwrap(model))


def model_family(model):
    """The :class:`vlm_grpo.families.Family` of a model, through wrappers and PEFT."""
    from vlm_grpo.modeling import family_of

    base = unwrap(model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    return family_of(base.config)


def unwrap(model) -> torch.nn.Module:
    """The model inside DDP/DeepSpeed/FSDP and ``torch.compile`` wrappers (PEFT wrappers are kept)."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        for name in ("module", "_orig_mod"):  # DDP / DeepSpeed / FSDP, torch.compile
            inner = getattr(model, name, None)
            if isinstance(inner, torch.nn.Module):
                model = inner
                break
    return model


def _remove_hooks(tower: torch.nn.Module, cache: TowerCache) -> None:
    """Remove ``cache``'s hooks from ``tower`` (found by owner, so a deep copy's hooks are found in the copy)."""
    for hooks in (tower._forward_pre_hooks, tower._forward_hooks):
        for key in [k for k, hook in hooks.items() if getattr(hook, "__self__", None) is cache]:
            del hooks[key]
            for flags in (tower._forward_pre_hooks_with_kwargs, tower._forward_hooks_with_kwargs,
                          tower._forward_hooks_always_called):
                flags.pop(key, None)
