"""The example visual reward (rewards/examples/colour_match.py) on synthetic shapes."""

from pathlib import Path

import pytest
from PIL import Image, ImageDraw

import rewards
from rewards.examples.colour_match import colour_match, colour_word


@pytest.fixture(scope="module")
def shapes():
    image = Image.new("RGB", (400, 300), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((40, 40, 160, 160), fill=(220, 30, 30))  # red disc
    draw.rectangle((240, 100, 360, 260), fill=(30, 70, 220))  # blue rectangle
    return image


def run(shapes, answer, problem="the red circle", **sample):
    columns = {"images": [[shapes]], "problem": [problem], "image_sizes": [[[400, 300]]]}
    columns.update({key: [value] for key, value in sample.items()})
    return colour_match([f"<think>t</think><answer>{answer}</answer>"], **columns)[0]


def test_tight_box_scores_high(shapes):
    assert run(shapes, [40, 40, 160, 160], box_frame="original_pixels") == pytest.approx(0.88, abs=0.03)
    assert run(shapes, [240, 100, 360, 260], problem="the blue box", box_frame="original_pixels") > 0.95


@pytest.mark.parametrize(
    "answer, frame, model_size",
    [
        ([40, 40, 160, 160], "original_pixels", None),
        ([20, 20, 80, 80], "model_pixels", [[200, 150]]),
        ([100, 133.3, 400, 533.3], "norm1000", None),
    ],
)
def test_every_frame_gives_the_same_score(shapes, answer, frame, model_size):
    extra = {"model_image_sizes": model_size} if model_size else {}
    assert run(shapes, answer, box_frame=frame, **extra) == pytest.approx(0.88, abs=0.03)


def test_wrong_object_small_box_and_huge_box_score_low(shapes):
    frame = {"box_frame": "original_pixels"}
    assert run(shapes, [240, 100, 360, 260], **frame) == 0.0  # the blue shape
    assert run(shapes, [90, 90, 110, 110], **frame) < 0.1  # inside the disc, but tiny
    assert run(shapes, [0, 0, 400, 300], **frame) < 0.3  # the whole image
    assert run(shapes, [-100, -100, 1000, 1000], **frame) < 0.3  # beyond the image


def test_not_applicable_and_malformed(shapes):
    assert run(shapes, [40, 40, 160, 160], problem="the circle") is None  # no colour word
    assert colour_match(["<answer>[1, 2, 3, 4]</answer>"], images=[[]], problem=["red"]) == [None]
    assert run(shapes, "the red one", box_frame="original_pixels") == 0.0
    assert run(shapes, [160, 160, 40, 40], box_frame="original_pixels") == 0.0
    with pytest.raises(TypeError, match="PIL"):
        colour_match(["<answer>[1, 2, 3, 4]</answer>"], images=[["img.png"]], problem=["red"])


def test_colour_words():
    assert colour_word("The GREEN triangle") == "green"
    assert colour_word("a grey square") == "gray"
    assert colour_word("reddish") is None
    assert colour_word(None) is None


def test_loadable_both_ways():
    assert rewards.load("rewards.examples.colour_match:colour_match") is colour_match
    path = Path(rewards.__file__).parent / "examples" / "colour_match.py"
    assert rewards.load(f"{path}:colour_match").__name__ == "colour_match"


def test_scores_rows_as_the_trainer_builds_them(tiny_dir, rec_data):
    """Columns from the real row builder (as TRL hands them over), not by hand: the true box scores, a wrong one not."""
    from vlm_grpo.data import build_rows
    from vlm_grpo.modeling import load_processor

    rows = build_rows([str(rec_data)], load_processor(str(tiny_dir)), box_frame="original_pixels").to_hf()[:8]
    columns = {key: values for key, values in rows.items() if key != "prompt"}
    right = [f"<think>t</think><answer>{box}</answer>" for box in columns["solution"]]
    wrong = ["<think>t</think><answer>[0, 0, 3, 3]</answer>"] * len(right)
    scores, misses = colour_match(right, **columns), colour_match(wrong, **columns)
    assert None not in scores and sum(scores) / len(scores) > 0.5
    assert max(misses) < 0.2
