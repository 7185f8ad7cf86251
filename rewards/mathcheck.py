"""Bounded math-answer equivalence on top of math-verify.

:func:`math_equivalent` decides whether a predicted answer equals the
``solution`` (``\\frac{1}{2}`` vs ``0.5``, ``x=3`` vs ``3``) and returns within
a fixed budget on any input, from any thread or process. Three layers:

1. **Exact shortcut.** Answers equal after :func:`canonical` (spaces, ``$``,
   ``\\left``/``\\right``, ``\\dfrac``…) score 1 without sympy, so a correct
   answer is never lost to the guards below.
2. **Guards** (:func:`guard_reason`), pure string checks that keep out what
   could run long *inside a single C call*, where no timeout can interrupt:
   length, bracket nesting, digit runs, power towers and large exponents,
   factorials of large numbers (and of products or powers of small ones).
   A guarded answer scores 0.
3. **Deadline.** math-verify's own timeouts are off (they use signals); the
   parse + verify runs under :func:`rewards.deadline.call_with_deadline`
   (``budget_s``), which bounds everything that runs Python bytecode.

Departures from plain math-verify: answers over ``MAX_CHARS`` characters, with
power towers (``a^{b^{c}}``), with exponents whose literals multiply past
``MAX_EXPONENT_PRODUCT``, or with a factorial-like operator next to a power or
numbers multiplying past ``MAX_FACTORIAL_PRODUCT`` are scored 0 unless they
match the solution exactly.
"""

from __future__ import annotations

import math
import re
import threading
from functools import lru_cache
from typing import Any

from rewards.deadline import call_with_deadline

MAX_CHARS = 1000
"""Longest answer (and solution) handed to math-verify."""
MAX_DEPTH = 8
"""Deepest bracket nesting ``( [ {``."""
MAX_DIGITS = 50
"""Longest run of digits in one number."""
MAX_EXPONENT_PRODUCT = 10_000
"""Bound on the product, over all powers, of the numbers in their exponents."""
MAX_FACTORIAL_ARG = 1000
"""Largest number allowed next to a factorial-like operator."""
MAX_FACTORIAL_PRODUCT = 100_000
"""Bound on the product of all numbers of an answer with a factorial-like operator
(sympy's factorial of 10^5 takes 0.1 s, of 3 * 10^5 already over 1 s, in C calls)."""
DEFAULT_BUDGET_S = 1.0
"""Wall-clock budget for one parse + verify."""

_FACTORIAL_WORDS = re.compile(r"\\[dt]?binom|\\choose|binomial|factorial|\\Gamma|gamma")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DIGIT_RUN = re.compile(r"\d{%d,}" % (MAX_DIGITS + 1))
_POWER = re.compile(r"\^|\*\*")
_TOKEN = re.compile(r"-?\d+(?:\.\d+)?|\\[A-Za-z]+|.", re.DOTALL)
_CANON_DROP = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\:|\\ |\$")
_LOAD_LOCK = threading.Lock()


def canonical(text: str) -> str:
    """Cheap normal form for the exact shortcut (not a math normaliser).

    >>> canonical(" $\\\\dfrac{1}{2}$. ")
    '\\\\frac{1}{2}'
    """
    text = _CANON_DROP.sub(" ", text).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return " ".join(text.split()).rstrip(".").strip()


def _operand(text: str, start: int) -> tuple[str, int]:
    """The exponent operand starting at ``start``: a bracketed group or one token."""
    while start < len(text) and text[start] == " ":
        start += 1
    if start >= len(text):
        return "", start
    pairs = {"{": "}", "(": ")", "[": "]"}
    if text[start] in pairs:
        depth = 0
        for i in range(start, len(text)):
            if text[i] in pairs:
                depth += 1
            elif text[i] in pairs.values():
                depth -= 1
                if depth == 0:
                    return text[start : i + 1], i + 1
        return text[start:], len(text)
    match = _TOKEN.match(text, start)
    return (match.group(), match.end()) if match else (text[start], start + 1)


def _numbers(text: str) -> list[float]:
    return [float(n) for n in _NUMBER.findall(text)]


def guard_reason(text: str) -> str | None:
    """Why ``text`` is refused before math-verify, or ``None`` when it may go on.

    >>> guard_reason("\\\\frac{1}{2}") is None
    True
    >>> guard_reason("9^{9^{9}}")
    'power tower'
    """
    if len(text) > MAX_CHARS:
        return "too long"
    depth = deepest = 0
    for char in text:
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    if deepest > MAX_DEPTH:
        return "nested too deeply"
    if _DIGIT_RUN.search(text):
        return "number too long"
    product = 1.0
    for power in _POWER.finditer(text):
        exponent, end = _operand(text, power.end())
        if _POWER.search(exponent) or _POWER.match(text[end:].lstrip()):
            return "power tower"
        if "!" in exponent or _FACTORIAL_WORDS.search(exponent):
            return "factorial in exponent"
        for value in _numbers(exponent):
            product *= max(value, 1.0)
        if product > MAX_EXPONENT_PRODUCT:
            return "exponent too large"
    if "!" in text.replace("!=", "").replace("\\!", "") or _FACTORIAL_WORDS.search(text):
        if "!!" in text or re.search(r"[)}\]]\s*!", text):
            return "nested factorial"
        numbers = _numbers(text)
        if any(value > MAX_FACTORIAL_ARG for value in numbers):
            return "factorial too large"
        # \Gamma(10^{9}) or \Gamma(999 \cdot 999): small literals, a huge argument.
        if _POWER.search(text):
            return "factorial with a power"
        if math.prod(max(value, 1.0) for value in numbers) > MAX_FACTORIAL_PRODUCT:
            return "factorial too large"
    return None


@lru_cache(maxsize=1)
def _math_verify() -> Any:
    # Imported, and warmed up, in the caller's thread: sympy imports submodules
    # lazily on first use, and an interrupt must never land in the middle of an
    # import. Lazy so that `import rewards` stays cheap.
    with _LOAD_LOCK:
        import math_verify
        import math_verify.grader
        import math_verify.parser

        # We disable math-verify's signal timeouts and bound the work ourselves;
        # silence its one-time warning asking us to do exactly that.
        math_verify.grader.TIMEOUT_WARNING_SHOWN = True
        math_verify.parser.TIMEOUT_WARNING_SHOWN = True
        for gold, pred in _WARM_UP:
            math_verify.verify(math_verify.parse(gold, parsing_timeout=None),
                               math_verify.parse(pred, parsing_timeout=None), timeout_seconds=None)
        return math_verify


_WARM_UP = [("$\\frac{1}{2}$", "$0.5$"), ("$3$", "$x=3$"), ("$2\\sqrt{2}$", "$\\sqrt{8}$"),
            ("$\\{1, 2\\}$", "$(1, 2)$"), ("$x^2+1$", "$1+x^{2}$"), ("$\\frac{\\pi}{3}$", "$60^\\circ$")]


@lru_cache(maxsize=4096)
def _parse(text: str) -> tuple[Any, ...]:
    mv = _math_verify()
    plain = not any(marker in text for marker in ("$", "\\boxed", "\\[", "\\("))
    parsed = mv.parse(f"${text}$", parsing_timeout=None) if plain else []
    if not parsed:
        parsed = mv.parse(text, parsing_timeout=None)
    return tuple(parsed)


def _verify(prediction: str, solution: str) -> bool:
    gold = _parse(solution)
    pred = _parse(prediction)
    if not gold or not pred:
        return False
    return bool(_math_verify().verify(list(gold), list(pred), timeout_seconds=None))


def math_equivalent(prediction: str, solution: Any, budget_s: float = DEFAULT_BUDGET_S) -> bool:
    """Whether ``prediction`` is mathematically equal to ``solution``; bounded in time.

    ``solution`` may be a string or a number. False on guarded input, on a
    parse failure and when ``budget_s`` runs out.

    >>> math_equivalent("\\\\frac{1}{2}", "0.5")
    True
    >>> math_equivalent("x=3", 3)
    True
    >>> math_equivalent("9^{9^{9}}", "3")
    False
    """
    prediction, solution = prediction.strip(), str(solution).strip()
    if not prediction or not solution:
        return False
    if len(prediction) <= MAX_CHARS and canonical(prediction) == canonical(solution):
        return True
    if guard_reason(prediction) is not None or guard_reason(solution) is not None:
        return False
    _math_verify()
    return call_with_deadline(lambda: _verify(prediction, solution), budget_s, default=False)
