"""Encode each distinct image once per vision-tower call (exact).

GRPO repeats every prompt ``num_generations`` times, and TRL hands all copies
to the model: generation's prefill, the old/reference log-prob passes and the
training forward each run the vision tower on every copy of every image. In
transformers 5.x the tower is ``model.model.visual``
(``Qwen2_5_VisionTransformerPretrainedModel``), called once per forward by
``Qwen2_5_VLModel.get_image_features`` as ``visual(pixel_values,
grid_thw=image_grid_thw)`` with all images' patch rows concatenated; it returns
a ``BaseModelOutputWithPooling`` whose ``pooler_output`` (merged tokens) the
caller splits per image. Two forward hooks on the tower remove the repetition
within one call:

- the pre-hook finds the distinct images among the call's images (same grid,
  bit-identical patches), and hands the tower only the first copy of each;
- the post-hook gathers the tower's per-patch (``last_hidden_state``) and
  per-token (``pooler_output``; Qwen3-VL also each of its ``deepstack_features``)
  rows back to every image that uses them. Which output field is per patch, per
  token or a per-layer list of per-token tensors is the family's
  ``Family.tower_outputs`` (:mod:`vlm_grpo.families`).

Why it is exact. In Qwen2-VL and Qwen2.5-VL the tower's output for an image
depends only on that image's own patches and grid: attention is confined to an
image (``cu_seqlens``) or to windows inside it, rotary positions restart per
image, and the window permutation is a per-image block. Qwen3-VL adds learned
position embeddings resampled to each image's own grid and DeepStack mergers
applied per merged token: per image too. So the output of a
batch is the concatenation of per-image outputs, and encoding a copy again
gives nothing new (floating-point results can differ in the last bits, as any
change of batch composition does). The gather is differentiable: the gradient
of a shared image is the sum over its uses (``index_select``'s backward is an
``index_add``), so the tower's parameter gradients are those of the plain path,
trainable or frozen.

Cost when nothing repeats: images whose grid is unique are never compared; for
the others, a strided sample of their pixels is gathered on the device and
compared on the host; only images whose samples match are compared in full
(``torch.equal``, one host sync each). Calls that ask for per-layer hidden
states or attentions, pass precomputed vision tensors (``cu_seqlens`` ...), or
need gradients with respect to the pixels take the plain path.

The hooks live on the tower module, not in its state: ``state_dict`` and
``save_pretrained`` output are unchanged, and ``copy.deepcopy`` of a model
carries working hooks of its own.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

import torch

logger = logging.getLogger(__name__)

# Precomputed vision inputs (see transformers.vision_utils) describe the whole batch: they would not match
# the deduplicated one, so a call that passes any of them takes the plain path.
PRECOMPUTED_KWARGS = (
    "cu_seqlens", "max_seqlen", "position_ids", "window_index", "cu_window_seqlens", "max_window_seqlen",
    "interp_indices", "interp_weights",  # Qwen3-VL's resampled position embeddings
)
#: The tower outputs of Qwen2-VL / Qwen2.5-VL (a family's own list is ``Family.tower_outputs``).
DEFAULT_OUTPUTS = {"last_hidden_state": "patches", "pooler_output": "tokens"}
PER_LAYER_OUTPUTS = ("output_hidden_states", "output_attentions")
SAMPLES_PER_IMAGE = 4096  # pixel values per image in the fingerprint, evenly spaced over the whole image


@dataclasses.dataclass
class CacheStats:
    """Counts since the cache was enabled (or last reset).

    Fields:
        calls: vision-tower forward calls (model) or ``_process_images`` calls (processor).
        requested: images the calls asked for.
        encoded: images actually encoded (model) or resized and normalised (processor).
    """

    calls: int = 0
    requested: int = 0
    encoded: int = 0

    @property
    def saved(self) -> int:
        return self.requested - self.encoded

    def reset(self) -> None:
        self.calls = self.requested = self.encoded = 0


@dataclasses.dataclass(frozen=True)
class DedupPlan:
    """How a call's images map onto its distinct images.

    Fields:
        unique: index of the first copy of each distinct image, in order of first appearance.
        source_rows: the call's patch rows that make up the distinct images, in the new batch's order.
        patch_index: for every patch row of the call, its row in the distinct images' patches.
        merge_unit: patches per merged token (``spatial_merge_size ** 2``).
    """

    unique: list[int]
    source_rows: torch.Tensor
    patch_index: torch.Tensor
    merge_unit: int

    @property
    def token_index(self) -> torch.Tensor:
        """For every merged-token row of the call, its row in the distinct images' tokens.

        Each image's patch block starts at a multiple of ``merge_unit`` in both layouts,
        so every ``merge_unit``-th patch row, divided by ``merge_unit``, is the token row.
        """
        return self.patch_index[:: self.merge_unit] // self.merge_unit


def image_owners(pixels: torch.Tensor, grids: list[list[int]]) -> list[int]:
    """For each image, the index of the first image with the same grid and bit-identical patches.

    ``pixels`` holds all images' patch rows back to back (``(sum t*h*w, patch_dim)``),
    ``grids`` each image's ``[t, h, w]``. Images are grouped by grid, then by an exact
    strided sample of their values, then confirmed with ``torch.equal``; an image that
    fails the confirmation starts a new group, so the result is exact whatever the sample.
    """
    sizes = [t * h * w for t, h, w in grids]
    offsets = _starts(sizes)
    owners = list(range(len(grids)))
    shared = Counter(map(tuple, grids))
    candidates = [i for i, grid in enumerate(grids) if shared[tuple(grid)] > 1]
    if not candidates:
        return owners
    samples = _samples(pixels, [offsets[i] for i in candidates], [sizes[i] for i in candidates])
    buckets: dict[tuple, list[int]] = {}
    for i, sample in zip(candidates, samples):
        buckets.setdefault((tuple(grids[i]), sample), []).append(i)

    def rows(i: int) -> torch.Tensor:
        return pixels[offsets[i] : offsets[i] + sizes[i]]

    for members in buckets.values():
        while len(members) > 1:
            first, rest = members[0], members[1:]
            members = []
            for i in rest:
                if torch.equal(rows(i), rows(first)):
                    owners[i] = first
                else:  # same sample, different pixels: compare among the leftovers next
                    members.append(i)
    return owners


def _samples(pixels: torch.Tensor, starts: list[int], sizes: list[int]) -> list[bytes]:
    """An exact, evenly strided sample of each image's values, as bytes on the host (one transfer)."""
    width = pixels.shape[1]
    flat = pixels.reshape(-1)
    count = min(SAMPLES_PER_IMAGE, min(sizes) * width)
    device = pixels.device
    start = torch.tensor(starts, device=device).unsqueeze(1) * width
    length = torch.tensor(sizes, device=device).unsqueeze(1) * width
    steps = torch.arange(count, device=device).unsqueeze(0)
    positions = (start + (steps * (length - 1)) // max(count - 1, 1)).reshape(-1)
    # index_select, not flat[positions]: advanced indexing is ~100x slower on CPU for this shape
    values = flat.index_select(0, positions).reshape(len(starts), count).cpu()
    if values.dtype == torch.bfloat16:  # numpy has no bfloat16: compare the raw bits
        values = values.view(torch.int16)
    return [row.tobytes() for row in values.numpy()]


def plan_dedup(pixels: torch.Tensor, grid_thw: torch.Tensor, merge_unit: int) -> DedupPlan | None:
    """The plan for one tower call, or ``None`` when every image is distinct (the plain path)."""
    grids = grid_thw.tolist()
    if len(grids) < 2:
        return None
    owners = image_owners(pixels, grids)
    unique = [i for i, owner in enumerate(owners) if owner == i]
    if len(unique) == len(grids):
        return None
    sizes = [t * h * w for t, h, w in grids]
    starts = _starts(sizes)  # each image's first row in the call
    unique_starts = dict(zip(unique, _starts([sizes[i] for i in unique])))  # ... in the new batch
    device = pixels.device
    source_rows = _ranges([starts[i] for i in unique], [sizes[i] for i in unique], device)
    patch_index = _ranges([unique_starts[owner] for owner in owners], sizes, device)
    return DedupPlan(unique=unique, source_rows=source_rows, patch_index=patch_index, merge_unit=merge_unit)


def _starts(sizes: list[int]) -> list[int]:
    starts, total = [], 0
    for size in sizes:
        starts.append(total)
        total += size
    return starts


def _ranges(starts: list[int], lengths: list[int], device) -> torch.Tensor:
    """``cat([arange(s, s + n) for s, n in zip(starts, lengths)])`` built on ``device`` without a host sync."""
    total = sum(lengths)
    shift = torch.tensor([s - o for s, o in zip(starts, _starts(lengths))], device=device)
    counts = torch.tensor(lengths, device=device)
    return torch.arange(total, device=device) + torch.repeat_interleave(shift, counts, output_size=total)


class TowerCache:
    """The pair of forward hooks on one vision tower, with its counters."""

    def __init__(self, outputs: dict[str, str] | None = None) -> None:
        self.stats = CacheStats()
        self.outputs = dict(outputs or DEFAULT_OUTPUTS)  # output field -> "patches" | "tokens" | "tokens_per_layer"
        # Plans waiting for their forward to finish, keyed by the id of the deduplicated grid tensor the
        # pre-hook passed on; the tensor is kept with its plan, so the id cannot be reused until the post-hook
        # (registered with always_call, so it also runs when the forward raises) pops it.
        self._pending: dict[int, tuple[torch.Tensor, DedupPlan]] = {}
        self._told: set[str] = set()  # plain-path reasons already shown

    def before(self, tower, args: tuple, kwargs: dict):
        pixels, grid_thw, rest = _split_inputs(args, kwargs)
        if pixels is None or grid_thw is None:
            return None
        n = grid_thw.shape[0]
        self.stats.calls += 1
        self.stats.requested += n
        reason = _plain_path_reason(tower, pixels, rest)
        if reason is not None and reason not in self._told:
            self._told.add(reason)
            logger.warning("group image cache: plain vision-tower call for calls with %s", reason)
        plan = None if reason is not None else plan_dedup(pixels, grid_thw, _merge_unit(tower))
        if plan is None:
            self.stats.encoded += n
            return None
        self.stats.encoded += len(plan.unique)
        unique = torch.tensor(plan.unique, device=grid_thw.device)
        new_grid = grid_thw.index_select(0, unique)
        new_pixels = pixels.index_select(0, plan.source_rows)
        self._pending[id(new_grid)] = (new_grid, plan)
        return (new_pixels,), {**rest, "grid_thw": new_grid}

    def after(self, tower, args: tuple, kwargs: dict, output):
        pending = self._pending.pop(id(kwargs.get("grid_thw")), None)
        if pending is None or output is None:  # plain path, or the forward raised (always_call)
            return None
        _, plan = pending
        return _expand(output, plan, self.outputs)


def _split_inputs(args: tuple, kwargs: dict):
    """``(pixels, grid_thw, other kwargs)`` of a ``tower(hidden_states, grid_thw, **kwargs)`` call."""
    if len(args) > 2:
        return None, None, kwargs  # not the signature this cache knows
    rest = dict(kwargs)
    pixels = args[0] if args else rest.pop("hidden_states", None)
    grid_thw = args[1] if len(args) > 1 else rest.pop("grid_thw", None)
    return pixels, grid_thw, rest


def _plain_path_reason(tower, pixels: torch.Tensor, rest: dict) -> str | None:
    """Why a call takes the plain path: outputs or inputs that describe the whole batch, or pixels that need
    their own gradients; ``None`` when the cache applies."""
    config = getattr(tower, "config", None)
    for name in PER_LAYER_OUTPUTS:  # the tower falls back to its config when the kwarg is None
        asked = rest.get(name)
        if asked or (asked is None and getattr(config, name, False)):
            return name
    precomputed = [name for name in PRECOMPUTED_KWARGS if rest.get(name) is not None]
    if precomputed:
        return f"precomputed vision inputs ({', '.join(precomputed)})"
    if pixels.requires_grad:
        return "pixel values that need gradients"
    if pixels.dim() != 2:
        return f"{pixels.dim()}-D pixel values (the tower's patch rows are 2-D)"
    return None


def _merge_unit(tower) -> int:
    return int(getattr(tower, "spatial_merge_size", 2)) ** 2


def _expand(output, plan: DedupPlan, outputs: dict[str, str] = DEFAULT_OUTPUTS):
    """The tower's output for the distinct images, gathered back to every image of the call.

    ``outputs`` names each output field's layout (``Family.tower_outputs``); a field it does not name stops the
    call (the cache cannot know how to expand it, and a wrong guess would not be exact).
    """
    index = {"patches": plan.patch_index, "tokens": plan.token_index}

    def gather(value, kind: str):
        if kind == "tokens_per_layer":
            return [layer.index_select(0, plan.token_index) for layer in value]
        return value.index_select(0, index[kind])

    if isinstance(output, tuple) and not hasattr(output, "keys"):  # return_dict=False
        if len(output) != len(outputs):
            raise RuntimeError(f"group image cache: the vision tower returned {len(output)} outputs, "
                               f"expected {len(outputs)} ({', '.join(outputs)})")
        return tuple(gather(x, kind) for x, kind in zip(output, outputs.values()))
    for name, value in list(output.items()):
        if value is None or (isinstance(value, (tuple, list)) and not value):  # nothing recorded (MoE router_logits)
            continue
        if name not in outputs:
            raise RuntimeError(f"group image cache: the vision tower returned {name!r}, which it cannot expand")
        output[name] = gather(value, outputs[name])
    return output
