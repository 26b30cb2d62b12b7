"""Loss curves from metrics.jsonl and evaluation curves from eval.jsonl, as PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a metrics.jsonl file (an empty list if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_losses(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """Plots D/G losses and D's mean logits against the step; returns the PNG path."""
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    steps = np.array([r["step"] for r in rows])
    fig, (ax_loss, ax_logit) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("d_loss", "g_loss"):
        ax_loss.plot(steps, [r[key] for r in rows], label=key)
    for key in ("d_real_logit", "d_fake_logit", "d_wrong_logit"):
        ax_logit.plot(steps, [r[key] for r in rows], label=key)
    ax_loss.set(xlabel="step", title="losses")
    ax_logit.set(xlabel="step", title="mean discriminator logits")
    for ax in (ax_loss, ax_logit):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return Path(out_path)


EVAL_PANELS = (("fid", "FID (lower is better)"), ("kid", "KID"), ("is", "Inception Score (feature net)"),
               ("precision", "precision / recall"), ("alignment_all", "text alignment, all four"))


def plot_eval(eval_path: str | Path, out_path: str | Path) -> Path | None:
    """Plots the periodic evaluation's metrics against the step; returns the PNG path."""
    rows = read_metrics(eval_path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["step"] for r in rows])
    # Text alignment exists on shapes only (attribute labels): plot what was measured.
    panels = [(key, title) for key, title in EVAL_PANELS if any(key in r for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        keys = ("precision", "recall") if key == "precision" else (key,)
        for k in keys:
            if all(k in r for r in rows):
                ax.plot(steps, [r[k] for r in rows], marker="o", label=k)
        ax.set(xlabel="step", title=title)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend()
    hashes = sorted({r.get("protocol_hash", "?") for r in rows})
    fig.suptitle(f"evaluation, protocol {', '.join(hashes)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return Path(out_path)
