"""The zoom_in tool: geometry, bad calls, limits; tool specs; the families' tool template and parser; tool_bonus."""

from __future__ import annotations

import math
import textwrap

import pytest
from PIL import Image

import rewards
from rewards.tool_rewards import tool_calls
from vlm_grpo.tools import ToolError, ZoomEnvironment, ZoomLimits, resolve_tools
from vlm_grpo.tools.zoom import crop_region, parse_box, upscaled_size

LIMITS = ZoomLimits(max_calls=2, max_image_tokens=64 + 2 * 16, min_side=28, factor=28, min_pixels=56 * 56,
                    max_pixels=112 * 112)


def _env(limits=LIMITS, frame="model_pixels", size=(448, 448), model_size=(112, 112)):
    image = Image.new("RGB", size, (200, 200, 200))
    image.paste((255, 0, 0), (200, 200, 240, 240))
    env = ZoomEnvironment(limits)
    env.reset(images=[image], image_sizes=[list(size)], model_image_sizes=[list(model_size)], box_frame=frame,
              solution={"answer": "red"}, id="x")
    return env


@pytest.mark.parametrize("name, bbox, message", [
    ("a string", "left", "four numbers"),
    ("three numbers", [1, 2, 3], "four numbers"),
    ("an object", {"x1": 1}, "a list"),
    ("a NaN", [1, 2, math.nan, 4], "four numbers"),
    ("booleans", [True, 0, 5, 5], "four numbers"),
    ("numbers as text", ["1", "2", "30", "40"], "four numbers"),
    ("inverted", [50, 50, 10, 10], "empty or inverted"),
    ("empty", [10, 10, 10, 40], "empty or inverted"),
    ("outside the image", [200, 200, 300, 300], "outside the image"),
])
def test_bad_calls_raise_a_tool_error_the_model_reads(name, bbox, message):
    env = _env()
    with pytest.raises(ToolError, match=message):
        env.zoom_in(bbox)
    assert env.calls[-1].error and not env.calls[-1].ok


def test_a_good_call_crops_the_original_and_upscales_it():
    env = _env()
    content = env.zoom_in([50, 50, 60, 60], label="dot")  # model pixels of the 112 px view: 200..240 originally
    image = content[0]["image"]
    assert content[0]["type"] == "image" and content[1]["type"] == "text"
    assert env.calls[0].region == [200, 200, 240, 240] and env.calls[0].label == "dot"
    assert image.size == (112, 112)  # upscaled to max_pixels
    assert image.getpixel((56, 56)) == (255, 0, 0)  # the red square fills it
    assert env.calls[0].image_tokens == 16


def test_norm1000_and_original_frames():
    env = _env(frame="norm1000")
    env.zoom_in([446, 446, 536, 536])
    assert env.calls[0].region == [199, 199, 240, 240]  # 199.8..240.1 in original pixels
    env = _env(frame="original_pixels")
    env.zoom_in([200, 200, 240, 240])
    assert env.calls[0].region == [200, 200, 240, 240]


def test_limits_on_calls_and_image_tokens():
    env = _env()
    env.zoom_in([0, 0, 56, 56])
    env.zoom_in([56, 56, 112, 112])
    with pytest.raises(ToolError, match="no calls left"):
        env.zoom_in([0, 0, 56, 56])
    budget = ZoomLimits(max_calls=5, max_image_tokens=16 + 16 + 4, min_side=28, factor=28, min_pixels=56 * 56,
                        max_pixels=112 * 112)
    env = _env(budget)  # the prompt's image is 16 tokens at 112 px
    env.zoom_in([0, 0, 56, 56])  # 16 tokens: 32 used
    small = env.zoom_in([0, 0, 56, 56])[0]["image"]  # shrunk to fit the 4 tokens left
    assert env.calls[-1].image_tokens == 4 and small.size[0] < 112  # the processor makes it 56 x 56
    with pytest.raises(ToolError, match="budget"):
        env.zoom_in([0, 0, 56, 56])
    env.reset(images=[Image.new("RGB", (448, 448))], image_sizes=[[448, 448]], model_image_sizes=[[112, 112]],
              box_frame="model_pixels")
    assert env.calls == [] and env.zoom_in([0, 0, 56, 56])  # reset: a new rollout, a fresh budget


@pytest.mark.parametrize("box, size, expected", [
    ([10, 10, 20, 20], [100, 100], [1, 1, 29, 29]),  # grown to min_side around its centre
    ([-5, 90, 30, 130], [100, 100], [0, 72, 30, 100]),  # cut to the image, then grown upwards
    ([0, 0, 100, 100], [100, 100], [0, 0, 100, 100]),
    ([10, 10, 20, 20], [20, 20], [0, 0, 20, 20]),  # an image smaller than min_side
])
def test_crop_region(box, size, expected):
    assert crop_region(box, size, 28) == expected


def test_parse_box_and_upscaled_size():
    assert parse_box((1, 2.5, 3, 4)) == [1.0, 2.5, 3.0, 4.0]
    assert upscaled_size(28, 56, LIMITS, budget=100) == (79, 158)  # area 112 * 112, aspect kept
    assert upscaled_size(28, 28, LIMITS, budget=0) is None


USER_TOOLS = textwrap.dedent('''
    def measure(bbox_2d: list[float]) -> str:
        """Measure a box.

        Args:
            bbox_2d: the box.
        """
        return "wide"

    class Counter:
        def reset(self, **row):
            self.n = 0

        def count(self, what: str) -> str:
            """Count things.

            Args:
                what: what to count.
            """
            return "3"

    class NoReset:
        pass
''')


def test_tool_specs(tmp_path, tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    path = tmp_path / "my_tools.py"
    path.write_text(USER_TOOLS)
    assert resolve_tools(None, processor) is None
    zoom = resolve_tools(["zoom_in"], processor, max_tool_calls=2)
    assert zoom.limits.max_calls == 2 and "zoom" in zoom.templates
    assert [t.__name__ for t in zoom.schemas()] == ["zoom_in"]
    mixed = resolve_tools([f"{path}:Counter", f"{path}:measure"], processor)
    assert mixed.functions[0].__name__ == "measure" and [t.__name__ for t in mixed.schemas()] == ["measure", "count"]
    for specs, message in ((["nope"], "built-in"), ([f"{path}:missing"], "no 'missing'"),
                           ([f"{path}:NoReset"], "without a reset"), (["zoom_in", f"{path}:Counter"], "takes one")):
        with pytest.raises(ValueError, match=message):
            resolve_tools(specs, processor)


def _conversation(image, crop):
    call = {"type": "function", "function": {"name": "zoom_in", "arguments": {"bbox_2d": [1, 2, 3, 4]}}}
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "name": "zoom_in", "content": [{"type": "image", "image": crop},
                                                            {"type": "text", "text": "zoom_in 0 0 9 9"}]}]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl", "qwen3_vl"])
def test_family_tool_templates(family):
    from trl.chat_template_utils import is_chat_template_prefix_preserving, parse_response, supports_tool_calling

    from vlm_grpo.families import get_family
    from vlm_grpo.tiny import TinySpec, build_processor, build_tokenizer
    from vlm_grpo.tools import prepare_processor

    spec = get_family(family)
    processor = build_processor(build_tokenizer(TinySpec(), spec), TinySpec(), spec)
    plain = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
             [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
              {"role": "assistant", "content": "<think>a</think><answer>b</answer>"}]]
    before = [processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in plain]
    assert not supports_tool_calling(processor)
    prepare_processor(processor, spec)
    assert supports_tool_calling(processor) and is_chat_template_prefix_preserving(processor)
    # without tools, the tool template renders what the family's own template renders
    assert [processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in plain] == before
    env = ZoomEnvironment()
    conversation = _conversation(Image.new("RGB", (112, 112)), Image.new("RGB", (112, 112)))
    text = processor.apply_chat_template(conversation, tools=[env.zoom_in], add_generation_prompt=True, tokenize=False)
    assert '"name": "zoom_in"' in text and "<tools>" in text
    assert text.count("<|image_pad|>") == 2  # the crop in the tool turn is rendered (TRL issue 5663)
    inputs = processor.apply_chat_template(conversation, tools=[env.zoom_in], add_generation_prompt=True,
                                           tokenize=True, return_dict=True)
    assert len(inputs["image_grid_thw"]) == 2
    tokenizer = processor.tokenizer
    reply = '<think>look</think><tool_call>\n{"name": "zoom_in", "arguments": {"bbox_2d": [1, 2, 3, 4]}}\n</tool_call>'
    parsed = parse_response(tokenizer, tokenizer(reply + "<|im_end|>")["input_ids"],
                            prefix=tokenizer("<|im_start|>assistant\n")["input_ids"], tools=[env.zoom_in])
    assert parsed["content"] == "<think>look</think>"  # the thinking stays in the content the format reward reads
    assert parsed["tool_calls"][0]["function"] == {"name": "zoom_in", "arguments": {"bbox_2d": [1, 2, 3, 4]}}


def _called(box_ok: bool, answer: str):
    response = [{"type": "image"}] if box_ok else "{'error': 'zoom_in: bbox_2d is inverted'}"
    return [{"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "zoom_in", "arguments": {"bbox_2d": [0, 0, 9, 9]}}}]},
            {"role": "tool", "name": "zoom_in", "content": response},
            {"role": "assistant", "content": f"<think>a</think><answer>{answer}</answer>"}]


@pytest.mark.parametrize("name, completion, accuracy, bonus", [
    ("zoomed, right", _called(True, "red"), 1.0, 1.0),
    ("zoomed, wrong", _called(True, "blue"), 0.0, 0.0),
    ("failed call, right", _called(False, "red"), 1.0, 0.0),
    ("no call, right", [{"role": "assistant", "content": "<think>a</think><answer>red</answer>"}], 1.0, 0.0),
    ("plain text, right", "<think>a</think><answer>Red.</answer>", 1.0, 0.0),
    ("call without response", _called(True, "red")[:1], 0.0, 0.0),
])
def test_accuracy_reads_the_final_answer_and_tool_bonus_needs_a_good_call(name, completion, accuracy, bonus):
    columns = {"task": ["zoom"], "solution": [{"answer": "red", "box": [0, 0, 9, 9]}]}
    assert rewards.get("accuracy")([completion], **columns) == [accuracy]
    assert rewards.get("tool_bonus")([completion], **columns) == [bonus]
    assert rewards.get("tool_bonus")([completion], task=["nope"], solution=["x"]) == [None]


def test_tool_calls_of_a_completion():
    assert tool_calls("text") == [] and tool_calls([{"role": "assistant", "content": "x"}]) == []
    calls = tool_calls(_called(False, "red"))
    assert calls == [{"name": "zoom_in", "arguments": {"bbox_2d": [0, 0, 9, 9]}, "ok": False,
                      "error": "{'error': 'zoom_in: bbox_2d is inverted'}"}]
