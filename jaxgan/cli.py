"""Every ``jaxgan <command>``: parse the flags, call the library, turn expected errors into one line.

The tools' own modules hold what they do (and, for most, their flags as ``build_parser()``
with a ``run(args)``); this module wires them into one command surface and runs each under
one wrapper: a ``JaxganError`` or an ``OSError`` becomes ``error: <one line>`` on stderr and
exit status 2, as argparse does for bad flags. ``train.py`` and ``sample.py`` at the
repository root and ``python -m jaxgan`` come here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from jaxgan import bench, pretrain_text, report, scaling, sweep
from jaxgan.config import Config
from jaxgan.data import source_type, throughput
from jaxgan.data.captions import clean_caption
from jaxgan.distributed import DEFAULT_HEARTBEAT_TIMEOUT_S, initialize, is_primary
from jaxgan.errors import JaxganError, UsageError
from jaxgan.evaluator import evaluate_workdir
from jaxgan.importers import commands as importers
from jaxgan.metrics import attributes, features, inception, sanity
from jaxgan.metrics.alignment import alignment_of
from jaxgan.metrics.evaluate import EvalResult, metric_lines
from jaxgan.paths import workdir_path
from jaxgan.presets import PRESETS, config_help
from jaxgan.train import train_and_evaluate
from jaxgan.workdir import TrainedGenerator, generate_from_checkpoint, resolve_config, saved_config

__all__ = ["COMMANDS", "Command", "UsageError", "check_command", "main", "run_command", "sample_main",
           "train_main"]


def train_parser() -> argparse.ArgumentParser:
    """The flags of ``jaxgan train`` (and ``python train.py``)."""
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
    p.add_argument("--from-step", type=int, default=None, metavar="N",
                   help="resume from checkpoint N instead of the newest; newer checkpoints are moved to "
                   "WORKDIR/checkpoints_set_aside (kept)")
    p.add_argument("--break-lock", action="store_true",
                   help="take the workdir's lock from a run on another host that is known to be gone")
    p.add_argument("--help-config", action="store_true",
                   help="print every config key with its type, default and meaning, and exit")
    d = p.add_argument_group("multi-process (every process runs the same command; see docs/multihost.md)")
    d.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0's coordination service")
    d.add_argument("--num-processes", type=int, help="processes in the run")
    d.add_argument("--process-id", type=int, help="this process's index, 0 .. N-1")
    d.add_argument("--distributed", action="store_true",
                   help="start the distributed runtime with the cluster JAX detects (Cloud TPU pod, SLURM)")
    d.add_argument("--coordinator-timeout", type=int, default=300, metavar="SECONDS",
                   help="give up joining the run after this long (default 300)")
    d.add_argument("--heartbeat-timeout", type=int, default=DEFAULT_HEARTBEAT_TIMEOUT_S, metavar="SECONDS",
                   help="declare a silent process dead and stop the run after this long "
                        f"(default {DEFAULT_HEARTBEAT_TIMEOUT_S})")
    return p


def train_config(args: argparse.Namespace) -> Config:
    """The config ``jaxgan train`` runs: the workdir's or the preset's, with the flags' overrides."""
    overrides = list(args.overrides) + ([f"train.steps={args.steps}"] if args.steps is not None else [])
    overrides += [f"data.dataset={args.dataset}"] if args.dataset is not None else []
    return resolve_config(workdir_path(args.workdir), args.preset, overrides)


def _train(args: argparse.Namespace) -> int:
    if args.help_config:
        print(config_help())
        return 0
    # Before anything touches a device: the runtime must start first.
    initialize(args.coordinator, args.num_processes, args.process_id, auto=args.distributed,
               timeout_s=args.coordinator_timeout, heartbeat_timeout_s=args.heartbeat_timeout)
    workdir = workdir_path(args.workdir)
    state = train_and_evaluate(train_config(args), workdir, progress=not args.no_progress,
                               break_lock=args.break_lock, from_step=args.from_step)
    if is_primary():
        print(f"trained to step {int(state.step)}; outputs in {workdir}")
    return 0


# One more than the largest seed ``jaxgan.sampling.sample_noise`` takes (a uint32).
SEED_LIMIT = 2**32


def sample_parser() -> argparse.ArgumentParser:
    """The flags of ``jaxgan sample`` (and ``python sample.py``)."""
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


def _sample(args: argparse.Namespace) -> int:
    # Cleaned as training captions are: control characters (NUL, CR, a terminal's ESC) become
    # spaces, so a prompt is plain text wherever it goes (encoder, manifest, grid labels).
    prompts = [clean_caption(p) for p in args.prompt]
    if not all(prompts):
        raise UsageError(f"empty prompt: every --prompt needs some text (--prompt {prompts.index('') + 1} has none "
                         "but spaces or control characters)")
    if args.num_per_prompt < 1:
        raise UsageError(f"--num-per-prompt must be at least 1, got {args.num_per_prompt}")
    if not 0 <= args.seed <= SEED_LIMIT - args.num_per_prompt:
        # Noise keys are uint32: seeds S .. S + N - 1 must all be one.
        raise UsageError(f"--seed must be in [0, {SEED_LIMIT - args.num_per_prompt}] for --num-per-prompt "
                         f"{args.num_per_prompt}, got {args.seed}")
    workdir = workdir_path(args.workdir)
    config = saved_config(workdir)
    out = workdir_path(args.out) if args.out else workdir / "samples" / "cli"
    if args.attention and not config.model.uses_word_attention:
        raise UsageError("--attention needs a model with word attention (this run has "
                         "model.word_attention empty)")
    manifest = generate_from_checkpoint(config, workdir, prompts, args.num_per_prompt, args.seed,
                                        out, step=args.step, attention=args.attention)
    print(f"wrote {len(prompts) * args.num_per_prompt} images, {out / 'grid.png'} and {manifest}")
    return 0


def _print_result(result: EvalResult, step: int) -> None:
    """The metrics table, with the protocol hash on every line that others may quote."""
    p = result.protocol.protocol
    where = f"step {step}" if step >= 0 else "real images"
    print(f"{result.source}: {p.num_samples} samples, features {p.features.partition(':')[0]}, "
          f"{result.num_devices} device(s), {result.seconds:.1f}s")
    print(f"protocol {result.protocol.hash} ({where})")
    for line in metric_lines(result.metrics):
        print(line)
    for note in result.notes:
        print(f"note: {note}")


def eval_parser() -> argparse.ArgumentParser:
    """The flags of ``jaxgan eval``."""
    p = argparse.ArgumentParser(description="Evaluate a trained run under a pinned protocol.")
    p.add_argument("--workdir", required=True, help="a training workdir with checkpoints")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument("--num-samples", type=int, default=None, help="generated images (default: config eval)")
    p.add_argument("--num-reference", type=int, default=None, help="real images in the reference statistics")
    p.add_argument("--features", default=None, help="shapes (shipped), shapes:DIR or inception:FILE")
    p.add_argument("--generator", choices=("ema", "raw"), default=None)
    p.add_argument("--truncation", type=float, default=None, help="0: none; t: normal truncated to [-t, t]")
    p.add_argument("--truncation-scale", type=float, default=None,
                   help="factor s on the noise (DF-GAN's evaluation: --truncation 2 --truncation-scale 0.88)")
    p.add_argument("--seed", type=int, default=None, help="noise seed of the samples")
    p.add_argument("--split", choices=("train", "test"), default=None, help="captions and reference split")
    p.add_argument("--clip", default=None, help="a Hugging Face CLIPModel directory, for CLIP score")
    p.add_argument("--fidelity-samples", type=int, default=None, help="samples scored for shape fidelity; 0: off")
    p.add_argument("--diversity-captions", type=int, default=None,
                   help="captions of within-caption diversity; 0: off")
    p.add_argument("--diversity-samples", type=int, default=None, help="samples per caption of that measure")
    p.add_argument("--real", choices=("train", "test"), default=None,
                   help="score real images of this split instead of the generator (the ceiling)")
    p.add_argument("--devices", type=int, default=0, help="devices to use (default: all)")
    p.add_argument("--cache-dir", default=None, help="reference statistics cache (default: under $JAXGAN_CACHE, "
                   "else $XDG_CACHE_HOME/jaxgan, else ~/.cache/jaxgan)")
    p.add_argument("--out", default=None, help="JSON path (default WORKDIR/eval/step_N-HASH.json)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _eval(args: argparse.Namespace) -> int:
    result, step = evaluate_workdir(
        args.workdir, step=args.step, real=args.real, num_devices=args.devices, cache_dir=args.cache_dir,
        progress=not args.no_progress, num_samples=args.num_samples, num_reference=args.num_reference,
        features=args.features, generator=args.generator, truncation=args.truncation,
        truncation_scale=args.truncation_scale, seed=args.seed,
        split=args.split, clip=args.clip, fidelity_samples=args.fidelity_samples,
        diversity_captions=args.diversity_captions, diversity_samples=args.diversity_samples)
    _print_result(result, step)
    name = f"step_{step:06d}" if step >= 0 else f"real_{args.real}"
    out = (workdir_path(args.out) if args.out
           else workdir_path(args.workdir) / "eval" / f"{name}-{result.protocol.hash}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"step": step, **result.to_json()}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def alignment_parser() -> argparse.ArgumentParser:
    """The flags of ``jaxgan alignment``."""
    p = argparse.ArgumentParser(description="Attribute accuracy of a trained shapes generator.")
    p.add_argument("--workdir", required=True)
    p.add_argument("--per-combination", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step", type=int, default=None)
    return p


def _alignment(args: argparse.Namespace) -> int:
    workdir = workdir_path(args.workdir)
    config = saved_config(workdir)
    if not source_type(config.data.dataset).attributes:
        raise UsageError(f"alignment reads attribute labels, which {config.data.dataset} does not have; "
                         "jaxgan eval scores text alignment with CLIP (--clip DIR)")
    generator = TrainedGenerator(config, workdir, args.step)
    result = {"step": generator.step, **alignment_of(generator, args.per_combination, args.seed)}
    (workdir / "alignment.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"text alignment at step {result['step']} ({result['samples']} samples, "
          "shipped attribute classifier):")
    for name, value in result["accuracy"].items():
        print(f"  {name:10s} {100 * value:6.2f}%")
    return 0



@dataclasses.dataclass(frozen=True)
class Command:
    """One ``jaxgan`` command.

    Attributes:
      help: the one line ``jaxgan --help`` shows.
      parser: builds the command's argument parser.
      run: does the command with the parsed flags; returns the exit status.
      configs: the configs the flags name (resolving them raises on an unknown preset or
        key), for commands that take one; ``check_command`` calls it.
    """

    help: str
    parser: Callable[[], argparse.ArgumentParser]
    run: Callable[[argparse.Namespace], int]
    configs: Callable[[argparse.Namespace], list[Config]] | None = None


COMMANDS: dict[str, Command] = {
    "train": Command("train a GAN (what train.py runs)", train_parser, _train, lambda args: [train_config(args)]),
    "sample": Command("images from prompts with a trained generator (sample.py)", sample_parser, _sample),
    "eval": Command("every metric of a run under a pinned protocol", eval_parser, _eval),
    "alignment": Command("attribute accuracy of a trained shapes generator", alignment_parser, _alignment),
    "sanity": Command("the evaluation on real, grey and constant images", sanity.build_parser, sanity.run),
    "report": Command("a self-contained HTML report of a run", report.build_parser, report.run),
    "bench": Command("benchmark the compiled training step", bench.build_parser, bench.run, bench.configs),
    "throughput": Command("benchmark the input pipeline", throughput.build_parser, throughput.run),
    "scaling": Command("on-paper gradient traffic and step time at N chips", scaling.build_parser, scaling.run,
                       scaling.configs),
    "sweep": Command("throughput of K GANs in one vmapped step vs one by one", sweep.build_parser, sweep.run,
                     sweep.configs),
    "pretrain-text": Command("pretrain a shapes CLIP pair (or text encoder)", pretrain_text.build_parser,
                             pretrain_text.run),
    "measure-clip": Command("zero-shot attribute accuracy and retrieval of a CLIP pair on shapes",
                            pretrain_text.build_measure_parser, pretrain_text.measure_run),
    "train-attributes": Command("train the shapes attribute classifier that alignment reads with",
                                attributes.build_parser, attributes.run),
    "convert-inception": Command("convert pytorch-fid's Inception weights for FID", inception.build_parser,
                                 inception.run),
    "feature-scale": Command("measure the shapes feature network's feature scale", features.build_parser,
                             features.run),
    "import": Command("convert official PyTorch release files (damsm, ...)", importers.build_parser,
                      importers.run),
}


def _one_line(e: BaseException) -> str:
    """An error the library did not word itself (an ``OSError``): its type and first line."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def run_command(name: str, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parses ``argv`` with command ``name``'s parser and runs it under the one error wrapper.

    Bad flags exit with argparse's message and status 2; a ``JaxganError`` or ``OSError`` is
    printed as ``error: <one line>`` and returns 2; Ctrl-C returns 130.

    Example:
        status = run_command("scaling", ["--chips", "8"])
    """
    command = COMMANDS[name]
    parser = command.parser()
    if prog is not None:
        parser.prog = prog
    args = parser.parse_args(argv)
    try:
        return int(command.run(args) or 0)
    except JaxganError as e:
        print(f"error: {' '.join(str(e).splitlines())}", file=sys.stderr)
    except OSError as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted" + ("; the last checkpoint is kept" if name == "train" else ""), file=sys.stderr)
        return 130
    return 2


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of train.py: ``jaxgan train``."""
    return run_command("train", argv)


def sample_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of sample.py: ``jaxgan sample``."""
    return run_command("sample", argv)


def check_command(argv: Sequence[str]) -> None:
    """Parses ``jaxgan`` command line ``argv`` (``[command, *flags]``) as ``main`` would and
    resolves the configs it names, running nothing: a dry run for documented commands.

    A workdir without a ``config.json`` (a placeholder) resolves from the preset or the
    defaults. ``--help`` (of ``jaxgan`` or a command) passes.

    Raises:
      UsageError: an unknown command or flag, or a flag's value argparse refuses.
      ConfigError: an unknown preset or config key, or a value the config refuses.

    Example:
        check_command(["train", "--preset", "tiny", "--set", "model.width=8"])
    """
    argv = list(argv)
    if not argv:
        raise UsageError("no command")
    name = argv[0]
    if name in ("-h", "--help"):
        return
    if name not in COMMANDS:
        raise UsageError(f"unknown command {name!r}; commands: {', '.join(COMMANDS)}")
    command = COMMANDS[name]
    parser = command.parser()
    parser.prog = f"jaxgan {name}"

    def refuse(message: str) -> NoReturn:
        raise UsageError(f"{parser.prog}: {message}")

    parser.error = refuse  # raise instead of printing usage and exiting
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            args = parser.parse_args(argv[1:])
    except SystemExit as e:  # --help and the like print and exit 0: the flags parsed
        if e.code in (0, None):
            return
        raise
    if command.configs is not None:
        command.configs(args)


def main(argv: Sequence[str] | None = None) -> int:
    """``jaxgan COMMAND [ARGS]``: runs the command; ``jaxgan --help`` lists them."""
    args = list(sys.argv[1:] if argv is None else argv)
    width = max(map(len, COMMANDS)) + 2
    listing = "\n".join(f"  {name:<{width}} {command.help}" for name, command in COMMANDS.items())
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: jaxgan COMMAND [ARGS]  (jaxgan COMMAND --help for its arguments)\n\ncommands:\n{listing}")
        return 0 if args else 2
    if args[0] not in COMMANDS:
        print(f"error: unknown command {args[0]!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return run_command(args[0], args[1:], prog=f"jaxgan {args[0]}")
