"""What every captioned-image source provides to the input pipeline.

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
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from jaxgan.errors import JaxganError


class DataError(JaxganError, ValueError):
    """A dataset that cannot be read at all (missing, empty, or every example bad); one line."""


@runtime_checkable
class ExampleSource(Protocol):
    """A random-access source of raw captioned examples (see the module docstring)."""

    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...

    def captions(self, index: int) -> list[str]: ...


def example(key: str, image: Any, captions: list[str], issues: list[str] | None = None) -> dict[str, Any]:
    """A raw example dict in the shape every source returns."""
    return {"key": key, "image": image, "captions": list(captions), "issues": list(issues or [])}
