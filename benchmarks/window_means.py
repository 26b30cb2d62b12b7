"""Mean scores over a wall-clock window of each run's checkpoints.

One checkpoint is a noisy summary of a GAN: scores of checkpoints 500 steps apart differ by
a point of alignment or more. Comparing models at equal wall clock is fairer over every
checkpoint written inside a window of minutes (times as in ``wallclock_curves.py``: since the
run's ``config.json`` was written):

    python -m benchmarks.window_means --protocol fc8e8717626fe3d4 --from-minute 25 --to-minute 33 \\
        runs/long_dc runs/long_df_wa16
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.wallclock_curves import run_points

# Metric key -> how it is printed: percentages for the attribute accuracies.
COLUMNS = {"fid": "FID", "kid": "KID", "alignment_shape": "shape", "alignment_all": "all four"}


def window_means(workdir: Path, protocol: str, from_minute: float, to_minute: float) -> tuple[list[int], dict]:
    """(steps in the window, mean of each ``COLUMNS`` metric over them); empty when none."""
    points = [p for p in run_points(workdir, protocol) if from_minute <= p[0] <= to_minute]
    if not points:
        return [], {}
    means = {k: sum(p[2][k] for p in points) / len(points) for k in COLUMNS}
    return [p[1] for p in points], means


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="training workdirs")
    parser.add_argument("--protocol", required=True, help="evaluation protocol hash")
    parser.add_argument("--from-minute", type=float, required=True)
    parser.add_argument("--to-minute", type=float, required=True)
    args = parser.parse_args(argv)
    for run in args.runs:
        steps, means = window_means(Path(run), args.protocol, args.from_minute, args.to_minute)
        if not steps:
            print(f"{run}\tno checkpoint scored under {args.protocol} in minutes "
                  f"{args.from_minute:g}-{args.to_minute:g}")
            continue
        shown = "\t".join(f"{name} {100 * means[k]:.2f}%" if k.startswith("alignment") else f"{name} {means[k]:.4g}"
                          for k, name in COLUMNS.items())
        print(f"{run}\tsteps {steps[0]}-{steps[-1]} ({len(steps)})\t{shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
