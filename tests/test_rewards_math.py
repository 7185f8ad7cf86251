"""math reward: equivalence table, guards, and bounded time on adversarial input everywhere."""

import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from rows_helpers import reward_columns, score_rows, trainer_rows

import rewards
from rewards.deadline import call_with_deadline
from rewards.mathcheck import canonical, guard_reason, math_equivalent

BUDGET_S = 0.5
SLACK_S = 1.0  # thread start, interrupt delivery, a 2-core machine shared with other test runs

# An interrupt can land in a gc callback (hypothesis installs one), where Python
# reports it as "unraisable" and carries on; the reaper sends it again.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.mark.parametrize(
    "prediction, solution, expected",
    [
        (r"\frac{1}{2}", "0.5", 1.0),
        ("0.5", r"\frac{1}{2}", 1.0),
        ("1/2", r"\frac{1}{2}", 1.0),
        (r"\dfrac{1}{2}", r"\frac{1}{2}", 1.0),
        ("x=3", "3", 1.0),
        ("x = 3", 3, 1.0),
        ("3", 3.0, 1.0),
        (r"2\sqrt{2}", r"\sqrt{8}", 1.0),
        (r"\pi/2", r"\frac{\pi}{2}", 1.0),
        ("5 cm", "5", 1.0),
        (r"$\frac{3}{4}$", "0.75", 1.0),
        ("The answer is 7.", "7", 1.0),
        (r"90^\circ", "90", 1.0),
        ("1,000", "1000", 1.0),
        (r"\boxed{42}", "42", 1.0),
        ("4", "3", 0.0),
        ("-3", "3", 0.0),
        (r"\frac{1}{3}", "0.33", 0.0),
        ("x", "y", 0.0),
        ("banana", "3", 0.0),
        # identical answers the guards would refuse still count (exact shortcut)
        (r"2^{2023} \cdot 3^{5}", r" 2^{2023}  \cdot 3^{5} ", 1.0),
        (r"e^{-x^2}", r"e^{-x^2}", 1.0),
    ],
)
def test_math_equivalence(prediction, solution, expected):
    completion = f"<think>work</think><answer>{prediction}</answer>"
    assert rewards.get("math")([completion], solution=[solution]) == [expected]


def test_math_on_the_trainers_rows(math_data, tiny_processor):
    """The rows GRPO reads: answers in an answer block score 1; a bare ``\\boxed{}`` scores only
    through the factory, since no builder writes an ``accept_boxed`` column (the math prompt asks
    for an answer block)."""
    rows = trainer_rows([math_data], tiny_processor)[:4]
    assert "accept_boxed" not in reward_columns(rows)
    solutions = [row["solution"] for row in rows for _ in range(2)]
    answered = [f"<think>t</think><answer>{s}</answer>" for s in solutions]
    boxed = [rf"so \boxed{{{s}}}" for s in solutions]
    assert score_rows(rewards.get("math"), rows, answered) == [1.0] * 8
    assert score_rows(rewards.get("math"), rows, boxed) == [0.0] * 8
    assert score_rows(rewards.make_math_reward(accept_boxed=True), rows, boxed) == [1.0] * 8
    assert score_rows(rewards.get("accuracy"), rows, answered) == [1.0] * 8


def test_math_answer_rule_and_boxed():
    math = rewards.get("math")
    sol = ["3"]
    assert math([r"<answer>So \boxed{3}.</answer>"], solution=sol) == [1.0]
    assert math(["<answer>2</answer> <answer>3</answer>"], solution=sol) == [1.0]
    assert math(["<answer>3</answer> <answer>2</answer>"], solution=sol) == [0.0]
    assert math([r"so \boxed{3}"], solution=sol) == [0.0]  # no answer block
    assert rewards.make_math_reward(accept_boxed=True)([r"\boxed{3}"], solution=sol) == [1.0]
    assert math([[{"role": "assistant", "content": "<answer>3</answer>"}]], solution=sol) == [1.0]
    assert math(["<answer>3</answer>"], solution=sol, task=["rec"]) == [None]
    assert rewards.make_math_reward(name="math_strict").__name__ == "math_strict"
    with pytest.raises(ValueError):
        rewards.make_math_reward(budget_s=0)


@pytest.mark.parametrize(
    "text, reason",
    [
        (r"\frac{1}{2}", None),
        ("x^{2} + 2x + 1", None),
        ("2^{100} + 3^{100}", None),
        ("10^{10000}", None),
        ("1000!", None),
        ("x" * 1001, "too long"),
        ("(" * 9 + "1" + ")" * 9, "nested too deeply"),
        ("9" * 51, "number too long"),
        ("9^{9^{9}}", "power tower"),
        ("9**9**9", "power tower"),
        ("2^2^2", "power tower"),
        ("2^{100} \\cdot 3^{101}", "exponent too large"),
        ("2^{999*999}", "exponent too large"),
        ("x**99999", "exponent too large"),
        ("2^{10!}", "factorial in exponent"),
        ("1001!", "factorial too large"),
        (r"\binom{5000}{2500}", "factorial too large"),
        ("(100)!", "nested factorial"),
        ("5!!", "nested factorial"),
    ],
)
def test_guard_reason(text, reason):
    assert guard_reason(text) == reason


def test_canonical():
    assert canonical(r" $\left( 1, \dfrac{1}{2} \right)$. ") == r"( 1, \frac{1}{2} )"
    assert canonical("2 3") != canonical("23")


ADVERSARIAL = [
    "9^{9^{9}}",
    "2^{2^{2^{2^{2^{2}}}}}",
    "9**9**9",
    "10^{10000000}",
    "9" * 50 + "^{9999}",
    "100000!",
    "(10^{6})!",
    r"\binom{100000}{50000}",
    "(" * 500 + "1" + ")" * 500,
    r"\frac{1}{" * 200 + "2" + "}" * 200,
    "1+" * 20_000 + "1",
    "(x+1)^{9999}",
    "(x+y+z)^{100}",
    r"\sum_{i=1}^{9999} \sin(i)",
    r"(1+\sqrt{2})^{9999}",
    "x = " + " = ".join(["x+1"] * 100),
]


def score_adversarial(inputs, budget_s=BUDGET_S):
    """[(elapsed seconds, score)] for each input, through the math reward."""
    reward = rewards.make_math_reward(budget_s=budget_s)
    results = []
    for text in inputs:
        start = time.perf_counter()
        (score,) = reward([f"<think>t</think><answer>{text}</answer>"], solution=["3"])
        results.append((time.perf_counter() - start, score))
    return results


def assert_bounded(results, budget_s=BUDGET_S):
    for elapsed, score in results:
        assert score == 0.0
        assert elapsed < budget_s + SLACK_S, results


@pytest.fixture(scope="module", autouse=True)
def warm_math_verify():
    rewards.get("math")(["<answer>1</answer>"], solution=["1"])  # import sympy outside the timings
    yield
    wait_for_workers()  # leave no interrupted worker behind for later test modules


def test_adversarial_main_thread():
    assert_bounded(score_adversarial(ADVERSARIAL))


SUBSET = ["9^{9^{9}}", "(" * 500 + "1" + ")" * 500, "1+" * 20_000 + "1", "(x+1)^{9999}"]


def test_adversarial_other_thread():
    with ThreadPoolExecutor(max_workers=1) as pool:
        results = pool.submit(score_adversarial, SUBSET).result(timeout=60)
    assert_bounded(results)


def test_adversarial_multiprocessing_worker():
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:  # pool workers are daemonic processes
        pool.apply(score_adversarial, (["1"],))  # start-up and imports, not timed
        results = pool.apply(score_adversarial, (SUBSET,))
    assert_bounded(results)


def test_megabytes_of_text():
    reward = rewards.make_math_reward(budget_s=BUDGET_S, accept_boxed=True)
    completions = ["<answer>" + "1+" * 1_000_000 + "1</answer>", r"\boxed{" * 500_000, "x" * 5_000_000]
    start = time.perf_counter()
    assert reward(completions, solution=["3"] * 3) == [0.0, 0.0, 0.0]
    assert time.perf_counter() - start < 3.0


def test_math_equivalent_direct():
    assert math_equivalent(" 0.5 ", r"\frac{1}{2}")
    assert not math_equivalent("", "1")
    assert not math_equivalent("1", "")


def _busy():
    x = 0
    while True:
        x += 1


def _live_workers():
    return [t for t in threading.enumerate() if t.name == "rewards-deadline"]


def wait_for_workers(timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while _live_workers() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_deadline_interrupts_python_and_cleans_up():
    start = time.perf_counter()
    assert call_with_deadline(_busy, 0.2, default="late") == "late"
    assert time.perf_counter() - start < 0.2 + SLACK_S
    wait_for_workers()
    assert not _live_workers()


def test_deadline_passes_values_and_errors():
    assert call_with_deadline(lambda: 7, 1.0, default=None) == 7
    with pytest.raises(ZeroDivisionError):
        call_with_deadline(lambda: 1 / 0, 1.0, default=None)


def test_deadline_from_a_thread():
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("v", call_with_deadline(_busy, 0.2, "late")))
    thread.start()
    thread.join(5)
    assert box == {"v": "late"}


def test_deadline_many_short_calls(monkeypatch):
    # finishing right at the budget must never leak an interrupt out of the worker's try
    stray = []
    monkeypatch.setattr(threading, "excepthook", lambda args: stray.append(args.exc_value))

    def work(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
        return "done"

    for i in range(300):
        budget, seconds = 0.001 * (i % 3), 0.001 * ((i + 1) % 3)
        assert call_with_deadline(lambda: work(seconds), budget, default="late") in ("done", "late")
    assert call_with_deadline(lambda: "fine", 1.0, default=None) == "fine"
    wait_for_workers()
    assert stray == [] and not _live_workers()


def test_an_interrupt_landing_in_a_finalizer_is_not_reported():
    """A DeadlineExceeded delivered inside ``__del__`` is "unraisable": dropped, other reports still pass."""
    import sys

    from rewards.deadline import DeadlineExceeded, _quiet_unraisable

    seen = []
    previous = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        _quiet_unraisable()
        _quiet_unraisable()  # installed once

        class Late:
            def __init__(self, exc):
                self.exc = exc

            def __del__(self):
                raise self.exc

        Late(DeadlineExceeded())
        Late(KeyError("other"))
    finally:
        sys.unraisablehook = previous
    assert [type(u.exc_value) for u in seen] == [KeyError]
