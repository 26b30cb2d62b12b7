"""Datasets behind one interface: example sources and the one pipeline that reads them.

``data.dataset`` names the source: ``shapes`` (built in, the default), a TFDS name
(``jaxgan.data.tfds_source.TFDS_DATASETS``), or a folder of captioned images. Every source is
an ``ExampleSource`` (``jaxgan.data.source``); what only some can do is a capability the
source declares, never a comparison of its name.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from jaxgan.data import shapes
from jaxgan.data.folder import ImageFolderSource
from jaxgan.data.source import DataError, ExampleSource
from jaxgan.data.tfds_source import TFDS_DATASETS, TfdsSource

if TYPE_CHECKING:
    from jaxgan.config import Config

# Sources that need no files, by the name data.dataset gives them.
_BUILT_IN: dict[str, type[ExampleSource]] = {shapes.NAME: shapes.ShapesSource}


def is_folder(name: str) -> bool:
    """Whether ``data.dataset`` names a folder rather than a registered dataset."""
    return "/" in name or name.startswith((".", "~")) or Path(name).expanduser().is_dir()


def _tfds_base(name: str) -> str:
    return name.split("/")[0].split(":")[0]


def source_type(dataset: str) -> type[ExampleSource]:
    """The class of the source ``data.dataset`` names, whose capabilities can be asked before
    the source is built (its files read).

    Raises:
      DataError: an unknown name, in one line.

    Example:
        source_type("shapes").attributes  # ("color", "shape", "size", "position")
    """
    if dataset in _BUILT_IN:
        return _BUILT_IN[dataset]
    if is_folder(dataset):
        return ImageFolderSource
    if _tfds_base(dataset) in TFDS_DATASETS:
        return TfdsSource
    raise DataError(f"unknown dataset {dataset!r}: use {', '.join(_BUILT_IN)}, one of {', '.join(TFDS_DATASETS)}, "
                    "or the path of an image folder")


def make_source(config: Config, split: str | None = None) -> ExampleSource:
    """The example source ``config.data`` names, of ``split`` (default ``data.split``).

    Raises:
      DataError: an unknown name, a missing folder or an unprepared TFDS dataset, in one line.

    Example:
        source = make_source(get_config("default", ["data.dataset=~/data/birds"]))
        len(source), source[0]["captions"]
    """
    data = config.data if split is None else dataclasses.replace(config.data, split=split)
    kind = source_type(data.dataset)
    if kind is ImageFolderSource:
        return ImageFolderSource(Path(data.dataset).expanduser())
    if kind is TfdsSource:
        return TfdsSource(data.dataset, split=data.split, data_dir=data.data_dir or None,
                          captions_dir=data.captions_dir or None)
    return kind(resolution=config.model.resolution, seed=data.seed, split=data.split)
