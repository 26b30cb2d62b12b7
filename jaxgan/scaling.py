"""On paper: what data-parallel training moves between chips per step, and the step time
that implies at a given scale.

``jaxgan scaling --preset default --preset dfgan256 --chips 256 --link-gbps 400`` (``--set KEY=VALUE``
overrides config keys of every preset, as in training)

Per step, each network's gradient is all-reduced once (D's, then G's; BatchNorm statistics
and the metrics are a few kilobytes). A ring all-reduce of S bytes over n chips sends and
receives 2 (n - 1) / n * S bytes per chip (Patarasuk & Yuan 2009), the bandwidth-optimal
amount. With an FSDP axis of size f, each weight is all-gathered for the forward and again
for the backward pass and its gradient reduce-scattered over f chips: 3 (f - 1) / f * S
per chip within the axis, then the 1/f-sized shard all-reduced over the n / f replicas.

Time to move it: bytes / link bandwidth plus a latency of 2 (n - 1) alpha per ring
all-reduce, two of them a step (the alpha-beta model; a 2-D/3-D torus all-reduce, as on TPU
pods, has a latency term that grows like sqrt(n) instead, so this is pessimistic there). FSDP
adds three collectives over its f chips per split weight (two gathers, one reduce-scatter),
(f - 1) alpha each; which weights split is ``jaxgan.parallel.fsdp_spec``. The expected step time is
compute + communication, assuming no overlap (XLA overlaps some of it, so this is an upper
bound) and compute at a stated fraction of the chip's peak.
"""

from __future__ import annotations

import argparse
from typing import Any

import jax
import numpy as np
from jax.sharding import PartitionSpec

from jaxgan.config import Config, ConfigError
from jaxgan.flops import step_flops
from jaxgan.models import build_models, sentence_width
from jaxgan.parallel import fsdp_spec
from jaxgan.presets import get_config
from jaxgan.state import abstract_state


def ring_allreduce_bytes(size_bytes: float, n: int) -> float:
    """Bytes one chip sends (and receives) to all-reduce ``size_bytes`` over ``n`` chips."""
    return 2.0 * (n - 1) / n * size_bytes if n > 1 else 0.0


def fsdp_bytes(size_bytes: float, n: int, fsdp: int) -> float:
    """Bytes one chip sends per step with weights split over ``fsdp`` chips (see module doc)."""
    within = 3.0 * (fsdp - 1) / fsdp * size_bytes if fsdp > 1 else 0.0
    return within + ring_allreduce_bytes(size_bytes / fsdp, n // fsdp)


SENTENCE_DIM = 128  # the sentence width assumed when the generator does not fix one


def sentence_dim_of(config: Config) -> int:
    """The sentence width ``config``'s generator takes: its own where it fixes one (GALIP: the
    CLIP's projection), else ``SENTENCE_DIM``."""
    return sentence_width(build_models(config.model)[0]) or SENTENCE_DIM


def _params(config: Config, sentence_dim: int) -> tuple[Any, Any]:
    g, d = build_models(config.model)
    state = abstract_state(config, g, d, sentence_dim)
    return state.g_params, state.d_params


def parameter_bytes(config: Config, sentence_dim: int = 128) -> dict[str, int]:
    """float32 bytes of G's and D's trainable params (what is all-reduced every step)."""
    size = lambda tree: int(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree)))  # noqa: E731
    g, d = _params(config, sentence_dim)
    return {"g": size(g), "d": size(d)}


def split_weights(config: Config, fsdp: int, sentence_dim: int = 128) -> int:
    """How many param leaves an ``fsdp``-way axis splits (each costs its own collectives)."""
    leaves = jax.tree.leaves(_params(config, sentence_dim))
    return sum(fsdp_spec(tuple(x.shape), fsdp) != PartitionSpec() for x in leaves)


ALLREDUCES_PER_STEP = 2  # D's gradient, then G's


def expected_step(config: Config, chips: int, link_gbps: float, peak_tflops: float, mfu: float,
                  fsdp: int = 1, latency_us: float = 5.0, sentence_dim: int = 128) -> dict[str, Any]:
    """Per-chip traffic and expected step time of ``config`` at global batch ``batch_size * chips``
    (weak scaling: the per-chip batch stays ``config.train.batch_size``)."""
    params = parameter_bytes(config, sentence_dim)
    grads = params["g"] + params["d"]
    sent = fsdp_bytes(grads, chips, fsdp)
    g, d = build_models(config.model)
    flops = step_flops(config, g, d, sentence_dim)["total"]  # one chip's batch
    compute_s = flops / (peak_tflops * 1e12 * mfu)
    replicas = chips // fsdp
    hops = ALLREDUCES_PER_STEP * 2 * (replicas - 1) + 3 * split_weights(config, fsdp, sentence_dim) * (fsdp - 1)
    latency_s = hops * latency_us * 1e-6
    comm_s = sent / (link_gbps * 1e9 / 8) + latency_s
    return {"g_params_mb": params["g"] / 2**20, "d_params_mb": params["d"] / 2**20,
            "bytes_per_chip_per_step": sent, "comm_ms": 1e3 * comm_s, "latency_ms": 1e3 * latency_s,
            "compute_ms": 1e3 * compute_s,
            "step_ms": 1e3 * (compute_s + comm_s), "comm_fraction": comm_s / (compute_s + comm_s)}


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``jaxgan scaling``."""
    p = argparse.ArgumentParser(description="Per-step gradient traffic and expected step time at scale.")
    p.add_argument("--preset", action="append", help="preset (repeatable; default: default)")
    p.add_argument("--chips", type=int, default=256)
    p.add_argument("--fsdp", type=int, default=1)
    p.add_argument("--link-gbps", type=float, default=400.0,
                   help="per-chip all-reduce bandwidth in Gbit/s (default 400: one NDR InfiniBand port)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="per-chip peak (default: H100 bf16 dense)")
    p.add_argument("--mfu", type=float, default=0.3, help="fraction of peak the compute reaches")
    p.add_argument("--latency-us", type=float, default=5.0, help="per-hop latency of a ring all-reduce step")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, applied to every preset (repeatable), e.g. model.clip=DIR")
    return p


def configs(args: argparse.Namespace) -> list[Config]:
    """The configs ``jaxgan scaling`` projects: each ``--preset`` with the ``--set`` overrides."""
    return [get_config(preset, args.overrides) for preset in args.preset or ["default"]]


def run(args: argparse.Namespace) -> int:
    """``jaxgan scaling``: one line per preset with its traffic and expected step time."""
    for preset, config in zip(args.preset or ["default"], configs(args)):
        if args.chips < 1 or args.chips % args.fsdp:
            raise ConfigError(f"--fsdp {args.fsdp} must divide --chips {args.chips}")
        r = expected_step(config, args.chips, args.link_gbps, args.peak_tflops, args.mfu, args.fsdp,
                          args.latency_us, sentence_dim_of(config))
        print(f"{preset}: G {r['g_params_mb']:.1f} MiB + D {r['d_params_mb']:.1f} MiB of float32 params; "
              f"{r['bytes_per_chip_per_step'] / 2**20:.1f} MiB sent per chip per step over {args.chips} chips "
              f"(fsdp={args.fsdp}) = {r['comm_ms']:.3f} ms at {args.link_gbps:g} Gbit/s and "
              f"{args.latency_us:g} us/hop ({r['latency_ms']:.3f} ms of it latency); compute "
              f"{r['compute_ms']:.3f} ms at {args.mfu:.0%} of {args.peak_tflops:g} TFLOP/s; expected step "
              f"{r['step_ms']:.3f} ms ({r['comm_fraction']:.0%} communication)")
    return 0
