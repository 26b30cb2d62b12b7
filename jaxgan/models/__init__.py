"""Generator and discriminator architectures (pure Flax linen modules)."""

from __future__ import annotations

import jax
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
    impl = resolve_conv_impl(cfg.conv_impl)
    return (Generator(upsample=cfg.upsample, conv_impl=impl, **common),
            Discriminator(conv_impl=impl, **common))


def resolve_conv_impl(conv_impl: str) -> str:
    """"auto" -> "matmul" on CPU (XLA's CPU conv gradients are slow), "conv" elsewhere."""
    if conv_impl == "auto":
        return "matmul" if jax.default_backend() == "cpu" else "conv"
    return conv_impl


__all__ = ["Generator", "Discriminator", "build_models", "DTYPES"]
