"""Compute each distinct prompt once per forward, and let every completion of its group reuse it (exact).

GRPO hands the model ``num_generations`` (G) rows per prompt: in generation's
prefill the G rows are the same prompt, and in the log-prob and training passes
they are the same prompt followed by G different completions. For a
vision-language prompt (Qwen2.5-VL: hundreds to thousands of image tokens) the
language model spends most of its time recomputing that shared prompt. This
module replaces the forward of the language backbone (``Qwen2_5_VLModel``,
``Qwen2VLModel``, ``Qwen3VLModel``, ``Qwen3VLMoeModel``: ``Family.backbone_path``,
``model.model`` in transformers 5, what TRL's fused LM head calls) with one that,
when rows share a prefix,

1. finds the split ``S`` and the groups: rows whose first ``S`` tokens are
   identical (ids, attention mask and, for image tokens, bit-identical images);
   ``S`` minimises the tokens computed, ``U*S + B*(L-S)`` for ``U`` groups of
   ``B`` rows of length ``L``, and never leaves an image token after the split;
2. runs the backbone once on the ``U`` distinct prefixes (their images
   included), keeping each layer's state at the end of the prefix: keys and
   values, and for a linear-attention layer (Qwen3.5's Gated DeltaNet) its
   convolution and recurrent states (:mod:`vlm_grpo.speed.prefix_cache`);
3. runs it on the ``L-S`` remaining tokens of all ``B`` rows, each row starting
   from its group's prefix states (gathered with ``index_select``), with the
   row's full attention mask and its slice of the full batch's 3-D rotary
   positions (M-RoPE, computed once for the whole batch exactly as the plain
   forward computes them);
4. returns the hidden states of every position of every row, ``(B, L, H)``,
   the shared prefix positions gathered from step 2 (and, for a Mixture of
   Experts asked for ``output_router_logits``, every row's router logits,
   gathered the same way, so the load-balancing loss is the plain path's).

Qwen3-VL's DeepStack adds per-token vision features to the hidden states at the
image positions after the first decoder layers. Every image token lies in the
prefix (step 1), so those additions all happen in the prefix pass, which gets
the prefix rows' images (or their encoded features, every per-layer DeepStack
tensor included) and runs the backbone's own code on them.

Why it is exact. A causal decoder's states at position ``t`` depend only on
tokens ``0..t``, so rows with identical prefixes have identical prefix states
and keys/values; the completion positions see the same keys, values, mask and
positions as in the full forward (only the floating-point summation order of
some kernels can change, as with any change of batch shape). Gradients flow
through the gathers into the prefix computation: ``index_select``'s backward
sums over the rows of a group, which is the plain path's sum over the G
copies.

Generation: the prefill call (an empty cache, ``use_cache``) shares only rows
that are identical in full, runs the distinct prompts once and fills the
caller's cache with the gathered keys/values; the decode steps that follow are
the plain ones.

Under gradient checkpointing the decoder layers drop a cache by default
(``_can_checkpoint_with_cache``); both caches here are safe to replay (the
prefix one is read-only, the recording one overwrites), so the flag is set on
the layers for the duration of the two calls only.

Everything else takes the plain path: inputs given as embeddings or
positionally, videos, per-layer outputs, a non-empty cache, sliding-window
layers, no repeated prefix. Unsupported shapes are logged once per reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging

import torch
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling

from vlm_grpo.speed import prefix_cache
from vlm_grpo.speed.prompt_plan import SharePlan, call_images, images_per_row, plan_sharing, row_keys
from vlm_grpo.speed.vision_cache import _ranges, _starts  # the patch-row arithmetic of the image cache

logger = logging.getLogger(__name__)

ATTRIBUTE = "_shared_prompt"  # where a backbone keeps its SharedPromptForward (a plain attribute, not module state)
PER_LAYER_OUTPUTS = ("output_hidden_states", "output_attentions")
UNSUPPORTED_KWARGS = ("inputs_embeds", "pixel_values_videos", "video_grid_thw")
CACHE_NAMES = ("cache", "past_key_values")  # the cache argument's name: transformers >= 5.24, then before
DECODING = "a non-empty cache"  # a decode step: nothing to share, and nothing to report


@dataclasses.dataclass
class SharedPromptStats:
    """Counts since sharing was enabled (or last reset).

    Fields:
        calls: backbone forward calls.
        shared: calls that took the shared path.
        requested_tokens: tokens the calls asked for (``B * L`` each).
        computed_tokens: tokens the language model actually ran (``U * S + B * (L - S)`` on the shared path).
    """

    calls: int = 0
    shared: int = 0
    requested_tokens: int = 0
    computed_tokens: int = 0

    def reset(self) -> None:
        self.calls = self.shared = self.requested_tokens = self.computed_tokens = 0


def cache_argument(function) -> str | None:
    """The name under which ``function`` takes the key/value cache in the installed transformers.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (keeping a shim that maps the old name, and
    drops it when both are given); ``None`` when the function takes neither.
    """
    parameters = inspect.signature(function).parameters
    return next((name for name in CACHE_NAMES if name in parameters), None)


def output_cache_field(output_class=BaseModelOutputWithPast) -> str | None:
    """The field of a backbone output class that carries the cache in the installed transformers."""
    fields = {f.name for f in dataclasses.fields(output_class)}
    return next((name for name in CACHE_NAMES if name in fields), None)


def api_mismatch(backbone: torch.nn.Module) -> str | None:
    """Why the shared path cannot talk to this backbone in the installed transformers, or ``None``."""
    owner = type(backbone)
    if not hasattr(owner, "compute_3d_position_ids"):
        return f"{owner.__name__} has no compute_3d_position_ids"
    if cache_argument(owner.forward) is None or cache_argument(owner.compute_3d_position_ids) is None:
        return f"{owner.__name__}.forward takes its cache under neither of {CACHE_NAMES}"
    if output_cache_field() is None:
        return f"BaseModelOutputWithPast has no field among {CACHE_NAMES}"
    return None


class SharedPromptForward:
    """The backbone's replacement forward: the shared path where it applies, else the original forward."""

    def __init__(self, backbone: torch.nn.Module, tower_outputs: dict[str, str] | None = None) -> None:
        mismatch = api_mismatch(backbone)
        if mismatch is not None:
            raise TypeError(f"the group-shared prompt does not fit this transformers release: {mismatch}")
        self.backbone = backbone
        self.original = backbone.forward
        self.cache = cache_argument(type(backbone).forward)
        self.positions_cache = cache_argument(type(backbone).compute_3d_position_ids)
        self.stats = SharedPromptStats()
        self._told: set[str] = set()
        # the per-image fields of encoded images (Family.tower_outputs): Qwen3-VL's deepstack_features too
        self.image_fields = {name: kind for name, kind in (tower_outputs or {"pooler_output": "tokens"}).items()
                             if kind != "patches"}

    def __call__(self, *args, **kwargs):
        self.stats.calls += 1
        input_ids = kwargs.get("input_ids")
        reason = self._unsupported(args, kwargs)
        if reason is None:
            self.stats.requested_tokens += input_ids.numel()
            plan = self._plan(kwargs)
            if plan is not None:
                self.stats.shared += 1
                self.stats.computed_tokens += plan.computed_tokens(*input_ids.shape)
                return self._shared(plan, kwargs)
            self.stats.computed_tokens += input_ids.numel()
        elif reason not in (None, DECODING):
            self._tell(reason)
        return self.original(*args, **kwargs)

    def _tell(self, reason: str) -> None:
        if reason not in self._told:
            self._told.add(reason)
            logger.warning("group-shared prompt: plain forward for calls with %s", reason)

    def _unsupported(self, args: tuple, kwargs: dict) -> str | None:
        if args:
            return "positional arguments"
        for name in UNSUPPORTED_KWARGS:
            if kwargs.get(name) is not None:
                return name
        if kwargs.get("input_ids") is None:
            return "no input_ids"
        config = self.backbone.config
        for name in PER_LAYER_OUTPUTS:
            if kwargs.get(name) or (kwargs.get(name) is None and getattr(config, name, False)):
                return name
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            return "a prepared (not 2-D) attention mask"
        if any(name in kwargs for name in CACHE_NAMES if name != self.cache):
            return "the cache under an argument name this transformers release does not use"
        cache = kwargs.get(self.cache)
        if cache is not None and cache.get_seq_length() > 0:
            return DECODING
        encoded = kwargs.get("mm_encoder_outputs") or {}
        if encoded.get("video") is not None:
            return "video features"
        if encoded.get("image") is not None and kwargs.get("pixel_values") is not None:
            return "both pixel_values and image features"
        position_ids = kwargs.get("position_ids")
        if position_ids is not None and position_ids.dim() != 3:
            return "2-D position_ids"
        unsupported = prefix_cache.unsupported_kinds(config.get_text_config())
        if unsupported:
            return f"{', '.join(unsupported)} layers"
        if self.backbone.training and _active_dropout(self.backbone.language_model):
            # The plain forward draws a dropout mask per row; sharing would draw one per group.
            return "active dropout in the language model (set lora_dropout and attention_dropout to 0 to share prompts)"
        return None

    def _plan(self, kwargs: dict) -> SharePlan | None:
        input_ids, mask = kwargs["input_ids"], kwargs.get("attention_mask")
        if mask is None:  # no padding
            mask = torch.ones_like(input_ids)
        image_token = self.backbone.config.image_token_id
        images = call_images(kwargs, self.backbone.config.vision_config.spatial_merge_size ** 2, self.image_fields)
        owner_of_token, per_row = None, [[] for _ in range(len(input_ids))]
        if images is not None:
            tokens, owners = images
            per_row = images_per_row(input_ids, image_token, tokens)
            if per_row is None:
                self._tell("image tokens that do not match the images")
                return None
            device = input_ids.device
            owner_of_token = torch.repeat_interleave(torch.tensor(owners, device=device),
                                                     torch.tensor(tokens, device=device))
        is_image = input_ids == image_token
        min_split = int(is_image.any(0).nonzero().max()) + 1 if bool(is_image.any()) else 0
        whole_rows = kwargs.get(self.cache) is not None or bool(kwargs.get("use_cache"))
        keys = row_keys(input_ids, image_token, owner_of_token)
        plan = plan_sharing(keys, mask, min_split=min_split, whole_rows=whole_rows)
        if plan is None:
            return None
        return dataclasses.replace(plan, images=[i for row in plan.rows.tolist() for i in per_row[row]])

    def _shared(self, plan: SharePlan, kwargs: dict):
        backbone = self.backbone
        kwargs = dict(kwargs)
        return_dict = kwargs.pop("return_dict", None)  # PEFT passes None: the config decides, as in the plain path
        if return_dict is None:
            return_dict = getattr(backbone.config, "return_dict", True)
        input_ids, mask = kwargs.pop("input_ids"), kwargs.pop("attention_mask", None)
        prefix_images = _select_images(kwargs, plan.images, self.image_fields)  # pops the call's image kwargs
        grid = kwargs.pop("image_grid_thw", None)
        caller_cache, use_cache = kwargs.pop(self.cache, None), kwargs.pop("use_cache", None)
        mm_types = kwargs.pop("mm_token_type_ids", None)
        positions = kwargs.pop("position_ids", None)
        if positions is None:
            positions = self._positions(input_ids, mask, grid, mm_types, kwargs.get("second_per_grid_ts"))
        kwargs.pop("second_per_grid_ts", None)
        split, rows = plan.split, plan.rows
        length = input_ids.shape[1]
        layers = backbone.language_model.layers
        recording = prefix_cache.recording_cache(prefix_cache.layer_kinds(backbone.config.get_text_config()))
        with _replayable_cache(layers):
            prefix = self.original(
                input_ids=input_ids[rows, :split],
                attention_mask=None if mask is None else mask[rows, :split],
                position_ids=positions[:, rows, :split],
                **{self.cache: recording},
                use_cache=use_cache,
                mm_token_type_ids=None if mm_types is None else mm_types[rows, :split],
                return_dict=True,
                **prefix_images,
                **kwargs,
            )
            group = plan.group_of_row
            hidden = [prefix.last_hidden_state.index_select(0, group)]
            shared = prefix_cache.gathered(recording, group)  # every row's group's keys/values (and linear states)
            if split < length:
                rest = self.original(
                    input_ids=input_ids[:, split:],
                    attention_mask=mask,
                    position_ids=positions[:, :, split:],
                    **{self.cache: prefix_cache.prefix_cache(shared)},
                    use_cache=use_cache,
                    mm_token_type_ids=None if mm_types is None else mm_types[:, split:],
                    return_dict=True,
                    **kwargs,
                )
                hidden.append(rest.last_hidden_state)
        if caller_cache is not None:  # generation's prefill (whole rows): hand the gathered states to the caller
            prefix_cache.fill(caller_cache, shared)
        # The class the plain forward returns (transformers 5.24: a multimodal output whose image_outputs are
        # left unset here: the encoder ran on the distinct images only).
        output_class = type(prefix)
        extra = {}
        if getattr(prefix, "router_logits", None):  # MoE, output_router_logits: every row's tokens, as the plain path
            extra["router_logits"] = _gather_router_logits(prefix.router_logits, rest.router_logits if split < length
                                                           else None, group, split)
        output = output_class(
            last_hidden_state=torch.cat(hidden, dim=1) if len(hidden) > 1 else hidden[0],
            **{output_cache_field(output_class): caller_cache if use_cache else None},
            **extra,
        )
        return output if return_dict else output.to_tuple()

    def _positions(self, input_ids, mask, grid, mm_types, second_per_grid_ts) -> torch.Tensor:
        """The full batch's rotary positions ``(3, B, L)``, as the plain forward computes them."""
        extra = {} if second_per_grid_ts is None else {"second_per_grid_ts": second_per_grid_ts}  # Qwen2.5-VL only
        positions = self.backbone.compute_3d_position_ids(
            input_ids=input_ids,
            image_grid_thw=grid,
            video_grid_thw=None,
            inputs_embeds=None,
            attention_mask=mask,
            mm_token_type_ids=mm_types,
            **{self.positions_cache: None},
            **extra,
        )
        if positions is None:  # text only: the plain forward counts 0..L-1 in every row and all three axes
            batch, length = input_ids.shape
            positions = torch.arange(length, device=input_ids.device).view(1, 1, -1).expand(3, batch, -1)
        return positions


def _gather_router_logits(prefix: tuple, rest: tuple | None, group: torch.Tensor, split: int) -> tuple:
    """Per layer, the router logits of every row's tokens ``(B * L, experts)``, row-major as the plain forward
    returns them: each row's prefix tokens from its group's prefix (``(U * S, E)``), then its own tokens
    (``(B * (L - S), E)``). The gather's backward sums over a group's rows, as the plain path's copies do."""
    batch = len(group)
    out = []
    for index, logits in enumerate(prefix):
        experts = logits.shape[-1]
        rows = [logits.reshape(-1, split, experts).index_select(0, group)]
        if rest is not None:
            rows.append(rest[index].reshape(batch, -1, experts))
        out.append(torch.cat(rows, dim=1).reshape(-1, experts))
    return tuple(out)


def _select_images(kwargs: dict, images: list[int], fields: dict[str, str]) -> dict:
    """Pop the call's image kwargs; return them for the listed images only, in order.

    Images passed already encoded (generation) keep every per-image field of the encoder's output (``fields``:
    ``pooler_output``, and Qwen3-VL's per-layer ``deepstack_features``)."""
    pixels = kwargs.pop("pixel_values", None)
    encoded = (kwargs.pop("mm_encoder_outputs", None) or {}).get("image")
    grid = kwargs.get("image_grid_thw")
    selected = {}
    if not images:
        return selected
    if grid is not None:
        selected["image_grid_thw"] = grid.index_select(0, torch.tensor(images, dtype=torch.long, device=grid.device))
    if encoded is not None:
        chosen = {}
        for name, kind in fields.items():
            value = getattr(encoded, name, None)
            if value is None:
                continue
            if kind == "tokens_per_layer":
                chosen[name] = [[list(layer)[i] for i in images] for layer in value]
            else:
                chosen[name] = [list(value)[i] for i in images]
        output_class = type(encoded) if dataclasses.is_dataclass(encoded) else BaseModelOutputWithPooling
        selected["mm_encoder_outputs"] = {"image": output_class(**chosen)}
    elif pixels is not None and grid is not None:
        sizes = grid.prod(-1).tolist()
        starts = _starts(sizes)
        rows = _ranges([starts[i] for i in images], [sizes[i] for i in images], pixels.device)
        selected["pixel_values"] = pixels.index_select(0, rows)
    return selected


def _active_dropout(language_model: torch.nn.Module) -> bool:
    """Whether a forward in training mode would drop anything (dropout modules, or attention dropout)."""
    if getattr(language_model.config, "attention_dropout", 0.0):
        return True
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 and m.training for m in language_model.modules())


@contextlib.contextmanager
def _replayable_cache(layers):
    """Let checkpointed decoder layers keep the (replay-safe) caches of the shared path."""
    for layer in layers:
        layer._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("_can_checkpoint_with_cache", None)


def enable_shared_prompt(model) -> None:
    """Compute each distinct prompt once per forward of ``model``'s language backbone. Idempotent; ``None``: no-op."""
    if model is None:
        return
    from vlm_grpo.speed.group_cache import model_family

    backbone = language_backbone(model)
    if not isinstance(backbone.__dict__.get(ATTRIBUTE), SharedPromptForward):
        shared = SharedPromptForward(backbone, model_family(model).tower_outputs)
        backbone.forward = shared
        backbone.__dict__[ATTRIBUTE] = shared


def disable_shared_prompt(model) -> None:
    """Restore the backbone's own forward. Idempotent; ``None``: no-op."""
    if model is None:
        return
    backbone = language_backbone(model)
    if backbone.__dict__.pop(ATTRIBUTE, None) is not None:
        backbone.__dict__.pop("forward", None)


def shared_prompt_stats(model) -> SharedPromptStats | None:
    """The live counters of ``model``'s shared-prompt forward, or ``None`` when it is off."""
    shared = language_backbone(model).__dict__.get(ATTRIBUTE)
    return shared.stats if isinstance(shared, SharedPromptForward) else None


def language_backbone(model) -> torch.nn.Module:
    """The module holding the vision tower and ``language_model`` (``Family.backbone_path``: ``model.model``),
    through wrappers and PEFT."""
    from vlm_grpo.speed.group_cache import model_family, unwrap

    model = unwrap(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = model_family(base).backbone(base)
    if backbone is None or not hasattr(backbone, "language_model"):
        raise TypeError(f"{type(base).__name__} has no vision-language backbone (`model.model` with "
                        "`language_model`); the shared-prompt forward needs one")
    return backbone
