"""format and format_box."""

import pytest

import rewards

GOOD = "<think>reasoning</think><answer>42</answer>"


@pytest.mark.parametrize(
    "completion, expected",
    [
        (GOOD, 1.0),
        ("  \n<think>\nr\n</think>\n\n<answer>\n42\n</answer>\n ", 1.0),
        ("<think></think><answer></answer>", 1.0),
        ([{"role": "assistant", "content": GOOD}], 1.0),
        ([{"role": "assistant", "content": [{"type": "text", "text": GOOD}]}], 1.0),
        ("<answer>42</answer>", 0.0),
        ("<think>r</think>", 0.0),
        ("<think>r</think>42", 0.0),
        ("prefix <think>r</think><answer>42</answer>", 0.0),
        ("<think>r</think><answer>42</answer> suffix", 0.0),
        ("<think>r</think> between <answer>42</answer>", 0.0),
        ("<answer>42</answer><think>r</think>", 0.0),
        ("<think>r</think><answer>1</answer><answer>2</answer>", 0.0),
        ("<think>a</think><think>b</think><answer>1</answer>", 0.0),
        ("<think>a<think>b</think><answer>1</answer>", 0.0),
        ("<think>a</think><answer>1<answer>2</answer>", 0.0),
        ("<think>a</think><answer>1</think></answer>", 0.0),
        ("<THINK>a</THINK><ANSWER>1</ANSWER>", 0.0),
        ("", 0.0),
        (None, 0.0),
    ],
)
def test_format(completion, expected):
    assert rewards.get("format")([completion]) == [expected]


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("[1, 2, 3, 4]", 1.0),
        ('{"bbox_2d": [1.5, 2, 3, 4]}', 1.0),
        ('```json\n[{"bbox_2d": [1, 2, 3, 4]}]\n```', 1.0),
        ("[3, 4, 1, 2]", 1.0),  # parses as a box (degenerate boxes score 0 in iou, not here)
        ("the dog", 0.0),
        ("[1, 2, 3]", 0.0),
    ],
)
def test_format_box(answer, expected):
    assert rewards.get("format_box")([f"<think>r</think><answer>{answer}</answer>"]) == [expected]


def test_format_box_needs_format():
    assert rewards.get("format_box")(["<answer>[1, 2, 3, 4]</answer>"]) == [0.0]


def test_format_ignores_columns_and_accepts_batches():
    out = rewards.get("format")([GOOD, "bad"], solution=["x", "y"], trainer_state=object())
    assert out == [1.0, 0.0]
