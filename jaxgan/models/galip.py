"""GALIP (Tao, Bao, Wu and Jing, CVPR 2023, arXiv:2301.12959): generative adversarial CLIPs.

Both networks lean on a frozen CLIP image tower (``jaxgan.text.load_clip``, a Hugging Face
``CLIPModel`` directory). Written after the paper and the facts of tobran/GALIP
``code/models/GALIP.py``; the mapping onto jaxgan's names is in docs/text-encoders.md.

Discriminator (CLIP-based D): the fake or real image goes through ``to_pixel_values`` (nearest
resize to the tower's input, CLIP's normalisation) and the tower; its hidden states after the
layers ``d_layers`` (GALIP: 2, 5, 9 of ViT-B/32's 12) are taken as maps [g, g, width] without the
class token. The "mate" (GALIP's ``NetD``) is a stack of same-size residual conv blocks on those
maps: the first map enters, block k adds ``beta_k`` times map k + 1 (gamma and beta start at 0),
and a last block narrows to 8 * d_width. The matching head (``NetC``) tiles the sentence over
the map, and conv (g - 3)x(g - 3) valid -> lrelu -> conv 4x4 valid gives one logit (7 -> 4 -> 1
at ViT-B/32's 7x7 grid).

Generator (CLIP-based G): noise -> Dense -> a g x g map of ``bridge_width`` channels ->
``bridge_blocks`` residual fusion blocks (GALIP's ``M_Block``: conv3x3 -> DF-GAN fusion block ->
conv3x3 -> fusion block, conditioned on [z, sentence]) -> conv5x5 to the tower's width. That map
enters the frozen tower in place of its patch embeddings (class token, positions, pre-LN) and
runs through every layer; before each layer in ``prompt_layers`` (GALIP: 1-8) a prompt token,
a linear map of [z, sentence], is appended and dropped after it. The result's patch map is
added back, ``conv5x5(bridge + 0.1 * prior)`` gives 8 * width channels, and DF-GAN's upsampling
fusion blocks (``jaxgan.models.dfgan.GBlock``) take it to the image: the first after a nearest
resize to the next power of two above g (7 -> 8), at that size, then one per doubling.
GALIP's output has no tanh (``output=linear``; pixels are clipped only when saved).

The tower's params are never in ``params``: G and D read them from their ``frozen`` collection
(``jaxgan.state.FROZEN``, ``{"clip_vision": params}``, which ``frozen_params`` of either gives),
and the compiled step, sampling and evaluation take that as an argument, so the weights are an
input of the program rather than constants embedded in it, and the optimizer, the EMA and the
checkpoint never see them; ``stop_gradient`` keeps them fixed while G still receives gradients
through the frozen layers. A call without the collection (shape inference, FLOPs tracing, a
quick look) reads the tower's own read-only arrays.

Training (``galip_step_pieces``): D scores the tower's features, which the step computes
outside D (``d_input``), so MA-GP differentiates with respect to those features and the
sentence, as GALIP does; G's loss adds ``-clip_weight * mean cos(CLIP(fake), sentence)``
(GALIP: ``sim_w`` = 4), which needs sentence embeddings from the same CLIP's text tower.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgan.config import ConfigError, ModelConfig, arch_option, option
from jaxgan.models.dfgan import DFBlock, GBlock, dfgan_channels
from jaxgan.models.layers import DTYPES, Conv, resize_nearest, resolve_conv_impl
from jaxgan.state import FROZEN
from jaxgan.text import ClipTowers, load_clip, patch_grid, to_pixel_values
from jaxgan.text.clip_hf import FrozenTower
from jaxgan.text.clip_vision import normalize_pixels

# GALIP adds the tower's output to the bridge's map at this scale (``fuse_feat + 0.1 * map_feat``).
PRIOR_SCALE = 0.1
# How images reach the tower: GALIP resizes with F.interpolate's default, nearest.
RESIZE = "nearest"
# The tower's params in the frozen pytree (``jaxgan.state.frozen_params``).
CLIP_VISION = "clip_vision"


def parse_layers(key: str, text: str) -> tuple[int, ...]:
    """ "2,5,9" -> (2, 5, 9), sorted and unique; raises ``ConfigError`` naming ``key`` otherwise."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{key} must be comma-separated layer numbers like 2,5,9, got {text!r}") from None
    if not values or len(set(values)) != len(values) or any(v < 0 for v in values):
        raise ConfigError(f"{key} must list distinct non-negative layer numbers, got {text!r}")
    return tuple(sorted(values))


@dataclasses.dataclass(frozen=True)
class GALIPConfig(ModelConfig):
    """``model.arch=galip``: the shared model fields plus GALIP's own.

    ``width`` is G's nf (GALIP: 64) and ``d_width`` D's (the mate ends at 8 * d_width channels,
    the head's joint conv has 2 * d_width: 512 and 128 in GALIP). ``text_dim`` is unused: G and
    D read the sentence embedding itself, which must be the CLIP text tower's.

    Example:
        generator, discriminator = build_galip(GALIPConfig(resolution=64, clip="~/clip-vit-base-patch32"))
    """

    arch: str = arch_option("galip")
    clip: str = option("", "a Hugging Face CLIPModel directory (or hub id, or shapes_clip: the shipped pair): its "
                       "frozen image tower is part of G and D; required (text.encoder should name the same CLIP)")
    d_layers: str = option("2,5,9", "hidden states of the CLIP image tower that D reads (state k follows k "
                           "layers; GALIP on ViT-B/32: 2,5,9)")
    prompt_layers: str = option("1,2,3,4,5,6,7,8", "layers of the CLIP image tower in G before which a prompt "
                                "token from [z, sentence] is appended (GALIP: 1-8)")
    clip_weight: float = option(4.0, "weight of the CLIP text-image cosine similarity of the fakes in G's loss "
                                "(GALIP's sim_w: 4)", at_least=0)
    bridge_width: int = option(64, "channels of G's bridge fusion blocks before the CLIP tower (GALIP: 64; "
                               "their inner convs have half)", at_least=2)
    bridge_blocks: int = option(4, "fusion blocks in G's bridge before the CLIP tower (GALIP: 4)", at_least=1)
    output: str = option("linear", "G's output: linear (GALIP) or tanh", choices=("linear", "tanh"))
    # GALIP's G ends at the CLIP input size, 224, which is no power of two: its last block
    # resizes 64 -> 224 (docs/importing.md, "GALIP").
    resolution: int = option(32, "image side in pixels; 224 is GALIP's own (its last block resizes 64 -> 224)",
                             choices=(32, 64, 128, 224, 256))
    nearest: str = option("centre", "which source pixel a nearest resize (G's grid -> first block, images -> "
                          "CLIP input) reads: centre (jax.image.resize, PyTorch's nearest-exact) or floor "
                          "(PyTorch's default nearest, which GALIP's code uses)", choices=("centre", "floor"))
    clip_pixels: str = option("unit", "how images in [-1, 1] reach CLIP's mean/std normalisation: unit maps "
                              "them to [0, 1]; galip shifts twice as GALIP's transf_to_CLIP_input does, "
                              "x / 4 + 3 / 4 in [0.5, 1]", choices=("unit", "galip"))

    @property
    def d_layer_list(self) -> tuple[int, ...]:
        """``d_layers`` parsed."""
        return parse_layers("model.d_layers", self.d_layers)

    @property
    def prompt_layer_list(self) -> tuple[int, ...]:
        """``prompt_layers`` parsed (may be empty)."""
        return parse_layers("model.prompt_layers", self.prompt_layers) if self.prompt_layers.strip() else ()

    def validate(self) -> None:
        """Raises ``ConfigError`` for unparseable layer lists or options GALIP lacks; the layers
        are checked against the tower when it is loaded (``build_galip``)."""
        self.d_layer_list, self.prompt_layer_list  # noqa: B018 - parsed for their errors
        if self.ca:
            raise ConfigError("model.ca is not a galip option: G reads the CLIP sentence embedding itself")


# --- the frozen tower's pieces -------------------------------------------------------------


def tower_params(tower: FrozenTower, frozen: Any) -> Any:
    """The tower's params in ``frozen`` (the step's argument, a module's ``frozen`` collection),
    or, when absent, the tower's own arrays (which jit then embeds as constants)."""
    return (frozen or {}).get(CLIP_VISION, tower.params)



def galip_pixel_values(images: jax.Array, image_size: int, nearest: str = "centre",
                       clip_pixels: str = "unit") -> jax.Array:
    """The CLIP input of images in [-1, 1]: a nearest resize to ``image_size`` and CLIP's
    normalisation, differentiable.

    ``nearest="centre", clip_pixels="unit"`` is ``to_pixel_values(..., method="nearest")``.
    ``"floor", "galip"`` is GALIP's ``transf_to_CLIP_input``: ``F.interpolate(x * 0.5 + 0.5)``
    (source pixel ``floor(i * in / out)``), then ``(x + 1) * 0.5`` a second time, then
    ``(x - mean) / std``: the tower sees x / 4 + 3 / 4, not (x + 1) / 2.
    """
    if nearest == "centre" and clip_pixels == "unit":
        return to_pixel_values(images, image_size, method=RESIZE)
    x = jnp.asarray(images, jnp.float32) * 0.5 + 0.5
    x = resize_nearest(x, image_size, nearest)
    if clip_pixels == "galip":
        x = (x + 1.0) * 0.5
    return normalize_pixels(x)


def clip_features(tower: FrozenTower, params: Any, layers: tuple[int, ...], images: jax.Array,
                  nearest: str = "centre", clip_pixels: str = "unit") -> jax.Array:
    """What GALIP's D reads: the tower's hidden states ``layers`` of ``images`` as maps.

    Args:
      tower: the frozen CLIP image tower; params: its params (``tower_params``).
      layers: sorted hidden-state indices (state k follows k encoder layers).
      images: [B, R, R, 3] in [-1, 1] (any size: resized to the tower's input, differentiably).
      nearest, clip_pixels: the pixel path (``galip_pixel_values``).

    Returns:
      [B, len(layers), g, g, width] float32; only the layers up to the last one run.
    """
    pixels = galip_pixel_values(images, tower.config.image_size, nearest, clip_pixels)
    h = tower.apply(params, pixels, method="embed_pixels")
    maps, at = [], 0
    for k in layers:
        h = tower.apply(params, h, at, k, method="run_layers")
        maps.append(patch_grid(h))
        at = k
    return jnp.stack(maps, axis=1)


def clip_similarity(tower: FrozenTower, params: Any, images: jax.Array, sentence: jax.Array,
                    nearest: str = "centre", clip_pixels: str = "unit") -> jax.Array:
    """Mean cosine similarity of the tower's image embeddings of ``images`` with ``sentence`` [B, P].

    GALIP's ``torch.cosine_similarity(fake_emb, sent_emb).mean()`` (eps 1e-8 on each norm);
    ``nearest`` and ``clip_pixels`` choose the pixel path (``galip_pixel_values``).
    """
    p = tower.config.projection_dim
    if sentence.shape[-1] != p:
        raise ConfigError(f"galip's CLIP similarity needs sentence embeddings of the CLIP's projection width {p}, "
                          f"got {sentence.shape[-1]}: set text.encoder to the same CLIP as model.clip")
    pixels = galip_pixel_values(images, tower.config.image_size, nearest, clip_pixels)
    embeds = tower.apply(params, pixels).image_embeds
    s = sentence.astype(jnp.float32)
    dot = jnp.sum(embeds * s, axis=-1)
    norms = jnp.maximum(jnp.linalg.norm(embeds, axis=-1), 1e-8) * jnp.maximum(jnp.linalg.norm(s, axis=-1), 1e-8)
    return jnp.mean(dot / norms)


def clip_prior(tower: FrozenTower, params: Any, grid: jax.Array, prompts: jax.Array,
               prompt_layers: tuple[int, ...]) -> jax.Array:
    """GALIP's ``CLIP_Mapper``: the frozen tower's layers as a prior on G's map.

    Args:
      tower, params: the frozen tower and its params (``tower_params``).
      grid: [B, g, g, width] bridge features in place of the patch embeddings.
      prompts: [B, len(prompt_layers), width]; prompt i is appended before layer
        ``prompt_layers[i]`` and dropped after it.

    Returns:
      The last hidden state's patch tokens as a [B, g, g, width] float32 map.
    """
    n = tower.config.num_hidden_layers
    h = tower.apply(params, grid.astype(jnp.float32), method="embed_patches")
    at = 0
    for i, layer in enumerate(prompt_layers):
        h = tower.apply(params, h, at, layer, method="run_layers")
        with_prompt = jnp.concatenate([h, prompts[:, i:i + 1].astype(jnp.float32)], axis=1)
        h = tower.apply(params, with_prompt, layer, layer + 1, method="run_layers")[:, :-1]
        at = layer + 1
    return patch_grid(tower.apply(params, h, at, n, method="run_layers"))


# --- generator -----------------------------------------------------------------------------


class BridgeBlock(nn.Module):
    """GALIP's ``M_Block``: ``shortcut(x) + fuse(conv3x3(fuse(conv3x3(x))))`` at one size; the
    shortcut is a 1x1 conv when the channels change. ``fuse`` is DF-GAN's ``DFBlock``."""

    features: int
    hidden: int
    dtype: Any = jnp.float32
    conv_impl: str = "conv"

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
        h = Conv(self.hidden, 3, dtype=self.dtype, impl=self.conv_impl, name="conv_0")(x)
        h = DFBlock(self.hidden, self.dtype, name="fuse_0")(h, cond)
        h = Conv(self.features, 3, dtype=self.dtype, impl=self.conv_impl, name="conv_1")(h)
        h = DFBlock(self.features, self.dtype, name="fuse_1")(h, cond)
        shortcut = x.astype(self.dtype)
        if x.shape[-1] != self.features:
            shortcut = Conv(self.features, 1, dtype=self.dtype, name="shortcut")(shortcut)
        return shortcut + h


def first_size(grid: int) -> int:
    """The size of G's first fusion block: the power of two above the tower's grid (7 -> 8, 4 -> 8)."""
    return 1 << grid.bit_length()


class GalipGenerator(nn.Module):
    """Maps noise z [B, Z] and CLIP sentence embeddings [B, S] to images [B, R, R, 3] (float32).

    ``tower`` is the frozen CLIP image tower; its params are read from the ``frozen`` collection
    (``frozen_params``), not this module's ``params``.
    """

    tower: FrozenTower
    resolution: int = 64
    width: int = 64            # nf
    bridge_width: int = 64
    bridge_blocks: int = 4
    prompt_layers: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    output: str = "linear"     # or "tanh"
    nearest: str = "centre"    # or "floor": GALIPConfig.nearest
    dtype: Any = jnp.float32
    conv_impl: str = "conv"

    @property
    def sentence_dim(self) -> int:
        """The sentence width G's CLIP term needs: the tower's projection width."""
        return self.tower.config.projection_dim

    @property
    def frozen_params(self) -> dict[str, Any]:
        """What this module reads from its ``frozen`` collection: the tower's params."""
        return {CLIP_VISION: self.tower.params}

    @nn.compact
    def __call__(self, z: jax.Array, sentence: jax.Array, train: bool = True) -> jax.Array:
        c = self.tower.config
        g, b = c.grid_size, z.shape[0]
        cond = jnp.concatenate([z, sentence], axis=-1).astype(self.dtype)
        h = nn.Dense(g * g * self.bridge_width, dtype=self.dtype, name="fc")(z.astype(self.dtype))
        h = h.reshape(b, g, g, self.bridge_width)
        for i in range(self.bridge_blocks):
            h = BridgeBlock(self.bridge_width, self.bridge_width // 2, self.dtype, self.conv_impl,
                            name=f"bridge_{i}")(h, cond)
        bridge = Conv(c.hidden_size, 5, dtype=self.dtype, impl=self.conv_impl, name="to_clip")(h)
        prompts = nn.Dense(len(self.prompt_layers) * c.hidden_size, dtype=self.dtype, name="prompts")(cond)
        params = tower_params(self.tower, self.variables.get(FROZEN))
        prior = clip_prior(self.tower, params, bridge, prompts.reshape(b, -1, c.hidden_size), self.prompt_layers)
        # Below a resolution that is no power of two (GALIP's 224) the blocks are those of the
        # power of two under it, and the last one resizes to the resolution instead (64 -> 224).
        pow2 = 1 << (self.resolution.bit_length() - 1)
        channels = dfgan_channels(pow2, self.width)
        mixed = bridge.astype(jnp.float32) + PRIOR_SCALE * prior
        h = Conv(channels[0], 5, dtype=self.dtype, impl=self.conv_impl, name="from_clip")(mixed)
        size = first_size(g)
        block = functools.partial(GBlock, dtype=self.dtype, conv_impl=self.conv_impl)
        start = (size // 4).bit_length() - 1  # index of `size` in channels (sizes 4, 8, ...)
        sizes = [size * 2 ** i for i in range(len(channels) - start)]
        sizes[-1] = self.resolution
        # Each block runs at its size: GALIP interpolates 7 -> 8 first; a doubling is the
        # ordinary upsampling block (both nearest rules agree there), any other ratio a resize
        # and the block at its input's size (fusion and the 1x1 shortcut are per pixel, so
        # resizing first is the same function as PyTorch's G_Block).
        for i, (features, out) in enumerate(zip(channels[start:], sizes)):
            if out == 2 * h.shape[1]:
                h = block(features, name=f"block_{i}")(h, cond, train)
            else:
                h = resize_nearest(h, out, self.nearest)
                h = block(features, upsample=False, name=f"block_{i}")(h, cond, train)
        h = Conv(3, 3, dtype=self.dtype, impl=self.conv_impl, name="to_rgb")(nn.leaky_relu(h, 0.2))
        h = h.astype(jnp.float32)
        return jnp.tanh(h) if self.output == "tanh" else h


# --- discriminator -------------------------------------------------------------------------


class MateBlock(nn.Module):
    """GALIP's ``D_Block`` at one size: ``shortcut(x) + gamma * r(x) [+ beta * clip_map]``,
    r = lrelu(conv3x3(lrelu(conv3x3(x)))) without biases, gamma and beta starting at 0; the
    shortcut is a 1x1 conv (with bias) when the channels change."""

    features: int
    dtype: Any = jnp.float32
    conv_impl: str = "conv"

    @nn.compact
    def __call__(self, x: jax.Array, clip_map: jax.Array | None = None) -> jax.Array:
        x = x.astype(self.dtype)
        r = Conv(self.features, 3, use_bias=False, dtype=self.dtype, impl=self.conv_impl, name="conv_0")(x)
        r = Conv(self.features, 3, use_bias=False, dtype=self.dtype, impl=self.conv_impl,
                 name="conv_1")(nn.leaky_relu(r, 0.2))
        r = nn.leaky_relu(r, 0.2)
        s = x if x.shape[-1] == self.features else Conv(self.features, 1, dtype=self.dtype, name="shortcut")(x)
        out = s + self.param("gamma", nn.initializers.zeros, (), jnp.float32).astype(self.dtype) * r
        if clip_map is not None:
            beta = self.param("beta", nn.initializers.zeros, (), jnp.float32)
            out = out + beta.astype(self.dtype) * clip_map.astype(self.dtype)
        return out


class GalipHead(nn.Module):
    """GALIP's ``NetC``: [map, tiled sentence] -> conv (g-3)x(g-3) valid -> lrelu -> conv 4x4 valid."""

    hidden: int
    dtype: Any = jnp.float32
    conv_impl: str = "conv"

    @nn.compact
    def __call__(self, h: jax.Array, sentence: jax.Array) -> jax.Array:
        g = h.shape[1]
        t = jnp.broadcast_to(sentence.astype(self.dtype)[:, None, None, :], (*h.shape[:3], sentence.shape[-1]))
        x = Conv(self.hidden, g - 3, padding="VALID", use_bias=False, dtype=self.dtype, impl=self.conv_impl,
                 name="joint")(jnp.concatenate([h.astype(self.dtype), t], axis=-1))
        x = Conv(1, 4, padding="VALID", use_bias=False, dtype=self.dtype, impl=self.conv_impl,
                 name="logit")(nn.leaky_relu(x, 0.2))
        return x.reshape(-1).astype(jnp.float32)


class GalipDiscriminator(nn.Module):
    """Scores (image, sentence) pairs from the frozen tower's features; float32 logits [B].

    ``x`` is either images [B, R, R, 3] in [-1, 1], which go through the tower first
    (``clip_features``), or those features [B, len(layers), g, g, width] already (what the
    training step passes, so that MA-GP is taken with respect to them). With
    ``wrong_sentence`` it returns ``(logits, wrong_logits)`` from one mate pass. The tower's params
    are read from the ``frozen`` collection, as in ``GalipGenerator``.
    """

    tower: FrozenTower
    layers: tuple[int, ...] = (2, 5, 9)
    width: int = 64            # the mate ends at 8 * width channels, the head's joint conv has 2 * width
    nearest: str = "centre"    # the pixel path of images (galip_pixel_values)
    clip_pixels: str = "unit"
    dtype: Any = jnp.float32
    conv_impl: str = "conv"

    @property
    def frozen_params(self) -> dict[str, Any]:
        """What this module reads from its ``frozen`` collection: the tower's params."""
        return {CLIP_VISION: self.tower.params}

    @nn.compact
    def __call__(self, x: jax.Array, sentence: jax.Array, wrong_sentence: jax.Array | None = None,
                 train: bool = True):
        if x.ndim == 4:
            x = clip_features(self.tower, tower_params(self.tower, self.variables.get(FROZEN)), self.layers, x,
                              self.nearest, self.clip_pixels)
        hidden = self.tower.config.hidden_size
        h = x[:, 0]
        for k in range(1, x.shape[1]):
            h = MateBlock(hidden, self.dtype, self.conv_impl, name=f"mate_{k - 1}")(h, x[:, k])
        h = MateBlock(8 * self.width, self.dtype, self.conv_impl, name="mate_out")(h)
        head = GalipHead(2 * self.width, self.dtype, self.conv_impl, name="head")
        if wrong_sentence is None:
            return head(h, sentence)
        return head(h, sentence), head(h, wrong_sentence)


# --- building ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _load(directory: str) -> ClipTowers:
    # build_models runs several times per run (training, FLOPs, sampling): read the weights once.
    return load_clip(directory)


def check_tower(cfg: GALIPConfig, tower: FrozenTower) -> None:
    """Raises ``ConfigError`` when the config's layers, resolution or head do not fit ``tower``."""
    c = tower.config
    n = c.num_hidden_layers
    bad = [k for k in cfg.d_layer_list if not 1 <= k <= n]
    if bad:
        raise ConfigError(f"model.d_layers {bad} are not hidden states of the CLIP tower's {n} layers (1..{n})")
    bad = [k for k in cfg.prompt_layer_list if not 0 <= k < n]
    if bad:
        raise ConfigError(f"model.prompt_layers {bad} are not layers of the CLIP tower (0..{n - 1})")
    if c.grid_size < 4:
        raise ConfigError(f"the CLIP tower's patch grid is {c.grid_size}x{c.grid_size}; "
                          "galip's D head needs at least 4x4")
    if first_size(c.grid_size) > cfg.resolution:
        raise ConfigError(f"model.resolution={cfg.resolution} is below galip's first block size "
                          f"{first_size(c.grid_size)} for a {c.grid_size}x{c.grid_size} CLIP grid")


def build_galip(cfg: GALIPConfig, bn_groups: int = 1,
                bn_axis_name: str | None = None) -> tuple[GalipGenerator, GalipDiscriminator]:
    """The GALIP pair ``cfg`` describes, around the frozen image tower of ``cfg.clip`` (no BatchNorm,
    so ``bn_groups`` / ``bn_axis_name`` are unused).

    Raises:
      ConfigError: ``model.clip`` is empty, or the layers do not fit the tower.
      TextEncoderError: the CLIP directory cannot be read (one line).

    Example:
        generator, discriminator = build_galip(get_config("galip64", ["model.clip=~/clip-vit-base-patch32"]).model)
    """
    if not cfg.clip:
        raise ConfigError("model.clip is empty: model.arch=galip needs a Hugging Face CLIPModel directory "
                          "(--set model.clip=DIR)")
    tower = _load(cfg.clip).vision
    check_tower(cfg, tower)
    dtype, impl = DTYPES[cfg.dtype], resolve_conv_impl(cfg.conv_impl)
    generator = GalipGenerator(tower, resolution=cfg.resolution, width=cfg.width, bridge_width=cfg.bridge_width,
                               bridge_blocks=cfg.bridge_blocks, prompt_layers=cfg.prompt_layer_list,
                               output=cfg.output, nearest=cfg.nearest, dtype=dtype, conv_impl=impl)
    discriminator = GalipDiscriminator(tower, layers=cfg.d_layer_list, width=cfg.discriminator_width,
                                       nearest=cfg.nearest, clip_pixels=cfg.clip_pixels, dtype=dtype, conv_impl=impl)
    return generator, discriminator


def galip_step_pieces(cfg: GALIPConfig, generator: GalipGenerator,
                      discriminator: GalipDiscriminator) -> dict[str, Callable[..., Any]]:
    """The step's GALIP pieces (see ``jaxgan.step.make_train_step``).

    ``d_input``: images -> the tower's features that D scores (MA-GP then differentiates with
    respect to them, as GALIP's ``MA_GP`` does with ``CLIP_real``). ``g_loss_term``: G's CLIP
    term ``-clip_weight * mean cos(CLIP(fake), sentence)``, GALIP's ``- sim_w * text_img_sim``.
    Both read the tower's params from the step's ``frozen`` argument.
    """
    tower, layers, weight = discriminator.tower, discriminator.layers, cfg.clip_weight
    pixel_path = (cfg.nearest, cfg.clip_pixels)

    def d_input(images: jax.Array, frozen: dict[str, Any]) -> jax.Array:
        return clip_features(tower, tower_params(tower, frozen), layers, images, *pixel_path)

    def g_loss_term(fake: jax.Array, sentence: jax.Array,
                    frozen: dict[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
        sim = clip_similarity(tower, tower_params(tower, frozen), fake, sentence, *pixel_path)
        return -weight * sim, {"g_clip_sim": sim}

    return {"d_input": d_input, "g_loss_term": g_loss_term}


__all__ = ["GALIPConfig", "GalipGenerator", "GalipDiscriminator", "build_galip", "galip_step_pieces",
           "clip_features", "clip_similarity", "clip_prior", "galip_pixel_values", "tower_params"]
