"""``python -m jaxgan.eval --workdir W``: every metric of a trained run under a pinned protocol.

Loads the checkpoint (latest, or ``--step``), generates ``--num-samples`` images over all
devices, and prints FID, KID, IS, precision/recall/density/coverage, text alignment and (with
``--clip DIR``) CLIP score, each with the protocol hash. Writes
``W/eval/step_NNNNNN-HASH.json``. ``--real SPLIT`` scores real images of a split instead of
the generator: the ceiling every metric can reach under the same protocol.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from jaxgan.checkpoint import Checkpointer
from jaxgan.config import ConfigError
from jaxgan.evaluator import Evaluator
from jaxgan.metrics.evaluate import EvalResult, format_metrics
from jaxgan.metrics.sharded import evaluation_mesh
from jaxgan.models import build_models
from jaxgan.state import abstract_state
from jaxgan.text import load_text_encoder


def evaluate_workdir(workdir: str | Path, step: int | None = None, real: str | None = None,
                     num_devices: int = 0, cache_dir: str | None = None, progress: bool = True,
                     **protocol_overrides: Any) -> tuple[EvalResult, int]:
    """Evaluates ``workdir``'s checkpoint (or real images of split ``real``); returns (result, step)."""
    from jaxgan.cli import resolve_config

    workdir = Path(workdir)
    if not (workdir / "config.json").exists():
        raise ConfigError(f"{workdir} is not a training workdir (no config.json)")
    config = resolve_config(workdir, None, [])
    encoder = load_text_encoder(config.text.encoder, config.text.max_length or None)
    evaluator = Evaluator(config, encoder, mesh=evaluation_mesh(num_devices), cache_dir=cache_dir,
                          progress=progress, **protocol_overrides)
    if real is not None:
        return evaluator.evaluate(evaluator.real_source(real)), -1
    generator, discriminator = build_models(config.model)
    checkpoints = Checkpointer(workdir / "checkpoints", keep=config.train.keep_checkpoints)
    try:
        abstract = abstract_state(config, generator, discriminator, encoder.sentence_dim, encoder.word_dim)
        state, _ = checkpoints.restore(abstract, config, step=step)
    finally:
        checkpoints.close()
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


def eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Evaluate a trained run under a pinned protocol.")
    p.add_argument("--workdir", required=True, help="a training workdir with checkpoints")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument("--num-samples", type=int, default=None, help="generated images (default: config eval)")
    p.add_argument("--num-reference", type=int, default=None, help="real images in the reference statistics")
    p.add_argument("--features", default=None, help="shapes (shipped), shapes:DIR or inception:FILE")
    p.add_argument("--generator", choices=("ema", "raw"), default=None)
    p.add_argument("--truncation", type=float, default=None, help="0: none; t: normal truncated to [-t, t]")
    p.add_argument("--seed", type=int, default=None, help="noise seed of the samples")
    p.add_argument("--split", choices=("train", "test"), default=None, help="captions and reference split")
    p.add_argument("--clip", default=None, help="a Hugging Face CLIPModel directory, for CLIP score")
    p.add_argument("--real", choices=("train", "test"), default=None,
                   help="score real images of this split instead of the generator (the ceiling)")
    p.add_argument("--devices", type=int, default=0, help="devices to use (default: all)")
    p.add_argument("--cache-dir", default=None, help="reference statistics cache (default ~/.cache/jaxgan)")
    p.add_argument("--out", default=None, help="JSON path (default WORKDIR/eval/step_N-HASH.json)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = eval_parser().parse_args(argv)
    from jaxgan.checkpoint import CheckpointError
    from jaxgan.text import TextEncoderError

    try:
        result, step = evaluate_workdir(
            args.workdir, step=args.step, real=args.real, num_devices=args.devices, cache_dir=args.cache_dir,
            progress=not args.no_progress, num_samples=args.num_samples, num_reference=args.num_reference,
            features=args.features, generator=args.generator, truncation=args.truncation, seed=args.seed,
            split=args.split, clip=args.clip)
    except (ConfigError, CheckpointError, TextEncoderError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_result(result, step)
    name = f"step_{step:06d}" if step >= 0 else f"real_{args.real}"
    out = Path(args.out) if args.out else Path(args.workdir) / "eval" / f"{name}-{result.protocol.hash}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"step": step, **result.to_json()}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
