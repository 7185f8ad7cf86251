"""IoU and box frames: hand-computed tables and hypothesis properties."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.boxes import (
    BOX_FRAMES,
    first_size,
    from_original_pixels,
    iou,
    is_valid_box,
    resolve_frame,
    to_original_pixels,
)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
        ([0, 0, 10, 10], [5, 5, 15, 15], 25 / 175),
        ([0, 0, 10, 10], [2, 2, 8, 8], 36 / 100),  # contained
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),  # touching edges
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),  # disjoint
        ([0.5, 0.5, 2.5, 1.5], [1.5, 0.5, 3.5, 1.5], 1 / 3),
        ([-10, -10, 10, 10], [0, 0, 10, 10], 100 / 400),  # partially outside an image at (0, 0)
        ([0, 0, 10, 10], [0, 0, 0, 10], 0.0),  # degenerate: zero width
        ([0, 0, 10, 10], [5, 5, 5, 5], 0.0),  # degenerate: a point
        ([10, 10, 0, 0], [0, 0, 10, 10], 0.0),  # degenerate: x2 < x1
        ([0, 0, 10, 10], [0, 0, math.nan, 10], 0.0),
        ([0, 0, 10, 10], [0, 0, 10], 0.0),
    ],
)
def test_iou_table(a, b, expected):
    assert iou(a, b) == pytest.approx(expected)
    assert iou(b, a) == pytest.approx(expected)


@pytest.mark.parametrize(
    "box, frame, image_size, model_image_size, expected",
    [
        ([10, 20, 30, 40], "original_pixels", None, None, [10, 20, 30, 40]),
        ([10, 20, 30, 40], "original_pixels", [640, 480], [320, 240], [10, 20, 30, 40]),
        ([100, 50, 200, 100], "model_pixels", [640, 480], [320, 240], [200, 100, 400, 200]),
        ([28, 28, 56, 56], "model_pixels", [1000, 500], [1008, 504], [27.777, 27.777, 55.555, 55.555]),
        ([0, 0, 1000, 1000], "norm1000", [640, 480], None, [0, 0, 640, 480]),
        ([250, 500, 750, 1000], "norm1000", [640, 480], [320, 240], [160, 240, 480, 480]),
        ([-100, 0, 1100, 500], "norm1000", [100, 100], None, [-10, 0, 110, 50]),
    ],
)
def test_to_original_pixels(box, frame, image_size, model_image_size, expected):
    converted = to_original_pixels(box, frame, image_size, model_image_size)
    assert converted == pytest.approx(expected, abs=1e-3)
    back = from_original_pixels(converted, frame, image_size, model_image_size)
    assert back == pytest.approx(box)


@pytest.mark.parametrize(
    "frame, image_size, model_image_size, message",
    [
        ("model_pixels", [640, 480], None, "model_image_size"),
        ("model_pixels", None, [320, 240], "image_size"),
        ("norm1000", None, None, "image_size"),
        ("norm1000", [0, 480], None, "positive"),
        ("norm1000", [640], None, "width, height"),
        ("pixels", [640, 480], None, "unknown box_frame"),
    ],
)
def test_conversion_errors(frame, image_size, model_image_size, message):
    with pytest.raises(ValueError, match=message):
        to_original_pixels([0, 0, 1, 1], frame, image_size, model_image_size)


def test_frames_and_helpers():
    assert BOX_FRAMES == ("model_pixels", "norm1000", "original_pixels")
    assert resolve_frame(None, [1, 1]) == "model_pixels"
    assert resolve_frame(None, None) == "original_pixels"
    assert resolve_frame("norm1000", [1, 1]) == "norm1000"
    with pytest.raises(ValueError, match="unknown box_frame"):
        resolve_frame("norm", None)
    assert first_size([[3, 4], [5, 6]]) == [3, 4]
    assert first_size([3, 4]) == [3, 4]
    assert first_size([]) is None and first_size(None) is None
    assert is_valid_box([0, 0, 1, 1]) and not is_valid_box([0, 0, 1, True]) and not is_valid_box(None)


coordinate = st.floats(min_value=-2000, max_value=2000, allow_nan=False)
size = st.integers(min_value=1, max_value=4000)


@st.composite
def boxes(draw):
    x1, y1 = draw(coordinate), draw(coordinate)
    width = draw(st.floats(min_value=0.5, max_value=2000))
    height = draw(st.floats(min_value=0.5, max_value=2000))
    return [x1, y1, x1 + width, y1 + height]


@settings(max_examples=200, deadline=None)
@given(boxes(), boxes())
def test_iou_symmetric_and_bounded(a, b):
    value = iou(a, b)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(iou(b, a))


@settings(max_examples=200, deadline=None)
@given(boxes())
def test_iou_identical_is_one(a):
    assert iou(a, a) == pytest.approx(1.0)


@settings(max_examples=200, deadline=None)
@given(boxes(), st.floats(min_value=0, max_value=1000), st.floats(min_value=0, max_value=1000))
def test_iou_disjoint_is_zero(a, gap_x, gap_y):
    # shift b entirely to the right of (or below) a
    b = [a[2] + gap_x, a[1] + gap_y, a[2] + gap_x + 10, a[3] + gap_y]
    assert iou(a, b) == 0.0


@settings(max_examples=200, deadline=None)
@given(boxes(), boxes(), st.sampled_from(BOX_FRAMES), size, size, size, size)
def test_iou_invariant_to_frame_round_trip(a, b, frame, w, h, mw, mh):
    image_size, model_size = [w, h], [mw, mh]
    a_frame = from_original_pixels(a, frame, image_size, model_size)
    a_back = to_original_pixels(a_frame, frame, image_size, model_size)
    assert a_back == pytest.approx(a, rel=1e-9, abs=1e-6)
    assert iou(a_back, b) == pytest.approx(iou(a, b), abs=1e-9)


# Hostile boxes, the kind a model or a data file can produce. Each example says which kind it is and
# the test counts them, so the coverage it claims is the coverage it ran.
FINITE = st.floats(allow_nan=False, allow_infinity=False)
HOSTILE_KINDS = {
    "ordinary": boxes(),
    "degenerate": st.tuples(coordinate, coordinate, st.floats(min_value=-2000, max_value=0)).map(
        lambda t: [t[0], t[1], t[0] + t[2], t[1] + 10] if t[2] < 0 else [t[0], t[1], t[0], t[1] + 10]),
    "nan or inf": st.lists(st.one_of(FINITE, st.sampled_from([math.nan, math.inf, -math.inf])), min_size=4,
                           max_size=4).filter(lambda v: not all(math.isfinite(x) for x in v)),
    "huge": st.lists(st.floats(min_value=1e150, max_value=1.7e308), min_size=2, max_size=2).map(
        lambda v: [-v[0], -v[1], v[0], v[1]]),
    "tiny": st.floats(min_value=1e-300, max_value=1e-150).map(lambda e: [0.0, 0.0, e, e]),
    "any floats": st.lists(FINITE, min_size=4, max_size=4),
    "wrong length": st.lists(FINITE, max_size=8).filter(lambda v: len(v) != 4),
    "not numbers": st.lists(st.one_of(st.booleans(), st.text(max_size=3), st.none()), min_size=4, max_size=4),
}


@st.composite
def hostile_box(draw):
    kind = draw(st.sampled_from(sorted(HOSTILE_KINDS)))
    return kind, draw(HOSTILE_KINDS[kind])


def test_iou_on_hostile_boxes_is_bounded_and_every_kind_is_generated():
    seen: dict[str, int] = dict.fromkeys(HOSTILE_KINDS, 0)

    @settings(max_examples=400, deadline=None, derandomize=True, database=None)
    @given(hostile_box(), hostile_box())
    def check(first, second):
        (kind_a, a), (_, b) = first, second
        seen[kind_a] += 1
        value = iou(a, b)
        assert isinstance(value, float) and 0.0 <= value <= 1.0 and value == iou(b, a)
        if not (is_valid_box(a) and is_valid_box(b)):
            assert value == 0.0
        if kind_a in ("degenerate", "nan or inf", "wrong length", "not numbers"):
            assert not is_valid_box(a) and value == 0.0
        self_overlap = iou(a, a)
        # the area overflows (huge) or underflows (tiny) to inf or 0: scored 0, never NaN
        if is_valid_box(a) and 0.0 < (a[2] - a[0]) * (a[3] - a[1]) < math.inf:
            assert self_overlap == pytest.approx(1.0)
        else:
            assert self_overlap == 0.0

    check()
    assert all(count >= 10 for count in seen.values()), seen
