"""Benchmark the compiled training step: compile time, step time and images/s.

``python -m jaxgan.bench --preset default`` builds the same step ``train.py`` runs (same
config, models and parallel layout) on synthetic inputs of the right shapes, compiles it,
warms up, then times ``--steps`` steps one by one with ``block_until_ready`` and reports
the median and spread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Sequence

import jax
import numpy as np

from jaxgan.config import Config, get_config
from jaxgan.models import build_models
from jaxgan.parallel import data_parallel
from jaxgan.state import init_state
from jaxgan.step import make_train_step


def synthetic_batch(config: Config, sentence_dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A global batch with the shapes and dtypes of a real one."""
    rng = np.random.default_rng(seed)
    b, r = config.train.batch_size, config.model.resolution
    return {"image": rng.integers(0, 256, (b, r, r, 3), dtype=np.uint8),
            "sentence": rng.normal(size=(b, sentence_dim)).astype(np.float32),
            "wrong_sentence": rng.normal(size=(b, sentence_dim)).astype(np.float32)}


def benchmark_step(config: Config, sentence_dim: int = 128, warmup: int = 3, steps: int = 20) -> dict[str, Any]:
    """Times the compiled train step of ``config``; returns a dict of measurements."""
    parallel = data_parallel(config)
    generator, discriminator = build_models(config.model, *parallel.batchnorm_layout(config.model.bn_sync))
    step_fn = parallel.compile(make_train_step(config, generator, discriminator, parallel.axis_name))
    state = parallel.put_state(jax.jit(lambda: init_state(config, generator, discriminator, sentence_dim))())
    batch = parallel.put_batch(synthetic_batch(config, sentence_dim))

    t0 = time.perf_counter()
    state, metrics = step_fn(state, batch)
    jax.block_until_ready((state, metrics))
    compile_and_first = time.perf_counter() - t0
    for _ in range(warmup):
        state, metrics = step_fn(state, batch)
    jax.block_until_ready((state, metrics))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = step_fn(state, batch)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {
        "resolution": config.model.resolution, "width": config.model.width,
        "batch_size": config.train.batch_size, "dtype": config.model.dtype,
        "parallel": parallel.mode, "devices": parallel.num_devices,
        "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
        "compile_and_first_step_s": compile_and_first,
        "step_ms_median": 1e3 * median, "step_ms_min": 1e3 * min(times), "step_ms_max": 1e3 * max(times),
        "images_per_s": config.train.batch_size / median, "timed_steps": steps,
    }


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--json", default=None, help="also write the result to this file")
    args = p.parse_args(argv)
    result = benchmark_step(get_config(args.preset, args.overrides), steps=args.steps)
    for k, v in result.items():
        print(f"{k:28s} {v:.3f}" if isinstance(v, float) else f"{k:28s} {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
