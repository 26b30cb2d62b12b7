"""Many GANs in one compiled program: ``jax.vmap`` over a stacked state.

Everything a sweep varies lives in the state as data: the seed (initial params and the
step's noise keys), the learning rates (``optax.inject_hyperparams``), the
loss weights (``GANState.hparams``: penalty weight, CA's KL weight, EMA decay or half-life,
the diversity term's weight), ADA's adapted p (a leaf each member adapts on its own),
and the numbers of schedules (start, end, length; ``jaxgan.schedules``), whose kind all
members share. K members that differ only in those values share one program, and
``jax.vmap`` of the ordinary step trains all of them at once on the same batch:

    members = [{"train.seed": s, "train.d_lr": lr} for s, lr in zip(range(8), np.geomspace(1e-4, 1e-3, 8))]
    states = init_members(config, generator, discriminator, sentence_dim, members)
    step = make_sweep_step(config, generator, discriminator)
    states, metrics = step(states, batch)          # metrics[k] has shape [8]
    member(states, 3)                              # the 4th GAN's state, as a plain GANState
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgan.bench import synthetic_batch
from jaxgan.config import Config, ConfigError
from jaxgan.models import build_models, step_pieces
from jaxgan.presets import apply_overrides, get_config
from jaxgan.schedules import forms
from jaxgan.state import GANState, frozen_params, init_state
from jaxgan.step import Batch, Metrics, make_train_step

# Config keys whose values are data in the state; any other key changes the program.
SWEEPABLE = ("train.seed", "train.g_lr", "train.d_lr", "train.penalty_weight", "train.kl_weight",
             "train.ema_decay", "train.ema_kimg", "train.ema_rampup", "train.g_lr_schedule", "train.d_lr_schedule",
             "train.beta2_schedule", "train.penalty_weight_schedule", "train.ema_kimg_schedule",
             "train.diversity_weight")


def member_configs(config: Config, members: Sequence[dict[str, Any]]) -> list[Config]:
    """``config`` with each member's overrides; only ``SWEEPABLE`` keys may differ, and a
    schedule's kind (or EMA half-life on/off, diversity term on/off) must be ``config``'s, the
    step being built from it.

    Raises:
      ConfigError: a key outside ``SWEEPABLE``, or a schedule of another kind (it would need
        another compiled program).
    """
    out = []
    base = forms(config.train)
    for overrides in members:
        fixed = sorted(set(overrides) - set(SWEEPABLE))
        if fixed:
            raise ConfigError(f"{fixed[0]} cannot differ between sweep members (it changes the compiled program); "
                              f"sweepable: {', '.join(SWEEPABLE)}")
        member_config = apply_overrides(config, dict(overrides))
        own = forms(member_config.train)
        for key in base:
            if own[key] != base[key]:
                raise ConfigError(f"{key}: a member's {own[key]!r} form differs from the swept config's "
                                  f"{base[key]!r}; only the numbers of a schedule can differ between members")
        out.append(member_config)
    return out


def stack(states: Sequence[GANState]) -> GANState:
    """Members' states stacked along a new leading axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def member(states: GANState, index: int) -> GANState:
    """Member ``index`` of a stacked state.

    Example:
        third = member(states, 2)  # a plain GANState
    """
    return jax.tree.map(lambda leaf: leaf[index], states)


def init_members(config: Config, generator: nn.Module, discriminator: nn.Module, sentence_dim: int,
                 members: Sequence[dict[str, Any]], word_dim: int | None = None) -> GANState:
    """The stacked fresh states of ``members`` (override dicts of ``SWEEPABLE`` keys).

    Example:
        states = init_members(config, generator, discriminator, 128,
                              [{"train.seed": 0}, {"train.seed": 1, "train.d_lr": 4e-4}])
    """
    configs = member_configs(config, members)
    init = jax.jit(lambda c: init_state(c, generator, discriminator, sentence_dim, word_dim), static_argnums=0)
    states = [init(c) for c in configs]
    # The optimizers (static fields) are the same transformation in every member; their
    # hyperparameters differ as leaves of the optimizer states.
    first = states[0]
    return stack([dataclasses.replace(s, g_tx=first.g_tx, d_tx=first.d_tx) for s in states])


def make_sweep_step(config: Config, generator: nn.Module, discriminator: nn.Module,
                    shared_batch: bool = True, **pieces: Any) -> Callable[[GANState, Batch], tuple[GANState, Metrics]]:
    """The ordinary train step, vmapped over the members and jitted (state donated). The
    models' frozen params (GALIP's CLIP tower) are put on the device once and passed to every
    call, shared by the members: an input of the program, not swept.

    Args:
      shared_batch: every member trains on the same batch (else the batch has a leading
        member axis too).
      pieces: ``loss``, ``penalty``, ``augment`` as in ``make_train_step`` (the architecture's own
        pieces, ``jaxgan.models.step_pieces``, are added unless given).

    Example:
        step = make_sweep_step(config, generator, discriminator)
        states, metrics = step(states, batch)  # metrics["d_loss"]: one value per member
    """
    pieces = {**step_pieces(config.model, generator, discriminator), **pieces}
    step = make_train_step(config, generator, discriminator, **pieces)
    compiled = jax.jit(jax.vmap(step, in_axes=(0, None if shared_batch else 0, None)), donate_argnums=0)
    frozen = jax.device_put(frozen_params(generator, discriminator))
    return lambda states, batch: compiled(states, batch, frozen)


def benchmark(config: Config, members: int, steps: int = 10, repeats: int = 5) -> dict[str, float]:
    """Steps/s of ``members`` GANs: one vmapped step against ``members`` separate compiled steps
    run one after another, on the same synthetic batch (median of ``repeats`` timings of
    ``steps`` steps after a warm-up, ``block_until_ready``)."""
    generator, discriminator = build_models(config.model)
    sentence_dim = 16
    batch = jax.device_put(synthetic_batch(config, sentence_dim))
    overrides = [{"train.seed": i} for i in range(members)]
    stacked = init_members(config, generator, discriminator, sentence_dim, overrides)
    vmapped = make_sweep_step(config, generator, discriminator)
    single = jax.jit(make_train_step(config, generator, discriminator,
                                     **step_pieces(config.model, generator, discriminator)), donate_argnums=0)
    separate = [member(stacked, i) for i in range(members)]

    def run_vmapped() -> None:
        nonlocal stacked
        for _ in range(steps):
            stacked, _ = vmapped(stacked, batch)
        jax.block_until_ready(stacked)

    def run_separate() -> None:
        for i in range(members):
            for _ in range(steps):
                separate[i], _ = single(separate[i], batch)
        jax.block_until_ready(separate)

    def timed(fn: Callable[[], None]) -> float:
        fn()  # compile and warm up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return members * steps / statistics.median(times)

    vmap_rate, separate_rate = timed(run_vmapped), timed(run_separate)
    return {"members": members, "batch_size": config.train.batch_size, "vmapped_member_steps_per_s": vmap_rate,
            "sequential_member_steps_per_s": separate_rate, "speedup": vmap_rate / separate_rate}


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``jaxgan sweep``."""
    p = argparse.ArgumentParser(description="Throughput of K GANs trained by one vmapped step vs one by one.")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--members", type=int, nargs="+", default=[8])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    return p


def configs(args: argparse.Namespace) -> list[Config]:
    """The config ``jaxgan sweep`` benchmarks: the preset on one device."""
    return [get_config(args.preset, ["train.num_devices=1"])]


def run(args: argparse.Namespace) -> int:
    """``jaxgan sweep``: prints vmapped vs sequential member-steps/s for each ``--members``."""
    (config,) = configs(args)
    print(f"{'members':>7} {'vmapped member-steps/s':>23} {'sequential':>11} {'speedup':>8}")
    for k in args.members:
        r = benchmark(config, k, args.steps, args.repeats)
        print(f"{k:>7} {r['vmapped_member_steps_per_s']:>23.1f} {r['sequential_member_steps_per_s']:>11.1f} "
              f"{r['speedup']:>8.2f}")
    return 0
