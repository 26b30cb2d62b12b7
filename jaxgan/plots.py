"""Loss curves from metrics.jsonl and evaluation curves from eval.jsonl, as PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from etils import epath

from jaxgan.paths import workdir_path


def read_jsonl(path: str | Path) -> tuple[list[dict], str]:
    """The rows of a metrics.jsonl or eval.jsonl file, and its partial last line ("" if none).

    A process killed while writing a row (a preemption whose grace period ran out) leaves an
    unterminated last line that does not parse; it is returned apart, not as a row.

    Raises:
      ValueError: a line other than an unterminated last one does not parse.

    Example:
        rows, partial = read_jsonl("runs/demo/metrics.jsonl")
    """
    path = workdir_path(path)
    if not path.exists():
        return [], ""
    text = path.read_text()
    lines = text.split("\n")
    tail = lines.pop()  # "" when the file ends with a newline, as every complete row does
    rows = []
    for n, line in enumerate(lines, start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {n}, is not a JSON row ({e.msg})") from None
    if tail.strip():
        try:
            rows.append(json.loads(tail))
            tail = ""  # a complete row whose newline was never written
        except json.JSONDecodeError:
            pass
    return rows, tail.strip()


def read_metrics(path: str | Path) -> list[dict]:
    """The complete rows of a metrics.jsonl file (an empty list if it does not exist)."""
    return read_jsonl(path)[0]


def plot_losses(metrics_path: str | Path, out_path: str | Path) -> epath.Path | None:
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
    with workdir_path(out_path).open("wb") as f:  # a file object: matplotlib cannot write gs:// itself
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return workdir_path(out_path)


EVAL_PANELS = (("fid", "FID (lower is better)"), ("kid", "KID"), ("is", "Inception Score (feature net)"),
               ("precision", "precision / recall"), ("alignment_all", "text alignment, all four"))


def plot_eval(eval_path: str | Path, out_path: str | Path) -> epath.Path | None:
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
    with workdir_path(out_path).open("wb") as f:  # a file object: matplotlib cannot write gs:// itself
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return workdir_path(out_path)
