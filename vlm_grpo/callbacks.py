"""Trainer callbacks: the rollout log, a compact progress bar, and a warning when nothing can be learned.

The rollout log sees completions where the project already has a hand on them:
each reward function is wrapped, so whatever TRL passes to the rewards (the
completions of this process and their columns) is recorded with every reward's
value, and written to ``rollouts.jsonl`` every ``rollout_log_steps`` steps.
The wrapper of an ``async`` reward is ``async`` too (TRL awaits it, concurrently
with the other async rewards, after the synchronous ones have run).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from pathlib import Path

from tqdm.auto import tqdm
from transformers import TrainerCallback

from rewards.parsing import completion_text
from rewards.registry import is_async
from rewards.tool_rewards import tool_calls

logger = logging.getLogger(__name__)


class RolloutRecorder(TrainerCallback):
    """Records the latest scored batch and appends it to a JSONL file every ``every`` steps.

    One file per process: ``rollouts.jsonl`` on the main process, ``rollouts.rank{N}.jsonl`` elsewhere.
    Each line: ``{"step", "id", "task", "completion", "solution", "rewards": {name: value}}``, and with tools
    ``"tool_calls"``: each call's ``name``, ``arguments`` (the box asked for), ``ok`` and ``error``.
    """

    def __init__(self, output_dir: str | Path, every: int, rank: int = 0) -> None:
        self.every = every
        name = "rollouts.jsonl" if rank == 0 else f"rollouts.rank{rank}.jsonl"
        self.path = Path(output_dir) / name
        self._batch: dict | None = None
        self.with_tools = False  # set by training when rollouts may call tools: each line then has tool_calls

    def wrap(self, reward_fn, first: bool = False):
        """Wrap a reward so its values are recorded (an ``async`` reward gets an ``async`` wrapper).

        A batch is the ``completions`` list TRL hands to every reward of one scoring: a reward called
        with another list starts a new batch. That holds whichever order the rewards run in (TRL runs
        the synchronous ones first, then the async ones). ``first`` is accepted for older callers
        (it marked the reward that started a batch when all rewards ran in config order) and unused.
        """
        name = reward_fn.__name__
        if is_async(reward_fn):

            @functools.wraps(reward_fn)
            async def recorded_async(completions, **columns):
                values = await reward_fn(completions, **columns)
                self._record(name, completions, columns, values)
                return values

            return recorded_async

        @functools.wraps(reward_fn)
        def recorded(completions, **columns):
            values = reward_fn(completions, **columns)
            self._record(name, completions, columns, values)
            return values

        return recorded

    def _record(self, name: str, completions, columns: dict, values) -> None:
        if self._batch is None or self._batch["source"] is not completions:
            self._batch = {
                "source": completions,
                "completions": [completion_text(c) for c in completions],
                "ids": columns.get("id"),
                "tasks": columns.get("task"),
                "solutions": columns.get("solution"),
                "tool_calls": [logged_tool_calls(c) for c in completions] if self.with_tools else None,
                "rewards": {},
            }
        self._batch["rewards"][name] = list(values)

    def on_step_end(self, args, state, control, **kwargs):
        if self.every <= 0 or self._batch is None or state.global_step % self.every:
            return
        batch, self._batch = self._batch, None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            for i, completion in enumerate(batch["completions"]):
                row = {
                    "step": state.global_step,
                    "id": batch["ids"][i] if batch["ids"] else i,
                    "task": batch["tasks"][i] if batch["tasks"] else None,
                    "completion": completion,
                    "solution": batch["solutions"][i] if batch["solutions"] else None,
                    "rewards": {name: _finite(v[i]) for name, v in batch["rewards"].items()},
                }
                if batch.get("tool_calls") is not None:  # multi-turn: each call's box (arguments) and outcome
                    row["tool_calls"] = batch["tool_calls"][i]
                handle.write(json.dumps(row) + "\n")


def logged_tool_calls(completion) -> list[dict]:
    """A completion's tool calls as the rollout log writes them: name, arguments (the box), ok, error."""
    return [{k: call[k] for k in ("name", "arguments", "ok", "error")} for call in tool_calls(completion)]


def _finite(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


class ProgressBar(TrainerCallback):
    """A tqdm bar over optimizer steps, showing the mean reward, the loss and the step time."""

    def __init__(self) -> None:
        self.bar = None
        self.last_reward: float | None = None
        self._step_start = 0.0
        self._step_seconds: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", dynamic_ncols=True)

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._step_seconds = time.perf_counter() - self._step_start
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "reward" in logs:
            self.last_reward = float(logs["reward"])
        if self.bar is not None and "loss" in logs:
            postfix = {"reward": logs.get("reward"), "loss": logs.get("loss"), "s/step": self._step_seconds}
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in postfix.items() if isinstance(v, (int, float))})

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class NoSignalWarning(TrainerCallback):
    """Warns once when every group of the last ``window`` steps had the same reward for all its completions.

    GRPO's advantage is a completion's reward minus its group's mean: when all of a group's rewards are equal
    it is zero, and a step of such groups moves the policy only through the KL term. TRL logs the fraction of
    such groups as ``frac_reward_zero_std``; ``window`` defaults to 10 steps (all of them in a shorter run).
    """

    def __init__(self, window: int = 10) -> None:
        self.window = window
        self._zero_steps = 0
        self._last_step = 0
        self.warned = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        frac = (logs or {}).get("frac_reward_zero_std")
        if frac is None:
            return
        covered, self._last_step = state.global_step - self._last_step, state.global_step
        self._zero_steps = self._zero_steps + covered if frac >= 1.0 else 0
        window = min(self.window, state.max_steps) if state.max_steps > 0 else self.window
        if self.warned or self._zero_steps < window or not state.is_world_process_zero:
            return
        self.warned = True
        logger.warning(
            "every group of the last %d steps had the same reward for all its completions (mean reward %s): the "
            "advantages are zero, so the policy gets no learning signal. Start from a policy that sometimes "
            "succeeds (an SFT cold start, or the shipped demo policy), raise temperature or num_generations, or "
            "use a reward with partial credit", self._zero_steps, logs.get("reward"))
