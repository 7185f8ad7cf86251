"""length and repetition shaping rewards."""

import pickle

import pytest

import rewards
from rewards.shaping import make_length_reward, make_repetition_reward


@pytest.mark.parametrize(
    "n_tokens, expected",
    [(0, 0.0), (100, 0.0), (512, 0.0), (513, -1 / 256), (640, -0.5), (768, -1.0), (5000, -1.0)],
)
def test_length_default_tokens(n_tokens, expected):
    # registered default: target 512 tokens, full penalty 256 tokens later
    out = rewards.get("length")(["text"], completion_ids=[[7] * n_tokens])
    assert out == [pytest.approx(expected)]


@pytest.mark.parametrize(
    "text, expected",
    [("", 0.0), ("x" * 10, 0.0), ("x" * 15, -0.25), ("x" * 20, -0.5), ("x" * 100, -0.5)],
)
def test_length_chars_with_penalty(text, expected):
    reward = make_length_reward(target=10, window=10, penalty=0.5, unit="chars")
    assert reward([[{"role": "assistant", "content": text}]]) == [pytest.approx(expected)]


def test_length_needs_completion_ids_for_tokens():
    with pytest.raises(ValueError, match="completion_ids"):
        rewards.get("length")(["text"])


@pytest.mark.parametrize(
    "kwargs", [dict(window=0), dict(penalty=-1), dict(target=-1), dict(unit="words")]
)
def test_length_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        make_length_reward(**kwargs)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", 0.0),
        ("one two", 0.0),  # fewer words than n
        ("the cat sat on the mat", 0.0),
        ("go go go go go", -(1 - 1 / 3)),  # 3 trigrams, 1 unique
        ("a b c a b c", -(1 - 3 / 4)),  # 4 trigrams: abc bca cab abc
        ("Go GO go go go", -(1 - 1 / 3)),  # case-insensitive words
    ],
)
def test_repetition_words(text, expected):
    assert rewards.get("repetition")([text]) == [pytest.approx(expected)]


def test_repetition_tokens_and_params():
    reward = make_repetition_reward(ngram_size=2, penalty=2.0, unit="tokens")
    assert reward(["", ""], completion_ids=[[1, 2, 3, 4], [5, 5, 5, 5, 5]]) == [0.0, pytest.approx(-1.5)]
    with pytest.raises(ValueError, match="completion_ids"):
        reward(["x"])
    with pytest.raises(ValueError):
        make_repetition_reward(ngram_size=0)


def test_shaping_rewards_pickle_and_names():
    for name in ("length", "repetition"):
        reward = rewards.get(name)
        assert reward.__name__ == name
        assert pickle.loads(pickle.dumps(reward)).__name__ == name
    assert make_length_reward(name="long").__name__ == "long"
