"""FID and text alignment against wall-clock time, for several training runs on one plot.

Each run's checkpoints are placed in time by when they were written, measured from the
moment its ``config.json`` was written (``train.py`` writes it before compiling, so the
time includes compilation, data loading, sample grids and checkpointing: what a user
waits for). Scores come from ``jaxgan eval --workdir W --step N`` results in
``W/eval/step_N-<protocol>.json``; only checkpoints scored under ``--protocol`` appear.

    python benchmarks/wallclock_curves.py --protocol fc8e8717626fe3d4 --out docs/wallclock.png \
        "DCGAN shapes64, batch 16=runs/dc_b16" "DF-GAN nf=8, batch 16=runs/df8_b16_lazy"

``--zoom-from MINUTES`` adds a row of linear-axis panels with only the later checkpoints.

Modification times only hold on the machine that trained: copying a workdir resets them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def run_points(workdir: Path, protocol: str) -> list[tuple[float, int, dict]]:
    """``(minutes since config.json, step, metrics)`` of every scored checkpoint, by step."""
    config = workdir / "config.json"
    if not config.exists():
        raise SystemExit(f"error: {workdir} is not a training workdir (no config.json)")
    start = config.stat().st_mtime
    points = []
    for result in sorted((workdir / "eval").glob(f"step_*-{protocol}.json")):
        step = int(result.name.split("-")[0].removeprefix("step_"))
        checkpoint = workdir / "checkpoints" / str(step)
        if not checkpoint.exists():
            continue
        metrics = json.loads(result.read_text())["metrics"]
        points.append(((checkpoint.stat().st_mtime - start) / 60.0, step, metrics))
    return sorted(points, key=lambda p: p[1])


def since(points: list[tuple[float, int, dict]], minutes: float) -> list[tuple[float, int, dict]]:
    """The points written at or after ``minutes``: the late part that a zoomed panel shows."""
    return [p for p in points if p[0] >= minutes]


def _plot(ax_fid: Any, ax_align: Any, points: list[tuple[float, int, dict]], label: str) -> None:
    """One run's FID and alignment curves on a pair of panels."""
    minutes = [p[0] for p in points]
    ax_fid.plot(minutes, [p[2]["fid"] for p in points], marker="o", label=label)
    ax_align.plot(minutes, [100 * p[2]["alignment_all"] for p in points], marker="o", label=label)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=WORKDIR")
    parser.add_argument("--protocol", required=True, help="evaluation protocol hash to plot")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--zoom-from", type=float, default=None, metavar="MINUTES",
                        help="add a second row of panels with only the checkpoints written from "
                             "MINUTES on, on linear axes: late differences that the full range hides")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 1 if args.zoom_from is None else 2
    fig, axes = plt.subplots(rows, 2, figsize=(11, 4 * rows), squeeze=False)
    (ax_fid, ax_align), zoom = axes[0], (axes[1] if rows == 2 else None)
    for spec in args.runs:
        label, sep, workdir = spec.rpartition("=")
        if not sep:
            raise SystemExit(f"error: expected LABEL=WORKDIR, got {spec!r}")
        points = run_points(Path(workdir), args.protocol)
        if not points:
            print(f"warning: no checkpoint of {workdir} is scored under protocol {args.protocol}",
                  file=sys.stderr)
            continue
        _plot(ax_fid, ax_align, points, label)
        if zoom is not None:
            _plot(*zoom, since(points, args.zoom_from), label)
        for m, step, metrics in points:
            print(f"{label}\t{step}\t{m:.2f} min\tFID {metrics['fid']:.4g}\t"
                  f"all four {100 * metrics['alignment_all']:.2f}%")
    ax_fid.set(xlabel="wall-clock minutes (2 CPU cores)", ylabel="FID (shapes features)", yscale="log",
               title="image quality (lower is better)")
    ax_align.set(xlabel="wall-clock minutes (2 CPU cores)", ylabel="all four attributes right, %",
                 title="text alignment (higher is better)")
    if zoom is not None:
        zoom[0].set(xlabel="wall-clock minutes (2 CPU cores)", ylabel="FID (shapes features)",
                    title=f"image quality, from minute {args.zoom_from:g}")
        zoom[1].set(xlabel="wall-clock minutes (2 CPU cores)", ylabel="all four attributes right, %",
                    title=f"text alignment, from minute {args.zoom_from:g}")
    for ax in axes.flat:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"64 px shapes, EMA generator, protocol {args.protocol}", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
