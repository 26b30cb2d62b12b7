"""A text-conditional DCGAN pair after GAN-INT-CLS (Reed et al., 2016, arXiv:1605.05396).

Generator: [z, LeakyReLU(Dense(sentence))] -> Dense to 4x4 -> upsampling blocks with
BatchNorm + ReLU -> tanh image in [-1, 1]. Discriminator: strided 4x4 convs with BatchNorm
(not on the first) + LeakyReLU down to 4x4; there the projected sentence embedding is tiled
spatially and concatenated, then a 1x1 conv and a 4x4 valid conv give one logit. The
discriminator shares its image trunk between the matched and the mismatched caption, so
the matching-aware term costs one extra head, not one extra trunk.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgan.config import ModelConfig, arch_option, option
from jaxgan.models.layers import DTYPES, BatchNorm, ConditioningAugmentation, DownConv, Upsample, resolve_conv_impl


@dataclasses.dataclass(frozen=True)
class DCGANConfig(ModelConfig):
    """``model.arch=dcgan``: the shared model fields plus how the generator upsamples.

    Example:
        generator, discriminator = build_dcgan(DCGANConfig(resolution=64, width=64))
    """

    arch: str = arch_option("dcgan")
    upsample: str = option("resize_conv", "how G upsamples: nearest resize + 3x3 conv, or a transposed conv",
                           choices=("resize_conv", "conv_transpose"))


def _num_blocks(resolution: int) -> int:
    return resolution.bit_length() - 3  # blocks between 4x4 and the resolution


def generator_channels(resolution: int, width: int) -> list[int]:
    """Channels at 4x4, 8x8, ... up to resolution/2 (the last block emits RGB)."""
    n = _num_blocks(resolution)
    return [width * min(2 ** (n - 1 - i), 8) for i in range(n)]


def discriminator_channels(resolution: int, width: int) -> list[int]:
    """Channels after each stride-2 conv, from resolution/2 down to 4x4."""
    return [width * min(2 ** i, 8) for i in range(_num_blocks(resolution))]


class Generator(nn.Module):
    """Maps noise z [B, Z] and a sentence embedding [B, S] to images [B, R, R, 3] in [-1, 1]."""

    resolution: int = 32
    width: int = 32
    text_dim: int = 128
    upsample: str = "resize_conv"
    conv_impl: str = "conv"
    dtype: Any = jnp.float32
    bn_groups: int = 1
    bn_axis_name: str | None = None
    ca: bool = False  # conditioning augmentation in place of the text projection

    @nn.compact
    def __call__(self, z: jax.Array, sentence: jax.Array, train: bool = True) -> jax.Array:
        norm = functools.partial(BatchNorm, groups=self.bn_groups, axis_name=self.bn_axis_name,
                                 dtype=self.dtype)
        if self.ca:
            text = ConditioningAugmentation(self.text_dim, dtype=self.dtype, name="ca")(sentence, train)
        else:
            text = nn.leaky_relu(nn.Dense(self.text_dim, dtype=self.dtype)(sentence), 0.2)
        h = jnp.concatenate([z.astype(self.dtype), text.astype(self.dtype)], axis=-1)
        channels = generator_channels(self.resolution, self.width)
        # No bias before BatchNorm: its shift would be cancelled by the mean subtraction.
        h = nn.Dense(4 * 4 * channels[0], use_bias=False, dtype=self.dtype)(h)
        h = nn.relu(norm()(h.reshape(h.shape[0], 4, 4, channels[0]), train))
        for features in channels[1:]:
            h = Upsample(features, self.upsample, use_bias=False, dtype=self.dtype,
                         conv_impl=self.conv_impl)(h)
            h = nn.relu(norm()(h, train))
        image = Upsample(3, self.upsample, dtype=self.dtype, conv_impl=self.conv_impl)(h)
        return jnp.tanh(image.astype(jnp.float32))


class Discriminator(nn.Module):
    """Scores (image, sentence) pairs; returns float32 logits [B].

    With ``wrong_sentence`` it also scores the same images against mismatched captions and
    returns ``(logits, wrong_logits)``.
    """

    resolution: int = 32
    width: int = 32
    text_dim: int = 128
    dtype: Any = jnp.float32
    bn_groups: int = 1
    bn_axis_name: str | None = None
    conv_impl: str = "conv"

    @nn.compact
    def __call__(self, image: jax.Array, sentence: jax.Array,
                 wrong_sentence: jax.Array | None = None, train: bool = True):
        norm = functools.partial(BatchNorm, groups=self.bn_groups, axis_name=self.bn_axis_name,
                                 dtype=self.dtype)
        h = image.astype(self.dtype)
        for i, features in enumerate(discriminator_channels(self.resolution, self.width)):
            h = DownConv(features, use_bias=(i == 0), dtype=self.dtype, impl=self.conv_impl,
                         name=f"Conv_{i}")(h)
            if i > 0:
                h = norm()(h, train)
            h = nn.leaky_relu(h, 0.2)

        project = nn.Dense(self.text_dim, dtype=self.dtype)
        # Explicit names keep the param tree of the all-nn.Conv model (trunk Conv_0..n-1).
        n = len(discriminator_channels(self.resolution, self.width))
        joint = nn.Conv(h.shape[-1], (1, 1), use_bias=False, dtype=self.dtype, name=f"Conv_{n}")
        joint_norm = norm()
        to_logit = nn.Conv(1, (4, 4), padding="VALID", dtype=self.dtype, name=f"Conv_{n + 1}")

        def score(text: jax.Array) -> jax.Array:
            t = nn.leaky_relu(project(text), 0.2).astype(self.dtype)
            t = jnp.broadcast_to(t[:, None, None, :], (*h.shape[:3], t.shape[-1]))
            x = nn.leaky_relu(joint_norm(joint(jnp.concatenate([h, t], axis=-1)), train), 0.2)
            return to_logit(x).reshape(-1).astype(jnp.float32)

        if wrong_sentence is None:
            return score(sentence)
        return score(sentence), score(wrong_sentence)


def build_dcgan(cfg: DCGANConfig, bn_groups: int = 1,
                bn_axis_name: str | None = None) -> tuple[Generator, Discriminator]:
    """The DCGAN pair ``cfg`` describes; ``bn_groups`` / ``bn_axis_name`` as in ``BatchNorm``.

    Example:
        generator, discriminator = build_dcgan(get_config("dcgan64").model)
    """
    impl = resolve_conv_impl(cfg.conv_impl)
    common = dict(resolution=cfg.resolution, text_dim=cfg.text_dim, dtype=DTYPES[cfg.dtype],
                  bn_groups=bn_groups, bn_axis_name=bn_axis_name)
    return (Generator(upsample=cfg.upsample, conv_impl=impl, ca=cfg.ca, width=cfg.width, **common),
            Discriminator(conv_impl=impl, width=cfg.discriminator_width, **common))
