"""The shapes dataset follows its published spec exactly."""

import numpy as np
import pytest

from jaxgan.data import shapes


def _mask(image):
    return image.max(axis=-1) > 0


@pytest.mark.parametrize("resolution", [32, 64, 256])
def test_colour_size_and_position_follow_the_spec(resolution):
    for index in range(40):
        ex = shapes.example(index, resolution, seed=3)
        color, shape, size, position = ex.attrs
        mask = _mask(ex.image)
        ys, xs = np.nonzero(mask)
        # Colour: every fully covered pixel has the exact RGB of its name; the rest is black.
        full = ex.image[mask & (ex.image.sum(-1) == sum(shapes.COLORS[shapes.COLOR_NAMES[color]]))]
        assert len(full) > 0
        np.testing.assert_array_equal(np.unique(full, axis=0)[0], shapes.COLORS[shapes.COLOR_NAMES[color]])
        assert (ex.image[~mask] == 0).all()
        # Size: the bounding side is 0.16 or 0.28 of the image (within the anti-aliased edge).
        side = shapes.SIZES[shapes.SIZE_NAMES[size]] * resolution
        assert abs((xs.max() - xs.min() + 1) - side) <= 2.0
        # Position: the bounding-box centre is the grid cell centre up to the jitter.
        row, col = divmod(int(position), 3)
        cx, cy = (xs.max() + xs.min() + 1) / 2, (ys.max() + ys.min() + 1) / 2
        tol = resolution * shapes.MAX_JITTER + 1.0
        assert abs(cx - (col + 0.5) / 3 * resolution) <= tol
        if shapes.SHAPES[shape] != "triangle":  # a triangle's pixel box is centred too, but its apex rounds
            assert abs(cy - (row + 0.5) / 3 * resolution) <= tol


def test_shape_areas_match_geometry():
    # Filled fraction of the bounding square: square 1, circle pi/4, triangle 1/2.
    expected = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}
    for s, name in enumerate(shapes.SHAPES):
        image = shapes.render((6, s, 1, 4), 256)  # white, large, centre
        coverage = image[..., 0].astype(np.float64).sum() / 240.0
        side = 0.28 * 256
        assert coverage / side**2 == pytest.approx(expected[name], rel=0.02)


def test_triangle_points_up_with_base_equal_to_height():
    image = shapes.render((6, 2, 1, 4), 256)
    mask = _mask(image)
    ys, xs = np.nonzero(mask)
    top_width = mask[ys.min() + 2].sum()
    bottom_width = mask[ys.max() - 1].sum()
    assert top_width < bottom_width
    assert abs((ys.max() - ys.min()) - (xs.max() - xs.min())) <= 2


def test_captions_name_every_attribute_and_templates_vary():
    assert len(shapes.TEMPLATES) >= 5
    combos = shapes.all_combinations()
    assert combos.shape == (432, 4) and len({tuple(c) for c in combos}) == 432
    for t in range(len(shapes.TEMPLATES)):
        text = shapes.caption((0, 2, 1, 6), t)
        for word in ("large", "red", "triangle", "bottom left"):
            assert word in text
    assert shapes.caption((0, 0, 0, 0), 0) == "a small red circle in the top left"


def test_examples_are_deterministic_and_mismatches_differ():
    a = shapes.batch(100, 8, 32, seed=5)
    b = shapes.batch(100, 8, 32, seed=5)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["caption"] == b["caption"]
    c = shapes.batch(100, 8, 32, seed=6)
    assert not np.array_equal(a["image"], c["image"])
    # The same example whatever the batch boundaries: the data position is just an index.
    d = shapes.batch(104, 4, 32, seed=5)
    np.testing.assert_array_equal(a["image"][4:], d["image"])
    for i in range(8):
        ex = shapes.example(100 + i, 32, seed=5)
        assert (ex.attrs != ex.wrong_attrs).sum() == 1
        assert ex.caption == a["caption"][i] and ex.wrong_caption == a["wrong_caption"][i]


def test_mismatched_captions_change_each_attribute_to_every_other_value():
    changed = {name: set() for name in shapes.ATTRIBUTES}
    for i in range(400):
        ex = shapes.example(i, 32, seed=1)
        (which,) = np.nonzero(ex.attrs != ex.wrong_attrs)[0]
        changed[shapes.ATTRIBUTES[which]].add(int(ex.wrong_attrs[which]))
    assert {k: len(v) for k, v in changed.items()} == {"color": 8, "shape": 3, "size": 2, "position": 9}
