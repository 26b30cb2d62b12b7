"""TensorBoard event files of a training run, written with tensorboardX (no TensorFlow needed).

    tensorboard --logdir WORKDIR/tensorboard

shows the losses, gradient/update/param norms, D's accuracies, learning rates, data counts,
steps/s, the periodic evaluation's metrics, and the sample grids with their captions.
"""

from __future__ import annotations

import io
import numbers
from pathlib import Path
from typing import Any

import numpy as np

from jaxgan.paths import is_remote, workdir_path

# Scalars are grouped into TensorBoard sections by their tag's prefix.
_SECTIONS = (("d_", "discriminator/"), ("g_", "generator/"), ("data/", ""), ("input_", "input/"),
             ("steps_", "speed/"), ("skipped", "robustness/"), ("nonfinite", "robustness/"))


def tag_of(key: str) -> str:
    """The TensorBoard tag of a metrics key: ``d_loss`` -> ``discriminator/d_loss``."""
    for prefix, section in _SECTIONS:
        if key.startswith(prefix):
            return section + key
    return key


class _BucketEventFile:
    """An event file in a bucket, through epath: an object cannot be appended to, so every
    flush writes the whole file again (as tensorboardX's own gs:// writer does)."""

    def __init__(self, path: str):
        self.path, self.buffer = workdir_path(path), io.BytesIO()

    def write(self, data: bytes) -> None:
        self.buffer.write(data)

    def flush(self) -> None:
        self.path.write_bytes(self.buffer.getvalue())

    def close(self) -> None:
        self.flush()


class _BucketEventFiles:
    """tensorboardX's writer factory for a URI scheme: event files through ``jaxgan.paths``."""

    def open(self, path: str) -> _BucketEventFile:
        return _BucketEventFile(path)

    def directory_check(self, path: str) -> None:
        pass  # a bucket has no folders to create


class TensorBoardLog:
    """Writes a run's event files under ``directory``; every call is a no-op when disabled
    (processes other than 0 in a multi-process run)."""

    def __init__(self, directory: str | Path, enabled: bool = True, resume_step: int = 0):
        self.writer = None
        if enabled:
            from tensorboardX import SummaryWriter, record_writer

            if is_remote(directory):  # one path abstraction for every workdir file (jaxgan.paths)
                record_writer.register_writer_factory(str(directory).partition(":")[0], _BucketEventFiles())
            # purge_step: TensorBoard hides what an interrupted run logged past its checkpoint.
            self.writer = SummaryWriter(str(directory), purge_step=resume_step + 1 if resume_step else None)

    def scalars(self, step: int, values: dict[str, Any], prefix: str = "") -> None:
        """Every numeric value of ``values`` at ``step``."""
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                self.writer.add_scalar(prefix + tag_of(key), float(value), step)

    def image(self, tag: str, path: str | Path, step: int) -> None:
        """A PNG written by the run (a captioned sample grid) as an image summary."""
        if self.writer is None:
            return
        from PIL import Image

        with workdir_path(path).open("rb") as f, Image.open(f) as image:
            pixels = np.asarray(image.convert("RGB"))
        self.writer.add_image(tag, pixels, step, dataformats="HWC")

    def text(self, tag: str, text: str, step: int) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
