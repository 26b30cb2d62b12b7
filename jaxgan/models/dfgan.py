"""DF-GAN (Tao et al., CVPR 2022, arXiv:2008.05865): deep text-image fusion, one-way D.

Generator: noise z -> Dense -> 4x4x8nf, then upsampling residual blocks. Each block is
``shortcut(up(x)) + conv3x3(fuse(conv3x3(fuse(up(x)))))`` where ``fuse`` (the DF block) is
two text-conditioned per-channel affines, each followed by LeakyReLU(0.2); the condition is
[z, sentence] (or [z, CA sample]). LeakyReLU -> conv3x3 -> tanh gives the image. No
normalisation layers anywhere, as in the paper; ``norm="batch"`` is jaxgan's option to put
BatchNorm before each fusion block, which makes the block a conditional BatchNorm (de Vries et
al. 2017; BigGAN). Without it the generator collapses on data whose background sits at the
tanh asymptote (see ``DFBlock``).

Discriminator: conv3x3 -> residual downsampling blocks
``avgpool(shortcut(x)) + gamma * lrelu(conv3x3(lrelu(conv4x4/2(x))))`` (gamma starts at 0)
to 4x4x8nf; the one-way matching head tiles the sentence over the 4x4 map, concatenates,
and ``conv3x3 -> lrelu -> conv4x4 valid`` gives one logit.

Options beyond DF-GAN: StackGAN's conditioning augmentation, AttnGAN's word attention and
SAGAN's self-attention in G, SAGAN's self-attention and spectral normalisation in D.

Side outputs go to Flax collections, so the call signatures stay those of ``dcgan``:
  - ``"losses"``: ``ca/mu`` and ``ca/log_sigma`` ([B, ca_dim] float32 arrays, not tuples)
    when ``ca`` is on; see ``jaxgan.losses.conditioning_kl``.
  - ``"intermediates"``: ``attn_<size>/attention`` ([B, size*size, L] float32).
  Ask for them with ``apply(..., mutable=["losses", "intermediates"])``; otherwise nothing
  is recorded.
  - ``"batch_stats"``: the spectral-norm power-iteration vectors of D when
    ``spectral_norm`` is on (pass ``mutable=["batch_stats"]`` when ``train``).
Randomness: CA samples from the ``"ca"`` rng stream when ``train``; nothing else is random.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgan.config import ConfigError, ModelConfig, arch_option, option
from jaxgan.models.layers import (
    DTYPES,
    BatchNorm,
    ConditioningAugmentation,
    Conv,
    DownConv,
    ResizeConv,
    SelfAttention,
    WordAttention,
    maybe_spectral_norm,
    resolve_conv_impl,
    torch_uniform,
    upsample_bilinear,
    upsample_nearest,
)


@dataclasses.dataclass(frozen=True)
class DFGANConfig(ModelConfig):
    """``model.arch=dfgan``: the shared model fields plus DF-GAN's own options.

    Example:
        generator, discriminator = build_dfgan(DFGANConfig(resolution=64, g_norm="batch"))
    """

    arch: str = arch_option("dfgan")
    word_attention: str = option("", "word cross-attention (AttnGAN) in G at these feature-map sizes, e.g. 16,32")
    self_attention: int = option(0, "a SAGAN block in G and D at this feature-map size; 0: none", at_least=0)
    spectral_norm: bool = option(False, "spectral normalisation on D's layers")
    # "none" is the paper's generator, which collapses to an all-black image on the shapes
    # data (see DFBlock).
    g_norm: str = option("none", "batch: BatchNorm before each fusion block (a conditional BatchNorm; "
                         "statistics span devices as model.bn_sync says); none: the paper's",
                         choices=("none", "batch"))
    # "bilinear" keeps the previous scale's 2x2 tiles out of flat fills (see GBlock).
    g_shortcut: str = option("nearest", "how G's blocks upsample their shortcut: nearest (the paper) or bilinear",
                             choices=("nearest", "bilinear"))
    d_head_width: int = option(0, "channels of D's matching-head joint conv; 0: 2 * D's width (the paper)",
                               at_least=0)
    d_projection: bool = option(False, "add the projection discriminator's term to D's matching head "
                                "(see MatchingHead)")
    # The official DF-GAN (tobran/DF-GAN) keeps PyTorch's default init; the forward pass is the
    # same either way (docs/importing.md, "DF-GAN").
    init: str = option("flax", "init of the weights and biases: flax (lecun-normal weights, zero biases) or torch "
                       "(PyTorch's default: uniform in +-1/sqrt(fan_in), as the official DF-GAN trains from); "
                       "the fusion MLPs' last layers and D's gammas start as in the paper either way",
                       choices=("flax", "torch"))

    @property
    def uses_word_attention(self) -> bool:
        """Whether G attends to words (``word_attention`` names at least one size)."""
        return bool(self.word_attention_sizes)

    @property
    def word_attention_sizes(self) -> tuple[int, ...]:
        """``word_attention`` parsed: "16,32" -> (16, 32)."""
        return tuple(parse_resolutions(self.word_attention))

    def validate(self) -> None:
        """Raises ``ConfigError`` for an attention size the model lacks (the fields' ranges are
        declared with them and checked by ``jaxgan.config.validate``)."""
        res = self.resolution
        for r in self.word_attention_sizes + ((self.self_attention,) if self.self_attention else ()):
            if not (8 <= r <= res and r & (r - 1) == 0):
                raise ConfigError(f"attention resolution {r} must be a power of two between 8 and "
                                  f"model.resolution={res}")


def parse_resolutions(text: str) -> list[int]:
    """ "16,32" -> [16, 32]; raises ``ConfigError`` for anything else."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"model.word_attention must be comma-separated sizes like 16,32, got {text!r}") from None


def _levels(resolution: int) -> int:
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
    return resolution.bit_length() - 2  # feature-map sizes 4, 8, ..., resolution


def dfgan_channels(resolution: int, width: int) -> list[int]:
    """Generator channels at 4x4, 8x8, ..., resolution; block i maps entry i to entry i+1.

    256px, nf=32: [256, 256, 256, 256, 128, 64, 32] (8nf, 8nf, 8nf, 8nf, 4nf, 2nf, nf).
    """
    return dfgan_d_channels(resolution, width)[::-1]


def dfgan_d_channels(resolution: int, width: int) -> list[int]:
    """Discriminator channels at resolution, resolution/2, ..., 4x4: nf, 2nf, 4nf, 8nf, 8nf, ..."""
    return [width * min(2 ** i, 8) for i in range(_levels(resolution))]


def _check_sizes(name: str, sizes: tuple[int, ...], resolution: int) -> None:
    valid = [4 * 2 ** i for i in range(_levels(resolution))]
    bad = [s for s in sizes if s not in valid]
    if bad:
        raise ValueError(f"{name}: sizes {bad} are not feature-map sizes of a {resolution}px model; "
                         f"valid: {valid}")


class Affine(nn.Module):
    """``gamma(cond) * h + beta(cond)`` per channel; gamma and beta are Dense -> ReLU -> Dense.

    The last layers start at zero weights with bias 1 (gamma) and 0 (beta): an identity.
    """

    features: int
    dtype: Any = jnp.float32
    torch_init: bool = False  # PyTorch's default init of the first layers (torch_uniform)

    @nn.compact
    def __call__(self, h: jax.Array, cond: jax.Array) -> jax.Array:
        first = ({"kernel_init": torch_uniform(cond.shape[-1]), "bias_init": torch_uniform(cond.shape[-1])}
                 if self.torch_init else {})

        def mlp(name: str, bias_init) -> jax.Array:
            x = nn.relu(nn.Dense(self.features, dtype=self.dtype, name=f"{name}_0", **first)(cond))
            x = nn.Dense(self.features, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                         bias_init=bias_init, name=f"{name}_1")(x)
            return x[:, None, None, :].astype(self.dtype)

        gamma, beta = mlp("gamma", nn.initializers.ones), mlp("beta", nn.initializers.zeros)
        return gamma * h.astype(self.dtype) + beta


class DFBlock(nn.Module):
    """DF-GAN's fusion block: [BatchNorm ->] affine -> LeakyReLU(0.2) -> affine -> LeakyReLU(0.2).

    ``norm`` puts a BatchNorm first, so the affine becomes the text-predicted scale and shift
    of a conditional BatchNorm. Why it exists: on the shapes data (a black background, exactly
    -1 after scaling, behind one small shape) the paper's normalisation-free generator drifts
    to an all-black image within about 20-50 steps, with the tanh saturated (93% of pixels at
    |x| > 0.999 by step 50, every sample the same), and never leaves it: D's gradient cannot
    pass a saturated tanh. This held for hinge and non-saturating losses, with and without
    MA-GP, for Adam (0, 0.9) and (0.5, 0.999), at a 4x smaller G learning rate and with D's
    residual gates started at 1. Normalising the features keeps the samples apart (the batch
    statistics are recentred at every block), and the generator then draws coloured shapes.
    """

    features: int
    dtype: Any = jnp.float32
    norm: bool = False
    bn_groups: int = 1
    bn_axis_name: str | None = None
    torch_init: bool = False

    @nn.compact
    def __call__(self, h: jax.Array, cond: jax.Array, train: bool = True) -> jax.Array:
        if self.norm:
            h = BatchNorm(groups=self.bn_groups, axis_name=self.bn_axis_name, dtype=self.dtype,
                          name="norm")(h, train)
        h = nn.leaky_relu(Affine(self.features, self.dtype, self.torch_init, name="affine_0")(h, cond), 0.2)
        return nn.leaky_relu(Affine(self.features, self.dtype, self.torch_init, name="affine_1")(h, cond), 0.2)


class GBlock(nn.Module):
    """Upsampling residual block: ``shortcut(up(x)) + conv(fuse(conv(fuse(up(x)))))``.

    Computed on the low-resolution input where that is the same function: the first fusion
    is per pixel and the 1x1 shortcut is per pixel, so both commute with nearest upsampling;
    the first conv3x3 then runs as ``ResizeConv`` (upsample + conv in sub-pixel form).

    ``shortcut_upsample="bilinear"`` upsamples the shortcut bilinearly instead (the residual
    branch keeps nearest + conv). Why: the nearest shortcut hands every block the previous
    block's output as 2x2 constant tiles, so a 64 px image inherits tile edges from each
    scale (16, 8, 4 and 2 px) that the residual convs must cancel; a thin generator leaves
    them as a grid texture in flat fills. The 1x1 shortcut conv is linear and per pixel, so
    it still runs at the low resolution.
    """

    features: int
    dtype: Any = jnp.float32
    conv_impl: str = "conv"
    norm: bool = False
    bn_groups: int = 1
    bn_axis_name: str | None = None
    shortcut_upsample: str = "nearest"  # or "bilinear"
    # False: the same block at its input's size (GALIP's first block, which follows a resize
    # of the bridge's map to the next power of two).
    upsample: bool = True
    torch_init: bool = False  # PyTorch's default init (see DFGANConfig.init)

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array, train: bool = True) -> jax.Array:
        c_in = x.shape[-1]
        fuse = functools.partial(DFBlock, dtype=self.dtype, norm=self.norm, bn_groups=self.bn_groups,
                                 bn_axis_name=self.bn_axis_name, torch_init=self.torch_init)
        h = fuse(c_in, name="fuse_0")(x, cond, train)
        # With norm, conv_0 feeds a BatchNorm that cancels any bias; a bias there only
        # drifts under Adam on rounding-level gradients.
        conv_0 = ResizeConv if self.upsample else Conv
        h = conv_0(self.features, use_bias=not self.norm, dtype=self.dtype, impl=self.conv_impl,
                   torch_init=self.torch_init, name="conv_0")(h)
        h = fuse(self.features, name="fuse_1")(h, cond, train)
        h = Conv(self.features, 3, dtype=self.dtype, impl=self.conv_impl, torch_init=self.torch_init,
                 name="conv_1")(h)
        shortcut = x.astype(self.dtype)
        if c_in != self.features:
            shortcut = Conv(self.features, 1, dtype=self.dtype, torch_init=self.torch_init, name="shortcut")(shortcut)
        if not self.upsample:
            return shortcut + h
        if self.shortcut_upsample not in ("nearest", "bilinear"):
            raise ValueError(f"shortcut_upsample must be 'nearest' or 'bilinear', got {self.shortcut_upsample!r}")
        upsample = upsample_bilinear if self.shortcut_upsample == "bilinear" else upsample_nearest
        return upsample(shortcut) + h


class DFGenerator(nn.Module):
    """Maps noise z [B, Z] and a sentence embedding [B, S] to images [B, R, R, 3] in [-1, 1].

    ``words`` [B, L, W] and ``word_mask`` [B, L] (True = real token; None = all real) are
    needed only with ``attention_resolutions``. Images are float32 whatever ``dtype``.
    """

    resolution: int = 64
    width: int = 32          # nf
    z_dim: int = 100         # documentation only: the Dense reads z's own size
    dtype: Any = jnp.float32
    conv_impl: str = "conv"
    ca: bool = False         # StackGAN conditioning augmentation of the sentence
    ca_dim: int = 128
    attention_resolutions: tuple[int, ...] = ()  # sizes after which words are attended
    self_attention_resolution: int = 0  # 0: none
    norm: str = "none"       # "batch": BatchNorm before each fusion block (see DFBlock)
    bn_groups: int = 1
    bn_axis_name: str | None = None
    shortcut_upsample: str = "nearest"  # or "bilinear" (see GBlock)
    torch_init: bool = False  # PyTorch's default init (see DFGANConfig.init)

    @nn.compact
    def __call__(self, z: jax.Array, sentence: jax.Array, words: jax.Array | None = None,
                 word_mask: jax.Array | None = None, train: bool = True) -> jax.Array:
        _check_sizes("attention_resolutions", tuple(self.attention_resolutions), self.resolution)
        sa = (self.self_attention_resolution,) if self.self_attention_resolution else ()
        _check_sizes("self_attention_resolution", sa, self.resolution)
        if self.norm not in ("none", "batch"):
            raise ValueError(f"norm must be 'none' or 'batch', got {self.norm!r}")
        if self.attention_resolutions and words is None:
            raise ValueError("attention_resolutions needs word embeddings: pass words=[B, L, W]")

        text = sentence
        if self.ca:
            text = ConditioningAugmentation(self.ca_dim, self.dtype, name="ca")(sentence, train)
        cond = jnp.concatenate([z.astype(self.dtype), text.astype(self.dtype)], axis=-1)

        def attend(h: jax.Array) -> jax.Array:
            size = h.shape[1]
            if size in self.attention_resolutions:
                h = WordAttention(dtype=self.dtype, name=f"attn_{size}")(h, words.astype(self.dtype), word_mask)
            if size in sa:
                h = SelfAttention(dtype=self.dtype, name=f"self_attn_{size}")(h)
            return h

        channels = dfgan_channels(self.resolution, self.width)
        # DF-GAN's fc reads the noise only; the text enters through every fusion block.
        fc_init = ({"kernel_init": torch_uniform(z.shape[-1]), "bias_init": torch_uniform(z.shape[-1])}
                   if self.torch_init else {})
        h = nn.Dense(4 * 4 * channels[0], dtype=self.dtype, name="fc", **fc_init)(z.astype(self.dtype))
        h = attend(h.reshape(z.shape[0], 4, 4, channels[0]))
        for i, features in enumerate(channels[1:]):
            block = GBlock(features, self.dtype, self.conv_impl, self.norm == "batch", self.bn_groups,
                           self.bn_axis_name, self.shortcut_upsample, torch_init=self.torch_init, name=f"block_{i}")
            h = attend(block(h, cond, train))
        h = Conv(3, 3, dtype=self.dtype, impl=self.conv_impl, torch_init=self.torch_init,
                 name="to_rgb")(nn.leaky_relu(h, 0.2))
        return jnp.tanh(h.astype(jnp.float32))


def _avg_pool2(x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).sum((2, 4)) * jnp.asarray(0.25, x.dtype)


class DBlock(nn.Module):
    """Downsampling residual block: ``avgpool(shortcut(x)) + gamma * residual(x)``, gamma = 0 at init.

    residual: conv4x4/2 -> lrelu -> conv3x3 -> lrelu (no biases); shortcut: a 1x1 conv when
    the channels change, applied after the pooling (both are linear, so they commute).
    """

    features: int
    dtype: Any = jnp.float32
    conv_impl: str = "conv"
    spectral_norm: bool = False
    torch_init: bool = False  # PyTorch's default init (see DFGANConfig.init)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        sn = functools.partial(maybe_spectral_norm, enabled=self.spectral_norm, train=train)
        ti = self.torch_init
        x = x.astype(self.dtype)
        r = sn(DownConv(self.features, use_bias=False, dtype=self.dtype, impl=self.conv_impl, torch_init=ti,
                        name="conv_0"))(x)
        r = nn.leaky_relu(r, 0.2)
        r = sn(Conv(self.features, 3, use_bias=False, dtype=self.dtype, impl=self.conv_impl, torch_init=ti,
                    name="conv_1"))(r)
        r = nn.leaky_relu(r, 0.2)
        s = _avg_pool2(x)
        if x.shape[-1] != self.features:
            s = sn(Conv(self.features, 1, dtype=self.dtype, torch_init=ti, name="shortcut"))(s)
        gamma = self.param("gamma", nn.initializers.zeros, (), jnp.float32)
        return s + gamma.astype(self.dtype) * r


class DFTrunk(nn.Module):
    """The image trunk of the DF-GAN discriminator: [B, R, R, 3] -> [B, 4, 4, 8nf]."""

    resolution: int = 64
    width: int = 32
    dtype: Any = jnp.float32
    conv_impl: str = "conv"
    spectral_norm: bool = False
    self_attention_resolution: int = 0
    torch_init: bool = False

    @nn.compact
    def __call__(self, image: jax.Array, train: bool) -> jax.Array:
        sa = (self.self_attention_resolution,) if self.self_attention_resolution else ()
        _check_sizes("self_attention_resolution", sa, self.resolution)
        channels = dfgan_d_channels(self.resolution, self.width)
        conv = Conv(channels[0], 3, dtype=self.dtype, impl=self.conv_impl, torch_init=self.torch_init, name="conv_img")
        h = maybe_spectral_norm(conv, self.spectral_norm, train)(image)

        def attend(h: jax.Array) -> jax.Array:
            if h.shape[1] not in sa:
                return h
            return SelfAttention(self.dtype, self.spectral_norm, name=f"self_attn_{h.shape[1]}")(h, train)

        h = attend(h)
        for i, features in enumerate(channels[1:]):
            h = attend(DBlock(features, self.dtype, self.conv_impl, self.spectral_norm, self.torch_init,
                              name=f"block_{i}")(h, train))
        return h


class MatchingHead(nn.Module):
    """DF-GAN's one-way head: [features, tiled sentence] -> conv3x3 -> lrelu -> conv4x4 valid.

    ``hidden``: the joint conv's channels (0: DF-GAN's 2nf). ``projection`` adds the
    projection discriminator's term (Miyato & Koyama, ICLR 2018, arXiv:1802.05637):
    ``logit += <mean_hw lrelu(h), W s>``, an inner product of the pooled image features with
    a linear map of the sentence. Why: the concat head must learn every text-image interaction
    through ``hidden`` units after a nonlinearity; the projection scores the match linearly,
    so a mismatched caption moves the logit by ``<phi(x), W (s - s')>`` from the first step.
    """

    width: int = 32
    dtype: Any = jnp.float32
    conv_impl: str = "conv"
    spectral_norm: bool = False
    hidden: int = 0
    projection: bool = False
    torch_init: bool = False

    @nn.compact
    def __call__(self, features: jax.Array, sentence: jax.Array, train: bool) -> jax.Array:
        sn = functools.partial(maybe_spectral_norm, enabled=self.spectral_norm, train=train)
        h = features.astype(self.dtype)
        t = jnp.broadcast_to(sentence.astype(self.dtype)[:, None, None, :], (*h.shape[:3], sentence.shape[-1]))
        x = sn(Conv(self.hidden or 2 * self.width, 3, use_bias=False, dtype=self.dtype, impl=self.conv_impl,
                    torch_init=self.torch_init, name="joint"))(jnp.concatenate([h, t], axis=-1))
        x = sn(Conv(1, 4, padding="VALID", use_bias=False, dtype=self.dtype, impl=self.conv_impl,
                    torch_init=self.torch_init, name="logit"))(nn.leaky_relu(x, 0.2))
        logit = x.reshape(-1).astype(jnp.float32)
        if self.projection:
            pooled = nn.leaky_relu(h, 0.2).mean((1, 2))
            embedded = sn(nn.Dense(h.shape[-1], use_bias=False, dtype=self.dtype, name="projection"))(
                sentence.astype(self.dtype))
            logit = logit + (pooled * embedded).sum(-1).astype(jnp.float32)
        return logit


class DFDiscriminator(nn.Module):
    """Scores (image, sentence) pairs; returns float32 logits [B].

    With ``wrong_sentence`` it also scores the same images against mismatched captions and
    returns ``(logits, wrong_logits)``: the trunk runs once. ``features`` and ``head`` expose
    the two halves (``apply(..., method="features")``), e.g. to reuse one trunk pass.
    """

    resolution: int = 64
    width: int = 32
    dtype: Any = jnp.float32
    conv_impl: str = "conv"
    spectral_norm: bool = False
    self_attention_resolution: int = 0
    head_hidden: int = 0       # the head's joint channels; 0: 2nf (see MatchingHead)
    projection: bool = False   # the projection term in the head (see MatchingHead)
    torch_init: bool = False   # PyTorch's default init (see DFGANConfig.init)

    def setup(self):
        self.trunk = DFTrunk(self.resolution, self.width, self.dtype, self.conv_impl, self.spectral_norm,
                             self.self_attention_resolution, self.torch_init)
        self.matcher = MatchingHead(self.width, self.dtype, self.conv_impl, self.spectral_norm, self.head_hidden,
                                    self.projection, self.torch_init)

    def features(self, image: jax.Array, train: bool = True) -> jax.Array:
        """[B, R, R, 3] -> [B, 4, 4, 8nf] in the compute dtype."""
        return self.trunk(image, train)

    def head(self, features: jax.Array, sentence: jax.Array, train: bool = True) -> jax.Array:
        """Float32 logits [B] of trunk features against sentence embeddings."""
        return self.matcher(features, sentence, train)

    def __call__(self, image: jax.Array, sentence: jax.Array, wrong_sentence: jax.Array | None = None,
                 train: bool = True):
        h = self.trunk(image, train)
        if wrong_sentence is None:
            return self.matcher(h, sentence, train)
        return self.matcher(h, sentence, train), self.matcher(h, wrong_sentence, train)


def build_dfgan(cfg: DFGANConfig, bn_groups: int = 1,
                bn_axis_name: str | None = None) -> tuple[DFGenerator, DFDiscriminator]:
    """The DF-GAN pair ``cfg`` describes; BatchNorm (``g_norm=batch``) spans devices as
    ``bn_groups`` / ``bn_axis_name`` say.

    Example:
        generator, discriminator = build_dfgan(get_config("dfgan64").model)
    """
    dtype, impl = DTYPES[cfg.dtype], resolve_conv_impl(cfg.conv_impl)
    # SAGAN puts its self-attention block in both networks; so does ``self_attention`` here.
    generator = DFGenerator(
        resolution=cfg.resolution, width=cfg.width, z_dim=cfg.z_dim, dtype=dtype, conv_impl=impl,
        ca=cfg.ca, ca_dim=cfg.text_dim, attention_resolutions=cfg.word_attention_sizes,
        self_attention_resolution=cfg.self_attention, norm=cfg.g_norm, bn_groups=bn_groups,
        bn_axis_name=bn_axis_name, shortcut_upsample=cfg.g_shortcut, torch_init=cfg.init == "torch")
    discriminator = DFDiscriminator(
        resolution=cfg.resolution, width=cfg.discriminator_width, dtype=dtype, conv_impl=impl,
        spectral_norm=cfg.spectral_norm, self_attention_resolution=cfg.self_attention,
        head_hidden=cfg.d_head_width, projection=cfg.d_projection, torch_init=cfg.init == "torch")
    return generator, discriminator
