"""The per-example work of the input pipeline's workers: decode, pick a caption, pick a mismatch.

It runs in Grain worker processes, so this module imports neither JAX nor the text encoder:
a worker starts in a fraction of a second and holds only the source and the decoder. The
randomness comes from Grain's per-example generator, a function of (data seed, position), so
an example is the same whichever worker prepares it and whenever.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxgan.data.images import ImageError, load_image
from jaxgan.data.source import ExampleSource

NO_CAPTION = "no_caption"
# Tries to find a caption different from the example's own: a label-caption dataset of ten
# classes draws its own caption 10% of the time, so eight tries leave a 1e-8 chance.
_MISMATCH_TRIES = 8


class PrepareExample:
    """raw example -> {"key", "issues", "image", "caption", "wrong_caption"}, or with "skip": reason.

    A skipped example keeps its key and reason so that the pipeline can count it and name it
    in messages; it never raises for bad data.
    """

    def __init__(self, source: ExampleSource, resolution: int, fit: str):
        self.source, self.resolution, self.fit = source, resolution, fit

    def __call__(self, raw: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        out = {"key": raw["key"], "issues": list(raw["issues"])}
        captions = raw["captions"]
        if not captions:
            return {**out, "skip": NO_CAPTION}
        try:
            image, issues = load_image(raw["image"], self.resolution, self.fit)
        except ImageError as e:
            return {**out, "skip": e.reason}
        caption = captions[int(rng.integers(len(captions)))]
        return {**out, "issues": out["issues"] + issues, "image": image, "caption": caption,
                "wrong_caption": self.mismatched(captions, rng)}

    def mismatched(self, own: list[str], rng: np.random.Generator) -> str:
        """A caption of a random example that is none of ``own`` (the negatives of the
        matching-aware loss), or the last one drawn if the dataset has no other."""
        wrong = own[0]
        for _ in range(_MISMATCH_TRIES):
            others = self.source.captions(int(rng.integers(len(self.source))))
            if others:
                wrong = others[int(rng.integers(len(others)))]
                if wrong not in own:
                    break
        return wrong
