"""Schedules as data: values that follow the number of images seen, evaluated inside the step.

A ``Schedule`` is a small frozen description: a kind (``constant``, ``linear``, ``cosine``) and
the value it starts at, the value it ends at and after how many images it gets there; after
that it holds the end value. It is a pure ``jnp`` function of the images seen
(``step * train.batch_size``, the global batch), so it runs inside the compiled step and a
resume continues it from the restored step.

In config a schedule is one string per value, ``KIND:END@IMAGES``, that starts from its base
field: ``train.g_lr=2e-4 train.g_lr_schedule=cosine:5e-5@20M`` is R3GAN's learning rate
(``jaxgan.config.parse_schedule``). The kind is compiled into the step; the start, end and
length are state leaves (``state.hparams["<name>_start"]``, ``"<name>_end"``,
``"<name>_over_images"``), so a vmapped sweep varies them and a resume applies new ones.

What a schedule drives is named by its field: ``train.X_schedule`` drives X, which is
``g_lr`` or ``d_lr`` (the injected learning rates), ``beta2`` (Adam's, injected only then), or
any leaf of ``state.hparams`` (``penalty_weight``, ``ema_kimg``, ...). A new hparams leaf is
scheduled by adding its ``train.X`` field (the start) and a ``train.X_schedule`` string field;
nothing here changes.

R3GAN (brownvc/R3GAN, ``training/training_loop.py``) ramps every value with a half-cosine
over ``decay_nimg`` images and then holds it: that is ``cosine`` here.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from jaxgan.config import TrainConfig, parse_schedule, schedule_fields

KINDS = ("constant", "linear", "cosine")
# Values that live in the optimizer states rather than in ``state.hparams``.
OPTIMIZER_VALUES = ("g_lr", "d_lr", "beta2")
LEAF_SUFFIXES = ("_start", "_end", "_over_images")


def evaluate(kind: str, start: jax.Array | float, end: jax.Array | float, over_images: jax.Array | float,
             images: jax.Array | float) -> jax.Array:
    """The value of a ``kind`` schedule after ``images`` images, as float32.

    With ``f = clip(images / over_images, 0, 1)``:
      constant: ``start``;
      linear: ``start + (end - start) * f``;
      cosine: ``start + (end - start) * (1 - cos(pi f)) / 2`` (R3GAN's ``cosine_decay_with_warmup``
        without warm-up: the half-cosine from start to end, flat at both ends).

    Example:
        evaluate("linear", 2e-4, 1e-4, 1000.0, 500.0)  # 1.5e-4
    """
    start = jnp.asarray(start, jnp.float32)
    if kind == "constant":
        return start
    end = jnp.asarray(end, jnp.float32)
    f = jnp.clip(jnp.asarray(images, jnp.float32) / jnp.asarray(over_images, jnp.float32), 0.0, 1.0)
    if kind == "linear":
        w = f
    elif kind == "cosine":
        w = 0.5 * (1.0 - jnp.cos(math.pi * f))
    else:
        raise ValueError(f"unknown schedule kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    # Written as a weighted mean, which is exact at both ends in float32: start at w = 0, end at w = 1.
    return start * (1.0 - w) + end * w


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A value that goes from ``start`` to ``end`` over ``over_images`` images, then holds ``end``.

    Example:
        lr = Schedule("cosine", 2e-4, 5e-5, 20e6)
        lr(10e6)  # 1.25e-4: halfway along the half-cosine
    """

    kind: str
    start: float
    end: float = 0.0
    over_images: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown schedule kind {self.kind!r}; valid kinds: {', '.join(KINDS)}")
        if self.kind != "constant" and not self.over_images > 0:
            raise ValueError(f"a {self.kind} schedule needs over_images > 0, got {self.over_images}")

    def __call__(self, images: jax.Array | float) -> jax.Array:
        """The value after ``images`` images (a pure jnp function, traceable)."""
        return evaluate(self.kind, self.start, self.end, self.over_images, images)

    def leaves(self, name: str) -> dict[str, float]:
        """The state leaves that hold this schedule's numbers (none for a constant)."""
        if self.kind == "constant":
            return {}
        return dict(zip((name + s for s in LEAF_SUFFIXES), (self.start, self.end, self.over_images)))


def kinds(train: TrainConfig) -> dict[str, str]:
    """``{value name: kind}`` of every configured (non-constant) schedule: the static part,
    compiled into the step.

    Example:
        kinds(get_config("tiny", ["train.g_lr_schedule=cosine:5e-5@20M"]).train)  # {"g_lr": "cosine"}
    """
    out = {}
    for name, field_name in schedule_fields(train).items():
        spec = parse_schedule(f"train.{field_name}", getattr(train, field_name))
        if spec is not None:
            out[name] = spec.kind
    return out


def configured(train: TrainConfig, starts: dict[str, float]) -> dict[str, Schedule]:
    """The configured schedules, each starting at ``starts[name]`` (its base value)."""
    out = {}
    for name, field_name in schedule_fields(train).items():
        spec = parse_schedule(f"train.{field_name}", getattr(train, field_name))
        if spec is not None:
            out[name] = Schedule(spec.kind, float(starts[name]), spec.end, spec.over_images)
    return out


def ema_half_life_mode(train: TrainConfig) -> bool:
    """Whether the EMA follows a half-life in images (``train.ema_kimg`` set or scheduled)
    instead of the per-step ``train.ema_decay``."""
    return train.ema_kimg > 0 or "ema_kimg" in kinds(train)


def ema_decay_from_half_life(ema_kimg: jax.Array | float, images: jax.Array | float, batch_size: int,
                             rampup: jax.Array | float = 0.0) -> jax.Array:
    """StyleGAN's EMA decay per step: ``0.5 ** (batch_size / max(half_life, 1e-8))``, the
    half-life ``1000 * ema_kimg`` images, capped at ``rampup * images`` when ``rampup > 0``
    (Karras et al. 2020, StyleGAN2-ADA ``training_loop.py``: ``ema_kimg``, ``ema_rampup``).

    The average then forgets half of its past in the same number of images at any batch size.

    Example:
        ema_decay_from_half_life(10.0, 0.0, 32)  # 0.5 ** (32 / 10000) = 0.997784
    """
    half_life = 1000.0 * jnp.asarray(ema_kimg, jnp.float32)
    rampup = jnp.asarray(rampup, jnp.float32)
    capped = jnp.minimum(half_life, rampup * jnp.asarray(images, jnp.float32))
    half_life = jnp.where(rampup > 0, capped, half_life)
    return jnp.exp2(-jnp.float32(batch_size) / jnp.maximum(half_life, 1e-8))


def value_at(name: str, kind: str, hparams: dict[str, jax.Array], images: jax.Array) -> jax.Array:
    """The scheduled value ``name`` after ``images`` images, from its leaves in ``hparams``."""
    start, end, over = (hparams[name + s] for s in LEAF_SUFFIXES)
    return evaluate(kind, start, end, over, images)


def forms(train: TrainConfig) -> dict[str, object]:
    """The compiled form of each config key whose numbers are state leaves: a schedule's kind
    (None when constant), whether the EMA follows a half-life (``train.ema_kimg``) and whether
    the diversity term is on (``train.diversity_weight > 0``: the step then draws a second
    sample and the state holds its weight).

    Two configs with the same forms have the same step program and the same state leaves, so
    a resume may apply the numbers and a vmapped sweep may vary them; a change of form is
    refused (``jaxgan.checkpoint``, ``jaxgan.sweep``).
    """
    scheduled = kinds(train)
    out: dict[str, object] = {f"train.{field_name}": scheduled.get(name)
                              for name, field_name in schedule_fields(train).items()}
    out["train.ema_kimg"] = ema_half_life_mode(train)
    out["train.diversity_weight"] = train.diversity_weight > 0
    return out
