"""The plan of a group-shared forward: which rows share which prefix, and where to split (pure tensor code).

Used by :mod:`vlm_grpo.speed.shared_prompt`; nothing here runs the model.
"""

from __future__ import annotations

import dataclasses

import torch

from vlm_grpo.speed.vision_cache import image_owners


@dataclasses.dataclass(frozen=True)
class SharePlan:
    """How one call's rows map onto their distinct prefixes.

    Fields:
        split: ``S``, the length of the shared prefix of every row.
        rows: the first row of each group, in batch order (``U`` rows).
        group_of_row: for each of the ``B`` rows, its group's index in ``rows``.
        images: for the prefix pass, the indices of the images of ``rows``, in order.
    """

    split: int
    rows: torch.Tensor
    group_of_row: torch.Tensor
    images: list[int]

    def computed_tokens(self, batch: int, length: int) -> int:
        return len(self.rows) * self.split + batch * (length - self.split)


def row_keys(input_ids: torch.Tensor, image_token_id: int, image_owner_of_token: torch.Tensor | None) -> torch.Tensor:
    """One integer per token that is equal for two rows exactly when the token and what it shows are equal.

    Text tokens keep their id; an image token becomes ``-1 - owner``, where ``owner`` is
    the first image with bit-identical pixels (so equal keys mean equal images).
    """
    keys = input_ids.long().clone()
    if image_owner_of_token is not None:
        keys[input_ids == image_token_id] = -1 - image_owner_of_token
    return keys


def plan_sharing(keys: torch.Tensor, attention_mask: torch.Tensor, *, min_split: int, whole_rows: bool) -> SharePlan | None:
    """The split and groups that compute the fewest tokens, or ``None`` when sharing saves nothing.

    ``keys`` from :func:`row_keys` and the 2-D ``attention_mask`` are ``(B, L)``. Rows are
    sorted lexicographically (``torch.unique(dim=0)``), so rows sharing a prefix of length
    ``S`` are contiguous and the longest common prefix of two rows is the minimum of the
    adjacent ones between them. ``min_split`` keeps every image token inside the prefix;
    ``whole_rows`` allows only ``S = L`` (generation's prefill, whose cache must hold every token).
    """
    batch, length = keys.shape
    combined = torch.stack([keys, attention_mask.long()], dim=-1).reshape(batch, 2 * length)
    distinct, inverse = torch.unique(combined, dim=0, return_inverse=True)
    if len(distinct) == batch and whole_rows:
        return None
    differs = (distinct[1:] != distinct[:-1]).reshape(len(distinct) - 1, length, 2).any(-1)
    adjacent = torch.where(differs.any(-1), differs.int().argmax(-1), length).tolist()  # common prefix lengths
    candidates = {length} if whole_rows else {s for s in adjacent if s >= max(min_split, 1)} | {length}
    best_split, best_cost = None, batch * length
    for split in sorted(candidates):
        groups = 1 + sum(s < split for s in adjacent)
        cost = groups * split + batch * (length - split)
        if groups < batch and cost < best_cost:
            best_split, best_cost = split, cost
    if best_split is None:
        return None
    group_of_distinct = torch.tensor([0] + [int(s < best_split) for s in adjacent]).cumsum(0)
    group_sorted = group_of_distinct[inverse.cpu()]  # group id (in sorted order) of every row
    first_row: dict[int, int] = {}
    for row, group in enumerate(group_sorted.tolist()):
        first_row.setdefault(group, row)
    rows = sorted(first_row.values())
    renumber = {int(group_sorted[row]): i for i, row in enumerate(rows)}
    group_of_row = torch.tensor([renumber[g] for g in group_sorted.tolist()], device=keys.device)
    return SharePlan(best_split, torch.tensor(rows, device=keys.device), group_of_row, images=[])


def images_per_row(input_ids: torch.Tensor, image_token_id: int, tokens_per_image: list[int]) -> list[list[int]] | None:
    """The image indices of each row, from its count of image tokens (``None`` if they do not add up)."""
    counts = (input_ids == image_token_id).sum(-1).tolist()
    result, image = [], 0
    for count in counts:
        mine = []
        while count > 0 and image < len(tokens_per_image):
            count -= tokens_per_image[image]
            mine.append(image)
            image += 1
        if count != 0:
            return None
        result.append(mine)
    return result if image == len(tokens_per_image) else None


def call_images(kwargs: dict, merge_unit: int, fields: dict[str, str] | None = None) -> tuple[list[int], list[int]] | None:
    """``(tokens per image, first bit-identical image)`` of a call's images, or ``None`` without images.

    Training passes pixels (``pixel_values`` + ``image_grid_thw``); generation passes the
    images already encoded (``mm_encoder_outputs["image"]``: ``pooler_output``, one tensor per
    image, and the other per-token ``fields`` of the family, such as Qwen3-VL's per-layer
    ``deepstack_features``); two encoded images are the same when every field is bit-identical.
    """
    encoded = (kwargs.get("mm_encoder_outputs") or {}).get("image")
    if encoded is not None:
        features = list(encoded.pooler_output)
        tokens = [len(f) for f in features]
        for name, kind in (fields or {}).items():
            value = getattr(encoded, name, None) if name != "pooler_output" else None
            layers = [] if value is None else (list(value) if kind == "tokens_per_layer" else [value])
            for layer in layers:
                features = [torch.cat([f, extra], dim=-1) for f, extra in zip(features, list(layer))]
        return tokens, image_owners(torch.cat(features), [[1, n, 1] for n in tokens])
    pixels, grid = kwargs.get("pixel_values"), kwargs.get("image_grid_thw")
    if pixels is None or grid is None:
        return None
    grids = grid.tolist()
    return [t * h * w // merge_unit for t, h, w in grids], image_owners(pixels, grids)
