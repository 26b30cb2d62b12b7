"""Generator and discriminator architectures (pure Flax linen modules)."""

from __future__ import annotations

import jax.numpy as jnp

from jaxgan.config import ModelConfig
from jaxgan.models.dcgan import Discriminator, Generator

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_models(cfg: ModelConfig, bn_groups: int = 1, bn_axis_name: str | None = None):
    """The (generator, discriminator) pair a model config describes.

    ``bn_groups`` / ``bn_axis_name`` choose how BatchNorm statistics span devices; see
    ``jaxgan.models.layers.BatchNorm``.
    """
    dtype = DTYPES[cfg.dtype]
    common = dict(resolution=cfg.resolution, width=cfg.width, text_dim=cfg.text_dim, dtype=dtype,
                  bn_groups=bn_groups, bn_axis_name=bn_axis_name)
    return Generator(upsample=cfg.upsample, **common), Discriminator(**common)


__all__ = ["Generator", "Discriminator", "build_models", "DTYPES"]
