"""``jaxgan report --workdir W``: one self-contained HTML page of what a run did.

The page holds the config, the loss and logit curves, the training metrics over steps
(gradient norms, D's accuracies, speed, input waiting, skipped steps), the periodic
evaluation's curves and its latest numbers with the protocol hash, the full evaluation
protocol when ``jaxgan eval`` wrote one, and the sample grids over time with their
prompts. Images are embedded as data URIs and there is no script, so the file can be mailed,
attached to an issue or opened from a laptop without the run's directory.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from etils import epath

from jaxgan import plots
from jaxgan.errors import JaxganError
from jaxgan.paths import workdir_path

# Panels of the training-metrics figure: (title, keys); a panel shows the keys the log has.
PANELS = (("gradient norms", ("d_grad_norm", "g_grad_norm")),
          ("update norms", ("d_update_norm", "g_update_norm")),
          ("D accuracy", ("d_acc_real", "d_acc_fake", "d_acc_wrong")),
          ("steps/s", ("steps_per_sec",)),
          ("input wait (share of time)", ("input_wait_fraction",)),
          ("skipped steps", ("skipped",)),
          ("batch spread (collapse: fake far below real)", ("fake_spread", "real_spread")),
          ("saturated generator pixels", ("fake_saturated",)))


class ReportError(JaxganError, ValueError):
    """A workdir the report cannot be made from; one line."""


def _png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _figure_png(draw: Any, out_dir: Path, name: str, notes: list[str]) -> str | None:
    """A figure drawn by ``draw(path)`` as a data: URI; None (with a note) if the logs it plots
    hold rows of the wrong shape."""
    try:
        path = draw(out_dir / name)
    except (KeyError, TypeError, ValueError) as e:
        notes.append(f"{name}: not drawn, its log rows are malformed ({type(e).__name__}: {e})")
        return None
    return _png(Path(path)) if path else None


def training_panels(rows: list[dict], out_path: Path) -> Path | None:
    """The ``PANELS`` figure of metrics.jsonl rows, as a PNG; None without rows."""
    panels = [(title, [k for k in keys if rows and all(k in r for r in rows)]) for title, keys in PANELS]
    panels = [(title, keys) for title, keys in panels if keys]
    if not rows or not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["step"] for r in rows])
    cols = 3
    fig, axes = plt.subplots((len(panels) + cols - 1) // cols, cols, figsize=(13, 3.4 * ((len(panels) + 2) // 3)),
                             squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            ax.plot(steps, [r[key] for r in rows], label=key)
        ax.set(xlabel="step", title=title)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path


# The page runs no script and loads nothing: its images are data: URIs and its style is inline,
# so a hostile string that escaped escaping still could not fetch or execute anything.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_GRID_NAME = re.compile(r"step_\d+\.png")


def _rows(path: Path, notes: list[str]) -> list[dict]:
    """The complete rows of a jsonl log; a malformed file is noted and read as empty."""
    try:
        rows = plots.read_metrics(path)
    except (ValueError, OSError) as e:
        notes.append(f"{path.name}: {e}")
        return []
    good = [r for r in rows if isinstance(r, dict)]
    if len(good) < len(rows):
        notes.append(f"{path.name}: {len(rows) - len(good)} rows that are not JSON objects")
    return good


def _json(path: Path, kind: type, default: Any, notes: list[str]) -> Any:
    """``path``'s JSON if it is a ``kind``; otherwise ``default``, with a note (absent: no note)."""
    if not path.is_file():
        return default
    try:
        value = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        notes.append(f"{path.name}: not readable JSON ({e})")
        return default
    if not isinstance(value, kind):
        notes.append(f"{path.name}: a JSON {type(value).__name__}, not a {kind.__name__}")
        return default
    return value


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# The measures with a real-image ceiling: (title, key); the row shows key, key_real, key_ratio.
CEILING_ROWS = (("shape fidelity: mask IoU", "fidelity_iou"), ("shape fidelity: colour error", "fidelity_color_error"),
                ("within-caption diversity: spread", "diversity_spread"),
                ("within-caption diversity: pairwise distance", "diversity_pairwise"))


def ceiling_table(row: dict[str, Any]) -> str:
    """Generated, real and ratio of the measures with a real ceiling in an eval row ("" if none)."""
    cells = []
    for title, key in CEILING_ROWS:
        if key in row or f"{key}_real" in row:
            values = [_number(row.get(k, "")) for k in (key, f"{key}_real", f"{key}_ratio")]
            cells.append("<tr><th>" + html.escape(title) + "</th>"
                         + "".join(f"<td>{html.escape(v)}</td>" for v in values) + "</tr>")
    if not cells:
        return ""
    return ("<h3>Against real images</h3><table><tr><th></th><th>generated</th><th>real</th><th>ratio</th></tr>"
            + "".join(cells) + "</table>")


def build_report(workdir: str | Path) -> str:
    """The report of ``workdir`` as an HTML string."""
    workdir = workdir_path(workdir)
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise ReportError(f"{workdir} is not a training workdir (no config.json)")
    try:
        config = json.loads(config_path.read_bytes().decode("utf-8"))
    except ValueError as e:  # not UTF-8, or not JSON
        raise ReportError(f"{config_path} is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ReportError(f"{config_path} is a JSON {type(config).__name__}, not an object of config sections")
    notes: list[str] = []  # inputs skipped as malformed: the report still renders the rest
    metrics = _rows(workdir / "metrics.jsonl", notes)
    evals = _rows(workdir / "eval.jsonl", notes)
    grids = sorted(g for g in (workdir / "samples").glob("step_*.png") if _GRID_NAME.fullmatch(g.name))
    prompts = _json(workdir / "samples" / "prompts.json", list, [], notes)
    protocols = sorted((workdir / "eval").glob("*.json"))

    parts = [f"<h1>jaxgan run: {html.escape(workdir.resolve().name)}</h1>"]
    last = metrics[-1] if metrics else {}
    data, model = (config.get(k) if isinstance(config.get(k), dict) else {} for k in ("data", "model"))
    summary = [("steps logged", last.get("step", 0)), ("dataset", data.get("dataset", "?")),
               ("architecture", model.get("arch", "?")), ("resolution", model.get("resolution", "?"))]
    parts.append(f'<section id="summary"><h2>Summary</h2>{_table(summary)}</section>')
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        losses = metrics and _figure_png(lambda p: plots.plot_losses(workdir / "metrics.jsonl", p), out,
                                         "losses.png", notes)
        panels = metrics and _figure_png(lambda p: training_panels(metrics, p), out, "panels.png", notes)
        eval_png = evals and _figure_png(lambda p: plots.plot_eval(workdir / "eval.jsonl", p), out, "eval.png",
                                         notes)
    if losses:
        parts.append(f'<section id="losses"><h2>Losses and logits</h2><img alt="loss curves" src="{losses}"></section>')
    if panels:
        parts.append(f'<section id="metrics"><h2>Training metrics over steps</h2>'
                     f'<img alt="training metrics" src="{panels}">'
                     f'<h3>Last logged values (step {html.escape(str(last.get("step")))})</h3>'
                     f'{_table([(k, _number(v)) for k, v in last.items() if k != "step"])}</section>')
    if evals:
        latest = evals[-1]
        curves = f'<img alt="evaluation curves" src="{eval_png}">' if eval_png else ""
        parts.append(f'<section id="evaluation"><h2>Evaluation</h2>{curves}'
                     f'<h3>Step {html.escape(str(latest.get("step")))}, protocol '
                     f'{html.escape(str(latest.get("protocol_hash")))}</h3>{ceiling_table(latest)}'
                     f'{_table([(k, _number(v)) for k, v in latest.items() if k not in ("step",)])}</section>')
    newest = _json(protocols[-1], dict, None, notes) if protocols else None
    if newest is not None and not isinstance(newest.get("protocol", {}), dict):
        notes.append(f"{protocols[-1].name}: its protocol is not a JSON object")
        newest = None
    if newest is not None:
        parts.append(f'<section id="protocol"><h2>Evaluation protocol ({html.escape(protocols[-1].name)})</h2>'
                     f'{_table(sorted(newest.get("protocol", {}).items()))}</section>')
    if grids:
        prompt_list = "".join(f"<li>{html.escape(str(p))}</li>" for p in prompts)
        shots = "".join(f'<figure><figcaption>step {int(g.stem.split("_")[1])}</figcaption>'
                        f'<img alt="samples at {html.escape(g.stem)}" src="{_png(g)}"></figure>' for g in grids)
        parts.append(f'<section id="samples"><h2>Samples over time (EMA generator)</h2>'
                     f'{"<ol>" + prompt_list + "</ol>" if prompts else ""}{shots}</section>')
    parts.append(f'<section id="config"><h2>Config</h2>'
                 f'<pre>{html.escape(json.dumps(config, indent=2))}</pre></section>')
    if notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
        parts.append(f'<section id="notes"><h2>Skipped inputs</h2><ul>{items}</ul></section>')
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}img{max-width:100%;border:1px solid #ddd}"
             "table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:2px 8px;"
             "text-align:left;font-size:13px}figure{display:inline-block;margin:.5em;vertical-align:top}"
             "pre{background:#f6f6f6;padding:1em;font-size:12px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\"><title>jaxgan report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def write_report(workdir: str | Path, out: str | Path | None = None) -> epath.Path:
    """Writes ``build_report(workdir)`` to ``out`` (default ``WORKDIR/report.html``)."""
    out = workdir_path(out) if out else workdir_path(workdir) / "report.html"
    out.write_text(build_report(workdir))
    return out


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``jaxgan report``."""
    p = argparse.ArgumentParser(description="Write a self-contained HTML report of a training run.")
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", help="output file (default WORKDIR/report.html)")
    return p


def run(args: argparse.Namespace) -> int:
    """``jaxgan report``: writes the report and says where."""
    print(f"wrote {write_report(args.workdir, args.out)}")
    return 0
