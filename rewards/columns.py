"""Per-sample views of the keyword columns a reward receives.

TRL calls ``reward(prompts=…, completions=…, completion_ids=…, **columns)``
where every dataset column is a list aligned with ``completions`` and a few
extras are not (``trainer_state``, ``log_extra``, ``log_metric``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any


def per_sample(columns: Mapping[str, Any], count: int) -> dict[str, Sequence[Any]]:
    """The columns that hold one value per completion (lists or tuples of length ``count``)."""
    return {k: v for k, v in columns.items() if isinstance(v, (list, tuple)) and len(v) == count}


def iter_samples(completions: Sequence[Any], columns: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield, for each completion, a dict of that sample's column values.

    >>> list(iter_samples(["a", "b"], {"solution": [1, 2], "trainer_state": object()}))
    [{'solution': 1}, {'solution': 2}]
    """
    aligned = per_sample(columns, len(completions))
    for index in range(len(completions)):
        yield {key: values[index] for key, values in aligned.items()}


def sample_id(columns: Mapping[str, Any], index: int) -> str:
    """A readable id for sample ``index``: its ``id`` column when present, else ``#index``."""
    ids = columns.get("id")
    if isinstance(ids, (list, tuple)) and index < len(ids):
        return f"{ids[index]!r} (#{index})"
    return f"#{index}"
