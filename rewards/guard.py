"""``guard``: make a failing or misbehaving reward stop the run with a clear message.

Training wraps every reward with :func:`guard`. The wrapper

- re-raises an exception from the reward as :class:`RewardError` naming the
  reward and the sample (its ``id`` column when present, else its index),
  found by re-running the failed batch one sample at a time;
- checks the result: a list (or tuple) with one entry per completion, each
  ``None`` or a finite real number. Numbers (int, float, numpy scalars) come
  back as ``float``; ``bool``, NaN/inf, strings and other objects are errors
  (``None``, not NaN, says "does not apply");
- with ``timeout_s``, bounds each call: a reward that runs longer stops the run
  with a :class:`RewardError` naming the reward and the limit. A synchronous
  reward runs in the calling thread (:func:`rewards.deadline.call_with_alarm`:
  ``SIGALRM`` in the main thread, where TRL calls it, so a reward's own
  ``signal.alarm`` still works and a blocked system call is interrupted; a
  worker thread elsewhere); an ``async`` one is awaited with
  :func:`asyncio.wait_for`, which cannot stop an ``async`` reward that blocks
  its event loop without awaiting.

It keeps ``__name__`` and works for ``async`` rewards too (TRL runs those concurrently).
"""

from __future__ import annotations

import asyncio
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

from rewards.columns import per_sample, sample_id
from rewards.deadline import call_with_alarm
from rewards.registry import is_async


class RewardError(RuntimeError):
    """A reward raised, ran past its time limit, or returned something other than one float | None per completion."""


_LATE = object()


def _late(name: str, timeout_s: float, where: str) -> RewardError:
    return RewardError(
        f"reward {name!r} did not return within {timeout_s:g} s (reward_timeout) on {where}; "
        "make it faster or raise reward_timeout (0: no limit)"
    )


def _check(name: str, result: Any, completions: Sequence[Any], columns: dict[str, Any]) -> list[float | None]:
    if not isinstance(result, (list, tuple)):
        raise RewardError(f"reward {name!r} returned {type(result).__name__}, expected a list of float | None")
    if len(result) != len(completions):
        raise RewardError(
            f"reward {name!r} returned {len(result)} values for {len(completions)} completions"
        )
    checked: list[float | None] = []
    for index, value in enumerate(result):
        bad = isinstance(value, bool) or not (value is None or isinstance(value, numbers.Real))
        if not bad and value is not None and not math.isfinite(float(value)):
            bad = True
        if bad:
            raise RewardError(
                f"reward {name!r} returned {value!r} ({type(value).__name__}) for sample "
                f"{sample_id(columns, index)}; expected a finite float or None"
            )
        checked.append(None if value is None else float(value))
    return checked


def _slices(completions: Sequence[Any], columns: dict[str, Any]) -> list[tuple[list[Any], dict[str, Any]]]:
    aligned = per_sample(columns, len(completions))
    return [
        ([completions[i]], {k: (v[i : i + 1] if k in aligned else v) for k, v in columns.items()})
        for i in range(len(completions))
    ]


def _error(name: str, exc: Exception, where: str) -> RewardError:
    return RewardError(f"reward {name!r} raised {type(exc).__name__} on {where}: {exc}")


class GuardedReward:
    """A synchronous reward wrapped by :func:`guard` (a class, so it pickles)."""

    def __init__(self, fn: Callable[..., Any], name: str, timeout_s: float | None = None) -> None:
        self.fn = fn
        self.__name__ = name
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn
        self.timeout_s = timeout_s or None

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float | None]:
        try:
            result = self._run(completions, columns, f"a batch of {len(completions)}")
        except RewardError:
            raise
        except Exception as exc:
            raise self._locate(exc, completions, columns) from exc
        return _check(self.__name__, result, completions, columns)

    def _run(self, completions: Sequence[Any], columns: dict[str, Any], where: str) -> Any:
        if self.timeout_s is None:
            return self.fn(completions, **columns)
        result = call_with_alarm(lambda: self.fn(completions, **columns), self.timeout_s, default=_LATE)
        if result is _LATE:
            raise _late(self.__name__, self.timeout_s, where)
        return result

    def _locate(self, exc: Exception, completions: Sequence[Any], columns: dict[str, Any]) -> RewardError:
        for index, (one, sub) in enumerate(_slices(completions, columns)):
            try:
                self._run(one, sub, f"sample {sample_id(columns, index)}")
            except RewardError as late:
                return late
            except Exception as single:
                return _error(self.__name__, single, f"sample {sample_id(columns, index)}")
        return _error(self.__name__, exc, f"a batch of {len(completions)} (no single sample fails alone)")

    def __repr__(self) -> str:
        return f"guard({self.fn!r}, {self.__name__!r}, timeout_s={self.timeout_s!r})"


class AsyncGuardedReward(GuardedReward):
    """An ``async`` reward wrapped by :func:`guard`."""

    async def __call__(  # type: ignore[override]
        self, completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        try:
            result = await self._await(completions, columns, f"a batch of {len(completions)}")
        except RewardError:
            raise
        except Exception as exc:
            for index, (one, sub) in enumerate(_slices(completions, columns)):
                where = f"sample {sample_id(columns, index)}"
                try:
                    await self._await(one, sub, where)
                except RewardError:
                    raise
                except Exception as single:
                    raise _error(self.__name__, single, where) from single
            raise _error(self.__name__, exc, f"a batch of {len(completions)}") from exc
        return _check(self.__name__, result, completions, columns)

    async def _await(self, completions: Sequence[Any], columns: dict[str, Any], where: str) -> Any:
        if self.timeout_s is None:
            return await self.fn(completions, **columns)
        try:
            return await asyncio.wait_for(self.fn(completions, **columns), self.timeout_s)
        except asyncio.TimeoutError:
            raise _late(self.__name__, self.timeout_s, where) from None


def guard(fn: Callable[..., Any], name: str | None = None, timeout_s: float | None = None) -> GuardedReward:
    """Wrap ``fn`` so that its failures name the reward and the sample.

    ``name`` defaults to ``fn.__name__``; ``timeout_s`` (``None`` or 0: no limit)
    bounds each call in seconds.

    >>> def broken(completions, **columns):
    ...     return [1.0 / len(c) for c in completions]
    >>> guard(broken)(["ok", ""], id=["a", "b"])
    Traceback (most recent call last):
    ...
    rewards.guard.RewardError: reward 'broken' raised ZeroDivisionError on sample 'b' (#1): float division by zero
    >>> import time
    >>> guard(lambda completions, **columns: time.sleep(5), name="slow", timeout_s=0.1)(["x"])
    Traceback (most recent call last):
    ...
    rewards.guard.RewardError: reward 'slow' did not return within 0.1 s (reward_timeout) on a batch of 1; ...
    """
    if not callable(fn):
        raise TypeError(f"guard() needs a callable reward, got {fn!r}")
    if timeout_s is not None and timeout_s < 0:
        raise ValueError(f"timeout_s must be >= 0 seconds (0: no limit), got {timeout_s}")
    label = name or getattr(fn, "__name__", None) or type(fn).__name__
    return (AsyncGuardedReward if is_async(fn) else GuardedReward)(fn, label, timeout_s)
