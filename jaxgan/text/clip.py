"""A Flax (linen) port of the text tower of CLIP (Radford et al., 2021, arXiv:2103.00020).

It computes what Hugging Face's ``CLIPTextModel`` and ``CLIPTextModelWithProjection`` compute:
token + learned position embeddings, a pre-LayerNorm causal transformer, a final LayerNorm,
the pooled output at the end-of-text token and an optional bias-free ``text_projection``.
Parameter names mirror Hugging Face's module names (``layers.N`` becomes ``layers_N``), so
``clip_hf.py`` maps between the two by renaming and transposing. Written from the architecture
description; the parity tests compare it with the PyTorch model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

# Hugging Face's eos_token_id before transformers PR #24773; with it, HF pools at the argmax
# of the ids (the EOS of the original CLIP vocabulary is its largest id).
LEGACY_EOS_TOKEN_ID = 2


def _quick_gelu(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "quick_gelu": _quick_gelu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class ClipTextConfig:
    """The architecture fields of a Hugging Face ``CLIPTextConfig`` that change the output.

    ``projection_dim`` is None for a model without ``text_projection`` (``CLIPTextModel``).
    ``bos_token_id`` and ``pad_token_id`` do not change the output; they are kept so that a
    saved config says which ids the tokenizer uses.
    """

    vocab_size: int
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407
    projection_dim: int | None = None
    bos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self):
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {self.hidden_act!r}; supported: {sorted(ACTIVATIONS)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")

    @property
    def sentence_dim(self) -> int:
        """Width of the sentence embedding: the projection if there is one, else the pooled state."""
        return self.projection_dim or self.hidden_size


@flax.struct.dataclass
class ClipTextOutput:
    """Hugging Face's output fields; ``text_embeds`` is None without a projection."""

    last_hidden_state: jax.Array  # [B, L, hidden]
    pooler_output: jax.Array  # [B, hidden], the final state at the EOS token
    text_embeds: jax.Array | None  # [B, projection_dim]


def _normal(std: float) -> Callable[..., jax.Array]:
    return nn.initializers.normal(stddev=std)


def _layer_norm(config: ClipTextConfig, name: str) -> nn.LayerNorm:
    # Two-pass variance, as PyTorch computes it, keeps parity well under 1e-4.
    return nn.LayerNorm(epsilon=config.layer_norm_eps, use_fast_variance=False, name=name)


class _SelfAttention(nn.Module):
    config: ClipTextConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        c = self.config
        heads, width = c.num_attention_heads, c.hidden_size
        head_dim = width // heads
        # Initial scales follow Hugging Face's CLIP initialisation, used when training from scratch.
        in_std = width ** -0.5 * (2 * c.num_hidden_layers) ** -0.5

        def project(name: str, std: float) -> jax.Array:
            y = nn.Dense(width, kernel_init=_normal(std), name=name)(x)
            return y.reshape(*y.shape[:-1], heads, head_dim)

        q, k, v = project("q_proj", in_std), project("k_proj", in_std), project("v_proj", in_std)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * head_dim ** -0.5
        # A finite fill (not -inf) keeps a fully masked row finite instead of NaN.
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(x.shape)
        return nn.Dense(width, kernel_init=_normal(width ** -0.5), name="out_proj")(out)

    def attention_macs(self, args: tuple, out: Any) -> int:
        """Multiply-accumulates of the two attention matmuls (QK^T and weights @ V) for
        ``jaxgan.flops``; the projections are Dense layers, counted on their own."""
        b, t, width = args[0].shape
        return 2 * b * t * t * width


class _MLP(nn.Module):
    config: ClipTextConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        h = nn.Dense(c.intermediate_size, kernel_init=_normal((2 * c.hidden_size) ** -0.5), name="fc1")(x)
        h = ACTIVATIONS[c.hidden_act](h)
        out_std = c.hidden_size ** -0.5 * (2 * c.num_hidden_layers) ** -0.5
        return nn.Dense(c.hidden_size, kernel_init=_normal(out_std), name="fc2")(h)


class _EncoderLayer(nn.Module):
    config: ClipTextConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = x + _SelfAttention(self.config, name="self_attn")(_layer_norm(self.config, "layer_norm1")(x), mask)
        return x + _MLP(self.config, name="mlp")(_layer_norm(self.config, "layer_norm2")(x))


class _Embeddings(nn.Module):
    config: ClipTextConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        c = self.config
        length = input_ids.shape[-1]
        if length > c.max_position_embeddings:
            raise ValueError(f"sequence length {length} exceeds max_position_embeddings "
                             f"{c.max_position_embeddings}")
        tokens = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=_normal(0.02),
                          name="token_embedding")(input_ids)
        positions = nn.Embed(c.max_position_embeddings, c.hidden_size, embedding_init=_normal(0.02),
                             name="position_embedding")(jnp.arange(length))
        return tokens + positions[None]


class _Encoder(nn.Module):
    config: ClipTextConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        for i in range(self.config.num_hidden_layers):
            x = _EncoderLayer(self.config, name=f"layers_{i}")(x, mask)
        return x


def pool_at_eos(hidden: jax.Array, input_ids: jax.Array, eos_token_id: int) -> jax.Array:
    """The hidden state at each sequence's end-of-text token, Hugging Face's rule.

    With the legacy ``eos_token_id == 2`` the EOS is taken to be the largest id (argmax);
    otherwise it is the first position holding ``eos_token_id`` (padding may reuse that id).

    Args:
      hidden: [B, L, D] final hidden states.
      input_ids: [B, L] int token ids.
      eos_token_id: the model config's ``eos_token_id``.

    Returns:
      [B, D].
    """
    if eos_token_id == LEGACY_EOS_TOKEN_ID:
        index = jnp.argmax(input_ids, axis=-1)
    else:
        index = jnp.argmax((input_ids == eos_token_id).astype(jnp.int32), axis=-1)
    return jnp.take_along_axis(hidden, index[:, None, None], axis=1)[:, 0]


class ClipTextModel(nn.Module):
    """CLIP's text transformer; with ``config.projection_dim`` also its ``text_projection``."""

    config: ClipTextConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> ClipTextOutput:
        """Encodes token ids.

        Args:
          input_ids: [B, L] int token ids, L <= max_position_embeddings.
          attention_mask: [B, L], 1 at real tokens and 0 at padding; None means all real.

        Returns:
          The ``ClipTextOutput`` (float32).
        """
        c = self.config
        length = input_ids.shape[-1]
        causal = jnp.tril(jnp.ones((length, length), bool))
        if attention_mask is None:
            mask = causal[None, None]
        else:
            mask = causal[None, None] & (attention_mask != 0)[:, None, None, :]
        h = _Embeddings(c, name="embeddings")(input_ids)
        h = _Encoder(c, name="encoder")(h, mask)
        h = _layer_norm(c, "final_layer_norm")(h)
        pooled = pool_at_eos(h, input_ids, c.eos_token_id)
        embeds = None
        if c.projection_dim is not None:
            embeds = nn.Dense(c.projection_dim, use_bias=False, kernel_init=_normal(c.hidden_size ** -0.5),
                              name="text_projection")(pooled)
        return ClipTextOutput(last_hidden_state=h, pooler_output=pooled, text_embeds=embeds)


def init_params(config: ClipTextConfig, rng: jax.Array) -> dict[str, Any]:
    """Fresh parameters of ``ClipTextModel(config)`` (Hugging Face's initial scales).

    Call it under ``jax.jit``: run eagerly, every initializer is compiled on its own.
    """
    ids = jnp.zeros((1, min(2, config.max_position_embeddings)), jnp.int32)
    return ClipTextModel(config).init(rng, ids)["params"]
