"""reward_timeout keeps a synchronous reward in the main thread: what needs it works, what hangs is stopped."""

from __future__ import annotations

import signal
import time

import pytest

import rewards
from rewards.deadline import call_with_alarm
from rewards.guard import RewardError


def math_verify_reward(completions, **columns):
    """What a user writes from math-verify's README: its parse/verify time out with signal.alarm."""
    from math_verify import parse, verify

    return [float(verify(parse("$\\frac{1}{2}$"), parse(c))) for c in completions]


def test_a_reward_that_uses_signal_alarm_scores_under_the_limit():
    guarded = rewards.guard(math_verify_reward, timeout_s=30)
    assert guarded(["$0.5$", "$3$"]) == [1.0, 0.0]


def test_a_reward_blocked_in_a_system_call_is_stopped_naming_the_limit():
    def sleeps(completions, **columns):
        time.sleep(30)
        return [0.0] * len(completions)

    start = time.monotonic()
    with pytest.raises(RewardError, match=r"reward 'sleeps' did not return within 0.3 s \(reward_timeout\)"):
        rewards.guard(sleeps, timeout_s=0.3)(["x"])
    assert time.monotonic() - start < 5


def test_an_alarm_pending_outside_is_given_back():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        assert call_with_alarm(lambda: 7, 5.0, default=None) == 7
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < remaining <= 0.5
        time.sleep(0.7)
        assert fired == [True]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
