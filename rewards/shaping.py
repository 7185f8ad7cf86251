"""Shaping rewards: length and repetition penalties, configured by factories.

Both return values in ``[-penalty, 0]`` (0 = no penalty) and are callable
classes, so they pickle (TRL may ship rewards to a spawned process). The
registered ``length`` and ``repetition`` are the factories' defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from rewards.parsing import completion_text
from rewards.registry import register


def _check_positive(**values: float) -> None:
    for key, value in values.items():
        if not value > 0:
            raise ValueError(f"{key} must be positive, got {value}")


class LengthReward:
    """Penalise completions longer than ``target`` (a soft overlong penalty, as in DAPO):

        reward = -penalty * min(1, max(0, L - target) / window)

    where ``L`` is the completion length in ``unit``: ``tokens`` counts the
    ``completion_ids`` column TRL passes (required), ``chars`` the characters
    of the text. At ``target + window`` and beyond the penalty is full.

    >>> length = make_length_reward(target=10, window=10, unit="chars")
    >>> length(["short", "x" * 15, "x" * 40])
    [0.0, -0.5, -1.0]
    """

    def __init__(self, target: int, window: int, penalty: float, unit: Literal["tokens", "chars"],
                 name: str) -> None:
        _check_positive(window=window, penalty=penalty)
        if target < 0 or unit not in ("tokens", "chars"):
            raise ValueError(f"need target >= 0 and unit 'tokens' or 'chars', got {target}, {unit!r}")
        self.target, self.window, self.penalty, self.unit = target, window, penalty, unit
        self.__name__ = name

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float | None]:
        if self.unit == "tokens":
            ids = columns.get("completion_ids")
            if ids is None:
                raise ValueError(
                    f"reward {self.__name__!r} counts tokens and needs the completion_ids column "
                    "(TRL passes it); use make_length_reward(unit='chars') to count characters"
                )
            lengths = [len(i) for i in ids]
        else:
            lengths = [len(completion_text(c)) for c in completions]
        return [0.0 - self.penalty * min(1.0, max(0, n - self.target) / self.window) for n in lengths]


def make_length_reward(target: int = 512, window: int = 256, penalty: float = 1.0,
                       unit: Literal["tokens", "chars"] = "tokens", name: str = "length") -> LengthReward:
    """A length penalty: 0 up to ``target``, then linear to ``-penalty`` at ``target + window``."""
    return LengthReward(target, window, penalty, unit, name)


class RepetitionReward:
    """Penalise repeated n-grams (Appendix C.2 of arXiv:2502.03373, as in TRL):

        reward = -penalty * (1 - unique_ngrams / total_ngrams)

    over the completion's ``ngram_size``-grams of ``unit``: ``words``
    (lower-cased, whitespace-split text) or ``tokens`` (the ``completion_ids``
    column). Fewer than ``ngram_size`` units score 0.

    >>> repetition = make_repetition_reward(ngram_size=2)
    >>> repetition(["a b c d", "go go go go go"])
    [0.0, -0.75]
    """

    def __init__(self, ngram_size: int, penalty: float, unit: Literal["words", "tokens"], name: str) -> None:
        _check_positive(ngram_size=ngram_size, penalty=penalty)
        if unit not in ("words", "tokens"):
            raise ValueError(f"unit must be 'words' or 'tokens', got {unit!r}")
        self.ngram_size, self.penalty, self.unit = ngram_size, penalty, unit
        self.__name__ = name

    def _units(self, completions: Sequence[Any], columns: dict[str, Any]) -> Sequence[Sequence[Any]]:
        if self.unit == "words":
            return [completion_text(c).lower().split() for c in completions]
        ids = columns.get("completion_ids")
        if ids is None:
            raise ValueError(f"reward {self.__name__!r} with unit='tokens' needs the completion_ids column")
        return ids

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float | None]:
        scores: list[float | None] = []
        n = self.ngram_size
        for units in self._units(completions, columns):
            units = list(units)
            if len(units) < n:
                scores.append(0.0)
                continue
            ngrams = list(zip(*(units[i:] for i in range(n))))
            scores.append(0.0 - self.penalty * (1.0 - len(set(ngrams)) / len(ngrams)))
        return scores


def make_repetition_reward(ngram_size: int = 3, penalty: float = 1.0,
                           unit: Literal["words", "tokens"] = "words", name: str = "repetition"
                           ) -> RepetitionReward:
    """An n-gram repetition penalty in ``[-penalty, 0]``."""
    return RepetitionReward(ngram_size, penalty, unit, name)


register("length")(make_length_reward())
register("repetition")(make_repetition_reward())
