"""Evaluation on datasets other than shapes: reference images and captions from an example source.

The examples of the evaluation split are taken in a fixed order, a permutation of the
split drawn from the protocol's data seed. The reference is the first ``num_reference``
examples whose image decodes; unusable images are skipped, as in training. Sample ``i`` is
conditioned on a caption of the ``i``-th captioned example (cycling when there are more
samples than examples, as CUB and COCO evaluations do), drawn from the protocol's seed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from jaxgan import pixels
from jaxgan.data.images import ImageError, load_image
from jaxgan.data.source import DataError, ExampleSource
from jaxgan.metrics.evaluate import CaptionGroups, ImageSource, protocol_noise
from jaxgan.metrics.protocol import EvalProtocol
from jaxgan.sampling import apply_generator, generator_variables


class EvalExamples:
    """The evaluation split of a source, in the protocol's order (see the module docstring)."""

    def __init__(self, source: ExampleSource, protocol: EvalProtocol):
        self.source, self.protocol = source, protocol
        self.order = np.random.default_rng(protocol.data_seed).permutation(len(source))
        self._usable: list[int] = []  # positions in ``order`` whose image decodes
        self._walked = 0
        self._decoded: dict[int, np.ndarray] = {}  # images decoded while walking, not yet used
        self._captioned = [int(i) for i in self.order if source.captions(int(i))]
        if not self._captioned:
            raise DataError(f"evaluation split of {source.name} has no captioned examples")

    def _decode(self, index: int) -> np.ndarray | None:
        raw = self.source[index]
        try:
            return load_image(raw["image"], self.protocol.resolution, self.protocol.fit)[0]
        except ImageError:
            return None

    def _find(self, position: int) -> None:
        """Walks the order until ``position`` usable images are known."""
        while len(self._usable) <= position:
            if self._walked == len(self.order):
                raise DataError(f"the evaluation split of {self.source.name} has {len(self._usable)} usable "
                                f"images, fewer than the {position + 1} asked for (lower eval.num_reference)")
            index = int(self.order[self._walked])
            self._walked += 1
            image = self._decode(index)
            if image is not None:
                self._decoded[len(self._usable)] = image
                self._usable.append(index)

    def images(self, start: int, size: int) -> np.ndarray:
        """uint8 [size, R, R, 3]: usable images [start, start + size)."""
        self._find(start + size - 1)
        out = []
        for position in range(start, start + size):
            image = self._decoded.pop(position, None)
            out.append(image if image is not None else self._decode(self._usable[position]))
        return np.stack(out)

    def captions(self, start: int, size: int) -> list[str]:
        """The captions of samples [start, start + size): one of example ``i``'s captions,
        chosen from (seed, i), cycling over the captioned examples."""
        out = []
        for i in range(start, start + size):
            captions = self.source.captions(self._captioned[i % len(self._captioned)])
            rng = np.random.default_rng([self.protocol.seed, i])
            out.append(captions[int(rng.integers(len(captions)))])
        return out

    def image_of(self, index: int) -> np.ndarray | None:
        """uint8 [R, R, 3]: example ``index`` of the source, fitted; None if it does not decode."""
        return self._decode(index)

    def all_captions(self) -> list[str]:
        """Every caption the samples can draw (what the embedding cache must hold)."""
        return list(dict.fromkeys(c for i in self._captioned for c in self.source.captions(i)))


def _no_attributes(size: int) -> np.ndarray:
    # Attribute alignment is a shapes metric: datasets have no attribute labels.
    return np.zeros((size, 0), np.int32)


def dataset_real_source(examples: EvalExamples, offset: int = 0, name: str | None = None) -> ImageSource:
    """Real images of the evaluation split, usable examples [offset, offset + N)."""

    def make_images(_consts: Any, inputs: dict[str, Any]) -> Any:
        return pixels.to_float(inputs["image"])

    def inputs(start: int, size: int) -> dict[str, np.ndarray]:
        return {"image": examples.images(offset + start, size)}

    def captions(start: int, size: int) -> tuple[list[str], np.ndarray]:
        return examples.captions(offset + start, size), _no_attributes(size)

    label = name or f"real images ({examples.source.name}, {examples.protocol.split} split from {offset})"
    return ImageSource(label, {}, make_images, inputs, captions)


def dataset_caption_groups(examples: EvalExamples, count: int, per_group: int) -> CaptionGroups | None:
    """Within-caption diversity's groups on a read dataset: the first ``count`` caption texts
    (in the protocol's order) that at least two decodable images share, with up to
    ``per_group`` of those images each; None when no caption is shared (captions written
    per image, like COCO's). Class-like captions (a folder of "a photo of a cat"; MNIST's and
    CIFAR-10's captions from the label) give groups; a caption made from the label is the label.
    """
    members: dict[str, list[int]] = {}
    for index in examples.order:
        for caption in dict.fromkeys(examples.source.captions(int(index))):
            members.setdefault(caption, []).append(int(index))
    captions, images, group = [], [], []
    for caption, indices in members.items():
        if len(captions) == count:
            break
        if len(indices) < 2:
            continue
        decoded = []
        for index in indices:
            image = examples.image_of(index)
            if image is not None:
                decoded.append(image)
            if len(decoded) == per_group:
                break
        if len(decoded) >= 2:
            group.extend([len(captions)] * len(decoded))
            captions.append(caption)
            images.extend(decoded)
    if not captions:
        return None
    stacked = np.stack(images)

    def make_images(_consts: Any, inputs: dict[str, Any]) -> Any:
        return pixels.to_float(inputs["image"])

    def inputs(start: int, size: int) -> dict[str, np.ndarray]:
        return {"image": stacked[start:start + size]}

    def real_captions(start: int, size: int) -> tuple[list[str], np.ndarray]:
        return [captions[g] for g in group[start:start + size]], _no_attributes(size)

    real = ImageSource(f"real images sharing a caption ({examples.source.name})", {}, make_images, inputs,
                       real_captions)
    return CaptionGroups(captions, real, np.asarray(group))


def dataset_generator_source(generator: Any, variables: Any, z_dim: int,
                             embed: Callable[[list[str]], dict[str, np.ndarray]], examples: EvalExamples,
                             name: str = "generator") -> ImageSource:
    """A generator conditioned on the evaluation split's captions with the protocol's noise.

    Args:
      embed: captions -> ``{"sentence": ...}`` (+ words): the embedding table of
        ``examples.all_captions()``.
    """
    protocol = examples.protocol

    def make_images(consts: Any, inputs: dict[str, Any]) -> Any:
        z = protocol_noise(protocol.seed, inputs["index"], z_dim, protocol.truncation, protocol.truncation_scale)
        return apply_generator(generator, consts, z, inputs)

    def captions(start: int, size: int) -> tuple[list[str], np.ndarray]:
        return examples.captions(start, size), _no_attributes(size)

    def inputs(start: int, size: int) -> dict[str, np.ndarray]:
        return dict(embed(examples.captions(start, size)))

    def inputs_for(captions: list[str]) -> dict[str, np.ndarray]:
        return dict(embed(captions))

    return ImageSource(name, generator_variables(generator, variables), make_images, inputs, captions,
                       inputs_for=inputs_for)
