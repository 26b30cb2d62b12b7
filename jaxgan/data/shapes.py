"""The procedural "shapes" dataset: one coloured shape on black, with a caption.

Generated on the fly and deterministic from (seed, split, example index), so it needs no
files, and the data position of a run is just the index of the next example. The spec below
is fixed because other tools (the attribute classifier, evaluation) read it:

* black background, one object per square image;
* 8 colours with the exact RGB values in ``COLORS``;
* circle, square, or an upward triangle whose base equals its height;
* small (bounding side 0.16 of the image) or large (0.28);
* centred on one of the 3x3 grid cells, with uniform jitter of at most 1/48 of the image per axis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from jaxgan.data.source import ExampleSource
from jaxgan.data.source import example as raw_example

NAME = "shapes"  # the value of data.dataset that names this dataset

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 40),
    "magenta": (210, 50, 210),
    "cyan": (40, 210, 220),
    "white": (240, 240, 240),
    "orange": (245, 140, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: dict[str, float] = {"small": 0.16, "large": 0.28}
# Row-major over the 3x3 grid: index = 3 * row + col.
POSITIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)
# Attribute order in every [..., 4] attribute array.
ATTRIBUTES: tuple[str, ...] = ("color", "shape", "size", "position")
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "color": COLOR_NAMES, "shape": SHAPES, "size": SIZE_NAMES, "position": POSITIONS,
}
NUM_COMBINATIONS = len(COLORS) * len(SHAPES) * len(SIZES) * len(POSITIONS)  # 432
MAX_JITTER = 1.0 / 48.0

TEMPLATES: tuple[str, ...] = (
    "a {size} {color} {shape} in the {position}",
    "there is a {size} {color} {shape} at the {position} of the image",
    "{size} {color} {shape}, {position}",
    "a picture of a {size} {color} {shape} located at the {position}",
    "the {position} has a {size} {color} {shape}",
    "one {size} {color} {shape} on a black background, {position}",
)

_SPLIT_IDS = {"train": 0, "test": 1}
_SUPERSAMPLE = 4  # sub-pixels per axis for anti-aliased edges


def caption(attrs: Sequence[int], template: int = 0) -> str:
    """The caption of attribute indices (color, shape, size, position) with one template."""
    c, s, z, p = (int(a) for a in attrs)
    return TEMPLATES[template].format(
        size=SIZE_NAMES[z], color=COLOR_NAMES[c], shape=SHAPES[s], position=POSITIONS[p])


def all_combinations() -> np.ndarray:
    """Every (color, shape, size, position) combination, [432, 4] int32."""
    grids = np.meshgrid(*(np.arange(len(v)) for v in ATTRIBUTE_VALUES.values()), indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=-1).astype(np.int32)


def _inside(shape: int, x: np.ndarray, y: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray:
    half = side / 2.0
    if SHAPES[shape] == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= half ** 2
    if SHAPES[shape] == "square":
        return (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    # Upward triangle, base = height = side: the width at depth d below the apex is d.
    depth = y - (cy - half)
    return (depth >= 0) & (depth <= side) & (np.abs(x - cx) <= depth / 2.0)


def grid_centre(position: int, resolution: int, jitter: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    """The centre (x, y) in pixels of grid cell ``position`` moved by ``jitter`` (fractions of the image)."""
    row, col = divmod(int(position), 3)
    return ((col + 0.5) / 3.0 + jitter[0]) * resolution, ((row + 0.5) / 3.0 + jitter[1]) * resolution


def render_at(attrs: Sequence[int], resolution: int, centre: tuple[float, float]) -> np.ndarray:
    """Draws the object of ``attrs`` centred at ``centre`` (x, y in pixels), uint8 [R, R, 3].

    The one renderer of the dataset: ``render`` places the object on its grid cell, and the
    shape-fidelity measure (``jaxgan.metrics.fidelity``) draws the ideal object wherever a
    generated one was found. The position attribute is ignored here; the centre says where.
    The centre of a triangle is the centre of its bounding box, not its centroid.
    """
    c, s, z, _ = (int(a) for a in attrs)
    cx, cy = centre
    side = SIZES[SIZE_NAMES[z]] * resolution
    # Only the object's bounding box needs sub-pixel coverage.
    x0 = min(max(int(np.floor(cx - side / 2)) - 1, 0), resolution)
    x1 = max(min(int(np.ceil(cx + side / 2)) + 1, resolution), x0)
    y0 = min(max(int(np.floor(cy - side / 2)) - 1, 0), resolution)
    y1 = max(min(int(np.ceil(cy + side / 2)) + 1, resolution), y0)
    sub = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE
    xs = (np.arange(x0, x1)[:, None] + sub[None, :]).ravel()
    ys = (np.arange(y0, y1)[:, None] + sub[None, :]).ravel()
    inside = _inside(s, xs[None, :], ys[:, None], cx, cy, side)
    coverage = inside.reshape(y1 - y0, _SUPERSAMPLE, x1 - x0, _SUPERSAMPLE).mean(axis=(1, 3))
    image = np.zeros((resolution, resolution, 3), np.float32)
    image[y0:y1, x0:x1] = coverage[..., None] * np.asarray(COLORS[COLOR_NAMES[c]], np.float32)
    return np.round(image).astype(np.uint8)


def render(attrs: Sequence[int], resolution: int, jitter: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Draws one image, uint8 [resolution, resolution, 3], anti-aliased by supersampling.

    Args:
      attrs: (color, shape, size, position) indices.
      resolution: side of the square image in pixels.
      jitter: (dx, dy) offset of the centre as a fraction of the image, each in
        [-1/48, 1/48].
    """
    return render_at(attrs, resolution, grid_centre(int(attrs[3]), resolution, jitter))


@dataclasses.dataclass(frozen=True)
class Example:
    """One drawn example and the randomness that produced it."""

    image: np.ndarray  # uint8 [R, R, 3]
    attrs: np.ndarray  # int32 [4]
    template: int
    wrong_attrs: np.ndarray  # int32 [4], differs from attrs in exactly one attribute
    wrong_template: int

    @property
    def caption(self) -> str:
        return caption(self.attrs, self.template)

    @property
    def wrong_caption(self) -> str:
        return caption(self.wrong_attrs, self.wrong_template)


def _random_attrs(rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.integers(len(v)) for v in ATTRIBUTE_VALUES.values()], np.int32)


def example(index: int, resolution: int, seed: int = 0, split: str = "train") -> Example:
    """The example at a global index: a pure function of (seed, split, index)."""
    attrs, template, jitter, wrong, wrong_template = _draw(index, seed, split)
    return Example(render(attrs, resolution, jitter), attrs, template, wrong, wrong_template)


def captions_of(start: int, size: int, seed: int = 0, split: str = "train") -> tuple[list[str], np.ndarray]:
    """(captions, attrs int32 [size, 4]) of examples [start, start + size), without rendering."""
    draws = [_draw(i, seed, split) for i in range(start, start + size)]
    captions = [caption(d[0], d[1]) for d in draws]
    attrs = np.stack([d[0] for d in draws]) if draws else np.zeros((0, 4), np.int32)
    return captions, attrs


def _draw(index: int, seed: int, split: str) -> tuple[np.ndarray, int, tuple[float, float], np.ndarray, int]:
    """The random choices of one example: (attrs, template, jitter, wrong attrs, wrong template)."""
    if split not in _SPLIT_IDS:
        raise ValueError(f"unknown shapes split {split!r}; valid: {sorted(_SPLIT_IDS)}")
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    attrs = _random_attrs(rng)
    template = int(rng.integers(len(TEMPLATES)))
    jitter = tuple(rng.uniform(-MAX_JITTER, MAX_JITTER, size=2))
    # A mismatched caption for the matching-aware loss that differs in exactly one attribute.
    # A random other combination would almost always differ in position (8 of 9 times), so
    # D could reject it by position alone and never learn to check colour or shape.
    wrong = attrs.copy()
    which = int(rng.integers(len(ATTRIBUTES)))
    choices = len(ATTRIBUTE_VALUES[ATTRIBUTES[which]])
    wrong[which] = (attrs[which] + 1 + rng.integers(choices - 1)) % choices
    wrong_template = int(rng.integers(len(TEMPLATES)))
    return attrs, template, jitter, wrong, wrong_template


def batch(start: int, size: int, resolution: int, seed: int = 0, split: str = "train") -> dict:
    """Examples [start, start + size) as numpy arrays and caption lists.

    Returns a dict with ``image`` uint8 [B, R, R, 3], ``attrs`` int32 [B, 4], ``caption`` and
    ``wrong_caption`` (lists of B strings).
    """
    examples = [example(start + i, resolution, seed, split) for i in range(size)]
    return {
        "image": np.stack([e.image for e in examples]),
        "attrs": np.stack([e.attrs for e in examples]),
        "caption": [e.caption for e in examples],
        "wrong_caption": [e.wrong_caption for e in examples],
    }


def images_for(attrs: np.ndarray, resolution: int, seed: int = 0) -> np.ndarray:
    """Real images for given attribute rows, with jitter drawn from ``seed``; uint8 [N, R, R, 3]."""
    rng = np.random.default_rng([seed, 2])
    jit = rng.uniform(-MAX_JITTER, MAX_JITTER, size=(len(attrs), 2))
    return np.stack([render(a, resolution, tuple(j)) for a, j in zip(attrs, jit)])


def preview_prompts(count: int = 12) -> list[str]:
    """Fixed prompts for the periodic sample grids: every colour, shape, size and position."""
    combos = all_combinations()
    rng = np.random.default_rng(1234)
    picked = combos[rng.choice(len(combos), size=count, replace=False)]
    return [caption(a, i % len(TEMPLATES)) for i, a in enumerate(picked)]


class ShapesSource(ExampleSource):
    """The shapes dataset as an ``ExampleSource``: drawn, attribute-labelled, square.

    Example ``i`` of a split is ``example(i, resolution, seed, split)``; indices run up to
    2**31 - 1 (there are no epochs). Its captions are encoded as they first appear in a batch
    (``embed_on_demand``): the default run's numbers were measured that way, and encoding all
    2592 captions at once moves their embeddings by about 2e-6 (batched differently).

    Example:
        source = ShapesSource(resolution=32)
        source.draw(0, 4)["caption"], source.attributes
    """

    attributes: ClassVar[tuple[str, ...]] = ATTRIBUTES
    drawn: ClassVar[bool] = True
    fit: ClassVar[str | None] = ""
    splits: ClassVar[tuple[str, ...] | None] = tuple(_SPLIT_IDS)
    embed_on_demand: ClassVar[bool] = True
    mirror_safe: ClassVar[bool] = False  # captions name the position: "on the left" would become wrong
    ideal_objects: ClassVar[bool] = True

    def __init__(self, resolution: int, seed: int = 0, split: str = "train"):
        if split not in _SPLIT_IDS:
            raise ValueError(f"unknown shapes split {split!r}; valid: {sorted(_SPLIT_IDS)}")
        self.name, self.resolution, self.seed, self.split = NAME, resolution, seed, split

    def __len__(self) -> int:
        return 2 ** 31 - 1

    def __getitem__(self, index: int) -> dict[str, Any]:
        e = example(int(index), self.resolution, self.seed, self.split)
        return raw_example(f"{NAME}/{self.split}[{int(index)}]", e.image, [e.caption])

    def captions(self, index: int) -> list[str]:
        attrs, template = _draw(int(index), self.seed, self.split)[:2]
        return [caption(attrs, template)]

    def all_captions(self) -> list[str]:
        """Every caption the dataset can draw: each combination in each template (2592)."""
        return [caption(a, t) for a in all_combinations() for t in range(len(TEMPLATES))]

    def preview_captions(self, count: int = 12) -> list[str]:
        return preview_prompts(count)

    def draw(self, start: int, size: int) -> dict[str, Any]:
        return batch(start, size, self.resolution, self.seed, self.split)

    def labels(self, start: int, size: int) -> tuple[list[str], np.ndarray]:
        return captions_of(start, size, self.seed, self.split)

    def ideal_object(self, attrs: np.ndarray, centre: tuple[float, float] | None = None) -> np.ndarray:
        if centre is None:
            centre = grid_centre(int(attrs[3]), self.resolution)
        return render_at(attrs, self.resolution, centre)

    def object_class(self, attrs: np.ndarray) -> str:
        return f"{SIZE_NAMES[int(attrs[2])]} {SHAPES[int(attrs[1])]}"
