"""Generator and discriminator architectures (pure Flax linen modules)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgan.config import ModelConfig, parse_resolutions
from jaxgan.models.dcgan import Discriminator, Generator
from jaxgan.models.dfgan import DFDiscriminator, DFGenerator, dfgan_channels, dfgan_d_channels

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_models(cfg: ModelConfig, bn_groups: int = 1,
                 bn_axis_name: str | None = None) -> tuple[nn.Module, nn.Module]:
    """The (generator, discriminator) pair a model config describes (``cfg.arch``).

    ``bn_groups`` / ``bn_axis_name`` choose how BatchNorm statistics span devices; see
    ``jaxgan.models.layers.BatchNorm`` (DF-GAN uses them only with ``model.g_norm=batch``).

    Example:
        generator, discriminator = build_models(get_config("dfgan64").model)
    """
    dtype = DTYPES[cfg.dtype]
    impl = resolve_conv_impl(cfg.conv_impl)
    if cfg.arch == "dfgan":
        return _build_dfgan(cfg, dtype, impl, bn_groups, bn_axis_name)
    if cfg.arch != "dcgan":
        raise ValueError(f"unknown model.arch {cfg.arch!r}; valid: dcgan, dfgan")
    common = dict(resolution=cfg.resolution, text_dim=cfg.text_dim, dtype=dtype,
                  bn_groups=bn_groups, bn_axis_name=bn_axis_name)
    return (Generator(upsample=cfg.upsample, conv_impl=impl, ca=cfg.ca, width=cfg.width, **common),
            Discriminator(conv_impl=impl, width=discriminator_width(cfg), **common))


def _build_dfgan(cfg: ModelConfig, dtype, impl: str, bn_groups: int, bn_axis_name: str | None):
    # SAGAN puts its self-attention block in both networks; so does ``self_attention`` here.
    generator = DFGenerator(
        resolution=cfg.resolution, width=cfg.width, z_dim=cfg.z_dim, dtype=dtype, conv_impl=impl,
        ca=cfg.ca, ca_dim=cfg.text_dim, attention_resolutions=tuple(parse_resolutions(cfg.word_attention)),
        self_attention_resolution=cfg.self_attention, norm=cfg.g_norm, bn_groups=bn_groups,
        bn_axis_name=bn_axis_name, shortcut_upsample=cfg.g_shortcut)
    discriminator = DFDiscriminator(
        resolution=cfg.resolution, width=discriminator_width(cfg), dtype=dtype, conv_impl=impl,
        spectral_norm=cfg.spectral_norm, self_attention_resolution=cfg.self_attention,
        head_hidden=cfg.d_head_width, projection=cfg.d_projection)
    return generator, discriminator


def discriminator_width(cfg: ModelConfig) -> int:
    """D's base channel count: ``model.d_width``, or ``model.width`` when that is 0."""
    return cfg.d_width or cfg.width


def uses_word_attention(cfg: ModelConfig) -> bool:
    """Whether the generator takes word embeddings (and so needs them in every batch)."""
    return bool(parse_resolutions(cfg.word_attention))


def resolve_conv_impl(conv_impl: str) -> str:
    """"auto" -> "matmul" on CPU (XLA's CPU conv gradients are slow), "conv" elsewhere."""
    if conv_impl == "auto":
        return "matmul" if jax.default_backend() == "cpu" else "conv"
    return conv_impl


__all__ = ["Generator", "Discriminator", "DFGenerator", "DFDiscriminator", "dfgan_channels",
           "dfgan_d_channels", "build_models", "discriminator_width", "DTYPES"]
