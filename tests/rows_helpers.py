"""Inputs for component tests, made by the real builders (the rule at the top of tests/README.md).

A reward, a callback or an evaluation helper under test is fed what training feeds it:
rows from :func:`vlm_grpo.data.build_rows` read through ``to_hf()`` (the same lazy
transform GRPO reads), turned into reward keywords the way TRL's ``GRPOTrainer`` does
(every row key but ``prompt``, one list per key, each row repeated once per completion).
No column is written by hand, so a reward that reads a column the rows do not carry fails.
Plain functions, no fixtures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# TRL's GRPOTrainer._calculate_rewards: every dataset key but these becomes a reward keyword.
NOT_REWARD_COLUMNS = ("prompt", "completion", "completion_ids")


def trainer_rows(data_dirs: Sequence[Any], processor, box_frame: str = "model_pixels", **build) -> list[dict]:
    """Every row of ``build_rows(data_dirs, processor, ...)`` as GRPO reads it (``to_hf()``)."""
    from vlm_grpo.data import build_rows

    dataset = build_rows([str(d) for d in data_dirs], processor, box_frame=box_frame, **build).to_hf()
    return [dataset[i] for i in range(len(dataset))]


def reward_columns(rows: Sequence[dict], per_row: int = 1) -> dict[str, list]:
    """The keywords TRL passes a reward for ``rows``, each row repeated ``per_row`` times
    (``prompts`` too; ``completions`` are the caller's)."""
    repeated = [row for row in rows for _ in range(per_row)]
    columns = {key: [row[key] for row in repeated] for key in repeated[0] if key not in NOT_REWARD_COLUMNS}
    return {"prompts": [row["prompt"] for row in repeated], **columns}


def score_rows(reward, rows: Sequence[dict], completions: Sequence[Any]) -> list[float | None]:
    """``reward`` on ``completions`` (``len(rows) * k`` of them, grouped per row like GRPO's), with
    the rows' real columns."""
    if not rows or len(completions) % len(rows):
        raise ValueError(f"{len(completions)} completions do not split into groups for {len(rows)} rows")
    return reward(completions=list(completions), **reward_columns(rows, len(completions) // len(rows)))
