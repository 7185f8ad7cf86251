"""Every built-in reward on adversarial completions (issue #10): a score, no crash, bounded time.

Adversarial means: megabytes of text, deep nesting, repeated and interleaved tags
(``</answer><answer>``), look-alike tags and digits (Cyrillic, fullwidth, zero-width
characters), lone surrogates and NULs, pathological math (``9^9^9^9``, huge factorials,
hundreds of nested brackets), hostile boxes (NaN, 1e308, 10k-element lists), and
completions that are not text at all. Each reward call runs under
:func:`reliability_figures.bounded`, a hang detector with a limit of tens of seconds (not a
speed check); each result goes through :func:`rewards.guard`, which raises unless it is one
finite float or None per completion. The math reward's own bound is its deadline
(``rewards.deadline``), 1 s by default.

Fast tier: a fixed table through all rewards. Slow tier: ``RELIABILITY_REWARD_N`` (default
1000) generated completions per reward, figures to ``rewards_fuzz.json``.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import pytest
from reliability_figures import bounded, write_area

import rewards
from rewards import mathcheck

HANG_S = 60.0
BUILTINS = ["format", "format_box", "iou", "rec_acc", "math", "exact_match", "mcq", "count", "accuracy", "length",
            "repetition", "det_f1", "det_ap", "det_odlength", "point_in_box"]
TASK_OF = {"iou": "rec", "rec_acc": "rec", "format_box": "rec", "math": "math", "exact_match": "open", "mcq": "mcq",
           "count": "count", "det_f1": "det", "det_ap": "det", "det_odlength": "det", "point_in_box": "point"}
SOLUTIONS = {"rec": [10, 20, 60, 80], "math": "3", "open": "red car", "mcq": "B", "count": 3,
             "det": [{"box": [10, 20, 60, 80], "label": "cat"}, {"box": [0, 0, 5, 5]}], "point": [10, 20, 60, 80]}

# An interrupted math worker can be reported as "unraisable" from a gc callback (see test_rewards_math.py).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

MB = 1 << 20
PATHOLOGICAL_MATH = [
    "9^9^9^9", "9^{9^{9^{9}}}", "2**2**2**2**2**2", "10^{10^{100}}", "999!^{999}", "100000!", "(10^{6})!", "999!!!!",
    r"\Gamma(10^{9})", r"\binom{10^{6}}{5 \cdot 10^{5}}", "(" * 400 + "1" + ")" * 400, r"\frac{1}{" * 300 + "2" + "}" * 300,
    r"\sqrt{" * 50 + "2" + "}" * 50, "1+" * 400 + "1", r"\sin(10^{9999})", r"e^{e^{e^{e}}}", r"\int_0^{\infty} e^{-x^{99}} dx",
    r"\sum_{k=1}^{10^{9}} k^{k}", r"\lim_{x\to\infty} x^{x^{x}}", "x=" + "=".join(["x+1"] * 200), "9" * 4000,
    "1e999999999", "0/0", r"\frac{1}{0}", r"\infty - \infty", r"\log(0)", "zoo", "nan", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}^{999}",
    "３", "٣", "x\u200b=3", "\u2212 3", "𝟑", "3\u0338", "\x00 3", "\ud800",
]
TAGS = ["<answer>", "</answer>", "<think>", "</think>"]


def _conf(text: str) -> str:
    """Look-alike spellings: Cyrillic a/o/e, fullwidth brackets, a zero-width joiner."""
    return text.replace("a", "\u0430").replace("<", "\uff1c").replace(">", "\uff1e").replace("w", "w\u200d")


FIXED = [
    "x" * (3 * MB),
    "<answer>" * 300_000 + "3",
    "</answer><answer>" * 200_000,
    "<think>" + "a" * MB + "</think><answer>3</answer>",
    "<think>t</think><answer>" + "[" * 200_000 + "]" * 200_000 + "</answer>",
    "<think>t</think><answer>" + '{"bbox_2d": ' * 50_000 + "1" + "}" * 50_000 + "</answer>",
    "<think>t</think><answer>[" + ", ".join(["1"] * 10_000) + "]</answer>",
    "<think>t</think><answer>[NaN, 1, 5, 5]</answer>",
    "<think>t</think><answer>[0, 0, 1e308, 1e308]</answer>",
    "<think>t</think><answer>[1e999, 0, 5, 5]</answer>",
    "<think>t</think><answer>[" + "9" * 5000 + ", 0, 5, 5]</answer>",
    "<think>t</think><answer>[" + "1" * 400 + ", 0, 5, 5]</answer>",  # found by the slow tier: float() overflowed
    "<think>t</think></answer><answer>3</answer><answer>",
    "<answer><answer><answer>3</answer></answer></answer>",
    "<think><answer>3</think></answer>",
    _conf("<think>t</think><answer>3</answer>"),
    "<think>t</think><answer>\ud800\udfff\x00</answer>",
    "<think>t</think><answer>" + "\u0301" * 100_000 + "</answer>",
    "<think>t</think><answer>" + "\\boxed{" * 100_000 + "</answer>",
    "<think>t</think><answer>Ｂ</answer>",
    "<think>t</think><answer>the answer is " + "B " * 100_000 + "</answer>",
    "<think>t</think><answer>" + "twenty " * 100_000 + "</answer>",
    "go " * 500_000,
    *[f"<think>t</think><answer>{m}</answer>" for m in PATHOLOGICAL_MATH],
    [{"role": "assistant", "content": [{"type": "text", "text": "<answer>" * 100_000}]}],
    [{"role": "assistant", "content": None}],
    {"role": "assistant", "content": 3},
    None,
    12,
    b"<answer>3</answer>",
]


def columns_for(name: str, completions: list, rng: random.Random | None = None) -> dict:
    """The columns a reward sees in training, one per completion (mixed tasks for ``accuracy``)."""
    n = len(completions)
    if name == "accuracy":
        tasks = [rng.choice([*SOLUTIONS, None, "mystery"]) if rng else list(SOLUTIONS)[i % 5] for i in range(n)]
    else:
        tasks = [TASK_OF.get(name, "open")] * n
    ids = [[1] * (len(c) // 4 if isinstance(c, str) else 3) for c in completions]
    return {
        "task": tasks,
        "solution": [SOLUTIONS.get(t, "x") for t in tasks],
        "image_sizes": [[[100, 120]]] * n,
        "model_image_sizes": [[[56, 84]]] * n,
        "box_frame": ["model_pixels"] * n,
        "completion_ids": ids,
        "id": [f"adv{i}" for i in range(n)],
    }


def score_one(name: str, completion, columns: dict) -> tuple[float | None, float]:
    """(score, seconds) of one completion through the guarded reward, under the hang detector."""
    reward = rewards.guard(rewards.get(name))
    start = time.perf_counter()
    (score,) = bounded(lambda: reward([completion], **columns), HANG_S, f"reward {name!r} on {str(completion)[:80]!r}")
    return score, time.perf_counter() - start


@pytest.fixture(scope="module", autouse=True)
def warm_math():
    # sympy and math-verify load on the first answer that is not an exact match (3-4 s, once per process)
    rewards.get("math")(["<answer>0.5</answer>"], solution=["1/2"])


#: math-verify normalises these to 3 (fullwidth, Arabic-Indic and mathematical digits, zero-width
#: and control characters, a combining overlay), so they may score like "3" itself.
LOOKALIKES_OF_3 = ("３", "٣", "𝟑", "x\u200b=3", "3\u0338", "\x00 3")


@pytest.mark.parametrize("name", BUILTINS)
def test_every_reward_survives_adversarial_completions(name):
    columns = columns_for(name, FIXED)
    scores = []
    for i, completion in enumerate(FIXED):
        one = {key: values[i : i + 1] for key, values in columns.items()}
        score, _ = score_one(name, completion, one)
        assert score is None or isinstance(score, float)
        scores.append(score)
    if name == "math":  # pathological math never equals 3; only the look-alikes of 3 may
        first = FIXED.index(f"<think>t</think><answer>{PATHOLOGICAL_MATH[0]}</answer>")
        wrong = [m for m, s in zip(PATHOLOGICAL_MATH, scores[first:]) if s != 0.0 and m not in LOOKALIKES_OF_3]
        assert wrong == [], wrong
        assert rewards.get("math")(["<answer>3</answer>"], solution=["3"]) == [1.0]  # the control


def test_adversarial_layouts_are_not_rewarded_as_format():
    format_reward = rewards.get("format")
    for text in ["</answer><answer>" * 1000, "<think>t</think></answer><answer>3</answer><answer>",
                 _conf("<think>t</think><answer>3</answer>"), "<think><answer>3</think></answer>",
                 "<think>t</think><answer>3</answer>" * 2]:
        assert format_reward([text]) == [0.0]
    assert format_reward(["<think>t</think><answer>3</answer>"]) == [1.0]  # the control


@pytest.mark.parametrize(
    "answer, reason, solution",
    [  # found by the slow tier: small literals, a huge factorial argument (one long C call in sympy)
        (r"\Gamma(10^{9})", "factorial with a power", "3"),
        (r"\Gamma(999 \cdot 999)", "factorial too large", "3"),
        (r"\frac{100!}{98! \cdot 2!}", None, "4950"),  # ordinary factorials still verify
        (r"\frac{10!}{3!7!}", None, "120"),
    ],
)
def test_factorial_guards(answer, reason, solution):
    assert mathcheck.guard_reason(answer) == reason
    assert mathcheck.math_equivalent(answer, solution) == (reason is None)


def test_a_right_answer_after_hostile_text_still_counts():
    """The guards refuse hostile text, not the answer after it (the last complete answer block wins)."""
    junk = "<answer>9^9^9^9</answer>" + "</answer><answer>" * 1000 + "{" * 10_000
    assert rewards.get("math")([junk + "<answer>3</answer>"], solution=["3"]) == [1.0]
    assert rewards.get("count")([junk + "<answer>3</answer>"], solution=[3]) == [1.0]


# --- slow tier: generated completions --------------------------------------------------------

_WORDS = ["B", "(B)", "red car", "three", "3", "x", "\\frac{1}{2}", "[10, 20, 60, 80]", '{"bbox_2d": [10, 20, 60, 80]}',
          "the answer is B", "twenty-one", "1,000", "\u200b", "\x00", "\ud800", "\u202e", "¹", "３", "Ⅻ", "∞", "NaN"]


def _math_expr(rng: random.Random, depth: int = 0) -> str:
    """A random, often pathological, expression."""
    if depth > rng.randint(1, 6) or rng.random() < 0.2:
        return rng.choice(["9", "99", "999", "x", "e", r"\pi", "0", str(rng.randint(0, 10**rng.randint(1, 60))), "1.5"])
    a, b = _math_expr(rng, depth + 1), _math_expr(rng, depth + 1)
    return rng.choice([
        f"{a}^{{{b}}}", f"{a}^{b}", f"{a}!", f"({a})!", rf"\frac{{{a}}}{{{b}}}", f"({a}+{b})", f"{a}*{b}",
        rf"\sqrt{{{a}}}", rf"\binom{{{a}}}{{{b}}}", rf"\sin({a})", f"{a}={b}", rf"\sum_{{k=1}}^{{{a}}} {b}",
        rf"\int_0^{{{a}}} {b} dx", f"[{a}, {b}]", rf"\{{{a}, {b}\}}", f"{a}/{b}", f"{a}**{b}", rf"\log({a})",
    ])


def _payload(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.35:
        return _math_expr(rng)
    if roll < 0.45:
        return rng.choice(PATHOLOGICAL_MATH)
    if roll < 0.6:
        v = [rng.choice([0, 1, 10, 60, 1e308, -1e308, float("nan"), 10**rng.randint(1, 400), -5, 0.5]) for _ in range(4)]
        return rng.choice([str(v), '{"bbox_2d": %s}' % v, "[" * rng.randint(1, 5000) + str(v), f"({v[0]}, {v[1]})"])
    if roll < 0.8:
        return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 50)))
    return "".join(chr(rng.choice([rng.randint(0, 0x2FFF), rng.randint(0xD800, 0xDFFF), rng.randint(0xFF00, 0xFFEF)]))
                   for _ in range(rng.randint(1, 300)))


def generate_completion(rng: random.Random):
    """One adversarial completion: a payload in a hostile wrapping, sometimes megabytes long."""
    payload = _payload(rng)
    wrap = rng.choice(["r1", "r1", "bare", "interleaved", "repeated", "nested", "unclosed", "confusable", "boxed"])
    text = {
        "r1": f"<think>t</think><answer>{payload}</answer>",
        "bare": payload,
        "interleaved": "".join(rng.choice(TAGS) + payload for _ in range(rng.randint(2, 50))),
        "repeated": f"<answer>{payload}</answer>" * rng.randint(2, 200),
        "nested": "<answer>" * rng.randint(2, 50) + payload + "</answer>" * rng.randint(0, 50),
        "unclosed": f"<think>{payload}<answer>{payload}",
        "confusable": _conf(f"<think>t</think><answer>{payload}</answer>"),
        "boxed": f"<answer>\\boxed{{{payload}}}</answer>" + "\\boxed{" * rng.randint(0, 1000),
    }[wrap]
    if rng.random() < 0.04:
        text = (text + rng.choice(TAGS)) * max(1, (2 * MB) // (len(text) + 9))
    form = rng.random()
    if form < 0.08:
        return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]
    if form < 0.10:
        return rng.choice([None, 7, b"bytes", {"content": None}, [{"role": "user"}]])
    return text


#: Where a wrapped correct answer goes; each reward's run puts its task's right answer there.
SLOT = "\ue000RIGHT\ue001"
#: The right answer per task for :data:`SOLUTIONS` in :func:`columns_for`'s frame (rec: the solution box
#: [10, 20, 60, 80] of a 100x120 image in the model's 56x84 pixels).
RIGHT = {"rec": "[5.6, 14.0, 33.6, 56.0]", "math": "3", "open": "red car", "mcq": "B", "count": "3"}
# After the final answer block only text without a closing tag, which the answer rule ignores.
_TAIL = ["", "<answer>", "<think>", "\\boxed{" * 50, "{" * 1000, "\u202e\u200b", " the answer is 7"]


def wrap_right_answer(rng: random.Random) -> str:
    """A correct answer (at :data:`SLOT`) as the last complete answer block, after hostile text."""
    hostile = generate_completion(rng)
    hostile = hostile if isinstance(hostile, str) else str(hostile)
    return f"{hostile}<think>t</think><answer>{SLOT}</answer>{rng.choice(_TAIL)}"


def generate_completions(rng: random.Random, n: int, right_share: float = 0.2) -> tuple[list, list[bool]]:
    """``n`` completions and, for each, whether it wraps a right answer (about ``right_share`` of them)."""
    made, right = [], []
    for _ in range(n):
        wrapped = rng.random() < right_share
        made.append(wrap_right_answer(rng) if wrapped else generate_completion(rng))
        right.append(wrapped)
    return made, right


def fill_right_answers(completions: list, tasks: list) -> list:
    """Each wrapped completion with its sample's right answer in the slot (empty for tasks without one)."""
    return [c.replace(SLOT, RIGHT.get(t, "")) if isinstance(c, str) and SLOT in c else c
            for c, t in zip(completions, tasks)]


#: Rewards that score a right answer 1 (``iou``: IoU 1) whatever hostile text comes before it.
SCORES_RIGHT = ["iou", "rec_acc", "math", "exact_match", "mcq", "count", "accuracy"]


def test_a_wrapped_right_answer_scores_in_every_task():
    completions, right = generate_completions(random.Random("wrapped"), 40, right_share=1.0)
    assert all(right)
    for name in SCORES_RIGHT:
        columns = columns_for(name, completions, random.Random(name))
        filled = fill_right_answers(completions, columns["task"])
        scores = rewards.guard(rewards.get(name))(filled, **columns)
        for score, task, text in zip(scores, columns["task"], filled):
            if task in RIGHT:
                assert score == pytest.approx(1.0), (name, task, text[-200:])


@pytest.mark.slow
def test_fuzz_every_reward():
    n = int(os.environ.get("RELIABILITY_REWARD_N", "1000"))
    completions, right = generate_completions(random.Random("rewards"), n)
    wrapped = sum(right)
    assert wrapped >= n // 10  # the advertised share of right answers in hostile text
    rows, started = [], time.perf_counter()
    for name in BUILTINS:
        columns = columns_for(name, completions, random.Random(name))
        filled = fill_right_answers(completions, columns["task"])
        outcomes: Counter[str] = Counter()
        right_scored, right_tried = 0, 0
        slowest, t0 = 0.0, time.perf_counter()
        for i, completion in enumerate(filled):
            one = {key: values[i : i + 1] for key, values in columns.items()}
            score, seconds = score_one(name, completion, one)  # raises on a crash, a hang or a bad value
            slowest = max(slowest, seconds)
            outcomes["None" if score is None else "0" if score == 0 else "positive" if score > 0 else "negative"] += 1
            if right[i] and columns["task"][i] in RIGHT:
                right_tried += 1
                right_scored += score is not None and score >= 1.0 - 1e-9
        row = {
            "case": f"`{name}`", "tried": n,
            "outcome": "scored, no crash: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())),
            "max s/completion": round(slowest, 2), "wall s": round(time.perf_counter() - t0, 1),
        }
        if name in SCORES_RIGHT:
            assert right_tried > 0 and right_scored == right_tried, (name, right_scored, right_tried)
            assert outcomes["positive"] >= right_scored
            row["right answers in hostile text scored 1"] = f"{right_scored} of {right_tried}"
        rows.append(row)
    sizes = [len(c) for c in completions if isinstance(c, str)]
    write_area(
        "rewards_fuzz", "Adversarial completions: every built-in reward", rows, wall_s=time.perf_counter() - started,
        command="RELIABILITY_REWARD_N=1000 .venv/bin/python -m pytest -q -m slow tests/test_reliability_rewards.py",
        notes=(f"The same {n} completions for every reward, from `random.Random('rewards')` in "
               "`tests/test_reliability_rewards.py`: pathological math, hostile boxes, look-alike tags, lone "
               f"surrogates, interleaved/nested/repeated tags; {sum(s > MB for s in sizes)} are over 1 MB (largest "
               f"{max(sizes) / MB:.1f} MB). {wrapped} of them end with the reward's right answer as the last "
               "complete answer block after hostile text (each task-scoring reward must score all of those 1). "
               "Each call ran through `rewards.guard` (one finite float or None per "
               "completion) under a 60 s hang detector; the math reward's own deadline is 1 s."),
    )
