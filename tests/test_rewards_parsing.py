"""Table-driven tests for rewards.parsing (the one answer rule and the parsers)."""

import time

import pytest

from rewards.parsing import (
    completion_text,
    extract_answer,
    extract_boxed,
    final_answer,
    normalize_text,
    parse_box,
    parse_count,
    parse_mcq,
)


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("plain", "plain"),
        ([{"role": "assistant", "content": "conv"}], "conv"),
        ([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "image"},
                                            {"type": "text", "text": "b"}]}], "ab"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "first"},
          {"role": "assistant", "content": "last"}], "last"),
        ({"role": "assistant", "content": "dict"}, "dict"),
        ([{"content": "no role"}], "no role"),
        (None, ""),
        (42, ""),
        ([], ""),
        ([{"role": "assistant", "content": None}], ""),
        (["not a message"], ""),
    ],
)
def test_completion_text(completion, expected):
    assert completion_text(completion) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>42</answer>", "42"),
        ("<think>t</think><answer> 42 \n</answer>", "42"),
        ("<answer>1</answer><answer>2</answer>", "2"),  # the last complete block wins
        ("<answer>1</answer><answer>2", "1"),  # an unclosed trailing block is not complete
        ("<answer>1<answer>2</answer>", "2"),
        ("no tags", None),
        ("<answer>open only", None),
        ("close only</answer>", None),
        ("</answer><answer>", None),
        ("<answer></answer>", ""),
        ("<ANSWER>1</ANSWER>", None),  # tags are exact
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"\boxed{3}", "3"),
        (r"\boxed{1} then \boxed{2}", "2"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{2} and \boxed{3", "2"),  # the last complete one
        (r"\boxed 7", None),
        (r"\boxed {x}", "x"),
        ("none", None),
        (r"\boxed{a\}b}", r"a\}b"),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "text, accept_boxed, expected",
    [
        ("<answer>5</answer>", False, "5"),
        (r"<answer>so \boxed{5}</answer>", False, "5"),
        (r"\boxed{4} <answer>5</answer>", True, "5"),  # the answer block wins over an outside box
        (r"reasoning \boxed{4}", False, None),
        (r"reasoning \boxed{4}", True, "4"),
        ("nothing", True, None),
    ],
)
def test_final_answer(text, accept_boxed, expected):
    assert final_answer(text, accept_boxed=accept_boxed) == expected


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("[10, 20, 30, 40]", [10, 20, 30, 40]),
        ("[10.5, 20.25, 30, 40.0]", [10.5, 20.25, 30, 40]),
        ('{"bbox_2d": [1, 2, 3, 4]}', [1, 2, 3, 4]),
        ('{"bbox_2d": [1, 2, 3, 4], "label": "dog"}', [1, 2, 3, 4]),
        ('[{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [5, 6, 7, 8]}]', [1, 2, 3, 4]),
        ('```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "x"}]\n```', [1, 2, 3, 4]),
        ("```\n[1, 2, 3, 4]\n```", [1, 2, 3, 4]),
        ("[[1, 2, 3, 4], [5, 6, 7, 8]]", [1, 2, 3, 4]),
        ("{'bbox_2d': [1, 2, 3, 4]}", [1, 2, 3, 4]),  # python-style quotes: regex fallback
        ("The box is [1, 2, 3, 4].", [1, 2, 3, 4]),
        ("(1, 2, 3, 4)", [1, 2, 3, 4]),
        ("[-5, -5, 10, 10]", [-5, -5, 10, 10]),
        ("[1e2, 2, 3, 4]", [100, 2, 3, 4]),
        ("[30, 40, 10, 20]", [30, 40, 10, 20]),  # degenerate but parses
        ("[1, 2, 3]", None),
        ("[1, 2, 3, 4, 5]", None),
        ("[NaN, 2, 3, 4]", None),
        ("[Infinity, 2, 3, 4]", None),
        ("[true, 2, 3, 4]", None),
        ('{"label": "dog"}', None),
        ("a dog", None),
        ("", None),
        (None, None),
        ("[" * 5000 + "]" * 5000, None),
    ],
)
def test_parse_box(answer, expected):
    assert parse_box(answer) == expected


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("B", "B"), ("(B)", "B"), ("B.", "B"), ("B)", "B"), ("B) 12", "B"), ("(B) 12", "B"),
        ("B. twelve", "B"), ("B: 12", "B"), ("b", "B"), ("**B**", "B"), (r"\text{B}", "B"),
        ("the answer is B", "B"), ("The answer is (C).", "C"), ("Answer: D", "D"), ("Option E", "E"),
        ("A cat", None), ("I think it is B", None), ("the answer is a cat", None), ("12", None),
        ("", None), (None, None),
    ],
)
def test_parse_mcq(answer, expected):
    assert parse_mcq(answer) == expected


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("3", 3), ("03", 3), ("3.0", 3), ("three", 3), ("Three", 3), ("twenty", 20), ("zero", 0),
        ("There are 4 cubes.", 4), ("2 red and 3 blue, so 5", 5), ("1,000", 1000),
        ("twenty-one", None), ("2.5", None), ("-3", None), ("many", None), ("x3", None), ("", None), (None, None),
    ],
)
def test_parse_count(answer, expected):
    assert parse_count(answer) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Red Car", "the red car"), ("  the   red\ncar. ", "the red car"), ('"Paris!"', "paris"),
        ("«Paris»", "paris"), ("U.S.A.", "u.s.a"), ("...", ""), ("", ""),
    ],
)
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "<answer>" * 200_000 + "x",
        "</answer>" * 200_000,
        "\\boxed{" * 200_000,
        "{" * 1_000_000,
        "x" * 3_000_000,
        ("<answer>[1, 2, 3, " * 100_000) + "</answer>",
    ],
)
def test_megabyte_completions_are_fast(text):
    start = time.perf_counter()
    answer = final_answer(text, accept_boxed=True)
    parse_box(answer)
    parse_mcq(answer)
    parse_count(answer)
    normalize_text(answer or "")
    assert time.perf_counter() - start < 2.0  # typically < 0.05 s; slack for a shared machine
