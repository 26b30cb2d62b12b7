"""A Flax (linen) port of the image tower of CLIP (Radford et al., 2021, arXiv:2103.00020).

It computes what Hugging Face's ``CLIPVisionModelWithProjection`` computes: a ViT whose
patches are embedded by a bias-free strided convolution, a learned class embedding in front,
learned position embeddings, a LayerNorm before the encoder (Hugging Face spells it
``pre_layrnorm``), the pre-LayerNorm transformer layers of the text tower without its causal
mask, ``post_layernorm`` on the class token and a bias-free ``visual_projection``. Images are
NHWC (Hugging Face's are NCHW). Parameter names mirror Hugging Face's, as in
``jaxgan.text.clip``, so ``params_from_hf`` only renames and transposes. Written from the
architecture description; tests/test_clip_score.py compares it with the PyTorch model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

# The text tower's layers take any config with the same field names; only the mask differs.
from jaxgan.text.clip import ACTIVATIONS, _Encoder, _layer_norm, _normal
from jaxgan.text.hf import params_from_tensors

VISION_PREFIX = "vision_model."
PROJECTION_WEIGHT = "visual_projection.weight"
_LEAF_NAMES = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias",
               "class_embedding": "class_embedding"}


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
    def num_positions(self) -> int:
        """Patches plus the class token."""
        return (self.image_size // self.patch_size) ** 2 + 1


@flax.struct.dataclass
class ClipVisionOutput:
    """Hugging Face's output fields."""

    last_hidden_state: jax.Array  # [B, 1 + patches, hidden], before post_layernorm
    pooler_output: jax.Array  # [B, hidden], post_layernorm of the class token
    image_embeds: jax.Array  # [B, projection_dim], not normalised


class _Embeddings(nn.Module):
    config: ClipVisionConfig

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        c = self.config
        p = c.patch_size
        patches = nn.Conv(c.hidden_size, (p, p), strides=(p, p), padding="VALID", use_bias=False,
                          kernel_init=_normal(0.02), name="patch_embedding")(pixel_values)
        # Row-major over the patch grid, the order of PyTorch's flatten of [B, D, H', W'].
        patches = patches.reshape(patches.shape[0], -1, c.hidden_size)
        cls = self.param("class_embedding", _normal(c.hidden_size ** -0.5), (c.hidden_size,))
        cls = jnp.broadcast_to(cls.astype(patches.dtype), (patches.shape[0], 1, c.hidden_size))
        positions = nn.Embed(c.num_positions, c.hidden_size, embedding_init=_normal(0.02),
                             name="position_embedding")(jnp.arange(c.num_positions))
        return jnp.concatenate([cls, patches], axis=1) + positions[None]


class ClipVisionModel(nn.Module):
    """CLIP's image transformer with its ``visual_projection`` (``CLIPVisionModelWithProjection``)."""

    config: ClipVisionConfig

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> ClipVisionOutput:
        """Encodes preprocessed images.

        Args:
          pixel_values: [B, image_size, image_size, num_channels] float, already normalised
            (see ``jaxgan.metrics.clip_score.preprocess_images``).

        Returns:
          The ``ClipVisionOutput`` (float32).
        """
        c = self.config
        expected = (c.image_size, c.image_size, c.num_channels)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(f"pixel_values have shape {tuple(pixel_values.shape)}; expected [B, {expected[0]}, "
                             f"{expected[1]}, {expected[2]}] (NHWC)")
        h = _Embeddings(c, name="embeddings")(pixel_values.astype(jnp.float32))
        h = _layer_norm(c, "pre_layrnorm")(h)
        # Every patch attends to every patch: a mask that is true everywhere.
        h = _Encoder(c, name="encoder")(h, jnp.ones((1, 1, 1, 1), bool))
        pooled = _layer_norm(c, "post_layernorm")(h[:, 0])
        embeds = nn.Dense(c.projection_dim, use_bias=False, kernel_init=_normal(c.hidden_size ** -0.5),
                          name="visual_projection")(pooled)
        return ClipVisionOutput(last_hidden_state=h, pooler_output=pooled, image_embeds=embeds)


def init_params(config: ClipVisionConfig, rng: jax.Array) -> dict[str, Any]:
    """Fresh parameters of ``ClipVisionModel(config)``; call it under ``jax.jit`` or ``jax.eval_shape``."""
    images = jnp.zeros((1, config.image_size, config.image_size, config.num_channels), jnp.float32)
    return ClipVisionModel(config).init(rng, images)["params"]


def hf_name(path: tuple[str, ...]) -> str:
    """The Hugging Face (``CLIPModel``) tensor name of a flattened Flax param path."""
    if path[0] == "visual_projection":
        return PROJECTION_WEIGHT
    parts = ["layers." + p.removeprefix("layers_") if p.startswith("layers_") else p for p in path[:-1]]
    return VISION_PREFIX + ".".join(parts + [_LEAF_NAMES[path[-1]]])


def params_from_hf(weights: dict[str, np.ndarray], config: ClipVisionConfig, source: str = "weights") -> dict:
    """Flax params of ``ClipVisionModel(config)`` from the tensors of a Hugging Face ``CLIPModel``.

    ``weights`` may hold other tensors (the text tower); they are ignored. Tensors of a
    ``CLIPVisionModelWithProjection`` (same names) work too.

    Raises:
      ValueError: one line naming a missing tensor or one whose shape does not match ``config``.
    """
    abstract = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    return params_from_tensors(abstract, weights, hf_name, source=source)
