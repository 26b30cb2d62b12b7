"""R3GAN's modernised residual pair (Huang, Gokaslan, Kuleshov and Tompkin, "The GAN is dead;
long live the GAN! A Modern GAN Baseline", NeurIPS 2024, arXiv:2501.05441), text-conditioned.

Both networks are stages of residual blocks, one stage per feature-map size, with no
normalisation layers. A block is an inverted bottleneck:

    x + conv1x1(lrelu(b2 + gconv3x3(lrelu(b1 + conv1x1(x)))))

The first 1x1 conv widens the channels ``expansion`` times, the 3x3 conv is grouped
(``group_width`` channels per group: ResNeXt's cardinality), the last 1x1 conv narrows back.
Fix-up style initialisation (as R3GAN's code does): weights are drawn N(0, gain^2 / fan_in)
(He/MSR), the first two convs of a branch with gain sqrt(2 / (1 + 0.2^2)) * L^(-1/4) (L the
number of blocks in the network, 4 = 2m - 2 for m = 3 layers per branch) and the last conv
at zero, so every block starts as the identity.

Between stages the resolution changes by bilinear resampling with a 1x1 conv where the width
changes (at the lower resolution). R3GAN low-pass filters with [1, 2, 1] around its
resampling (upfirdn2d, zero-padded borders); here it is a bilinear interpolation, which for
2x up is the same 4-tap filter, with clamped borders (``upsample_bilinear``), and for 2x down
the antialiased bilinear filter [1, 3, 3, 1] / 8, renormalised at the borders
(``downsample_bilinear``).

Generator: the sentence embedding s goes through a linear map (or CA) to t; [z, t] scales
the channels of a learned 4x4 basis (R3GAN's generative basis); each stage then adds a
conditional bias ``W_s t`` (zero-initialised, so the network starts as R3GAN's own) before
its blocks; a 1x1 conv gives RGB. R3GAN's output is linear (no tanh); ``output="tanh"``
squashes it into [-1, 1] as the other architectures do. Pixels are clipped to [-1, 1] only
when they are turned into uint8 (``jaxgan.pixels``); D sees the raw values.

Discriminator: a 1x1 conv from RGB, the stages in reverse, then R3GAN's discriminative basis
(a depthwise 4x4 valid conv, one weight per channel and position) and a linear map to a
feature phi [B, text_dim]. The head is a projection discriminator (Miyato & Koyama, ICLR 2018,
arXiv:1802.05637): ``logit = psi(phi) + <E s, phi>``, so a mismatched caption s' moves the
logit by ``<E (s - s'), phi>``. R3GAN's class-conditional head is the projection term alone.
The trunk runs once for the matched and the mismatched caption.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgan.config import ConfigError, ModelConfig, arch_option, option
from jaxgan.models.layers import (
    DTYPES,
    ConditioningAugmentation,
    Conv,
    downsample_bilinear,
    resolve_conv_impl,
    upsample_bilinear,
)

# The gain that keeps the activations' variance through LeakyReLU(0.2) (He et al. 2015).
LRELU_GAIN = math.sqrt(2 / (1 + 0.2 ** 2))
LAYERS_PER_BRANCH = 3


@dataclasses.dataclass(frozen=True)
class R3GANConfig(ModelConfig):
    """``model.arch=r3gan``: the shared model fields plus R3GAN's block shape.

    ``width`` is the channel count at full resolution; each halving of the feature map
    doubles it, up to ``width * width_cap``. R3GAN's CIFAR-10 network is ``width=768,
    width_cap=1, blocks=2, expansion=2, group_width=16``.

    Example:
        generator, discriminator = build_r3gan(R3GANConfig(resolution=64, width=32))
    """

    arch: str = arch_option("r3gan")
    blocks: int = option(2, "residual blocks per stage (R3GAN: 2)", at_least=1)
    expansion: int = option(2, "inverted bottleneck: a block's first 1x1 conv widens the channels this many "
                            "times (R3GAN: 2)", at_least=1)
    group_width: int = option(16, "channels per group of a block's grouped 3x3 conv (R3GAN: 16)", at_least=1)
    width_cap: int = option(8, "stage channels are width * min(resolution / size, width_cap); 1: the same "
                            "width at every size (R3GAN's CIFAR-10 net)", at_least=1)
    output: str = option("linear", "G's last activation: linear (R3GAN) or tanh", choices=("linear", "tanh"))

    def validate(self) -> None:
        """Raises ``ConfigError`` when ``group_width`` does not divide a block's widened channels."""
        for name, width in (("width", self.width), ("d_width", self.discriminator_width)):
            for c in r3gan_channels(self.resolution, width, self.width_cap):
                if (c * self.expansion) % self.group_width:
                    raise ConfigError(f"model.group_width={self.group_width} must divide every block's "
                                      f"{c * self.expansion} widened channels ({name}={width}, "
                                      f"expansion={self.expansion})")


def r3gan_channels(resolution: int, width: int, width_cap: int = 8) -> list[int]:
    """Generator channels at 4x4, 8x8, ..., resolution (D uses them in reverse).

    32 px, width 32, cap 8: [256, 128, 64, 32]; cap 1: [32, 32, 32, 32].
    """
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
    levels = resolution.bit_length() - 2
    return [width * min(2 ** (levels - 1 - i), width_cap) for i in range(levels)]


def msr_init(gain: float = 1.0) -> nn.initializers.Initializer:
    """N(0, gain^2 / fan_in): He ("MSR") initialisation with an explicit gain, as R3GAN uses."""
    return nn.initializers.variance_scaling(gain ** 2, "fan_in", "normal")


class ResidualBlock(nn.Module):
    """``x + project(lrelu(grouped(lrelu(expand(x)))))``; the identity at init (``project`` = 0).

    ``num_blocks``: the blocks in the whole network (L), which scales the branch's gains by
    L^(-1/4) (fix-up: the sum of L branches keeps a bounded variance once they train).
    """

    expansion: int = 2
    group_width: int = 16
    num_blocks: int = 1
    dtype: Any = jnp.float32
    conv_impl: str = "conv"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        wide = c * self.expansion
        init = msr_init(LRELU_GAIN * self.num_blocks ** (-1 / (2 * LAYERS_PER_BRANCH - 2)))
        y = Conv(wide, 1, dtype=self.dtype, impl=self.conv_impl, kernel_init=init, name="expand")(x)
        y = Conv(wide, 3, dtype=self.dtype, impl=self.conv_impl, groups=wide // self.group_width,
                 kernel_init=init, name="grouped")(nn.leaky_relu(y, 0.2))
        y = Conv(c, 1, use_bias=False, dtype=self.dtype, impl=self.conv_impl,
                 kernel_init=nn.initializers.zeros, name="project")(nn.leaky_relu(y, 0.2))
        return x.astype(self.dtype) + y


class R3Stages(nn.Module):
    """What R3GAN's G and D share: the block shape, the resampling between stages and the
    stages of residual blocks (D runs the generator's stages in reverse)."""

    resolution: int = 32
    width: int = 32
    width_cap: int = 8
    blocks: int = 2
    expansion: int = 2
    group_width: int = 16
    text_dim: int = 128
    dtype: Any = jnp.float32
    conv_impl: str = "conv"

    def resize(self, h: jax.Array, features: int, up: bool) -> jax.Array:
        """``h`` resampled 2x (up or down) with ``features`` channels: bilinear resampling, and
        a 1x1 conv where the width changes, run at the lower resolution (where it is cheaper;
        it commutes with the resampling), named ``up_<size>`` / ``down_<size>`` by the new size."""
        size = h.shape[1] * 2 if up else h.shape[1] // 2

        def widen(x: jax.Array) -> jax.Array:
            if x.shape[-1] == features:
                return x
            return Conv(features, 1, use_bias=False, dtype=self.dtype, impl=self.conv_impl, kernel_init=msr_init(),
                        name=f"{'up' if up else 'down'}_{size}")(x)

        return upsample_bilinear(widen(h)) if up else widen(downsample_bilinear(h))

    def stage(self, h: jax.Array, num_stages: int) -> jax.Array:
        """``self.blocks`` residual blocks at ``h``'s size, named ``stage_<size>_<j>``; the
        network has ``self.blocks * num_stages`` blocks in all (the fix-up gains' L)."""
        for j in range(self.blocks):
            h = ResidualBlock(self.expansion, self.group_width, self.blocks * num_stages, self.dtype, self.conv_impl,
                              name=f"stage_{h.shape[1]}_{j}")(h)
        return h


class R3Generator(R3Stages):
    """Maps noise z [B, Z] and a sentence embedding [B, S] to images [B, R, R, 3] (float32)."""

    output: str = "linear"  # or "tanh"
    ca: bool = False  # conditioning augmentation in place of the linear text map

    @nn.compact
    def __call__(self, z: jax.Array, sentence: jax.Array, train: bool = True) -> jax.Array:
        if self.output not in ("linear", "tanh"):
            raise ValueError(f"output must be 'linear' or 'tanh', got {self.output!r}")
        if self.ca:
            text = ConditioningAugmentation(self.text_dim, self.dtype, name="ca")(sentence, train)
        else:
            text = nn.Dense(self.text_dim, use_bias=False, dtype=self.dtype, kernel_init=msr_init(),
                            name="embed")(sentence)
        text = text.astype(self.dtype)
        cond = jnp.concatenate([z.astype(self.dtype), text], axis=-1)
        channels = r3gan_channels(self.resolution, self.width, self.width_cap)

        def conditional_bias(h: jax.Array) -> jax.Array:
            # Zero at init: the text's only path is then R3GAN's own, through the basis.
            bias = nn.Dense(h.shape[-1], use_bias=False, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                            name=f"cond_{h.shape[1]}")(text)
            return h + bias[:, None, None, :]

        basis = self.param("basis", nn.initializers.normal(1.0), (4, 4, channels[0]), jnp.float32)
        scale = nn.Dense(channels[0], use_bias=False, dtype=self.dtype, kernel_init=msr_init(),
                         name="basis_scale")(cond)
        h = basis.astype(self.dtype)[None] * scale[:, None, None, :]
        for i, features in enumerate(channels):
            if i > 0:
                h = self.resize(h, features, up=True)
            h = self.stage(conditional_bias(h), len(channels))
        image = Conv(3, 1, use_bias=False, dtype=self.dtype, impl=self.conv_impl, kernel_init=msr_init(),
                     name="to_rgb")(h).astype(jnp.float32)
        return jnp.tanh(image) if self.output == "tanh" else image


class R3Discriminator(R3Stages):
    """Scores (image, sentence) pairs; returns float32 logits [B].

    With ``wrong_sentence`` it also scores the same images against mismatched captions and
    returns ``(logits, wrong_logits)``: the trunk runs once.
    """

    @nn.compact
    def __call__(self, image: jax.Array, sentence: jax.Array, wrong_sentence: jax.Array | None = None,
                 train: bool = True):
        channels = r3gan_channels(self.resolution, self.width, self.width_cap)[::-1]
        h = Conv(channels[0], 1, use_bias=False, dtype=self.dtype, impl=self.conv_impl, kernel_init=msr_init(),
                 name="from_rgb")(image)
        for i, features in enumerate(channels):
            if i > 0:
                h = self.resize(h, features, up=False)
            h = self.stage(h, len(channels))
        # R3GAN's discriminative basis: one weight per channel and 4x4 position.
        c = channels[-1]
        h = Conv(c, 4, padding="VALID", use_bias=False, dtype=self.dtype, impl=self.conv_impl, groups=c,
                 kernel_init=msr_init(), name="basis")(h).reshape(-1, c)
        phi = nn.Dense(self.text_dim, use_bias=False, dtype=self.dtype, kernel_init=msr_init(), name="features")(h)
        unconditional = nn.Dense(1, dtype=self.dtype, kernel_init=msr_init(), name="psi")(phi)[:, 0]
        # R3GAN's gain for its embedding keeps <E s, phi> near unit variance at init.
        embed = nn.Dense(self.text_dim, use_bias=False, dtype=self.dtype,
                         kernel_init=msr_init(1 / math.sqrt(self.text_dim)), name="embed")

        def score(text: jax.Array) -> jax.Array:
            projection = (phi * embed(text.astype(self.dtype))).sum(-1)
            return (unconditional + projection).astype(jnp.float32)

        if wrong_sentence is None:
            return score(sentence)
        return score(sentence), score(wrong_sentence)


def build_r3gan(cfg: R3GANConfig, bn_groups: int = 1,
                bn_axis_name: str | None = None) -> tuple[R3Generator, R3Discriminator]:
    """The R3GAN pair ``cfg`` describes; it has no BatchNorm, so ``bn_groups`` / ``bn_axis_name``
    are accepted for the registry's signature and unused.

    Example:
        generator, discriminator = build_r3gan(get_config("r3gan64").model)
    """
    del bn_groups, bn_axis_name
    shape = dict(resolution=cfg.resolution, width_cap=cfg.width_cap, blocks=cfg.blocks, expansion=cfg.expansion,
                 group_width=cfg.group_width, text_dim=cfg.text_dim, dtype=DTYPES[cfg.dtype],
                 conv_impl=resolve_conv_impl(cfg.conv_impl))
    return (R3Generator(width=cfg.width, output=cfg.output, ca=cfg.ca, **shape),
            R3Discriminator(width=cfg.discriminator_width, **shape))
