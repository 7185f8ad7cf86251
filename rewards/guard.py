"""``guard``: make a failing or misbehaving reward stop the run with a clear message.

Training wraps every reward with :func:`guard`. The wrapper

- re-raises an exception from the reward as :class:`RewardError` naming the
  reward and the sample (its ``id`` column when present, else its index),
  found by re-running the failed batch one sample at a time;
- checks the result: a list (or tuple) with one entry per completion, each
  ``None`` or a finite real number. Numbers (int, float, numpy scalars) come
  back as ``float``; ``bool``, NaN/inf, strings and other objects are errors
  (``None``, not NaN, says "does not apply").

It keeps ``__name__`` and works for ``async`` rewards too (TRL runs those concurrently).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

from rewards.columns import per_sample, sample_id


class RewardError(RuntimeError):
    """A reward raised, or returned something other than one float | None per completion."""


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

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn = fn
        self.__name__ = name
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float | None]:
        try:
            result = self.fn(completions, **columns)
        except Exception as exc:
            raise self._locate(exc, completions, columns) from exc
        return _check(self.__name__, result, completions, columns)

    def _locate(self, exc: Exception, completions: Sequence[Any], columns: dict[str, Any]) -> RewardError:
        for index, (one, sub) in enumerate(_slices(completions, columns)):
            try:
                self.fn(one, **sub)
            except Exception as single:
                return _error(self.__name__, single, f"sample {sample_id(columns, index)}")
        return _error(self.__name__, exc, f"a batch of {len(completions)} (no single sample fails alone)")

    def __repr__(self) -> str:
        return f"guard({self.fn!r}, {self.__name__!r})"


class AsyncGuardedReward(GuardedReward):
    """An ``async`` reward wrapped by :func:`guard`."""

    async def __call__(  # type: ignore[override]
        self, completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        try:
            result = await self.fn(completions, **columns)
        except Exception as exc:
            for index, (one, sub) in enumerate(_slices(completions, columns)):
                try:
                    await self.fn(one, **sub)
                except Exception as single:
                    raise _error(self.__name__, single, f"sample {sample_id(columns, index)}") from single
            raise _error(self.__name__, exc, f"a batch of {len(completions)}") from exc
        return _check(self.__name__, result, completions, columns)


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def guard(fn: Callable[..., Any], name: str | None = None) -> GuardedReward:
    """Wrap ``fn`` so that its failures name the reward and the sample.

    ``name`` defaults to ``fn.__name__``.

    >>> def broken(completions, **columns):
    ...     return [1.0 / len(c) for c in completions]
    >>> guard(broken)(["ok", ""], id=["a", "b"])
    Traceback (most recent call last):
    ...
    rewards.guard.RewardError: reward 'broken' raised ZeroDivisionError on sample 'b' (#1): float division by zero
    """
    if not callable(fn):
        raise TypeError(f"guard() needs a callable reward, got {fn!r}")
    label = name or getattr(fn, "__name__", None) or type(fn).__name__
    return AsyncGuardedReward(fn, label) if _is_async(fn) else GuardedReward(fn, label)
