"""``jaxgan eval --workdir W``: every metric of a trained run under a pinned protocol.

Loads the checkpoint (latest, or ``--step``), generates ``--num-samples`` images over all
devices, and prints FID, KID, IS, precision/recall/density/coverage, text alignment and (with
``--clip DIR``) CLIP score, each with the protocol hash. Writes
``W/eval/step_NNNNNN-HASH.json``. ``--real SPLIT`` scores real images of a split instead of
the generator: the ceiling every metric can reach under the same protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jaxgan.evaluator import Evaluator
from jaxgan.metrics.evaluate import EvalResult, format_metrics
from jaxgan.metrics.sharded import evaluation_mesh
from jaxgan.text import load_text_encoder
from jaxgan.workdir import restore_state, saved_config


def evaluate_workdir(workdir: str | Path, step: int | None = None, real: str | None = None,
                     num_devices: int = 0, cache_dir: str | None = None, progress: bool = True,
                     **protocol_overrides: Any) -> tuple[EvalResult, int]:
    """Evaluates ``workdir``'s checkpoint (or real images of split ``real``); returns (result, step)."""
    config = saved_config(workdir)
    encoder = load_text_encoder(config.text.encoder, config.text.max_length or None)
    evaluator = Evaluator(config, encoder, mesh=evaluation_mesh(num_devices), cache_dir=cache_dir,
                          progress=progress, **protocol_overrides)
    if real is not None:
        return evaluator.evaluate(evaluator.real_source(real)), -1
    state = restore_state(config, workdir, encoder, step)
    return evaluator.evaluate_state(state), int(state.step)


def print_result(result: EvalResult, step: int) -> None:
    """The metrics table, with the protocol hash on every line that others may quote."""
    p = result.protocol.protocol
    where = f"step {step}" if step >= 0 else "real images"
    print(f"{result.source}: {p.num_samples} samples, features {p.features.partition(':')[0]}, "
          f"{result.num_devices} device(s), {result.seconds:.1f}s")
    print(f"protocol {result.protocol.hash} ({where})")
    for name, text in format_metrics(result.metrics).items():
        print(f"  {name:20s} {text:>12s}")
