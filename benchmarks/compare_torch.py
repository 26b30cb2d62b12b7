"""Step time of jaxgan against the PyTorch reference step, measured in the same run.

    python benchmarks/compare_torch.py --preset default [--preset dcgan64 ...]
        [--batch-size N] [--dtype float32|bfloat16] [--steps 20] [--set key=value ...]
        [--json FILE] [--compile on|off|auto] [--no-channels-last]

For each preset it runs ``jaxgan.bench.benchmark_step`` and then
``benchmarks.torch_step.benchmark_torch_step`` on the same config and synthetic batch, and
prints one table row: ratio = jaxgan ms / torch ms (below 1: jaxgan is faster). Run it on an
otherwise idle machine: with as many threads as cores, PyTorch's OpenMP workers stall
badly when another process takes a core, so a busy machine mostly measures the contention.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Run as a script from anywhere: make the repository root importable (jaxgan, benchmarks).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COLUMNS = [("preset", "{}"), ("res", "{}"), ("width", "{}"), ("batch", "{}"), ("dtype", "{}"),
           ("jaxgan ms", "{:.1f}"), ("torch ms", "{:.1f}"), ("ratio", "{:.2f}"),
           ("jaxgan compile s", "{:.1f}"), ("torch compile s", "{:.1f}")]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", dest="presets", action="append", default=None,
                   help="a jaxgan preset; repeat for several (default: default)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None)
    p.add_argument("--steps", type=int, default=20, help="timed steps per framework")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", default=None, help="also write all measurements to this file")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="torch.compile the PyTorch step; auto: on CUDA only (on this 2-core CPU eager "
                        "was faster: 42 vs 52 ms at the default preset)")
    p.add_argument("--no-compile", dest="compile", action="store_const", const="off",
                   help="same as --compile off")
    p.add_argument("--no-channels-last", action="store_true", help="NCHW-contiguous PyTorch tensors")
    p.add_argument("--adam", choices=("fused", "foreach", "single"), default="fused",
                   help="PyTorch Adam implementation")
    p.add_argument("--subpixel", action="store_true",
                   help="PyTorch resize+conv blocks as four 2x2 convs (jaxgan's ResizeConv trick)")
    p.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads (default: all cores)")
    p.add_argument("--device", default=None, help="PyTorch device (default: cuda if available, else cpu)")
    return p.parse_args(argv)


def _use_compile(args: argparse.Namespace) -> bool:
    if args.compile != "auto":
        return args.compile == "on"
    import torch
    return (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of ``rows`` (dicts keyed by the COLUMNS names)."""
    cells = [[name for name, _ in COLUMNS]]
    cells += [[fmt.format(row[name]) for name, fmt in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cpu_busy_fraction(interval_s: float = 0.5) -> float | None:
    """Fraction of all cores busy over ``interval_s``, from /proc/stat (None off Linux).

    Sampled before any benchmark runs, so it measures other processes; the load average
    would also count this script's own recent runs.
    """
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(interval_s)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def _compile_and_first_step_s(result: dict[str, Any]) -> float:
    """jaxgan's compile + first step time, whether reported together or as two keys."""
    if "compile_and_first_step_s" in result:
        return result["compile_and_first_step_s"]
    return result["compile_s"] + result["first_step_s"]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("torch") is None:
        print("error: PyTorch is not installed; the comparison needs it "
              "(pip install torch, or pip install -e '.[test]')", file=sys.stderr)
        return 2
    from benchmarks.torch_step import benchmark_torch_step
    from jaxgan.bench import benchmark_step
    from jaxgan.config import ConfigError
    from jaxgan.presets import get_config

    overrides = list(args.overrides)
    if args.batch_size is not None:
        overrides.append(f"train.batch_size={args.batch_size}")
    if args.dtype is not None:
        overrides.append(f"model.dtype={args.dtype}")
    presets = args.presets or ["default"]
    try:
        configs = [get_config(preset, overrides) for preset in presets]
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    cores = os.cpu_count() or 1
    busy = cpu_busy_fraction()
    if busy is not None and busy > 0.2:
        print(f"warning: other processes keep the CPU {100 * busy:.0f}% busy; timings, "
              "PyTorch's in particular, will not be reliable", file=sys.stderr)

    rows, results = [], []
    for preset, config in zip(presets, configs):
        print(f"[{preset}] jaxgan ...", file=sys.stderr, flush=True)
        jx = benchmark_step(config, warmup=args.warmup, steps=args.steps)
        print(f"[{preset}] torch ...", file=sys.stderr, flush=True)
        tr = benchmark_torch_step(config, warmup=args.warmup, steps=args.steps,
                                  compile=_use_compile(args), channels_last=not args.no_channels_last,
                                  device=args.device, adam=args.adam, subpixel=args.subpixel,
                                  num_threads=args.threads)
        if tr.get("compile_error"):
            print(f"[{preset}] torch.compile failed, torch ran eager: {tr['compile_error']}", file=sys.stderr)
        ratio = jx["step_ms_median"] / tr["step_ms_median"]
        rows.append({"preset": preset, "res": config.model.resolution, "width": config.model.width,
                     "batch": config.train.batch_size, "dtype": config.model.dtype,
                     "jaxgan ms": jx["step_ms_median"], "torch ms": tr["step_ms_median"], "ratio": ratio,
                     "jaxgan compile s": _compile_and_first_step_s(jx),
                     "torch compile s": tr["compile_and_first_step_s"]})
        results.append({"preset": preset, "ratio_jaxgan_over_torch": ratio, "jaxgan": jx, "torch": tr})

    t = results[-1]["torch"]
    print(f"torch {t['torch_version']} on {t['device']} ({t['num_threads']} threads): "
          f"compile={t['compile']}, channels_last={t['channels_last']}, adam={t['adam']}, "
          f"subpixel={t['subpixel']}; "
          f"median of {args.steps} steps; ratio = jaxgan ms / torch ms (<1: jaxgan faster)")
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu_busy_before": busy, "cpu_count": cores, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
