"""Input-pipeline throughput: images/s of the loader alone, per decoding core.

    jaxgan throughput --resolution 64 256 --workers 0 1 2

writes a folder of JPEGs (``--source-size``, default 500x375, the size of a typical CUB
image) and times (1) ``load_image`` alone on one core and (2) the whole pipeline (Grain,
workers, caption choice, embedding gather, batch assembly) for ``--batches`` batches after
one warm-up batch, the median of ``--repeats`` runs. No device work is involved.
``--encoders shapes minilm`` also times a batch's text embeddings: running the frozen encoder
(what every step would cost without the cache) against gathering rows from the cache.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from jaxgan.data.embeddings import embedding_table
from jaxgan.data.folder import ImageFolderSource
from jaxgan.data.images import load_image
from jaxgan.data.pipeline import Pipeline
from jaxgan.presets import get_config
from jaxgan.text import load_text_encoder


class _ConstantTable:
    """An embedding table of zeros: the gather and copy cost of a real one, no encoder."""

    truncated = 0

    def __init__(self, dim: int = 256):
        self.dim = dim

    def __call__(self, captions: Sequence[str]) -> np.ndarray:
        return np.zeros((len(captions), self.dim), np.float32)

    def text(self, captions: Sequence[str]) -> dict[str, np.ndarray]:
        return {"sentence": self(captions)}


def write_jpegs(directory: Path, count: int, size: tuple[int, int], seed: int = 0) -> Path:
    """``count`` smooth random JPEGs (quality 90) with one caption each."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    w, h = size
    for i in range(count):
        # Low-frequency noise upsampled: compresses like a photo, unlike white noise.
        small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
        image.save(directory / f"img_{i:05d}.jpg", quality=90)
        (directory / f"img_{i:05d}.txt").write_text(f"picture number {i}\n")
    return directory


def decode_rate(files: list[Path], resolution: int) -> float:
    """Images/s of ``load_image`` on one core (files read from the page cache)."""
    blobs = [f.read_bytes() for f in files]
    load_image(blobs[0], resolution)
    start = time.perf_counter()
    for blob in blobs:
        load_image(blob, resolution)
    return len(blobs) / (time.perf_counter() - start)


def pipeline_rate(folder: Path, resolution: int, workers: int, batch_size: int, batches: int) -> float:
    """Images/s of the whole pipeline over ``batches`` batches after a warm-up batch."""
    config = get_config("default", [f"model.resolution={resolution}", f"train.batch_size={batch_size}",
                                    f"data.workers={workers}"])
    pipeline = Pipeline(config, ImageFolderSource(folder), _ConstantTable())
    stream = pipeline.iterate(0, batches + 1, prefetch=2)
    next(stream)  # worker start-up is not throughput
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    seconds = time.perf_counter() - start
    stream.close()
    return batches * batch_size / seconds


def embedding_costs(encoder_name: str, batch_size: int, repeats: int = 20) -> dict[str, float]:
    """Milliseconds per training batch to get its text embeddings (B captions and B mismatched
    ones): running the frozen encoder, against gathering rows from the frozen-embedding cache."""
    encoder = load_text_encoder(encoder_name)
    captions = [f"a small bird number {i} with red wings and a short beak" for i in range(4 * batch_size)]
    with tempfile.TemporaryDirectory() as tmp:
        table = embedding_table(encoder, captions, tmp, with_words=True)
        rng = np.random.default_rng(0)

        def median_ms(fn) -> float:
            fn(rng.choice(captions, 2 * batch_size).tolist())  # compile / warm the page cache
            times = []
            for _ in range(repeats):
                picked = rng.choice(captions, 2 * batch_size).tolist()
                start = time.perf_counter()
                fn(picked)
                times.append(time.perf_counter() - start)
            return 1000 * statistics.median(times)

        def encode(picked: list[str]) -> None:
            out = encoder(picked)
            np.asarray(out.sentence), np.asarray(out.words)  # noqa: B018 - wait for the device

        return {"encoder": encoder_name, "batch_size": batch_size, "encode_ms": median_ms(encode),
                "cache_ms": median_ms(lambda picked: (table.text(picked[:batch_size]), table(picked[batch_size:])))}


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``jaxgan throughput``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, nargs="+", default=[64, 256])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--source-size", default="500x375", help="WIDTHxHEIGHT of the JPEGs")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--encoders", nargs="*", default=[],
                   help="also time text embeddings per batch: encoder vs the frozen-embedding cache")
    p.add_argument("--json", help="also write the rows to this file")
    return p


def run(args: argparse.Namespace) -> int:
    """``jaxgan throughput``: decode and pipeline rates per resolution and worker count."""
    size = tuple(int(v) for v in args.source_size.lower().split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_jpegs(Path(tmp) / "jpegs", args.images, size)
        files = sorted(folder.glob("*.jpg"))
        for resolution in args.resolution:
            one_core = statistics.median(decode_rate(files, resolution) for _ in range(args.repeats))
            rows.append({"resolution": resolution, "what": "load_image, 1 core", "images_per_s": one_core,
                         "per_core": one_core})
            for workers in args.workers:
                rate = statistics.median(pipeline_rate(folder, resolution, workers, args.batch_size, args.batches)
                                         for _ in range(args.repeats))
                cores = max(workers, 1)
                rows.append({"resolution": resolution, "what": f"pipeline, {workers} workers",
                             "images_per_s": rate, "per_core": rate / cores})
    print(f"{'px':>4}  {'what':<22} {'images/s':>9} {'per core':>9}")
    for r in rows:
        print(f"{r['resolution']:>4}  {r['what']:<22} {r['images_per_s']:>9.0f} {r['per_core']:>9.0f}")
    costs = [embedding_costs(name, args.batch_size) for name in args.encoders]
    for c in costs:
        print(f"text embeddings of a batch of {c['batch_size']} (+ as many mismatched), {c['encoder']}: "
              f"encoder {c['encode_ms']:.1f} ms, cache {c['cache_ms']:.2f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps({"source_size": args.source_size, "rows": rows,
                                               "embeddings": costs}, indent=2) + "\n")
    return 0
