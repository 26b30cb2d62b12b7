"""What every captioned-image source provides to the input pipeline and to evaluation.

A source is a random-access list of raw examples: ``len(source)`` and ``source[i]``. Reading
an example does no decoding that could fail on bad data; the pipeline's workers decode the
image (``jaxgan.data.images``) and pick a caption, so that a corrupt file is skipped and
counted there rather than stopping the run. Examples are plain dicts so that Grain can pass
them between worker processes:

    {"key": str,                      # names the example in messages: a file path or "coco_captions/train[12]"
     "image": bytes | np.ndarray,     # encoded file bytes, or an already decoded uint8 [H, W, C] array
     "captions": list[str],           # may be empty: the pipeline skips and counts such examples
     "issues": list[str]}             # what reading already had to repair, e.g. "caption_not_utf8"

``source.captions(i)`` returns the captions alone without reading the image: the frozen-
embedding cache enumerates every caption of a dataset this way.

What only some sources can do is a *capability*, a class attribute the source overrides, so
that callers ask the source (or its class, before it is built) instead of comparing dataset
names:

* ``attributes``: names of the integer attribute labels every example carries (the shapes
  dataset: colour, shape, size, position). Attribute alignment and the shapes feature network
  need them; a source without them is judged by Inception features.
* ``drawn``: examples are drawn from (seed, global index) rather than read, with no epoch: the
  pipeline asks ``draw`` for the examples of a batch, the data position is the step, and
  evaluation conditions sample ``i`` on example ``i`` (``labels``).
* ``fit``: the source fixes how its images become squares (``""``: drawn square at the
  model's resolution, nothing to fit); ``None`` leaves it to ``data.fit``.
* ``splits``: the only split names the source has; ``None`` leaves them to the backend.
* ``embed_on_demand``: captions are encoded batch by batch as they first appear, rather than
  all at the start into the on-disk embedding cache (``jaxgan.data.embeddings``).
* ``mirror_safe``: a left-right mirrored image still matches its captions, so the ``flip``
  augmentation may be used (``jaxgan.augment``). False unless a source knows it: captions that
  name left and right (shapes), text or digits in the image, make a mirror a wrong example.
  ``data.mirror=true`` is the user's word for a source that does not declare it.
* ``ideal_objects``: the source can draw the ideal object of an attribute row at any centre
  (``ideal_object``) and names its class (``object_class``): shape fidelity
  (``jaxgan.metrics.fidelity``) compares a generated object with it.
"""

from __future__ import annotations

import abc
import types
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from jaxgan.errors import JaxganError


class DataError(JaxganError, ValueError):
    """A dataset that cannot be read at all (missing, empty, or every example bad); one line."""


class ExampleSource(abc.ABC):
    """A random-access source of raw captioned examples (see the module docstring).

    Example:
        source = make_source(get_config("default", ["data.dataset=~/data/birds"]))
        len(source), source[0]["captions"], source.attributes  # (..., [...], ())
    """

    name: str
    # Capabilities: see the module docstring. The defaults describe a dataset read from files.
    attributes: ClassVar[tuple[str, ...]] = ()
    drawn: ClassVar[bool] = False
    fit: ClassVar[str | None] = None
    splits: ClassVar[tuple[str, ...] | None] = None
    embed_on_demand: ClassVar[bool] = False
    mirror_safe: ClassVar[bool] = False
    ideal_objects: ClassVar[bool] = False
    # Problems found in the dataset's caption index (malformed lines...), counted in the metrics.
    index_issues: Mapping[str, int] = types.MappingProxyType({})

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of examples."""

    @abc.abstractmethod
    def __getitem__(self, index: int) -> dict[str, Any]:
        """The raw example at ``index`` (see ``example``)."""

    @abc.abstractmethod
    def captions(self, index: int) -> list[str]:
        """The captions of example ``index``, without reading its image."""

    def all_captions(self) -> list[str]:
        """Every caption of the source, once each, in first-seen order (for the embedding cache)."""
        seen: dict[str, None] = {}
        for i in range(len(self)):
            seen.update(dict.fromkeys(self.captions(i)))
        if not seen:
            raise DataError(f"dataset {self.name} has no captions at all (every caption file missing or empty?)")
        return list(seen)

    def preview_captions(self, count: int = 12) -> list[str]:
        """Fixed prompts for the sample grids: the first caption of ``count`` examples spread
        evenly over the source."""
        picked = []
        for i in np.linspace(0, len(self) - 1, min(count, len(self))).astype(int):
            captions = self.captions(int(i))
            if captions:
                picked.append(captions[0])
        return picked or self.all_captions()[:count]

    def draw(self, start: int, size: int) -> dict[str, Any]:
        """Examples [start, start + size) of a ``drawn`` source, ready for a batch: ``image``
        uint8 [B, R, R, 3], ``caption`` and ``wrong_caption`` (lists of B strings) and, with
        ``attributes``, ``attrs`` int32 [B, len(attributes)]."""
        raise NotImplementedError(f"{type(self).__name__} is read, not drawn")

    def labels(self, start: int, size: int) -> tuple[list[str], np.ndarray]:
        """(captions, attrs int32 [size, len(attributes)]) of examples [start, start + size) of a
        ``drawn`` source, without drawing their images."""
        raise NotImplementedError(f"{type(self).__name__} is read, not drawn")

    def ideal_object(self, attrs: np.ndarray, centre: tuple[float, float] | None = None) -> np.ndarray:
        """uint8 [R, R, 3]: the object of attribute row ``attrs`` drawn as the source draws it,
        centred at ``centre`` (x, y in pixels; None: where the attributes put it, without
        jitter), for a source with ``ideal_objects``."""
        raise NotImplementedError(f"{type(self).__name__} cannot draw ideal objects")

    def object_class(self, attrs: np.ndarray) -> str:
        """The class an attribute row's object is reported under (shapes: "small circle")."""
        raise NotImplementedError(f"{type(self).__name__} cannot draw ideal objects")


def example(key: str, image: Any, captions: list[str], issues: list[str] | None = None) -> dict[str, Any]:
    """A raw example dict in the shape every source returns."""
    return {"key": key, "image": image, "captions": list(captions), "issues": list(issues or [])}
