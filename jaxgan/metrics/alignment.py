"""Text alignment of a trained run: do samples show the attributes their captions ask for?

``python -m jaxgan.metrics.alignment --workdir W`` samples the EMA generator of W's latest
checkpoint for every one of the 432 shapes attribute combinations (``--per-combination``
samples each, captions in randomly drawn templates), reads the samples back with the shipped
attribute classifier, and prints and writes ``W/alignment.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxgan import pixels
from jaxgan.metrics.attributes import evaluate_text_alignment
from jaxgan.sampling import TrainedGenerator


def run_alignment(workdir: str | Path, per_combination: int = 4, seed: int = 0,
                  step: int | None = None) -> dict:
    """Per-attribute accuracy of ``workdir``'s EMA generator over all 432 combinations."""
    from jaxgan.cli import resolve_config

    workdir = Path(workdir)
    generator = TrainedGenerator(resolve_config(workdir, None, []), workdir, step)
    calls = [0]

    def generate(captions: list[str], _attrs: np.ndarray) -> np.ndarray:
        # Distinct seeds for every request, reproducible from ``seed``.
        first = seed * 1_000_003 + calls[0]
        calls[0] += len(captions)
        return pixels.to_float(generator(captions, list(range(first, first + len(captions)))))

    accuracy = evaluate_text_alignment(generate, num_per_combination=per_combination, template=None,
                                       seed=seed)
    return {"step": generator.step, "samples": 432 * per_combination, "seed": seed,
            "templates": "random per caption", "accuracy": accuracy}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Attribute accuracy of a trained shapes generator.")
    p.add_argument("--workdir", required=True)
    p.add_argument("--per-combination", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step", type=int, default=None)
    args = p.parse_args(argv)
    from jaxgan.checkpoint import CheckpointError

    try:
        result = run_alignment(args.workdir, args.per_combination, args.seed, args.step)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (Path(args.workdir) / "alignment.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"text alignment at step {result['step']} ({result['samples']} samples, "
          "shipped attribute classifier):")
    for name, value in result["accuracy"].items():
        print(f"  {name:10s} {100 * value:6.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
