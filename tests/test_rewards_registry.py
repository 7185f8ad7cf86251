"""Registry, loading user rewards (module:function, file.py:function) and guard."""

import asyncio
import pickle
import textwrap
import time

import numpy as np
import pytest

import rewards
from rewards import RewardError, RewardLoadError, guard, load, register
from rewards.registry import _REGISTRY

BUILT_INS = ["accuracy", "count", "det_ap", "det_f1", "det_odlength", "exact_match", "format", "format_box", "iou",
             "length", "math", "mcq", "point_in_box", "rec_acc", "repetition", "tool_bonus"]


def test_names_and_get():
    assert rewards.names() == BUILT_INS
    for name in BUILT_INS:
        reward = rewards.get(name)
        assert callable(reward) and reward.__name__ == name


def test_unknown_name_lists_known():
    with pytest.raises(RewardLoadError, match="unknown reward 'ioU'; known rewards: accuracy, count"):
        rewards.get("ioU")
    assert issubclass(RewardLoadError, ValueError)


def test_register_refuses_duplicates():
    @register("test_once")
    def once(completions, **columns):
        return [0.0] * len(completions)

    try:
        assert rewards.get("test_once") is once and once.__name__ == "test_once"
        with pytest.raises(ValueError, match="already registered"):
            register("test_once")(lambda completions, **c: [])
        with pytest.raises(ValueError, match="already registered"):
            register("iou")(once)
    finally:
        _REGISTRY.pop("test_once")
    with pytest.raises(ValueError):
        register("")


def test_builtins_pickle():
    for name in BUILT_INS:
        assert pickle.loads(pickle.dumps(rewards.get(name))).__name__ == name


PLUGIN = textwrap.dedent(
    """
    def my_reward(completions, **columns):
        return [float(len(c)) for c in completions]

    class Scorer:
        def __call__(self, completions, **columns):
            return [1.0] * len(completions)

    scorer = Scorer()
    alias = my_reward
    NOT_CALLABLE = 3
    """
)


@pytest.fixture
def plugin_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(PLUGIN)
    return path


def test_load_registry_name():
    assert load("iou") is rewards.get("iou")
    assert load("  format ") is rewards.get("format")


def test_load_module_function():
    reward = load("rewards.examples.colour_match:colour_match")
    assert reward.__name__ == "colour_match"
    assert load("rewards.accuracy:iou_reward").__name__ == "iou"  # a built-in keeps its registry name


def test_load_file_function(plugin_file, monkeypatch):
    reward = load(f"{plugin_file}:my_reward")
    assert reward.__name__ == "my_reward" and reward(["ab", "c"]) == [2.0, 1.0]
    assert load(f"{plugin_file}:my_reward") is reward  # the module is loaded once
    scorer = load(f"{plugin_file}:scorer")
    assert scorer.__name__ == "scorer" and scorer(["x"]) == [1.0]
    assert load(f"{plugin_file}:alias").__name__ == "my_reward"  # the function's own name
    monkeypatch.chdir(plugin_file.parent)
    assert load("my_rewards.py:my_reward")(["abc"]) == [3.0]  # relative to the working directory


def test_load_module_function_from_path(plugin_file, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_file.parent))
    assert load("my_rewards:my_reward")(["abcd"]) == [4.0]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_such_reward", "unknown reward"),
        ("no_such_package.mod:fn", "no module named 'no_such_package.mod'"),
        ("rewards.no_such_module:fn", "no module named 'rewards.no_such_module'"),
        ("rewards.accuracy:no_such_fn", "has no function 'no_such_fn'; callables there: "),
        ("rewards.mathcheck:MAX_CHARS", "not a callable"),
        ("missing/file.py:fn", "not found"),
        ("missing.py:fn", "not found"),
        (":fn", "bad reward spec"),
        ("rewards.accuracy:", "bad reward spec"),
        ("rewards.accuracy:not-a-name", "bad reward spec"),
        ("", "non-empty"),
    ],
)
def test_load_errors(spec, message):
    with pytest.raises(RewardLoadError, match=message):
        load(spec)


def test_load_file_errors(tmp_path, plugin_file):
    with pytest.raises(RewardLoadError, match="has no function 'nope'"):
        load(f"{plugin_file}:nope")
    with pytest.raises(RewardLoadError, match="not a callable"):
        load(f"{plugin_file}:NOT_CALLABLE")
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_dependency_xyz\n")
    with pytest.raises(RewardLoadError, match="loading .*broken.py failed: ModuleNotFoundError"):
        load(f"{broken}:fn")
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def oops(:\n")
    with pytest.raises(RewardLoadError, match="SyntaxError"):
        load(f"{syntax}:oops")


def failing(completions, **columns):
    return [1.0 / len(c) for c in completions]


def test_guard_names_reward_and_sample():
    guarded = guard(failing, "my_reward")
    assert guarded.__name__ == "my_reward"
    assert guarded(["ab"]) == [0.5]
    with pytest.raises(RewardError, match=r"reward 'my_reward' raised ZeroDivisionError on sample 'rec_7' \(#1\)"):
        guarded(["ok", ""], id=["rec_6", "rec_7"], solution=[1, 2], trainer_state=object())
    with pytest.raises(RewardError, match="on sample #2"):
        guarded(["a", "b", ""])
    assert guard(failing).__name__ == "failing"
    assert guard(rewards.get("iou")).__name__ == "iou"


def test_guard_batch_only_failure():
    def batch_only(completions, **columns):
        if len(completions) > 1:
            raise RuntimeError("batch")
        return [0.0]

    with pytest.raises(RewardError, match="a batch of 2"):
        guard(batch_only)(["a", "b"])


@pytest.mark.parametrize(
    "result, message",
    [
        ("1.0", "returned str"),
        ([1.0], "returned 1 values for 2 completions"),
        ([1.0, 2.0, 3.0], "returned 3 values"),
        ([1.0, "x"], "returned 'x' .str. for sample #1"),
        ([True, 1.0], "returned True .bool."),
        ([float("nan"), 1.0], "returned nan"),
        ([1.0, float("inf")], "returned inf"),
        ([[1.0], 1.0], "returned \\[1.0\\]"),
    ],
)
def test_guard_checks_results(result, message):
    with pytest.raises(RewardError, match=message):
        guard(lambda completions, **c: result, "r")(["a", "b"])


def test_guard_accepts_numbers_and_none():
    out = guard(lambda completions, **c: (1, None, np.float32(0.5), np.int64(2)), "r")(["a", "b", "c", "d"])
    assert out == [1.0, None, 0.5, 2.0] and all(type(v) in (float, type(None)) for v in out)


def test_guard_pickles():
    guarded = pickle.loads(pickle.dumps(guard(rewards.get("format"))))
    assert guarded.__name__ == "format" and guarded(["<think></think><answer></answer>"]) == [1.0]


def test_guard_async():
    async def async_reward(completions, **columns):
        return [1.0 / len(c) for c in completions]

    guarded = guard(async_reward)
    assert asyncio.iscoroutinefunction(guarded.__call__) and guarded.__name__ == "async_reward"
    assert asyncio.run(guarded(["ab"])) == [0.5]
    with pytest.raises(RewardError, match="sample 'b'"):
        asyncio.run(guarded(["a", ""], id=["a", "b"]))


def test_guard_rejects_non_callable():
    with pytest.raises(TypeError):
        guard(3)


def _forever(completions, **columns):
    while True:
        time.sleep(0.01)


@pytest.mark.parametrize("timeout_s", [0.2, 1.0])
def test_guard_time_limit_names_the_reward_and_the_limit(timeout_s):
    start = time.perf_counter()
    with pytest.raises(RewardError, match=rf"reward 'hangs' did not return within {timeout_s:g} s \(reward_timeout\)"):
        guard(_forever, "hangs", timeout_s=timeout_s)(["a", "b"])
    assert time.perf_counter() - start < timeout_s + 1.0  # 1 s: thread start on a shared 2-core machine


def test_guard_time_limit_keeps_values_errors_and_the_failing_sample():
    assert guard(lambda completions, **c: [1.0] * len(completions), "r", timeout_s=5)(["a"]) == [1.0]
    with pytest.raises(RewardError, match="sample 'b'"):
        guard(lambda completions, **c: [1.0 / len(x) for x in completions], "r", timeout_s=5)(["a", ""], id=["a", "b"])
    assert guard(_forever, "off", timeout_s=0).timeout_s is None  # 0: no limit
    with pytest.raises(ValueError, match="timeout_s"):
        guard(_forever, "r", timeout_s=-1)
    limited = pickle.loads(pickle.dumps(guard(rewards.get("format"), timeout_s=3)))
    assert limited.timeout_s == 3 and limited(["<think></think><answer></answer>"]) == [1.0]


def test_guard_time_limit_on_an_async_reward():
    async def hangs(completions, **columns):
        await asyncio.sleep(60)

    guarded = guard(hangs, timeout_s=0.2)
    assert asyncio.iscoroutinefunction(guarded.__call__)
    with pytest.raises(RewardError, match=r"reward 'hangs' did not return within 0.2 s"):
        asyncio.run(guarded(["a"]))


class AsyncScorer:
    """An async callable object without ``__name__`` (a plugin may export an instance)."""

    async def __call__(self, completions, **columns):
        return [float(len(c)) for c in completions]


def test_an_async_callable_object_is_named_and_stays_async(tmp_path):
    from rewards.registry import NamedReward, is_async

    plugin = tmp_path / "scorer.py"
    plugin.write_text("from test_rewards_registry import AsyncScorer\nscorer = AsyncScorer()\n")
    loaded = load(f"{plugin}:scorer")
    assert loaded.__name__ == "scorer" and is_async(loaded) and is_async(guard(loaded))
    assert asyncio.run(guard(loaded)(["ab"])) == [2.0]
    assert not is_async(NamedReward(len, "n"))
    again = pickle.loads(pickle.dumps(NamedReward(AsyncScorer(), "s")))
    assert is_async(again) and asyncio.run(again(["abc"])) == [3.0]
