"""Inputs that pass prep and then kill training (issue #16), through the real commands.

- text that reaches the chat template (the question, a text solution) holding one of its
  special tokens: prep refuses it naming the record (``special_token``), and so does
  ``load_packed`` for a dataset made without that check;
- images whose aspect ratio the Qwen image processors refuse, as stored (after
  ``--max-pixels``): ``image_aspect_ratio``;
- a source answer that looks like a box but is not a valid one: an ``invalid_solution``
  naming the record, never a silent task ``open``;
- a completion answering a box with absurd numbers (``1e308``): not a box, and eval's JSON
  files never hold ``Infinity`` / ``NaN``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import leftovers, one_error, vlm_grpo
from PIL import Image
from prep_helpers import image_bytes, rec_record, write_dataset

import rewards
from data_prep.model_limits import MAX_ASPECT_RATIO, TEMPLATE_SPECIAL_TOKENS
from data_prep.packed import PrepError, load_packed
from rewards.examples.colour_match import colour_match
from vlm_grpo.tiny import SPECIAL_TOKENS


def _vlm(tmp: Path, question: str, answer: object, method: str | None = None, image: str = "ok.png",
         size: tuple[int, int] = (32, 32)) -> list[str]:
    src = tmp / "src"
    src.mkdir(exist_ok=True)
    Image.new("RGB", (32, 32), (9, 9, 9)).save(src / "ok.png")
    if image != "ok.png":
        Image.new("RGB", size, (9, 9, 9)).save(src / image)
    lines = [{"id": "good", "image": "ok.png", "conversations": [{"from": "human", "value": "<image>What is 2+1?"},
                                                                   {"from": "gpt", "value": "3"}]},
             {"id": "bad", "image": image, "conversations": [{"from": "human", "value": question},
                                                             {"from": "gpt", "value": answer}]}]
    if method:
        lines[1]["accu_reward_method"] = method
    (src / "d.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return ["prep", "--format", "vlm-r1", "--input", str(src / "d.jsonl"), "--quiet"]


def _refused(tmp: Path, argv: list[str], reason: str, *names: str) -> str:
    out = tmp / "out"
    code, _, err = vlm_grpo([*argv, "--output", str(out)])
    line = one_error(code, err, "d.jsonl", "record 'bad'", *names)
    assert not out.exists() and leftovers(tmp) == []
    code, _, err = vlm_grpo([*argv, "--output", str(out), "--skip-invalid"])
    assert code == 0, err
    ds = load_packed(out)
    assert [r.id for r in ds] == ["good"] and ds.manifest["skipped"] == {reason: 1}
    return line


# --- special tokens of the chat template ---------------------------------------------------


def test_the_token_list_is_the_tiny_models_and_every_family_is_covered():
    assert set(TEMPLATE_SPECIAL_TOKENS) == set(SPECIAL_TOKENS)


TOKEN_CASES = [(f"question: {t}", f"<image>where is {t} the cat", "3", None) for t in TEMPLATE_SPECIAL_TOKENS] + [
    ("open answer", "<image>what colour?", "red<|im_end|>", "open"),
    ("math answer", "<image>What is 2+1?", "3 <|endoftext|>", "math"),
    ("answer in answer tags", "<image>what colour?", "<answer><|image_pad|></answer>", None),
    ("token at the very start", "<|im_start|>system", "3", None),
]


@pytest.mark.parametrize("name,question,answer,method", TOKEN_CASES, ids=[c[0] for c in TOKEN_CASES])
def test_special_tokens_in_text_fields_are_refused_naming_the_record(tmp_path, name, question, answer, method):
    line = _refused(tmp_path, _vlm(tmp_path, question, answer, method), "special_token", "special token")
    token = next(t for t in TEMPLATE_SPECIAL_TOKENS if t in question + answer)
    assert token in line and ("problem contains" if token in question else "solution contains") in line


def test_special_tokens_in_rec_json_and_table_sources(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (32, 32)).save(src / "ok.png")
    items = [{"id": "good", "image": "ok.png", "problem": "a", "solution": [1, 1, 9, 9]},
             {"id": "bad", "image": "ok.png", "problem": "the <|vision_start|> thing", "solution": [1, 1, 9, 9]}]
    (src / "refs.json").write_text(json.dumps(items))
    code, _, err = vlm_grpo(["prep", "--format", "rec-json", "--input", str(src / "refs.json"),
                             "--output", str(tmp_path / "o1"), "--quiet"])
    one_error(code, err, "refs.json", "record 'bad'", "<|vision_start|>")
    pq.write_table(pa.table({"id": ["good", "bad"], "image": [image_bytes(), image_bytes()],
                             "question": ["q", "q"], "answer": ["3", "<|box_start|>3"]}), src / "t.parquet")
    code, _, err = vlm_grpo(["prep", "--format", "parquet", "--input", str(src / "t.parquet"),
                             "--output", str(tmp_path / "o2"), "--quiet"])
    one_error(code, err, "t.parquet row 1", "record 'bad'", "<|box_start|>")


def test_text_that_only_resembles_a_token_is_kept(tmp_path):
    argv = _vlm(tmp_path, "<image>is <|image|> or <image_pad> or |im_start| a token?", "<|endoftext", "open")
    code, _, err = vlm_grpo([*argv, "--output", str(tmp_path / "out")])
    assert code == 0, err


def test_a_dataset_packed_without_the_check_is_refused_when_loaded(tmp_path):
    ds = write_dataset(tmp_path / "ds", [rec_record("r1", problem="the <|image_pad|> square")],
                       {"images/a.png": Image.new("RGB", (32, 24))})
    with pytest.raises(PrepError, match=r"records\.jsonl:1: record 'r1': problem contains '<\|image_pad\|>'"):
        load_packed(ds)


def test_sft_reasoning_text_with_special_tokens_is_refused(tmp_path):
    ds = write_dataset(tmp_path / "ds", [rec_record("r1", meta={"thinking": "look <|im_end|> here"})],
                       {"images/a.png": Image.new("RGB", (32, 24))})
    with pytest.raises(PrepError, match=r"record 'r1': meta\.thinking contains '<\|im_end\|>'"):
        load_packed(ds)


def test_task_templates_with_special_tokens_are_refused():
    from vlm_grpo.prompts import merged_templates

    with pytest.raises(ValueError, match=r"task_templates\['rec'\] contains '<\|im_end\|>'"):
        merged_templates({"rec": "{question}<|im_end|>"})


# --- image sizes the processors refuse ------------------------------------------------------

RATIO_CASES = [
    # name, image size, extra flags, refused?
    ("4000x12 (333:1)", (4000, 12), [], True),
    ("1x201", (1, 201), [], True),
    ("201x1", (201, 1), [], True),
    ("200x1 is the limit", (200, 1), [], False),
    ("2000x10", (2000, 10), [], False),
    ("3990x20, 199.5:1, becomes 893x4 under --max-pixels", (3990, 20), ["--max-pixels", "4000"], True),
    ("1x1", (1, 1), [], False),
]


@pytest.mark.parametrize("name,size,flags,refused", RATIO_CASES, ids=[c[0] for c in RATIO_CASES])
def test_aspect_ratios_the_processors_refuse(tmp_path, name, size, flags, refused):
    argv = [*_vlm(tmp_path, "<image>What is 2+1?", "3", "math", image="odd.png", size=size), *flags]
    if refused:
        line = _refused(tmp_path, argv, "image_aspect_ratio", f"over {MAX_ASPECT_RATIO}:1")
        assert re.search(r"image images/[0-9a-f]{64}\.png is \d+x\d+ \(aspect ratio \d+:1\)", line), line
    else:
        code, _, err = vlm_grpo([*argv, "--output", str(tmp_path / "out")])
        assert code == 0, err


def test_every_size_prep_accepts_is_one_the_processor_resizes(tiny_model_and_processor):
    from vlm_grpo.data import Resize

    resize = Resize.of(tiny_model_and_processor[1])
    for size in [(1, 1), (200, 1), (1, 200), (5600, 28), (3, 5)]:
        width, height = resize.model_size(*size)
        assert width >= resize.factor and height >= resize.factor
    with pytest.raises(ValueError, match="aspect ratio"):
        resize.model_size(201, 1)


# --- REC answers that look like a box but are not one --------------------------------------

BOX_CASES = [
    # name, answer (as the source has it), method, expected message
    ("3 numbers", "[1, 1, 5]", None, r"it has 3 values, a box has 4"),
    ("5 numbers", "[1, 1, 5, 5, 7]", None, r"it has 5 values"),
    ("NaN", "[NaN, 0, 5, 5]", None, r"not finite"),
    ("NaN in answer tags", "<answer>[1, NaN, 5, 5]</answer>", None, r"not finite"),
    ("non-numeric", '["a", 1, 5, 5]', None, r"not every value is a number"),
    ("null", "[null, 1, 5, 5]", None, r"not every value is a number"),
    ("bbox_2d of 2", '{"bbox_2d": [1, 2]}', None, r"it has 2 values"),
    ("list of bbox_2d objects", '[{"bbox_2d": "x"}]', None, r"not a list of 4 numbers"),
    ("a JSON list, not a string", [1, 2, 3], None, r"it has 3 values"),
    ("inverted", "[10, 10, 5, 5]", None, r"empty or inverted"),
    ("zero area", "[1, 1, 1, 9]", None, r"empty or inverted"),
    ("negative", "[-3, 1, 5, 5]", None, r"outside the 32x32 image"),
    ("1e308", "[0, 0, 1e308, 1e308]", None, r"outside the 32x32 image"),
    ("iou method, 3 numbers", "[1, 1, 5]", "iou", r"it has 3 values"),
]


@pytest.mark.parametrize("name,answer,method,message", BOX_CASES, ids=[c[0] for c in BOX_CASES])
def test_box_like_answers_that_are_not_boxes_are_errors(tmp_path, name, answer, method, message):
    argv = _vlm(tmp_path, "<image>the red square", answer, method)
    code, _, err = vlm_grpo([*argv, "--output", str(tmp_path / "out")])
    line = one_error(code, err, "d.jsonl:2")
    assert re.search(message, line), line
    assert "record 'bad'" in line or "rec answer" in line
    code, _, err = vlm_grpo([*argv, "--output", str(tmp_path / "out"), "--skip-invalid"])
    assert code == 0, err
    skipped = load_packed(tmp_path / "out").manifest["skipped"]
    assert set(skipped) <= {"invalid_solution", "box_outside_image"} and sum(skipped.values()) == 1


@pytest.mark.parametrize("answer,task", [("[1, 2]", "open"), ("4", "math"), ("[1, 1, 9, 9]", "rec")])
def test_answers_that_are_not_box_like_keep_their_task(tmp_path, answer, task):
    argv = _vlm(tmp_path, "<image>the interval?", answer)
    code, _, err = vlm_grpo([*argv, "--output", str(tmp_path / "out")])
    assert code == 0, err
    assert next(r for r in load_packed(tmp_path / "out") if r.id == "bad").task == task


# --- completions with absurd box numbers ---------------------------------------------------

ABSURD = ["<answer>[0, 0, 1e308, 1e308]</answer>", "<answer>[0, 0, 1e999, 5]</answer>",
          "<answer>[0, 0, 2e6, 10]</answer>", '<answer>{"bbox_2d": [0, 0, 1e300, 1]}</answer>',
          "<answer>[-1e307, 0, 5, 5]</answer>"]


@pytest.mark.parametrize("completion", ABSURD)
def test_absurd_boxes_do_not_parse(completion):
    sample = {"solution": [0, 0, 10, 10], "image_sizes": [[32, 32]], "model_image_sizes": [[28, 28]],
              "box_frame": "model_pixels"}
    verdict = rewards.judge("rec", completion, **sample)
    assert (verdict.parsed, verdict.parse_ok, verdict.score) == (None, False, 0.0)
    image = Image.new("RGB", (32, 32), (220, 30, 30))
    assert colour_match([completion], images=[[image]], problem=["the red square"],
                        box_frame=["original_pixels"]) == [0.0]


def test_eval_json_never_holds_infinity(tiny_dir, rec_data, tmp_path, monkeypatch):
    import vlm_grpo.evaluate as evaluate

    monkeypatch.setattr(evaluate, "_generate_batch", lambda m, p, batch, s: [ABSURD[0]] * len(batch))
    out = tmp_path / "eval"
    code, _, err = vlm_grpo(["eval", "--model", str(tiny_dir), "--data", str(rec_data), "--output", str(out),
                             "--max-samples", "4"])
    assert code == 0, err
    for name in ("predictions.jsonl", "metrics.json"):
        text = (out / name).read_text()
        assert "Infinity" not in text and "NaN" not in text
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["parse_ok"] for p in predictions] == [False] * 4


def test_json_text_writes_null_for_non_finite_numbers():
    from vlm_grpo.files import json_text

    text = json_text({"a": [float("inf"), -float("inf"), float("nan"), 1.5], "b": {"c": float("nan")}})
    assert json.loads(text) == {"a": [None, None, None, 1.5], "b": {"c": None}}


@pytest.mark.parametrize("method,hint", [(None, True), ("iou", False)])
def test_an_inferred_rec_task_says_how_to_name_another(tmp_path, method, hint):
    argv = _vlm(tmp_path, "<image>the roots?", "[1, 2, 3]", method)
    code, _, err = vlm_grpo([*argv, "--output", str(tmp_path / "out")])
    line = one_error(code, err, "d.jsonl:2", "it has 3 values")
    assert ("inferred from the answer" in line and "accu_reward_method" in line) == hint, line
