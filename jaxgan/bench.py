"""Benchmark the compiled training step: compile time, step time, images/s, FLOPs, MFU, memory.

``jaxgan bench --preset default [--preset dcgan64 ...]`` builds the step
``train.py`` runs (``jaxgan.program.build_train_program``: same config, models, losses and
parallel layout) on synthetic inputs of the right shapes. It compiles ahead of time (timed
on its own), warms up, then times ``--steps`` steps one by one with ``block_until_ready``
and reports the median and spread. FLOPs come from XLA's cost analysis of the compiled
step, cross-checked against ``jaxgan.flops``' count of the convolutions and dense layers.
MFU is achieved FLOP/s over a peak: ``--peak-tflops``, else the vendor's dense peak for a
known accelerator, else a peak measured on this machine with a large matmul in the compute
dtype (the output says which). A measured peak is cached per machine (``host_peak``), so
that two runs of one config divide by the same number; ``--remeasure-peak`` refreshes it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgan.config import Config
from jaxgan.flops import WORDS_PER_CAPTION, step_flops
from jaxgan.models import build_models, sentence_width
from jaxgan.paths import cache_dir
from jaxgan.presets import get_config
from jaxgan.program import TrainProgram, build_train_program
from jaxgan.workdir import write_atomically

# Vendor dense peaks in TFLOP/s by (device_kind prefix, compute dtype), and memory bandwidth
# in TB/s. float32 on NVIDIA GPUs: XLA runs f32 convolutions and dots on tensor cores in
# TF32 by default, so the TF32 dense peak is the honest ceiling.
KNOWN_PEAKS: dict[str, dict[str, float]] = {
    "NVIDIA H100 80GB HBM3": {"bfloat16": 989.0, "float32": 494.5, "hbm_tbps": 3.35},
    "NVIDIA H100 PCIe": {"bfloat16": 756.0, "float32": 378.0, "hbm_tbps": 2.0},
    "NVIDIA H200": {"bfloat16": 989.0, "float32": 494.5, "hbm_tbps": 4.8},
    "NVIDIA A100-SXM4-80GB": {"bfloat16": 312.0, "float32": 156.0, "hbm_tbps": 2.04},
    "NVIDIA A100-SXM4-40GB": {"bfloat16": 312.0, "float32": 156.0, "hbm_tbps": 1.56},
    "TPU v4": {"bfloat16": 275.0, "float32": 275.0, "hbm_tbps": 1.2},
    "TPU v5 lite": {"bfloat16": 197.0, "float32": 197.0, "hbm_tbps": 0.82},
    "TPU v5p": {"bfloat16": 459.0, "float32": 459.0, "hbm_tbps": 2.76},
    "TPU v6 lite": {"bfloat16": 918.0, "float32": 918.0, "hbm_tbps": 1.64},
}


# The synthetic sentence width of a benchmark, for generators that take any.
SENTENCE_DIM = 128


def synthetic_batch(config: Config, sentence_dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A global batch with the shapes and dtypes of a real one."""
    rng = np.random.default_rng(seed)
    b, r = config.train.batch_size, config.model.resolution
    batch = {"image": rng.integers(0, 256, (b, r, r, 3), dtype=np.uint8),
             "sentence": rng.normal(size=(b, sentence_dim)).astype(np.float32),
             "wrong_sentence": rng.normal(size=(b, sentence_dim)).astype(np.float32)}
    if config.model.uses_word_attention:
        batch["words"] = rng.normal(size=(b, WORDS_PER_CAPTION, sentence_dim)).astype(np.float32)
        batch["word_mask"] = np.arange(WORDS_PER_CAPTION)[None, :] < rng.integers(3, WORDS_PER_CAPTION, (b, 1))
    return batch


HOST_PEAKS = "host_peaks"  # the subdirectory of the cache root that holds measured peaks
PEAK_REPEATS = 20  # timed matmuls (and elementwise passes) of one peak measurement
BUSY_SPREAD = 1.25  # fastest / median repeat above which a peak measurement warns of a busy machine


def _times(fn, repeats: int) -> list[float]:
    fn()  # compile and warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def measured_peaks(dtype: str, device: Any, repeats: int = PEAK_REPEATS, n: int = 2048) -> dict[str, list[float]]:
    """FLOP/s of every repeat of an ``n``x``n`` matmul in ``dtype`` on ``device``, and bytes/s
    of every repeat of a 128 MiB elementwise op (read + write)."""
    a = jax.device_put(jnp.ones((n, n), dtype), device)
    matmul = jax.jit(lambda x: x @ x)
    flops = [2 * n**3 / t for t in _times(lambda: matmul(a).block_until_ready(), repeats)]
    big = jax.device_put(jnp.ones((32 * 2**20,), jnp.float32), device)
    scale = jax.jit(lambda x: x * 1.5)
    bandwidth = [2 * big.nbytes / t for t in _times(lambda: scale(big).block_until_ready(), repeats)]
    return {"flops": flops, "bytes_per_s": bandwidth}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: the platform module's coarser name
    return platform.processor() or platform.machine()


def machine_key(dtype: str, device: Any) -> dict[str, Any]:
    """What a measured peak depends on: the CPU, the cores this process may use, jax, the
    backend and device, and the dtype. A change in any of them is another cache entry."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": _cpu_model(), "cores": cores, "jax": jax.__version__, "backend": device.platform,
            "device_kind": device.device_kind, "dtype": dtype}


def peak_cache_path(key: dict[str, Any]) -> Path:
    """The file under ``jaxgan.paths.cache_dir(HOST_PEAKS)`` that holds the peak of ``key``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir(HOST_PEAKS) / f"{key['backend']}-{key['dtype']}-{digest}.json"


def _spread(samples: list[float]) -> dict[str, float]:
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples)}


def _read_cached(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached entry at ``path``, or None if it is missing, unreadable or not for ``key``."""
    try:
        entry = json.loads(path.read_text())
        if entry["key"] != key:
            return None  # another machine's entry under the same short hash
        for name in ("flops", "bytes_per_s"):
            samples = entry[name]
            if not (isinstance(samples, list) and samples
                    and all(isinstance(v, float) and np.isfinite(v) and v > 0 for v in samples)):
                raise ValueError(f"{name} is not a list of positive numbers")
        return entry
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"note: ignoring the unreadable host-peak cache {path} ({type(e).__name__}: {e}); measuring again",
              file=sys.stderr)
        return None


def host_peak(dtype: str, device: Any, remeasure: bool = False) -> dict[str, Any]:
    """This machine's measured peaks for ``dtype``, measured once and then read from the cache.

    A peak re-measured on every run moves with whatever else the machine is doing (on a shared
    2-core host, by 2x between two runs), and MFU with it. So it is measured once per
    ``machine_key``: ``PEAK_REPEATS`` matmuls, of which the fastest is the peak (interference
    only ever slows a repeat down) and min/median/max are the spread, written to
    ``peak_cache_path``. ``remeasure`` measures again and replaces the entry.

    A cache that cannot be written (a read-only cache root) costs a note, not the benchmark.

    Returns:
      ``{"key", "path", "measured_at", "repeats", "flops", "bytes_per_s"}`` plus ``"cached"``
      (False when measured by this call); ``flops`` and ``bytes_per_s`` list every repeat.
    """
    key = machine_key(dtype, device)
    path = peak_cache_path(key)
    entry = None if remeasure else _read_cached(path, key)
    if entry is not None:
        return {**entry, "path": str(path), "cached": True}
    samples = measured_peaks(dtype, device)
    fastest, median = max(samples["flops"]), statistics.median(samples["flops"])
    if fastest > BUSY_SPREAD * median:
        # The cached peak is the fastest repeat, so a busy machine lowers it only if every repeat was slowed.
        print(f"note: the {dtype} peak varied {fastest / median:.1f}x between repeats (median {median / 1e12:.3f}, "
              f"fastest {fastest / 1e12:.3f} TFLOP/s): this machine was busy. Run with --remeasure-peak when "
              f"it is idle.", file=sys.stderr)
    entry = {"key": key, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "repeats": PEAK_REPEATS, **samples}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(entry, indent=1))
    except OSError as e:
        print(f"note: cannot write the host-peak cache {path} ({e.strerror or e}); the next run measures "
              f"again. Set JAXGAN_CACHE to a writable folder, or pass --peak-tflops.", file=sys.stderr)
    return {**entry, "path": str(path), "cached": False}


def device_peaks(dtype: str, device: Any, peak_tflops: float | None, remeasure: bool = False) -> dict[str, Any]:
    """The peak FLOP/s and bandwidth MFU and the roofline use, and where each came from.

    ``peak_tflops`` wins, then the vendor table (``KNOWN_PEAKS``), then ``host_peak``'s cached
    measurement, whose spread (min, median, max TFLOP/s of its repeats) is returned too.
    """
    known = next((v for k, v in KNOWN_PEAKS.items() if device.device_kind.startswith(k)), None)
    flops, bandwidth, source, spread = None, None, None, None
    if peak_tflops:
        flops, source = peak_tflops * 1e12, "given with --peak-tflops"
    elif known:
        flops, source = known[dtype] * 1e12, f"vendor dense {dtype} peak of {device.device_kind}"
    if known:
        bandwidth = known["hbm_tbps"] * 1e12
    if flops is None or bandwidth is None:
        host = host_peak(dtype, device, remeasure)
        if flops is None:
            spread = {k: v / 1e12 for k, v in _spread(host["flops"]).items()}
            flops = max(host["flops"])
            how = "cached" if host["cached"] else "measured now, cached"
            source = (f"fastest of {host['repeats']} {dtype} 2048x2048 matmuls on this machine "
                      f"({how} {host['measured_at']} in {host['path']}; spread "
                      f"{spread['min']:.3f}-{spread['median']:.3f}-{spread['max']:.3f} TFLOP/s min-median-max)")
        bandwidth = bandwidth or max(host["bytes_per_s"])
    return {"peak_flops": flops, "peak_source": source, "peak_bytes_per_s": bandwidth,
            "peak_spread_tflops": spread}


def _cost(compiled: Any) -> dict[str, float]:
    """XLA's cost analysis: a dict in some jax versions, a list of one dict in others."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return {}
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return dict(cost or {})


def _memory(compiled: Any, device: Any) -> dict[str, Any]:
    """The compiled program's buffer sizes and, where the backend keeps it, the peak in use."""
    out: dict[str, Any] = {}
    try:
        m = compiled.memory_analysis()
        out.update(argument_bytes=m.argument_size_in_bytes, output_bytes=m.output_size_in_bytes,
                   temp_bytes=m.temp_size_in_bytes, alias_bytes=m.alias_size_in_bytes)
    except Exception:
        pass
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    out["peak_device_bytes"] = (stats or {}).get("peak_bytes_in_use")  # None on CPU
    return out


def limiting_factor(step_s: float, flops: float, bytes_accessed: float | None, peaks: dict[str, Any]) -> str:
    """Roofline verdict: compute- or memory-bound if the step runs near that floor, else launch-bound.

    The floors are FLOPs / peak FLOP/s and bytes / bandwidth. A step several times slower
    than both is paying for something neither counts: op launches, dispatch, small kernels.
    """
    compute = flops / peaks["peak_flops"]
    memory = (bytes_accessed or 0.0) / peaks["peak_bytes_per_s"]
    floor = max(compute, memory)
    if step_s > 3 * floor:
        return f"launch/overhead-bound (step {step_s / floor:.1f}x its roofline floor)"
    return "compute-bound" if compute >= memory else "memory-bound"


def benchmark_program(program: TrainProgram, sentence_dim: int | None = None, warmup: int = 3, steps: int = 20,
                      peak_tflops: float | None = None, remeasure_peak: bool = False) -> dict[str, Any]:
    """Compiles and times ``program.step``; returns a flat dict of measurements.

    ``sentence_dim``: the synthetic sentence width; None: the width the generator needs
    (``jaxgan.models.sentence_width``, GALIP's CLIP projection), else ``SENTENCE_DIM``.
    ``peak_tflops`` and ``remeasure_peak`` choose MFU's denominator (see ``device_peaks``).
    """
    config, parallel = program.config, program.parallel
    sentence_dim = sentence_dim or sentence_width(program.generator) or SENTENCE_DIM
    state = parallel.put_state(program.fresh_state(sentence_dim))
    batch = parallel.put_batch(synthetic_batch(config, sentence_dim))

    t0 = time.perf_counter()
    frozen = program.frozen
    compiled = program.step.lower(state, batch, frozen).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch, frozen)
    jax.block_until_ready((state, metrics))
    first_step_s = time.perf_counter() - t0
    for _ in range(warmup):
        state, metrics = compiled(state, batch, frozen)
    jax.block_until_ready((state, metrics))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch, frozen)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t0)
    losses = {k: float(v) for k, v in parallel.to_host(metrics).items()
              if k in ("d_loss", "g_loss")}
    if not all(np.isfinite(list(losses.values()))):
        raise RuntimeError(f"the benchmarked step produced non-finite losses {losses}")

    median = statistics.median(times)
    cost = _cost(compiled)
    # Under pmap and an SPMD-partitioned jit, the cost analysis describes one device's program.
    xla_flops = cost.get("flops", 0.0) * parallel.num_devices or None
    bytes_accessed = cost.get("bytes accessed", 0.0) * parallel.num_devices or None
    # Counted on the single-device models: the same layers, and no pmap axis to bind.
    analytic = step_flops(config, *build_models(config.model), sentence_dim)["total"]
    flops = xla_flops or float(analytic)
    device = parallel.devices[0]
    peaks = device_peaks(config.model.dtype, device, peak_tflops, remeasure_peak)
    peak_all = peaks["peak_flops"] * parallel.num_devices
    return {
        "resolution": config.model.resolution, "width": config.model.width,
        "d_width": config.model.discriminator_width,
        "batch_size": config.train.batch_size, "dtype": config.model.dtype,
        "arch": config.model.arch, **config.model.arch_options(), "parallel": parallel.mode,
        "devices": parallel.num_devices,
        "backend": jax.default_backend(), "device_kind": device.device_kind, "jax_version": jax.__version__,
        "compile_s": compile_s, "first_step_s": first_step_s, "timed_steps": steps,
        "step_ms_median": 1e3 * median, "step_ms_min": 1e3 * min(times), "step_ms_max": 1e3 * max(times),
        "step_ms_p10": 1e3 * float(np.percentile(times, 10)), "step_ms_p90": 1e3 * float(np.percentile(times, 90)),
        "images_per_s": config.train.batch_size / median,
        "flops_xla": xla_flops, "flops_analytic": analytic,
        "flops_xla_over_analytic": xla_flops / analytic if xla_flops else None,
        "bytes_accessed_xla": bytes_accessed,
        "achieved_tflops": flops / median / 1e12,
        "peak_tflops": peak_all / 1e12, "peak_source": peaks["peak_source"],
        "peak_spread_tflops": peaks["peak_spread_tflops"],
        "mfu": flops / median / peak_all,
        "limited_by": limiting_factor(median, flops / parallel.num_devices,
                                      (bytes_accessed or 0.0) / parallel.num_devices, peaks),
        **_memory(compiled, device), **losses,
    }


def benchmark_step(config: Config, sentence_dim: int | None = None, warmup: int = 3, steps: int = 20,
                   peak_tflops: float | None = None, remeasure_peak: bool = False) -> dict[str, Any]:
    """Builds the training program of ``config`` and benchmarks its step."""
    return benchmark_program(build_train_program(config), sentence_dim, warmup, steps, peak_tflops, remeasure_peak)


COLUMNS = [("preset", "{}"), ("resolution", "{}"), ("width", "{}"), ("batch_size", "{}"), ("dtype", "{}"),
           ("parallel", "{}"), ("devices", "{}"), ("compile_s", "{:.1f}"), ("step_ms_median", "{:.2f}"),
           ("step_ms_min", "{:.2f}"), ("step_ms_max", "{:.2f}"), ("images_per_s", "{:.0f}"),
           ("flops_xla", "{:.3g}"), ("flops_analytic", "{:.3g}"), ("achieved_tflops", "{:.3f}"),
           ("mfu", "{:.1%}"), ("temp_bytes", "{:.3g}"), ("peak_device_bytes", "{:.3g}")]


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the main columns, one row per benchmarked config."""
    header = [name for name, _ in COLUMNS]
    cells = [[fmt.format(r[name]) if r.get(name) is not None else "-" for name, fmt in COLUMNS] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``jaxgan bench``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", dest="presets", action="append",
                   help="preset to benchmark (repeatable; default: default)")
    p.add_argument("--batch-size", type=int, action="append", help="global batch size (repeatable: one row each)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), action="append", help="compute dtype (repeatable)")
    p.add_argument("--parallel", choices=("jit", "pmap"), help="data-parallel mode (default: the preset's)")
    p.add_argument("--devices", type=int, help="number of devices (default: all local devices)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config override (repeatable)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (at least 20 for a reported figure)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after compilation")
    p.add_argument("--peak-tflops", type=float,
                   help="peak TFLOP/s per device for MFU (default: the vendor's, else measured once and cached)")
    p.add_argument("--remeasure-peak", action="store_true",
                   help="measure this machine's peak again and replace the cached one")
    p.add_argument("--json", default=None, help="also write every measurement to this file")
    p.add_argument("--compilation-cache", metavar="DIR",
                   help="persistent XLA compilation cache (the reported compile time is then a cache hit)")
    return p


def benchmarked(args: argparse.Namespace) -> list[tuple[str, list[str], Config]]:
    """(preset, overrides, config) of every row ``jaxgan bench`` measures: each preset, batch
    size and dtype asked for."""
    rows = []
    for preset in args.presets or ["default"]:
        for batch_size in args.batch_size or [None]:
            for dtype in args.dtype or [None]:
                overrides = list(args.overrides)
                overrides += [f"train.batch_size={batch_size}"] if batch_size else []
                overrides += [f"model.dtype={dtype}"] if dtype else []
                overrides += [f"train.parallel={args.parallel}"] if args.parallel else []
                overrides += [f"train.num_devices={args.devices}"] if args.devices else []
                rows.append((preset, overrides, get_config(preset, overrides)))
    return rows


def configs(args: argparse.Namespace) -> list[Config]:
    """The configs ``jaxgan bench`` measures."""
    return [config for _, _, config in benchmarked(args)]


def run(args: argparse.Namespace) -> int:
    """``jaxgan bench``: one row per benchmarked config, printed and (``--json``) written."""
    if args.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    rows = []
    remeasured: set[str] = set()  # dtypes whose peak this run has measured again already
    # Every config is resolved before the first compile, so a bad one fails at once.
    for preset, overrides, config in benchmarked(args):
        remeasure = args.remeasure_peak and config.model.dtype not in remeasured
        remeasured.add(config.model.dtype)
        rows.append({"preset": preset, "overrides": overrides,
                     **benchmark_step(config, steps=args.steps, warmup=args.warmup,
                                      peak_tflops=args.peak_tflops, remeasure_peak=remeasure)})
        print(f"{preset} {' '.join(overrides)}: {rows[-1]['step_ms_median']:.2f} ms/step, "
              f"limited by {rows[-1]['limited_by']}; peak: {rows[-1]['peak_source']}",
              file=sys.stderr)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    # Run as a script this module would define the command and exit 0 without running it; the
    # command lives under jaxgan.cli's error wrapper, which this layer may not import.
    print("error: run the benchmark as `jaxgan bench` or `python -m jaxgan bench`", file=sys.stderr)
    sys.exit(2)
