"""Datasets: the procedural shapes dataset, TFDS datasets and image folders, and their pipeline.

``data.dataset`` names the source: ``shapes`` (built in, the default), a TFDS name
(``jaxgan.data.tfds_source.TFDS_DATASETS``), or a folder of captioned images.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jaxgan.data.source import DataError, ExampleSource

if TYPE_CHECKING:
    from jaxgan.config import Config

SHAPES = "shapes"


def is_folder(name: str) -> bool:
    """Whether ``data.dataset`` names a folder rather than a registered dataset."""
    return "/" in name or name.startswith((".", "~")) or Path(name).expanduser().is_dir()


def make_source(config: Config) -> ExampleSource:
    """The example source ``config.data`` names (not the shapes dataset, which has its own pipeline).

    Raises:
      DataError: an unknown name, a missing folder or an unprepared TFDS dataset, in one line.

    Example:
        source = make_source(get_config("default", ["data.dataset=~/data/birds"]))
        len(source), source[0]["captions"]
    """
    data = config.data
    if data.dataset == SHAPES:
        raise ValueError("the shapes dataset has its own pipeline (jaxgan.data.pipeline.ShapesPipeline)")
    if is_folder(data.dataset):
        from jaxgan.data.folder import ImageFolderSource

        return ImageFolderSource(Path(data.dataset).expanduser())
    from jaxgan.data.tfds_source import TFDS_DATASETS, TfdsSource

    base = data.dataset.split("/")[0].split(":")[0]
    if base not in TFDS_DATASETS:
        raise DataError(f"unknown dataset {data.dataset!r}: use shapes, one of {', '.join(TFDS_DATASETS)}, "
                        "or the path of an image folder")
    return TfdsSource(data.dataset, split=data.split, data_dir=data.data_dir or None,
                      captions_dir=data.captions_dir or None)


def all_captions(source: ExampleSource) -> list[str]:
    """Every caption of ``source``, once each, in first-seen order (for the embedding cache)."""
    seen: dict[str, None] = {}
    for i in range(len(source)):
        seen.update(dict.fromkeys(source.captions(i)))
    if not seen:
        raise DataError(f"dataset {source.name} has no captions at all (every caption file missing or empty?)")
    return list(seen)


def preview_captions(source: ExampleSource, count: int = 12) -> list[str]:
    """The first caption of ``count`` examples spread evenly over ``source``: fixed sample-grid prompts."""
    picked = []
    for i in np.linspace(0, len(source) - 1, min(count, len(source))).astype(int):
        captions = source.captions(int(i))
        if captions:
            picked.append(captions[0])
    return picked or all_captions(source)[:count]
