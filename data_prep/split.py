"""Random train/val split by image, so that no image appears in both splits."""

from __future__ import annotations

import random

from data_prep.packed import PrepError, Record


def _image_groups(records: list[Record]) -> list[list[int]]:
    """Group record indices so that records sharing any image are in the same group."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    keys = []
    for index, record in enumerate(records):
        names = record.images or [f"record:{record.id}"]
        root = find(names[0])
        for name in names[1:]:
            other = find(name)
            if other != root:
                parent[other] = root
        keys.append(names[0])
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(find(key), []).append(index)
    return [groups[key] for key in sorted(groups)]


def split_by_image(records: list[Record], val_fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Split records into (train, val) with about ``val_fraction`` of records in val.

    Records that share an image always land in the same split. Groups are shuffled with
    ``seed`` and added to val until it holds at least ``round(val_fraction * n)`` records
    (at least one group). Input order is kept within each split. Deterministic.
    """
    if not 0.0 < val_fraction < 1.0:
        raise PrepError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    groups = _image_groups(records)
    if len(groups) < 2:
        raise PrepError(
            f"cannot split {len(records)} record(s) into train and val: they all share one image; "
            "add more data or drop --val-fraction"
        )
    random.Random(seed).shuffle(groups)
    target = max(1, round(val_fraction * len(records)))
    val_indices: set[int] = set()
    for group in groups[:-1]:  # the last group always stays in train
        if len(val_indices) >= target:
            break
        val_indices.update(group)
    train = [record for index, record in enumerate(records) if index not in val_indices]
    val = [record for index, record in enumerate(records) if index in val_indices]
    return train, val
