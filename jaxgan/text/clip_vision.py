"""A Flax (linen) port of the image tower of CLIP (Radford et al., 2021, arXiv:2103.00020).

It computes what Hugging Face's ``CLIPVisionModelWithProjection`` computes: a ViT whose
patches are embedded by a bias-free strided convolution, a learned class embedding in front,
learned position embeddings, a LayerNorm before the encoder (Hugging Face spells it
``pre_layrnorm``), the pre-LayerNorm transformer layers of the text tower without its causal
mask, ``post_layernorm`` on the class token and a bias-free ``visual_projection``. Images are
NHWC (Hugging Face's are NCHW). Parameter names mirror Hugging Face's, as in
``jaxgan.text.clip``, so ``clip_hf`` only renames and transposes. Written from the architecture
description; tests/test_clip_towers.py compares it with the PyTorch model.

The tower is a frozen component (a GAN's D and G use it as GALIP does, docs/text-encoders.md):
besides the whole forward pass, its pieces run alone, on hidden states indexed as Hugging
Face's ``hidden_states``: state ``k`` is the token sequence after ``k`` encoder layers (state 0
is the output of ``pre_layrnorm``).

    out = model.apply(v, pixels, hidden_layers=(2, 5, 9))     # + out.hidden_states
    h0 = model.apply(v, grid, method="embed_patches")          # [B, g, g, D] -> state 0
    h8 = model.apply(v, h0, 0, 8, method="run_layers")         # state 0 -> state 8
    pooled, embeds = model.apply(v, h8_to_last, method="pool")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

# The text tower's layers take any config with the same field names; only the mask differs.
from jaxgan.text.clip import ACTIVATIONS, _EncoderLayer, _normal

# The normalisation of OpenAI's CLIP preprocessing (and Hugging Face's CLIPImageProcessor).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Every token attends to every token: a mask that is true everywhere.
_FULL_MASK = ((True,),)


@dataclasses.dataclass(frozen=True)
class ClipVisionConfig:
    """The fields of a Hugging Face ``CLIPVisionConfig`` that change the output.

    Defaults are Hugging Face's (ViT-B/32). In a full ``CLIPModel`` the projection width is the
    top-level ``projection_dim``, not the one inside ``vision_config``.
    """

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    projection_dim: int = 512

    def __post_init__(self):
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {self.hidden_act!r}; supported: {sorted(ACTIVATIONS)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        if not 0 < self.patch_size <= self.image_size:
            raise ValueError(f"patch_size {self.patch_size} must be in [1, image_size {self.image_size}]")

    @property
    def grid_size(self) -> int:
        """Patches along each side of the image."""
        return self.image_size // self.patch_size

    @property
    def num_positions(self) -> int:
        """Patches plus the class token."""
        return self.grid_size ** 2 + 1


@flax.struct.dataclass
class ClipVisionOutput:
    """Hugging Face's output fields, and the hidden states that were asked for."""

    last_hidden_state: jax.Array  # [B, 1 + patches, hidden], before post_layernorm
    pooler_output: jax.Array  # [B, hidden], post_layernorm of the class token
    image_embeds: jax.Array  # [B, projection_dim], not normalised
    hidden_states: tuple[jax.Array, ...] = ()  # state k of each k in hidden_layers, [B, 1 + patches, hidden]


def _layer_norm(config: ClipVisionConfig) -> nn.LayerNorm:
    # Two-pass variance, as PyTorch computes it (named by the attribute it is assigned to in setup).
    return nn.LayerNorm(epsilon=config.layer_norm_eps, use_fast_variance=False)


class _Embeddings(nn.Module):
    config: ClipVisionConfig

    def setup(self):
        c = self.config
        p = c.patch_size
        self.patch_embedding = nn.Conv(c.hidden_size, (p, p), strides=(p, p), padding="VALID", use_bias=False,
                                       kernel_init=_normal(0.02))
        self.class_embedding = self.param("class_embedding", _normal(c.hidden_size ** -0.5), (c.hidden_size,))
        self.position_embedding = nn.Embed(c.num_positions, c.hidden_size, embedding_init=_normal(0.02))

    def patches(self, pixel_values: jax.Array) -> jax.Array:
        """[B, H, W, C] pixels -> [B, g, g, hidden] patch embeddings."""
        return self.patch_embedding(pixel_values)

    def __call__(self, grid: jax.Array) -> jax.Array:
        """[B, g, g, hidden] patch features -> [B, 1 + g*g, hidden] tokens with positions."""
        c = self.config
        # Row-major over the patch grid, the order of PyTorch's flatten of [B, D, H', W'].
        tokens = grid.reshape(grid.shape[0], -1, c.hidden_size)
        cls = jnp.broadcast_to(self.class_embedding.astype(tokens.dtype), (tokens.shape[0], 1, c.hidden_size))
        positions = self.position_embedding(jnp.arange(c.num_positions))
        return jnp.concatenate([cls, tokens], axis=1) + positions[None]


class _Encoder(nn.Module):
    config: ClipVisionConfig

    def setup(self):
        self.layers = [_EncoderLayer(self.config) for _ in range(self.config.num_hidden_layers)]

    def __call__(self, h: jax.Array, start: int, stop: int, keep: Sequence[int] = ()) -> tuple[jax.Array, dict]:
        """Runs layers [start, stop) on state ``start``; returns state ``stop`` and the kept states."""
        kept = {start: h} if start in keep else {}
        mask = jnp.asarray(_FULL_MASK)[None, None]
        for i in range(start, stop):
            h = self.layers[i](h, mask)
            if i + 1 in keep:
                kept[i + 1] = h
        return h, kept


class ClipVisionModel(nn.Module):
    """CLIP's image transformer with its ``visual_projection`` (``CLIPVisionModelWithProjection``)."""

    config: ClipVisionConfig

    def setup(self):
        c = self.config
        self.embeddings = _Embeddings(c)
        self.pre_layrnorm = _layer_norm(c)
        self.encoder = _Encoder(c)
        self.post_layernorm = _layer_norm(c)
        self.visual_projection = nn.Dense(c.projection_dim, use_bias=False, kernel_init=_normal(c.hidden_size ** -0.5))

    def __call__(self, pixel_values: jax.Array, hidden_layers: Sequence[int] = ()) -> ClipVisionOutput:
        """Encodes preprocessed images.

        Args:
          pixel_values: [B, image_size, image_size, num_channels] float, already normalised
            (``to_pixel_values`` inside a training step, ``metrics.clip_score.preprocess_images``
            for evaluation).
          hidden_layers: which hidden states to return, each k in [0, num_hidden_layers]: the
            tokens after k encoder layers (Hugging Face's ``hidden_states[k]``). Static.

        Returns:
          The ``ClipVisionOutput`` (float32).
        """
        c = self.config
        keep = _check_layers(hidden_layers, c.num_hidden_layers)
        h = self.embed_pixels(pixel_values)
        h, kept = self.encoder(h, 0, c.num_hidden_layers, keep)
        pooled, embeds = self.pool(h)
        return ClipVisionOutput(last_hidden_state=h, pooler_output=pooled, image_embeds=embeds,
                                hidden_states=tuple(kept[k] for k in hidden_layers))

    def embed_pixels(self, pixel_values: jax.Array) -> jax.Array:
        """[B, S, S, C] normalised pixels -> hidden state 0, [B, 1 + patches, hidden]."""
        c = self.config
        expected = (c.image_size, c.image_size, c.num_channels)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(f"pixel_values have shape {tuple(pixel_values.shape)}; expected [B, {expected[0]}, "
                             f"{expected[1]}, {expected[2]}] (NHWC)")
        return self.embed_patches(self.embeddings.patches(pixel_values.astype(jnp.float32)))

    def embed_patches(self, grid: jax.Array) -> jax.Array:
        """Hidden state 0 of a grid of patch features that skips the patch convolution.

        GALIP's generator feeds its bridge features in here: class token, position embeddings
        and ``pre_layrnorm`` are applied as to patch embeddings.

        Args:
          grid: [B, g, g, hidden], g = image_size // patch_size.
        """
        c = self.config
        if grid.ndim != 4 or tuple(grid.shape[1:]) != (c.grid_size, c.grid_size, c.hidden_size):
            raise ValueError(f"patch features have shape {tuple(grid.shape)}; expected [B, {c.grid_size}, "
                             f"{c.grid_size}, {c.hidden_size}]")
        return self.pre_layrnorm(self.embeddings(grid))

    def run_layers(self, hidden: jax.Array, start: int, stop: int) -> jax.Array:
        """Encoder layers [start, stop) on hidden state ``start``: hidden state ``stop``.

        ``hidden`` may carry extra tokens (any sequence length): the layers have no positional
        input and no mask, so a token appended before a layer and dropped after it (GALIP's
        prompts) changes only what the other tokens attend to.

        Args:
          hidden: [B, T, hidden] float.
          start, stop: static ints, 0 <= start <= stop <= num_hidden_layers.
        """
        n = self.config.num_hidden_layers
        if not 0 <= start <= stop <= n:
            raise ValueError(f"layer slice [{start}, {stop}) is not within [0, {n}]")
        return self.encoder(hidden, start, stop)[0]

    def pool(self, hidden: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The final state's class token -> (``pooler_output``, ``image_embeds``)."""
        pooled = self.post_layernorm(hidden[:, 0])
        return pooled, self.visual_projection(pooled)


def _check_layers(hidden_layers: Sequence[int], n: int) -> tuple[int, ...]:
    bad = [k for k in hidden_layers if not (isinstance(k, int) and 0 <= k <= n)]
    if bad:
        raise ValueError(f"hidden_layers {bad} are not in [0, {n}] (hidden state k follows k encoder layers)")
    return tuple(hidden_layers)


def patch_grid(hidden: jax.Array) -> jax.Array:
    """A hidden state's patch tokens as a map: [B, 1 + g*g, D] -> [B, g, g, D] (class token dropped)."""
    side = int(round((hidden.shape[1] - 1) ** 0.5))
    if side * side != hidden.shape[1] - 1:
        raise ValueError(f"{hidden.shape[1] - 1} patch tokens do not form a square grid")
    return hidden[:, 1:].reshape(hidden.shape[0], side, side, hidden.shape[-1])


def normalize_pixels(images01: jax.Array) -> jax.Array:
    """NHWC RGB in [0, 1] -> CLIP's input scale: minus ``CLIP_MEAN``, divided by ``CLIP_STD``."""
    if images01.shape[-1] != len(CLIP_MEAN):
        raise ValueError(f"images have {images01.shape[-1]} channels; CLIP expects {len(CLIP_MEAN)} (RGB, NHWC)")
    return (images01 - jnp.asarray(CLIP_MEAN, images01.dtype)) / jnp.asarray(CLIP_STD, images01.dtype)


def to_pixel_values(images: jax.Array, image_size: int, method: str = "bicubic") -> jax.Array:
    """Differentiable CLIP input of generated or real images, for use inside a compiled step.

    Maps [-1, 1] to [0, 1], resizes the whole image to ``image_size`` square with
    ``jax.image.resize`` (``method``: "nearest", "bilinear", "bicubic", ...; antialiased when
    shrinking) and normalises with CLIP's mean and std. Unlike the evaluation preprocessing
    (``metrics.clip_score.preprocess_images``) nothing is clipped or cropped, so every pixel gets
    a gradient (GALIP's generator has no output tanh). A linear map of the image.

    Args:
      images: [B, H, W, 3] float, nominally in [-1, 1].
      image_size: the tower's ``config.image_size``.
      method: the resampling kernel; GALIP resizes with nearest.

    Returns:
      [B, image_size, image_size, 3] float32 pixel values.
    """
    x = (jnp.asarray(images, jnp.float32) + 1.0) * 0.5
    b, h, w, c = x.shape
    if (h, w) != (image_size, image_size):
        x = jax.image.resize(x, (b, image_size, image_size, c), method=method)
    return normalize_pixels(x)


def init_params(config: ClipVisionConfig, rng: jax.Array) -> dict[str, Any]:
    """Fresh parameters of ``ClipVisionModel(config)``; call it under ``jax.jit`` or ``jax.eval_shape``."""
    images = jnp.zeros((1, config.image_size, config.image_size, config.num_channels), jnp.float32)
    return ClipVisionModel(config).init(rng, images)["params"]
