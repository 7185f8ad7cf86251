"""Decode without copying the key/value cache every step (exact).

transformers' ``DynamicLayer`` appends each decode step's keys and values with
``torch.cat``, which copies the whole cache once per layer per step: the copy
grows with the prompt, and at GRPO's shapes it is most of the decode loop (the
scaled Qwen2.5-VL-3B shape, 16 rows of a 1,090-token prompt, 256 new tokens on
2 CPU cores: ``aten::cat`` is 84% of ``generate``'s time with the prefill
shared). This module gives generation's cache layers a buffer with headroom:
each step writes its one new position into the buffer and the layer returns a
view of the filled part, the same values in the same shape as the
concatenation, so attention computes the same numbers (the tests compare
logits bit for bit and sampled tokens under a fixed seed). The buffer grows by
half when full (one copy, as rare as the growth is geometric).

It is installed as a forward pre-hook on the language backbone
(``Family.backbone_path``) and acts on a call only when it can tell the result
is the plain one: gradients off (generation runs under ``torch.no_grad``; an
in-place write into a buffer autograd saved would be wrong), a cache that is
empty and made of plain ``DynamicLayer``s (not offloaded), beside which only
linear-attention layers may sit (Qwen3.5's hybrid: those keep their own
fixed-size states and are left alone). Everything else (sliding-window layers,
a user's own cache, training passes, decoding with a cache filled elsewhere)
keeps the caller's cache as it is, and the first call of each kind is logged
once. So it serves every caller of ``generate``: TRL's rollouts, its tool loop,
evaluation.
"""

from __future__ import annotations

import logging

import torch
from transformers.cache_utils import Cache, DynamicLayer, LinearAttentionLayer

from vlm_grpo.speed.shared_prompt import cache_argument, language_backbone

logger = logging.getLogger(__name__)

ATTRIBUTE = "_decode_cache"  # where a backbone keeps its DecodeCacheHook (a plain attribute, not module state)
MIN_HEADROOM = 256  # positions a new buffer has beyond what it holds (one GRPO completion, typically)
# Layers kept as they are beside buffered ones: a linear-attention layer (Qwen3.5's Gated DeltaNet) holds fixed-size
# convolution and recurrent states that it overwrites, so it copies nothing as the sequence grows.
KEPT = (LinearAttentionLayer,)


class BufferedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values are views of buffers with headroom: appending writes in place."""

    def __init__(self) -> None:
        super().__init__()
        self._key_buffer = self._value_buffer = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        held = self.get_seq_length()
        needed = held + key_states.shape[-2]
        if not self._fits(key_states, needed):
            self._grow(key_states, value_states, needed)
        self._key_buffer[..., held:needed, :].copy_(key_states)
        self._value_buffer[..., held:needed, :].copy_(value_states)
        self.keys, self.values = self._key_buffer[..., :needed, :], self._value_buffer[..., :needed, :]
        return self.keys, self.values

    def _fits(self, key_states: torch.Tensor, needed: int) -> bool:
        """Whether the buffer holds this layer's states (not replaced by a crop or a batch selection) and has room."""
        buffer = self._key_buffer
        return (
            buffer is not None
            and self.keys is not None
            and self.keys.data_ptr() == buffer.data_ptr()
            and self.keys.shape[:2] == key_states.shape[:2] == buffer.shape[:2]
            and buffer.shape[-1] == key_states.shape[-1]
            and buffer.dtype == key_states.dtype
            and needed <= buffer.shape[-2]
        )

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, needed: int) -> None:
        capacity = needed + max(MIN_HEADROOM, needed // 2)
        buffers = []
        for held, new in ((self.keys, key_states), (self.values, value_states)):
            buffer = new.new_empty((*new.shape[:-2], capacity, new.shape[-1]))
            if held is not None and held.numel():
                buffer[..., : held.shape[-2], :].copy_(held)
            buffers.append(buffer)
        self._key_buffer, self._value_buffer = buffers

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        super().reset()


class DecodeCacheHook:
    """The backbone's forward pre-hook: give an empty generation cache buffered layers, where that is exact."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        self.cache_name = cache_argument(type(backbone).forward)
        self.calls = 0  # calls whose cache was buffered
        self.plain_reasons: list[str] = []  # why other generation caches were left as they were, once each

    def __call__(self, module, args, kwargs):
        cache = kwargs.get(self.cache_name) if self.cache_name else None
        if cache is None or any(getattr(layer, "is_initialized", False) for layer in getattr(cache, "layers", ())):
            return None  # no cache (training passes), or a decode step of a cache already set up
        reason = self.unsupported(cache)
        if reason is not None:
            if reason not in self.plain_reasons:
                self.plain_reasons.append(reason)
                logger.warning("decode_cache: plain cache (same results) for %s", reason)
            return None
        cache.layers[:] = [BufferedLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
        self.calls += 1
        return None

    @staticmethod
    def unsupported(cache) -> str | None:
        if torch.is_grad_enabled():
            return "a cache filled with gradients on"
        if not isinstance(cache, Cache) or getattr(cache, "offloading", False):
            return f"a {type(cache).__name__} cache{' (offloaded)' if getattr(cache, 'offloading', False) else ''}"
        kinds = {type(layer) for layer in cache.layers}
        unknown = kinds - {DynamicLayer, BufferedLayer, *KEPT}
        if unknown or DynamicLayer not in kinds:
            names = ", ".join(sorted(kind.__name__ for kind in unknown)) or "no growing key/value layers"
            return f"cache layers of kind {names}" if unknown else names
        return None


def check_backbone(backbone) -> str | None:
    """Why buffered decoding cannot be installed on ``backbone``, or ``None``."""
    if cache_argument(type(backbone).forward) is None:
        return f"{type(backbone).__name__}.forward takes no cache argument this module knows"
    return None


def enable_decode_cache(model) -> None:
    """Buffer generation's key/value cache on ``model`` (and a PEFT or wrapped copy of it). Idempotent."""
    backbone = language_backbone(model)
    reason = check_backbone(backbone)
    if reason is not None:
        raise ValueError(f"decode_cache: {reason}")
    if not isinstance(backbone.__dict__.get(ATTRIBUTE), DecodeCacheHook):
        hook = DecodeCacheHook(backbone)
        backbone.register_forward_pre_hook(hook, with_kwargs=True)
        setattr(backbone, ATTRIBUTE, hook)


def disable_decode_cache(model) -> None:
    """Remove the hook: generation uses transformers' own cache layers again. Idempotent."""
    backbone = language_backbone(model)
    hook = backbone.__dict__.pop(ATTRIBUTE, None)
    if hook is not None:
        for key in [k for k, h in backbone._forward_pre_hooks.items() if h is hook]:
            del backbone._forward_pre_hooks[key]
            backbone._forward_pre_hooks_with_kwargs.pop(key, None)


def decode_cache_stats(model) -> DecodeCacheHook | None:
    """The live hook of ``model`` (``calls``: generation caches buffered; ``plain_reasons``), or ``None`` when off."""
    hook = language_backbone(model).__dict__.get(ATTRIBUTE)
    return hook if isinstance(hook, DecodeCacheHook) else None

