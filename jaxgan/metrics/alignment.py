"""Text alignment of a trained generator: do samples show the attributes their captions ask for?

``jaxgan alignment --workdir W`` samples the EMA generator of W's latest checkpoint for every
one of the 432 shapes attribute combinations (``--per-combination`` samples each, captions in
randomly drawn templates), reads the samples back with the shipped attribute classifier, and
prints and writes ``W/alignment.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from jaxgan import pixels
from jaxgan.metrics.attributes import evaluate_text_alignment


def alignment_of(generator: Callable[[Sequence[str], Sequence[int]], np.ndarray], per_combination: int = 4,
                 seed: int = 0) -> dict:
    """Per-attribute accuracy of ``generator`` (prompts, seeds -> uint8 images) over all 432 combinations.

    Example:
        report = alignment_of(TrainedGenerator(config, "runs/demo"), per_combination=4)
        report["accuracy"]["all"]  # the share of samples with every attribute right
    """
    calls = [0]

    def generate(captions: list[str], _attrs: np.ndarray) -> np.ndarray:
        # Distinct seeds for every request, reproducible from ``seed``.
        first = seed * 1_000_003 + calls[0]
        calls[0] += len(captions)
        return pixels.to_float(generator(captions, list(range(first, first + len(captions)))))

    accuracy = evaluate_text_alignment(generate, num_per_combination=per_combination, template=None,
                                       seed=seed)
    return {"samples": 432 * per_combination, "seed": seed, "templates": "random per caption",
            "accuracy": accuracy}
