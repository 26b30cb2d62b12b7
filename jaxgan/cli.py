"""Command lines of train.py and sample.py: parse, call the library, turn errors into one line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

from jaxgan.config import Config, ConfigError
from jaxgan.presets import PRESETS, apply_overrides, config_help, from_dict, get_config


class UsageError(ValueError):
    """Bad command-line input, with a one-line message."""


def _fail_cleanly(main: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
                  argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    from jaxgan.checkpoint import CheckpointError
    from jaxgan.data.source import DataError
    from jaxgan.distributed import DistributedError
    from jaxgan.train import NonFiniteLossError
    from jaxgan.text import TextEncoderError

    try:
        return main(args)
    except (ConfigError, UsageError, CheckpointError, NonFiniteLossError, TextEncoderError, DistributedError,
            DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is kept", file=sys.stderr)
        return 130


def resolve_config(workdir: Path, preset: str | None, overrides: Sequence[str]) -> Config:
    """The run's config: the workdir's saved one when resuming without --preset, else the preset."""
    saved = workdir / "config.json"
    if preset is None and saved.exists():
        try:
            base = from_dict(json.loads(saved.read_text()))
        except (json.JSONDecodeError, ConfigError) as e:
            raise ConfigError(f"{saved} is not a valid jaxgan config ({e})") from None
        return apply_overrides(base, overrides)
    return get_config(preset or "default", overrides)


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train a text-conditioned GAN (resumes if WORKDIR has checkpoints).")
    p.add_argument("--workdir", default="workdir", help="where checkpoints, logs and samples go")
    p.add_argument("--preset", choices=None, help=f"one of: {', '.join(PRESETS)} (default: default, "
                   "or the workdir's saved config when resuming)")
    p.add_argument("--steps", type=int, help="total training steps (shorthand for train.steps=N)")
    p.add_argument("--dataset", help="shapes, a TFDS name (mnist, cifar10, coco_captions, caltech_birds2011, "
                   "oxford_flowers102) or an image folder (shorthand for data.dataset=...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set model.width=64 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--help-config", action="store_true",
                   help="print every config key with its type, default and meaning, and exit")
    d = p.add_argument_group("multi-process (every process runs the same command; see README)")
    d.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0's coordination service")
    d.add_argument("--num-processes", type=int, help="processes in the run")
    d.add_argument("--process-id", type=int, help="this process's index, 0 .. N-1")
    d.add_argument("--distributed", action="store_true",
                   help="start the distributed runtime with the cluster JAX detects (Cloud TPU pod, SLURM)")
    d.add_argument("--coordinator-timeout", type=int, default=300, metavar="SECONDS",
                   help="give up joining the run after this long (default 300)")
    return p


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of train.py."""

    def main(args: argparse.Namespace) -> int:
        from jaxgan.distributed import initialize, is_primary
        from jaxgan.train import train_and_evaluate

        if args.help_config:
            print(config_help())
            return 0
        # Before anything touches a device: the runtime must start first.
        initialize(args.coordinator, args.num_processes, args.process_id, auto=args.distributed,
                   timeout_s=args.coordinator_timeout)
        overrides = list(args.overrides) + ([f"train.steps={args.steps}"] if args.steps is not None else [])
        overrides += [f"data.dataset={args.dataset}"] if args.dataset is not None else []
        workdir = Path(args.workdir)
        config = resolve_config(workdir, args.preset, overrides)
        state = train_and_evaluate(config, workdir, progress=not args.no_progress)
        if is_primary():
            print(f"trained to step {int(state.step)}; outputs in {workdir}")
        return 0

    return _fail_cleanly(main, train_parser(), argv)


def sample_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Generate images from prompts with a trained EMA generator.")
    p.add_argument("--workdir", required=True, help="a training workdir with checkpoints")
    p.add_argument("--prompt", action="append", required=True, help="a caption (repeatable)")
    p.add_argument("--num-per-prompt", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="sample j of each prompt uses seed S + j")
    p.add_argument("--out", default=None, help="output directory (default WORKDIR/samples/cli)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument("--attention", action="store_true",
                   help="also write each sample's word-attention maps (models with model.word_attention)")
    return p


def sample_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of sample.py."""

    def main(args: argparse.Namespace) -> int:
        from jaxgan.models import uses_word_attention
        from jaxgan.sampling import generate_from_checkpoint

        prompts = [p.strip() for p in args.prompt]
        if any(not p for p in prompts):
            raise UsageError("empty prompt: every --prompt needs some text")
        if args.num_per_prompt < 1:
            raise UsageError(f"--num-per-prompt must be at least 1, got {args.num_per_prompt}")
        workdir = Path(args.workdir)
        if not (workdir / "config.json").exists():
            raise UsageError(f"{workdir} is not a training workdir (no config.json)")
        config = resolve_config(workdir, None, [])
        out = Path(args.out) if args.out else workdir / "samples" / "cli"
        if args.attention and not uses_word_attention(config.model):
            raise UsageError("--attention needs a model with word attention (this run has "
                             "model.word_attention empty)")
        manifest = generate_from_checkpoint(config, workdir, prompts, args.num_per_prompt, args.seed,
                                            out, step=args.step, attention=args.attention)
        print(f"wrote {len(prompts) * args.num_per_prompt} images, {out / 'grid.png'} and {manifest}")
        return 0

    return _fail_cleanly(main, sample_parser(), argv)


# The `jaxgan` console script: one entry point for every command-line tool, each also reachable
# as its own module or script. Values are "module:function" taking argv and returning a status.
COMMANDS = {
    "train": ("jaxgan.cli:train_main", "train a GAN (what train.py runs)"),
    "sample": ("jaxgan.cli:sample_main", "images from prompts with a trained generator (sample.py)"),
    "eval": ("jaxgan.eval:main", "every metric of a run under a pinned protocol"),
    "bench": ("jaxgan.bench:main", "benchmark the compiled training step"),
    "report": ("jaxgan.report:main", "a self-contained HTML report of a run"),
    "pretrain-text": ("jaxgan.pretrain_text:main", "pretrain the shapes text encoder"),
    "throughput": ("jaxgan.data.throughput:main", "benchmark the input pipeline"),
    "scaling": ("jaxgan.scaling:main", "on-paper gradient traffic and step time at N chips"),
    "sweep": ("jaxgan.sweep:main", "throughput of K GANs in one vmapped step vs one by one"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """``jaxgan COMMAND [ARGS]``: dispatches to the command's own parser."""
    import importlib

    args = list(sys.argv[1:] if argv is None else argv)
    listing = "\n".join(f"  {name:<14} {help_}" for name, (_, help_) in COMMANDS.items())
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: jaxgan COMMAND [ARGS]  (jaxgan COMMAND --help for its arguments)\n\ncommands:\n{listing}")
        return 0 if args else 2
    if args[0] not in COMMANDS:
        print(f"error: unknown command {args[0]!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, _, function = COMMANDS[args[0]][0].partition(":")
    status = getattr(importlib.import_module(module), function)(args[1:])
    return int(status or 0)
