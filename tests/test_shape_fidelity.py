"""Shape fidelity (metrics.fidelity) against hand-computed values: a perfect drawing scores IoU 1
and colour error 0, a square with its corners cut or drawn at half contrast scores what the
formulas give, a circle in place of a square scores about pi/4, and real images stay just
under 1 (their ceiling)."""

import math

import numpy as np
import pytest

from jaxgan.data import shapes
from jaxgan.data.source import ExampleSource
from jaxgan.metrics.fidelity import compare, shape_fidelity

COLOUR = (204, 102, 0)  # mean channel 102/255 = 0.4


class Blocks(ExampleSource):
    """A toy source whose ideal object is a crisp 4x4 block on 8x8 black, placed on whole pixels."""

    name = "blocks"
    attributes = ("kind",)
    ideal_objects = True

    def __len__(self):
        return 0

    def __getitem__(self, index):
        raise IndexError(index)

    def captions(self, index):
        return []

    def ideal_object(self, attrs, centre=None):
        cx, cy = centre if centre is not None else (4.0, 4.0)
        x0, y0 = int(round(cx - 2)), int(round(cy - 2))
        image = np.zeros((8, 8, 3), np.uint8)
        image[max(y0, 0):max(y0 + 4, 0), max(x0, 0):max(x0 + 4, 0)] = COLOUR
        return image

    def object_class(self, attrs):
        return "block"


def test_hand_computed_iou_and_colour_error_on_toy_blocks():
    source, attrs = Blocks(), np.array([0])
    perfect = source.ideal_object(attrs)
    assert compare(perfect, attrs, source.ideal_object) == (1.0, 0.0)
    # Found and scored where it is, even off its place: position is alignment's business.
    shifted = source.ideal_object(attrs, (5.0, 3.0))
    assert compare(shifted, attrs, source.ideal_object) == (1.0, 0.0)
    # Corners cut: 12 of the 16 pixels, same centroid; IoU 12/16, and the 4 missing pixels
    # each miss the whole colour (0.4 on average over RGB) over the 16 ideal pixels.
    rounded = perfect.copy()
    rounded[[2, 2, 5, 5], [2, 5, 2, 5]] = 0
    iou, colour = compare(rounded, attrs, source.ideal_object)
    assert iou == pytest.approx(12 / 16) and colour == pytest.approx(4 * 0.4 / 16)
    # Half the contrast: membership (0.5 - 1/4) / (1/2) = 0.5 on each pixel, so IoU 0.5; the
    # colour is off by (102 + 51 + 0) / 3 / 255 = 0.2 everywhere.
    dim = perfect // 2
    iou, colour = compare(dim, attrs, source.ideal_object)
    assert iou == pytest.approx(0.5) and colour == pytest.approx(0.2)
    # Nothing drawn: IoU 0, and the whole object is missing at its own place.
    assert compare(np.zeros_like(perfect), attrs, source.ideal_object) == (0.0, pytest.approx(0.4))
    out = shape_fidelity(np.stack([perfect, rounded]), np.array([[0], [0]]), source)
    assert out["fidelity_iou"] == pytest.approx((1 + 0.75) / 2) and out["fidelity_iou/block"] == out["fidelity_iou"]


def test_the_dataset_renderer_perfect_and_rounded_squares():
    source = shapes.ShapesSource(64)
    square = np.array([0, shapes.SHAPES.index("square"), shapes.SIZE_NAMES.index("large"), 4])
    circle = square.copy()
    circle[1] = shapes.SHAPES.index("circle")
    perfect = shapes.render(square, 64, (0.01, -0.015))
    iou, colour = compare(perfect, square, source.ideal_object)
    assert iou == pytest.approx(1.0, abs=1e-6) and colour == pytest.approx(0.0, abs=1e-6)
    # A circle drawn for a square of the same side: the inscribed disc covers pi/4 of it, and
    # the corners (1 - pi/4 of the square) miss the whole colour (red: mean channel 100/255).
    iou, colour = compare(shapes.render(circle, 64), square, source.ideal_object)
    assert iou == pytest.approx(math.pi / 4, abs=0.01)
    assert colour == pytest.approx((1 - math.pi / 4) * np.mean(shapes.COLORS["red"]) / 255, abs=0.005)


def test_real_images_stay_just_under_the_ideal():
    source = shapes.ShapesSource(32, seed=1, split="test")
    batch = source.draw(0, 120)
    out = shape_fidelity(batch["image"], batch["attrs"], source)
    # Antialiased edges and sub-pixel jitter: just under 1 (0.9975 on 2000 images).
    assert 0.98 < out["fidelity_iou"] < 1.0 and out["fidelity_color_error"] < 0.01
    classes = {k.partition("/")[2] for k in out if "/" in k}
    assert classes <= {f"{z}_{s}" for z in shapes.SIZE_NAMES for s in shapes.SHAPES} and len(classes) == 6
