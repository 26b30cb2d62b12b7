"""``jaxgan sanity``: does the evaluation tell real images from broken ones?

Scores three image sources under the shapes protocol, against the same reference
statistics (the test split):

* ``real``: real images of the train split, disjoint from the reference: the ceiling of
  every metric, and FID's estimator bias at this sample count;
* ``grey``: the same real images in grey (every shape in place, no palette colour left): a
  generator that gets colour wrong;
* ``constant``: one grey square for every caption: a collapsed generator.

Run it with two seeds to see that the ordering holds (``--seed`` changes the data draw, the
reference and KID's subsets).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import jax.numpy as jnp

from jaxgan.metrics.evaluate import ImageSource, evaluate, format_metrics, real_source
from jaxgan.metrics.protocol import EvalProtocol


def grey(source: ImageSource) -> ImageSource:
    """``source`` with every image converted to luminance (ITU-R BT.601 weights)."""

    def make_images(consts, inputs):
        images = source.make_images(consts, inputs)
        luma = images @ jnp.array([0.299, 0.587, 0.114], images.dtype)
        return jnp.broadcast_to(luma[..., None], images.shape)

    return dataclasses.replace(source, name="grey", make_images=make_images)


def constant(source: ImageSource, resolution: int, value: float = -0.5) -> ImageSource:
    """A source that ignores its captions and returns one flat image."""

    def make_images(_consts, inputs):
        return jnp.full((inputs["index"].shape[0], resolution, resolution, 3), value, jnp.float32)

    return dataclasses.replace(source, name="constant", make_images=make_images)


def sanity_table(protocol: EvalProtocol, cache_dir: str | None = None,
                 progress: bool = True) -> dict[str, dict]:
    """{source name: evaluation JSON} for real, grey and constant images under ``protocol``."""
    real = real_source("train", protocol.data_seed, protocol.resolution, name="real")
    return {s.name: evaluate(s, protocol, cache_dir=cache_dir, progress=progress).to_json()
            for s in (real, grey(real), constant(real, protocol.resolution))}


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``jaxgan sanity``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-samples", type=int, default=10_000)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="data seed, noise seed and KID subsets")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--json", default=None, help="also write the results here")
    return p


def run(args: argparse.Namespace) -> int:
    """``jaxgan sanity``: the real/grey/constant table under the shapes protocol."""
    protocol = EvalProtocol(num_samples=args.num_samples, num_reference=args.num_samples,
                            resolution=args.resolution, data_seed=args.seed, seed=args.seed)
    table = sanity_table(protocol, args.cache_dir)
    names = ["fid", "kid", "is", "precision", "recall", "alignment_all", "fidelity_iou_ratio"]
    print(f"protocol {next(iter(table.values()))['protocol_hash']}, {args.num_samples} samples, seed {args.seed}")
    print(f"{'source':10s}" + "".join(f"{n:>15s}" for n in names))
    for source, result in table.items():
        shown = format_metrics(result["metrics"])
        print(f"{source:10s}" + "".join(f"{shown[n]:>15s}" for n in names))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=2)
    return 0
