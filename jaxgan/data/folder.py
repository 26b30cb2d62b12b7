"""A folder of image files with captions: the ExampleSource for users' own datasets.

Images are every .jpg, .jpeg, .png and .webp file (any case) under the root, in nested folders
too, hidden files and folders excepted, in sorted order of their relative paths. Captions come
from the first of these that exists:

1. ``captions.jsonl`` at the root: lines like ``{"file": "birds/001.jpg", "caption": "..."}``
   or ``{"file": ..., "captions": ["...", "..."]}``; a file may have several lines.
2. ``captions.csv`` at the root: a header naming the columns ``file`` and ``caption`` (others
   are ignored), one row per caption; quote captions that hold commas.
3. A sidecar text file next to each image with the same stem (``001.jpg`` -> ``001.txt``), one
   caption per line.

Paths in an index are relative to the root with "/" separators. Bad caption data is counted,
not fatal: malformed index lines and lines naming files that are not there go to
``index_issues`` (with one warning naming the first); an image without captions is kept
with captions [] and an issue (the pipeline skips and counts it). A name with an image
extension that is not a regular file (a symlink loop or a broken link, a FIFO, which would
block a reader forever, a device) is left out at the scan and counted as ``not_a_file``; a
folder named like an image is a folder.
"""

from __future__ import annotations

import logging
import operator
import os
import posixpath
from pathlib import Path
from typing import Any, ClassVar

from jaxgan.data import captions as cap
from jaxgan.data.source import DataError, ExampleSource, example

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
JSONL_INDEX, CSV_INDEX = "captions.jsonl", "captions.csv"


class ImageFolderSource(ExampleSource):
    """Images under ``root`` with their captions (see the module docstring for the format).

    Holds only the root, relative paths and index captions, so it pickles small and fast for
    the pipeline's worker processes; sidecar captions are read when an example is.

    Attributes:
      name: names the dataset in logs and metrics.
      caption_source: "captions.jsonl", "captions.csv" or "sidecar .txt".
      index_issues: counts of problems met before any image is read: "index_malformed" (caption
        index lines or rows skipped), "index_unknown_file" (index lines naming no image of the
        folder), "caption_not_utf8" (index lines repaired), "not_a_file" (image names that
        are not regular files, left out).
    """

    # Whether a folder's captions name left and right, or its images hold text, is for its
    # owner to say (data.mirror=true).
    mirror_safe: ClassVar[bool] = False

    def __init__(self, root: str | Path, name: str | None = None):
        path = Path(root).expanduser()
        if not path.exists():
            raise DataError(f"image folder {path} does not exist")
        if not path.is_dir():
            raise DataError(f"image folder {path} is not a directory")
        self.root = str(path)
        self.name = name or path.resolve().name
        self._files, sidecars, not_files = _scan(path)
        if not self._files:
            raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}, any case) under {path}")
        self.index_issues: dict[str, int] = {}
        self._count("not_a_file", len(not_files))
        if not_files:
            log.warning("%s: %d names with an image extension are not regular files and are left out "
                        "(first: %s)", path, len(not_files), not_files[0])
        # Index captions and issues, by position; None for sidecar captions (read on demand).
        self._captions: list[tuple[str, ...]] | None = None
        self._issues: dict[int, tuple[str, ...]] = {}
        index = next((path / n for n in (JSONL_INDEX, CSV_INDEX) if (path / n).is_file()), None)
        if index is None:
            self.caption_source = "sidecar .txt"
            if not sidecars:
                log.warning("%s: no %s, %s or .txt captions; every image has captions []",
                            path, JSONL_INDEX, CSV_INDEX)
        else:
            self.caption_source = index.name
            if index.name == JSONL_INDEX and (path / CSV_INDEX).is_file():
                log.warning("%s: using %s; %s is ignored", path, JSONL_INDEX, CSV_INDEX)
            self._read_index(index)

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The example at ``index``: its relative path as key, the file's bytes undecoded.

        A file that cannot be read (deleted since the scan) gives empty bytes and the issue
        "image_unreadable"; decoding then refuses it as "empty", and the pipeline counts it.
        """
        i = self._position(index)
        captions, issues = self._caption_entry(i)
        try:
            data = (Path(self.root) / self._files[i]).read_bytes()
        except OSError:
            data, issues = b"", [*issues, "image_unreadable"]
        return example(self._files[i], data, captions, issues)

    def captions(self, index: int) -> list[str]:
        """The captions of example ``index``, without opening its image."""
        return self._caption_entry(self._position(index))[0]

    def path(self, index: int) -> str:
        """The image's path relative to the root, with "/" separators."""
        return self._files[self._position(index)]

    def _position(self, index: int) -> int:
        i = operator.index(index)  # numpy integers too
        if not -len(self._files) <= i < len(self._files):
            raise IndexError(f"{self.name}: index {i} out of range for {len(self._files)} images")
        return i % len(self._files)

    def _caption_entry(self, i: int) -> tuple[list[str], list[str]]:
        if self._captions is not None:
            return list(self._captions[i]), list(self._issues.get(i, ()))
        sidecar = Path(self.root) / (posixpath.splitext(self._files[i])[0] + ".txt")
        captions, issues = cap.read_caption_file(sidecar)
        if not captions and "caption_file_missing" not in issues:
            issues.append("caption_empty")
        return captions, issues

    def _read_index(self, index: Path) -> None:
        read = cap.read_caption_jsonl if index.name == JSONL_INDEX else cap.read_caption_csv
        try:
            entries, malformed = read(index)
        except ValueError as e:  # a csv header without the needed columns
            raise DataError(str(e)) from None
        if malformed and not entries:
            line, why = malformed[0]
            raise DataError(f"{index}: all {len(malformed)} lines are malformed (line {line}: {why})")
        position = {f: i for i, f in enumerate(self._files)}
        captions: list[list[str]] = [[] for _ in self._files]
        mentioned, repaired, unknown = set(), set(), []
        for entry in entries:
            i = position.get(_relative(entry.file))
            if i is None:
                unknown.append(entry)
                continue
            captions[i].extend(entry.captions)
            mentioned.add(i)
            if entry.repaired:
                repaired.add(i)
        self._count("index_malformed", len(malformed))
        self._count("index_unknown_file", len(unknown))
        self._count("caption_not_utf8", sum(e.repaired for e in entries))
        if malformed:
            log.warning("%s: %d malformed lines skipped (first: line %d: %s)", index, len(malformed), *malformed[0])
        if unknown:
            log.warning("%s: %d lines name files that are not images of the folder (first: line %d: %r)",
                        index, len(unknown), unknown[0].line, unknown[0].file)
        self._captions = [tuple(c) for c in captions]
        for i, c in enumerate(captions):
            issues = (("caption_not_utf8",) if i in repaired else ()) + (
                () if c else ("caption_empty",) if i in mentioned else ("caption_missing",))
            if issues:
                self._issues[i] = issues

    def _count(self, key: str, n: int) -> None:
        if n:
            self.index_issues[key] = self.index_issues.get(key, 0) + n


def _relative(file: str) -> str:
    """An index's file name in the form the scan gives: "/" separators, no "./"."""
    return posixpath.normpath(file.strip().replace("\\", "/"))


def _scan(root: Path) -> tuple[list[str], int, list[str]]:
    """(sorted relative paths of the images, how many sidecar .txt files sit beside them, the
    image names that are not regular files).

    Symlinked folders are followed once each (a link back up the tree would loop forever).
    """
    files, sidecars, seen, not_files = [], 0, set(), []
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        relative = Path(folder).relative_to(root).as_posix()
        stems = set()
        for name in names:
            stem, ext = os.path.splitext(name)
            if not name.startswith(".") and ext.lower() in IMAGE_EXTENSIONS:
                path = name if relative == "." else f"{relative}/{name}"
                # One stat per image: follows links, False for loops, broken links and FIFOs.
                if not os.path.isfile(os.path.join(folder, name)):
                    not_files.append(path)
                    continue
                files.append(path)
                stems.add(stem)
        sidecars += sum(1 for name in names if name.endswith(".txt") and name[:-4] in stems)
    return sorted(files), sidecars, sorted(not_files)
