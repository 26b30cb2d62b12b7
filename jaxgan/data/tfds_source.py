"""TFDS datasets as example sources, each with its caption recipe.

Examples are read through TFDS's random-access data sources (array_record files, no
TensorFlow needed). The dataset must already be prepared in array_record format; nothing is
downloaded here. Images are handed over still encoded (TFDS's ``SkipDecoding``) so that the
pipeline's workers decode them with jaxgan's own decoder; MNIST is the exception, handed over as
its [28, 28, 1] uint8 arrays.

Caption recipes:

* ``coco_captions``: the dataset's own captions (``captions/text``, about five per image).
* ``caltech_birds2011``, ``oxford_flowers102``: Reed et al.'s captions (CVPR 2016) from a
  ``captions_dir`` laid out as ``text_c10/<class folder>/<image stem>.txt``, ten lines per file,
  matched by the stem of the image's file name. An image without a caption file (or every image,
  when no directory is given) gets a caption from its class name and the issue
  ``caption_fallback_label``.
* ``mnist``, ``cifar10``: a caption from the class name.

The builders are opened from their prepared files, never from their generation code:
``coco_captions``'s code needs TensorFlow just to describe its features.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np

from jaxgan.data.captions import read_caption_file
from jaxgan.data.source import DataError, ExampleSource, example

TFDS_DATASETS: tuple[str, ...] = ("coco_captions", "caltech_birds2011", "oxford_flowers102", "mnist", "cifar10")
FALLBACK = "caption_fallback_label"

# Only the 2014 config of coco_captions exists; naming it saves TFDS a look at the builder code.
_TFDS_NAMES = {"coco_captions": "coco_captions/2014"}
_REED_DATASETS = {"caltech_birds2011": "bird", "oxford_flowers102": "flower"}
# The feature that holds each image's file name, where the dataset has one.
_FILE_NAME_FEATURE = {
    "coco_captions": "image/filename",
    "caltech_birds2011": "image/filename",
    "oxford_flowers102": "file_name",
}
_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def clean_class_name(name: str) -> str:
    """'001.Black_footed_Albatross' -> 'black footed albatross': no number prefix, spaces, lower case."""
    name = re.sub(r"^\d+\.", "", name.strip())
    return " ".join(name.replace("_", " ").lower().split())


def _with_article(noun: str) -> str:
    return ("an " if noun[:1] and noun[0] in "aeiou" else "a ") + noun


def label_caption(dataset: str, class_name: str) -> str:
    """The caption of a class: 'a handwritten digit seven', 'a photo of a cat', ...

    Args:
      dataset: one of ``TFDS_DATASETS`` other than ``coco_captions``.
      class_name: the class as the dataset names it ('7', 'cat', '001.Black_footed_Albatross').
    """
    name = clean_class_name(class_name)
    if dataset == "mnist":
        return f"a handwritten digit {_DIGITS[int(name)] if name.isdigit() and int(name) < 10 else name}"
    kind = _REED_DATASETS.get(dataset)
    if kind:
        return f"a photo of {_with_article(name)}, a type of {kind}"
    return f"a photo of {_with_article(name)}"


def index_caption_dir(captions_dir: str | Path) -> tuple[str, dict[str, str]]:
    """(root, {image stem: class folder}) of a Reed-layout caption directory.

    ``captions_dir`` is the release's dataset folder (holding ``text_c10/``) or ``text_c10``
    itself; a stem's captions are in ``root/<class folder>/<stem>.txt``. A missing directory or
    one without ``.txt`` files is a ``DataError``.
    """
    root = Path(captions_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"captions_dir {str(root)!r} is not a directory")
    if (root / "text_c10").is_dir():
        root = root / "text_c10"
    # Folder strings are shared between their stems so that pickling stores each once (CUB has
    # 11,788 files in 200 folders); sorted so a stem present twice resolves alike everywhere.
    folders: dict[str, str] = {}
    table: dict[str, str] = {}
    for path in sorted(root.rglob("*.txt")):
        folder = path.parent.relative_to(root).as_posix()
        table.setdefault(path.stem, folders.setdefault(folder, folder))
    if not table:
        raise DataError(f"captions_dir {str(root)!r} has no .txt caption files (expected text_c10/<class>/<image>.txt)")
    return str(root), table


def _text(value: Any) -> str:
    """A decoded TFDS text feature: bytes from array_record, str from some code paths."""
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _split_names(split: str) -> list[str]:
    """The split names in a TFDS split spec: 'train[:80%]+test' -> ['train', 'test']."""
    return [part.split("[", 1)[0].strip() for part in split.split("+")]


class TfdsSource(ExampleSource):
    """A prepared TFDS dataset as an ``ExampleSource`` (see the module docstring).

    Picklable for Grain's worker processes: the pickled state is the name, split, directories,
    label names and caption table; each process reopens the array_record files on first use.
    """

    # One class serves every TFDS dataset, and not all of them can be mirrored: MNIST's digits
    # are not symmetric and COCO's captions say "left" and "right". Birds, flowers and CIFAR-10
    # can: data.mirror=true says so.
    mirror_safe: ClassVar[bool] = False

    def __init__(self, name: str, split: str = "train", data_dir: str | None = None,
                 captions_dir: str | None = None) -> None:
        if name not in TFDS_DATASETS:
            raise DataError(f"unsupported TFDS dataset {name!r}; supported: {', '.join(TFDS_DATASETS)}")
        if captions_dir is not None and name not in _REED_DATASETS:
            raise DataError(f"captions_dir applies to {' and '.join(_REED_DATASETS)} only, not {name}")
        self.name = name
        self.split = split
        self.data_dir = data_dir
        self.captions_dir = captions_dir
        self._caption_root, self._caption_files = (
            index_caption_dir(captions_dir) if captions_dir is not None else ("", {}))
        self._registered = False
        builder = self._find_builder()
        self._builder_dir = str(builder.data_dir)
        known = list(builder.info.splits)
        missing = [s for s in _split_names(split) if s not in known and s != "all"]
        if missing and known:  # a mocked builder lists no splits and serves any
            raise DataError(f"{name} has no split {missing[0]!r}; splits: {', '.join(sorted(known))}")
        label = builder.info.features["label"] if "label" in builder.info.features else None
        self._label_names = list(label.names) if label is not None else []
        self._records = None
        self._len = len(self._open(builder))

    def _find_builder(self):
        # Imported on first use: jaxgan's other datasets never need TFDS.
        from tensorflow_datasets.core import read_only_builder
        from tensorflow_datasets.core.registered import DatasetNotFoundError

        data_dir = str(Path(self.data_dir).expanduser()) if self.data_dir else None
        try:
            return read_only_builder.builder_from_files(_TFDS_NAMES.get(self.name, self.name), data_dir=data_dir)
        except DatasetNotFoundError:
            pass
        # No prepared files: the registered builder's own data source is the last resort. It
        # is what ``tfds.testing.mock_data`` serves, with decoded images; for real data that
        # is not prepared it fails, and the message says how to prepare it.
        where = self.data_dir or "the default TFDS data dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
        flag = f" --data_dir {self.data_dir}" if self.data_dir else ""
        not_prepared = DataError(f"TFDS dataset {self.name} is not prepared in {where}: build it with "
                                 f"`tfds build {self.name}{flag} --file_format array_record` (needs TensorFlow "
                                 "and network)")
        try:
            builder = self._registered_builder()
            builder.as_data_source(_split_names(self.split)[0])
        except Exception:  # TFDS raises several kinds for "no data" (AssertionError, FileNotFoundError, ...)
            raise not_prepared from None
        return builder

    def _registered_builder(self):
        import tensorflow_datasets as tfds

        self._registered = True
        return tfds.builder(self.name, data_dir=self.data_dir)

    def _open(self, builder=None):
        """The TFDS data source, opened once per process, images left encoded."""
        if self._records is None:
            import tensorflow_datasets as tfds

            if builder is None:
                builder = (self._registered_builder() if self._registered
                           else tfds.builder_from_directory(self._builder_dir))
            features = builder.info.features
            skip = {k: tfds.decode.SkipDecoding() for k, f in features.items() if isinstance(f, tfds.features.Image)}
            if self._registered:
                skip = None  # the registered (mocked) source cannot hand over encoded bytes
            try:
                self._records = builder.as_data_source(self.split, decoders=skip)
            except NotImplementedError:
                raise DataError(
                    f"{self.name} in {self._builder_dir} is not in array_record format: rebuild with "
                    f"`--file_format array_record` or run `tfds convert_format`"
                ) from None
            except (ValueError, KeyError) as e:
                raise DataError(f"{self.name}: cannot read split {self.split!r}: {str(e).splitlines()[0]}") from None
            self._image_feature = features["image"]
        return self._records

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_records"] = None
        state.pop("_image_feature", None)
        return state

    def __len__(self) -> int:
        return self._len

    def _record(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self._len:
            raise IndexError(f"{self.name}/{self.split} has {self._len} examples, not index {index}")
        return self._open()[index]

    def _key(self, index: int, record: dict[str, Any]) -> str:
        key = f"{self.name}/{self.split}[{index}]"
        feature = _FILE_NAME_FEATURE.get(self.name)
        return f"{key} {_text(record[feature])}" if feature else key

    def _captions(self, record: dict[str, Any]) -> tuple[list[str], list[str]]:
        if self.name == "coco_captions":
            # Raw COCO captions carry stray spaces and newlines.
            captions = (" ".join(_text(t).split()) for t in np.atleast_1d(record["captions"]["text"]))
            return [c for c in captions if c], []
        if self.name == "caltech_birds2011":
            # The ClassLabel has numbers for names; the class is in label_name instead.
            class_name = _text(record["label_name"])
        else:
            class_name = self._label_names[int(record["label"])]
        fallback = label_caption(self.name, class_name)
        if self.name not in _REED_DATASETS:
            return [fallback], []
        stem = PurePosixPath(_text(record[_FILE_NAME_FEATURE[self.name]])).stem
        folder = self._caption_files.get(stem)
        captions, issues = read_caption_file(Path(self._caption_root, folder, stem + ".txt")) if folder else ([], [])
        if not captions:
            return [fallback], [i for i in issues if i != "caption_file_missing"] + [FALLBACK]
        return captions, issues

    def captions(self, index: int) -> list[str]:
        """The captions of example ``index``.

        Costs one record read (the image's bytes come along undecoded: array_record stores whole
        examples) and, for birds and flowers, one caption file read.
        """
        return self._captions(self._record(index))[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self._record(index)
        image = record["image"]
        if self.name == "mnist" and isinstance(image, bytes):
            # Decoded here so the workers get the grayscale [28, 28, 1] array itself: a 28x28 PNG
            # costs nothing to decode, and TFDS wrote these PNGs from clean arrays.
            image = self._image_feature.decode_example_np(image)
        captions, issues = self._captions(record)
        return example(self._key(index, record), image, captions, issues)
