"""Thinking templates: a generation prompt that leaves ``<think>`` open (Qwen3.5 "think") versus one that does not
(Qwen3.5 "nothink", Qwen2/2.5/3-VL). The template is read off the processor, and the format reward, the answer
parser and SFT's targets follow it (table-driven, then on the tiny models' real templates)."""

from __future__ import annotations

import pytest

import rewards
from rewards.format_rewards import format_box_reward, format_reward
from rewards.parsing import after_thinking, inside_open_think

# (name, completion, open_think, well formed)
FORMAT_CASES = [
    ("continues the open think and closes it", "look left\n</think>\n\n<answer>[1, 2, 3, 4]</answer>", True, True),
    ("the same text without an open think", "look left\n</think>\n\n<answer>[1, 2, 3, 4]</answer>", False, False),
    ("opens its own think under an open one", "<think>look</think><answer>[1, 2, 3, 4]</answer>", True, False),
    ("opens its own think, template closed", "<think>look</think><answer>[1, 2, 3, 4]</answer>", False, True),
    ("never closes the open think", "look <answer>[1, 2, 3, 4]</answer>", True, False),
    ("answer only, template closed", "<answer>[1, 2, 3, 4]</answer>", False, False),
    ("empty thinking continued", "</think><answer>[1, 2, 3, 4]</answer>", True, True),
    ("text between think and answer", "look</think> so <answer>[1, 2, 3, 4]</answer>", True, False),
]


@pytest.mark.parametrize("name, completion, open_think, expected", FORMAT_CASES, ids=[c[0] for c in FORMAT_CASES])
def test_format_reward_follows_the_template(name, completion, open_think, expected):
    assert format_reward([completion], open_think=[open_think]) == [float(expected)]
    assert format_box_reward([completion], open_think=[open_think]) == [float(expected)]
    conversational = [{"role": "assistant", "content": completion}]
    assert format_reward([conversational], open_think=[open_think]) == [float(expected)]


def test_without_the_column_the_template_is_taken_as_closed():
    assert format_reward(["x</think><answer>1</answer>", "<think>x</think><answer>1</answer>"]) == [0.0, 1.0]


# (name, completion, open_think, the answer the parser reads)
ANSWER_CASES = [
    ("after the closing tag", "a <answer>9</answer></think><answer>3</answer>", True, "3"),
    ("inside the unclosed thinking", "maybe <answer>3</answer>", True, None),
    ("closed template reads all", "maybe <answer>3</answer>", False, "3"),
    ("closed template, last block wins", "<think><answer>9</answer></think><answer>3</answer>", False, "3"),
    ("open think, answer only in thinking", "<answer>9</answer></think>no answer", True, None),
]


@pytest.mark.parametrize("name, completion, open_think, expected", ANSWER_CASES, ids=[c[0] for c in ANSWER_CASES])
def test_the_answer_parser_follows_the_template(name, completion, open_think, expected):
    verdict = rewards.judge("count", completion, solution=3, open_think=open_think)
    assert verdict.parsed == (None if expected is None else int(expected))
    assert rewards.parsing.final_answer(after_thinking(completion, open_think)) == expected


@pytest.mark.parametrize("text, expected", [
    ("<|im_start|>assistant\n<think>\n", True),
    ("<|im_start|>assistant\n<think>\n\n</think>\n\n", False),
    ("<|im_start|>assistant\n", False),
    ("<think>a</think> then <think>", True),
])
def test_inside_open_think(text, expected):
    assert inside_open_think(text) == expected


TEMPLATES = [("qwen2_5_vl", None, False), ("qwen3_vl", None, False), ("qwen3_5", "think", True),
             ("qwen3_5", "nothink", False), ("qwen3_5_moe", "nothink", False)]


@pytest.mark.parametrize("family, template, opens", TEMPLATES, ids=[f"{f}-{t}" for f, t, _ in TEMPLATES])
def test_sft_target_follows_the_generation_prompt_and_scores_as_well_formed(family, template, opens, rec_data):
    """On each tiny model's own template: the rows' ``open_think`` is detected, the rendered prompt is a prefix of
    prompt + SFT target (what TRL's SFT trains on starts right after it), and that continuation is well formed."""
    from vlm_grpo.data import build_rows
    from vlm_grpo.sft import target_message
    from vlm_grpo.tiny import build_processor, build_tokenizer

    tokenizer = build_tokenizer(family=family, template=template)
    processor = build_processor(tokenizer, family=family)
    rows = build_rows([str(rec_data)], processor, box_frame="norm1000")
    row = rows.row(0, with_images=False)
    assert row["open_think"] is opens
    prompt = processor.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
    full = processor.apply_chat_template(row["prompt"] + [target_message(row, {"thinking": "the left one"})],
                                         tokenize=False)
    assert full.startswith(prompt)
    completion = full[len(prompt):].removesuffix("\n").removesuffix("<|im_end|>")
    assert completion.startswith("<think>") != opens
    assert format_box_reward([completion], open_think=[opens]) == [1.0]
    assert format_box_reward([completion], open_think=[not opens]) == [0.0]
    assert rewards.judge("rec", completion, **{k: v for k, v in row.items() if k != "prompt"}).parse_ok
    from vlm_grpo.evaluate import judge_row

    judged = judge_row(row, completion, 0)  # evaluation reads the row's template too
    assert judged["format_ok"] and judged["parse_ok"] and judged["correct"]
