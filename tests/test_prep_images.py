"""Image handling: RGB conversion, decompression bombs, downscaling, content addressing, boxes."""

from __future__ import annotations

import doctest
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from prep_helpers import image_bytes, make_image

from data_prep import boxes
from data_prep.images import decode, fit_max_pixels, store_image, to_rgb
from data_prep.packed import PrepError


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


CONVERSIONS = [
    # name, image factory, expected RGB pixel at (0, 0)
    ("RGBA transparent -> white", lambda: Image.new("RGBA", (4, 4), (255, 0, 0, 0)), (255, 255, 255)),
    ("RGBA opaque", lambda: Image.new("RGBA", (4, 4), (255, 0, 0, 255)), (255, 0, 0)),
    ("RGBA half", lambda: Image.new("RGBA", (4, 4), (0, 0, 0, 128)), (127, 127, 127)),
    ("LA transparent", lambda: Image.new("LA", (4, 4), (0, 0)), (255, 255, 255)),
    ("L", lambda: Image.new("L", (4, 4), 77), (77, 77, 77)),
    ("1", lambda: Image.new("1", (4, 4), 1), (255, 255, 255)),
    ("CMYK", lambda: Image.new("CMYK", (4, 4), (0, 255, 255, 0)), (255, 0, 0)),
    ("P", lambda: Image.new("RGB", (4, 4), (0, 0, 255)).convert("P"), (0, 0, 255)),
    ("I;16 max", lambda: Image.new("I;16", (4, 4), 65535), (255, 255, 255)),
    ("I;16 mid", lambda: Image.new("I;16", (4, 4), 32896), (128, 128, 128)),
    ("I 32-bit", lambda: Image.new("I", (4, 4), 257 * 10), (10, 10, 10)),
    ("F", lambda: Image.new("F", (4, 4), 300.0), (255, 255, 255)),
]


@pytest.mark.parametrize("name,factory,pixel", CONVERSIONS, ids=[c[0] for c in CONVERSIONS])
def test_to_rgb(name, factory, pixel):
    out = to_rgb(factory())
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == pixel


def test_paletted_transparency_composited_on_white():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0] + [0, 0, 0] * 255)
    image.info["transparency"] = 0
    assert to_rgb(image).getpixel((0, 0)) == (255, 255, 255)


def test_rgb_jpeg_and_png_are_stored_byte_for_byte(tmp_path):
    (tmp_path / "out").mkdir()
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png")):
        src = make_image(tmp_path / f"src.{ext}", (40, 30), fmt=fmt)
        stored = store_image(src, tmp_path / "out")
        assert stored.name.endswith(f".{ext}") and stored.name.startswith("images/")
        assert (tmp_path / "out" / stored.name.split("/")[1]).read_bytes() == src.read_bytes()
        assert stored.size == stored.original_size == (40, 30)


@pytest.mark.parametrize(
    "mode,fmt,ext",
    [("CMYK", "JPEG", "jpg"), ("RGBA", "PNG", "png"), ("L", "JPEG", "jpg"), ("P", "GIF", "png"), ("RGB", "BMP", "png")],
)
def test_non_rgb_sources_are_reencoded_as_rgb(tmp_path, mode, fmt, ext):
    src = make_image(tmp_path / f"src.{fmt.lower()}", (20, 10), color=1 if mode == "P" else None, mode=mode, fmt=fmt)
    (tmp_path / "out").mkdir()
    stored = store_image(src, tmp_path / "out")
    assert stored.name.endswith(f".{ext}")
    with Image.open(tmp_path / "out" / stored.name.split("/")[1]) as out:
        assert out.mode == "RGB" and out.size == (20, 10)


def test_identical_content_is_stored_once(tmp_path):
    (tmp_path / "out").mkdir()
    a = store_image(make_image(tmp_path / "a.png"), tmp_path / "out")
    b = store_image(make_image(tmp_path / "b.png"), tmp_path / "out")
    c = store_image((tmp_path / "a.png").read_bytes(), tmp_path / "out")
    assert a.name == b.name == c.name
    assert len(list((tmp_path / "out").iterdir())) == 1


def test_downscale_respects_cap(tmp_path):
    (tmp_path / "out").mkdir()
    stored = store_image(make_image(tmp_path / "a.jpg", (640, 480), fmt="JPEG"), tmp_path / "out", max_pixels=10_000)
    assert stored.original_size == (640, 480)
    width, height = stored.size
    assert width * height <= 10_000 and abs(width / height - 640 / 480) < 0.05
    with Image.open(tmp_path / "out" / stored.name.split("/")[1]) as out:
        assert out.size == stored.size


@pytest.mark.parametrize(
    "size,cap,expected",
    [((100, 50), None, (100, 50)), ((100, 50), 5000, (100, 50)), ((100, 50), 1250, (50, 25)), ((3, 1000), 10, (1, 10))],
)
def test_fit_max_pixels(size, cap, expected):
    assert fit_max_pixels(*size, cap) == expected


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000), st.integers(1, 4_000_000))
def test_fit_max_pixels_property(width, height, cap):
    new_w, new_h = fit_max_pixels(width, height, cap)
    assert new_w >= 1 and new_h >= 1
    assert new_w <= width and new_h <= height
    if width * height <= cap:
        assert (new_w, new_h) == (width, height)
    elif cap >= 1:
        assert new_w * new_h <= max(cap, new_w, new_h)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [40, 80], ids=["over limit (warning level)", "over 2x limit (error level)"])
def test_decompression_bomb_is_a_clear_rejection(tmp_path, monkeypatch, side):
    src = make_image(tmp_path / "big.png", (side, side))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(PrepError, match="decompression-bomb limit") as info:
        decode(src)
    assert info.value.reason == "decompression_bomb"


@pytest.mark.parametrize(
    "payload,reason,text",
    [
        (b"definitely not an image", "corrupt_image", "not a readable image"),
        (image_bytes((64, 64), fmt="JPEG")[:300], "corrupt_image", "corrupt or truncated"),
        (image_bytes((64, 64), fmt="PNG")[:60], "corrupt_image", "image"),
    ],
    ids=["garbage", "truncated jpeg", "truncated png"],
)
def test_corrupt_images(payload, reason, text):
    with pytest.raises(PrepError, match=text) as info:
        decode(payload)
    assert info.value.reason == reason


def test_missing_image(tmp_path):
    with pytest.raises(PrepError, match="not found") as info:
        decode(tmp_path / "nope.png")
    assert info.value.reason == "missing_image"


def test_sixteen_bit_png_file(tmp_path):
    array = np.full((6, 8), 65535, dtype=np.uint16)
    Image.fromarray(array).save(tmp_path / "deep.png")
    (tmp_path / "out").mkdir()
    stored = store_image(tmp_path / "deep.png", tmp_path / "out")
    with Image.open(tmp_path / "out" / stored.name.split("/")[1]) as out:
        assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)


def test_box_helpers_doctests():
    assert doctest.testmod(boxes).failed == 0


@pytest.mark.parametrize(
    "box,from_size,to_size,expected",
    [
        ([10, 20, 30, 40], (100, 100), (100, 100), [10, 20, 30, 40]),
        ([0, 0, 640, 480], (640, 480), (320, 240), [0.0, 0.0, 320.0, 240.0]),
        ([1, 1, 3, 3], (3, 3), (2, 2), [0.67, 0.67, 2.0, 2.0]),
    ],
)
def test_scale_box(box, from_size, to_size, expected):
    assert boxes.scale_box(box, from_size, to_size) == expected
