"""The synthetic generator: determinism, unique referents, tight boxes, grid, answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_prep import synthetic
from data_prep.packed import PrepError, Record, validate_record
from data_prep.synthetic import COLORS, SyntheticConfig, generate, make_sample, tile_color


def _pixels(item):
    return np.asarray(item.images[0])


def test_deterministic_and_prefix_stable():
    a = generate("rec", 8, seed=4, background="noise")
    b = generate("rec", 12, seed=4, background="noise")
    assert [(x.id, x.problem, x.solution) for x in a] == [(x.id, x.problem, x.solution) for x in b[:8]]
    assert all(np.array_equal(_pixels(x), _pixels(y)) for x, y in zip(a, b))
    c = generate("rec", 8, seed=5)
    assert [x.solution for x in a] != [x.solution for x in c]


def _as_record(item):
    size = list(item.images[0].size)
    return Record(item.id, item.task, ["images/x.png"], [size], item.problem, item.solution, item.meta)


@pytest.mark.parametrize("task", synthetic.TASKS)
def test_samples_are_valid_records(task):
    for item in generate(task, 30, seed=1):
        validate_record(_as_record(item), where=item.origin)
        side = 112 * (4 if task == "zoom" else 1)  # zoom: drawn at 112 px, enlarged zoom_scale (4) times
        assert item.images[0].mode == "RGB" and item.images[0].size == (side, side)


def _check_rec(item, config):
    color, kind = item.problem.removeprefix("the ").split(" ")
    shapes = item.meta["shapes"]
    assert [(s["color"], s["kind"]) for s in shapes].count((color, kind)) == 1  # unique referent
    x1, y1, x2, y2 = item.solution
    width, height = config.image_size
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    # tight: the referent's colour touches all four edges of the box and nothing of it lies outside
    mask = np.all(_pixels(item) == COLORS[color], axis=-1)
    others = [s["box"] for s in shapes if s["color"] == color and s["box"] != item.solution]
    for bx1, by1, bx2, by2 in others:
        mask[by1:by2, bx1:bx2] = False
    inside = mask[y1:y2, x1:x2]
    assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
    assert mask.sum() == inside.sum()


def test_rec_boxes_are_tight_and_referents_unique():
    config = SyntheticConfig(num_shapes=(3, 6), colors=("red", "blue"), shape_kinds=("circle", "triangle"))
    for item in generate("rec", 40, seed=2, config=config):
        _check_rec(item, config)


@pytest.mark.parametrize("style,pattern", [("color", "the {c} shape"), ("kind", "the {k}")])
def test_referring_styles_keep_the_referent_unique(style, pattern):
    for item in generate("rec", 30, seed=1, num_shapes=(3, 5), referring=style):
        shapes = item.meta["shapes"]
        target = shapes[0]
        assert item.problem == pattern.format(c=target["color"], k=target["kind"])
        key = "color" if style == "color" else "kind"
        assert [s[key] for s in shapes].count(target[key]) == 1
        assert item.solution == target["box"]


def test_grid_snaps_shapes_to_cells():
    config = SyntheticConfig(image_size=(112, 84), grid=28, num_shapes=(4, 8), size_range=(10, 40))
    for item in generate("rec", 20, seed=0, config=config):
        for shape in item.meta["shapes"]:
            x1, y1, x2, y2 = shape["box"]
            assert x1 // 28 == (x2 - 1) // 28 and y1 // 28 == (y2 - 1) // 28  # one cell each
            assert abs((x1 + x2) / 2 % 28 - 14) <= 1.5 and abs((y1 + y2) / 2 % 28 - 14) <= 1.5
        cells = [(s["box"][0] // 28, s["box"][1] // 28) for s in item.meta["shapes"]]
        assert len(cells) == len(set(cells))


def test_count_answers_match_the_shapes():
    seen = set()
    for item in generate("count", 40, seed=3, num_shapes=(2, 6)):
        color = item.problem.split()[2]
        assert item.problem == f"How many {color} shapes are there?"
        assert item.solution == sum(s["color"] == color for s in item.meta["shapes"])
        seen.add(item.solution)
    assert 0 in seen and len(seen) >= 4


def test_math_answers_match_the_expression():
    for item in generate("math", 30, seed=0, operators=("+", "-", "*"), max_operand=12):
        a, op, b = item.meta["expression"].split()
        assert item.solution == str({"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op])
        assert int(item.solution) >= 0
        assert (_pixels(item) < 100).any()  # text was drawn


def test_noise_background_differs_from_plain():
    plain = make_sample("rec", 0, 0, SyntheticConfig(background="plain"))
    noisy = make_sample("rec", 0, 0, SyntheticConfig(background="noise"))
    assert plain.solution == noisy.solution
    assert np.unique(_pixels(noisy).reshape(-1, 3), axis=0).shape[0] > 50


def test_tiles_background_codes_each_cell_position():
    config = SyntheticConfig(image_size=(112, 84), grid=28, num_shapes=(1, 3), size_range=(24, 24), background="tiles")
    for item in generate("rec", 20, seed=6, config=config):
        _check_rec(item, config)  # shapes never take a tile's colour: the referent's pixels stay exact
        pixels = _pixels(item)
        occupied = {(s["box"][0] // 28, s["box"][1] // 28) for s in item.meta["shapes"]}
        for row in range(3):
            for col in range(4):
                corner = tuple(pixels[row * 28, col * 28])  # a shape leaves a 2 px margin, so corners are tile
                assert corner == tile_color(col, row, 4, 3)
                if (col, row) not in occupied:
                    assert (pixels[row * 28:(row + 1) * 28, col * 28:(col + 1) * 28] == corner).all()
    colours = {tile_color(c, r, 4, 3) for c in range(4) for r in range(3)}
    assert len(colours) == 12  # every cell has its own colour
    assert tile_color(0, 0, 4, 3)[0] < tile_color(3, 0, 4, 3)[0] and tile_color(0, 0, 4, 3)[1] < tile_color(0, 2, 4, 3)[1]


def test_tiles_background_keeps_the_shapes_and_answers():
    plain = make_sample("rec", 3, 0, SyntheticConfig(grid=28, size_range=(24, 24)))
    tiles = make_sample("rec", 3, 0, SyntheticConfig(grid=28, size_range=(24, 24), background="tiles"))
    assert (plain.problem, plain.solution, plain.meta) == (tiles.problem, tiles.solution, tiles.meta)


def test_cell_answer_is_the_grid_cell_of_the_referent_whatever_its_size():
    config = SyntheticConfig(image_size=(112, 84), grid=28, num_shapes=(1, 3), size_range=(8, 24), answer_box="cell")
    sizes = set()
    for item in generate("rec", 30, seed=2, config=config):
        tight = item.meta["shapes"][0]["box"]
        x1, y1, x2, y2 = item.solution
        assert (x2 - x1, y2 - y1) == (28, 28) and x1 % 28 == 0 and y1 % 28 == 0
        assert x1 <= tight[0] and y1 <= tight[1] and tight[2] <= x2 and tight[3] <= y2  # the shape lies inside its cell
        sizes.add(tight[2] - tight[0])
        tight_item = make_sample("rec", int(item.id[-6:]), 2, SyntheticConfig(**{**config.__dict__, "answer_box": "tight"}))
        assert tight_item.solution == tight and np.array_equal(_pixels(tight_item), _pixels(item))  # only the answer differs
    assert len(sizes) > 5


@pytest.mark.parametrize(
    "overrides",
    [{"image_size": 8}, {"background": "tiles"}, {"num_shapes": (3, 2)}, {"colors": ("pink",)}, {"shape_kinds": ("hexagon",)},
     {"grid": 200}, {"background": "stripes"}, {"referring": "size"}, {"size_range": (1, 4)}, {"operators": ("/",)},
     {"answer_box": "cell"}, {"answer_box": "center"}],
)
def test_config_is_checked(overrides):
    with pytest.raises(PrepError, match="synthetic config"):
        SyntheticConfig(**overrides)


def test_unknown_task():
    with pytest.raises(PrepError, match="unknown synthetic task 'ocr'"):
        generate("ocr", 1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.tuples(st.integers(32, 160), st.integers(32, 160)),
    shapes=st.integers(1, 6),
    grid=st.sampled_from([None, 16, 28]),
    seed=st.integers(0, 10_000),
)
def test_rec_property(size, shapes, grid, seed):
    config = SyntheticConfig(image_size=size, num_shapes=(1, shapes), grid=grid, size_range=(6, 30))
    item = make_sample("rec", seed % 7, seed, config)
    _check_rec(item, config)
    validate_record(_as_record(item), where=item.origin)


def test_tiles_through_the_prep_command(tmp_path):
    from prep_helpers import run_cli

    from data_prep.packed import load_packed

    base = ["--format", "synthetic", "--task", "rec", "--num", "6", "--grid", "28", "--size-range", "24-24"]
    code, _, err = run_cli([*base, "--background", "tiles", "--output", str(tmp_path / "d")])
    assert code == 0, err
    data = load_packed(tmp_path / "d")
    assert data.manifest["settings"]["synthetic"]["background"] == "tiles"
    assert np.asarray(data.open_image(data.records[0]))[0, 0].tolist() == list(tile_color(0, 0, 4, 4))
    code, _, err = run_cli(["--format", "synthetic", "--task", "rec", "--background", "tiles", "--output", str(tmp_path / "e")])
    assert code == 2 and "background 'tiles' needs a grid" in err and not (tmp_path / "e").exists()
    code, _, err = run_cli([*base, "--answer-box", "cell", "--output", str(tmp_path / "f")])
    assert code == 0, err
    cells = load_packed(tmp_path / "f")
    assert cells.manifest["settings"]["synthetic"]["answer_box"] == "cell"
    assert all(r.solution[2] - r.solution[0] == 28 for r in cells.records)
