"""A Flax (linen) port of T5's encoder (Raffel et al., 2020, "Exploring the Limits of Transfer
Learning with a Unified Text-to-Text Transformer", JMLR 21(140), arXiv:1910.10683).

It computes what Hugging Face's ``T5EncoderModel`` computes: the shared token embedding (not
scaled), pre-norm blocks of self-attention and a feed-forward network, and a final norm. T5's
particular choices: RMS layer norms (no mean subtraction, no bias), Linear layers without bias,
attention logits without the 1/sqrt(d) scale, and no position embeddings: a learned scalar bias
per head and relative-position bucket, added to the logits. The buckets are bidirectional (half
of them for keys after the query), exact for short distances and log-spaced up to
``relative_attention_max_distance``; the bias table lives in the first block only and its
output is shared by every block. Feed-forward: "relu" (T5 v1.0) or "gated-gelu" (T5 v1.1,
flan-t5, mT5: ``gelu_tanh(wi_0 x) * wi_1 x``). Flax modules are named as Hugging Face's
(``block.N`` becomes ``block_N``), so the tensor mapping below is a rename plus transposed
Linear weights. Written from the architecture description; the parity tests compare it with
the PyTorch model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxgan.text import hf
from jaxgan.text.errors import TextEncoderError

# mT5's encoder is T5 v1.1's. umT5 is not: every block has its own position bias table.
MODEL_TYPES = ("t5", "mt5")
FEED_FORWARDS = ("relu", "gated-gelu")
SHARED_WEIGHT = "shared.weight"
_ENCODER_PREFIX = "encoder."
# Keys a config.json may leave out take the transformers config class's defaults.
_HF_DEFAULTS = {
    "t5": {"vocab_size": 32128},
    "mt5": {"vocab_size": 250112, "d_ff": 1024, "num_layers": 8, "num_heads": 6, "feed_forward_proj": "gated-gelu"},
}


@dataclasses.dataclass(frozen=True)
class T5Config:
    """The fields of a Hugging Face ``T5Config`` that change the encoder's output."""

    vocab_size: int
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"

    def __post_init__(self):
        if self.feed_forward_proj not in FEED_FORWARDS:
            raise ValueError(f"unsupported feed_forward_proj {self.feed_forward_proj!r}; "
                             f"supported: {', '.join(FEED_FORWARDS)}")

    @property
    def hidden_size(self) -> int:
        """Width of the hidden states (``d_model``)."""
        return self.d_model

    @property
    def sentence_dim(self) -> int:
        """Width of a pooled hidden state (``d_model``)."""
        return self.d_model


@flax.struct.dataclass
class T5EncoderOutput:
    """Hugging Face's output field."""

    last_hidden_state: jax.Array  # [B, L, d_model], after the final layer norm


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """T5's bidirectional bucket of each (query, key) pair: [length, length] int32.

    Half the buckets are for keys after the query. Within a half, distances below a quarter of
    ``num_buckets`` get a bucket each; larger ones share buckets spaced logarithmically up to
    ``max_distance``, and everything farther takes the last bucket. Computed in float64 numpy
    at trace time (the length is static), so the program holds a constant table.
    """
    relative = np.arange(length)[None, :] - np.arange(length)[:, None]  # key - query
    half = num_buckets // 2
    exact = half // 2
    distance = np.abs(relative)
    # Distance 0 never reaches the log branch; the maximum only keeps log() finite there.
    spaced = exact + (np.log(np.maximum(distance, 1) / exact) / np.log(max_distance / exact)
                      * (half - exact)).astype(np.int64)
    bucket = np.where(distance < exact, distance, np.minimum(spaced, half - 1))
    return (bucket + np.where(relative > 0, half, 0)).astype(np.int32)


def _dense(features: int, name: str) -> nn.Dense:
    # Initial values only shape a fresh init (eval_shape, tests); loaded weights replace them.
    return nn.Dense(features, use_bias=False, kernel_init=nn.initializers.normal(0.05), name=name)


class _RMSNorm(nn.Module):
    """T5's layer norm: x / rms(x) * weight, no mean subtraction and no bias."""

    epsilon: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        return scale * (x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon))


class _Attention(nn.Module):
    config: T5Config
    has_position_bias: bool

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, position_bias: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        c = self.config

        def project(name: str) -> jax.Array:
            y = _dense(c.num_heads * c.d_kv, name)(x)
            return y.reshape(*y.shape[:-1], c.num_heads, c.d_kv)

        q, k, v = project("q"), project("k"), project("v")
        if self.has_position_bias:
            buckets = relative_position_buckets(x.shape[1], c.relative_attention_num_buckets,
                                                c.relative_attention_max_distance)
            table = nn.Embed(c.relative_attention_num_buckets, c.num_heads, embedding_init=nn.initializers.normal(0.05),
                             name="relative_attention_bias")
            position_bias = table(jnp.asarray(buckets)).transpose(2, 0, 1)[None]  # [1, H, Lq, Lk]
        # No 1/sqrt(d_kv): T5 folds that scale into the initialisation of q.
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) + position_bias
        # A finite fill (not -inf) keeps a fully masked row finite instead of NaN.
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(*x.shape[:-1], c.num_heads * c.d_kv)
        return _dense(c.d_model, "o")(out), position_bias


class _SelfAttentionLayer(nn.Module):
    config: T5Config
    has_position_bias: bool

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, position_bias: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        h = _RMSNorm(self.config.layer_norm_epsilon, name="layer_norm")(x)
        h, position_bias = _Attention(self.config, self.has_position_bias, name="SelfAttention")(h, mask, position_bias)
        return x + h, position_bias


class _DenseReluDense(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        if c.feed_forward_proj == "gated-gelu":
            h = jax.nn.gelu(_dense(c.d_ff, "wi_0")(x), approximate=True) * _dense(c.d_ff, "wi_1")(x)
        else:
            h = jax.nn.relu(_dense(c.d_ff, "wi")(x))
        return _dense(c.d_model, "wo")(h)


class _FeedForwardLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = _RMSNorm(self.config.layer_norm_epsilon, name="layer_norm")(x)
        return x + _DenseReluDense(self.config, name="DenseReluDense")(h)


class _Block(nn.Module):
    config: T5Config
    has_position_bias: bool

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, position_bias: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        x, position_bias = _SelfAttentionLayer(self.config, self.has_position_bias, name="layer_0")(
            x, mask, position_bias)
        return _FeedForwardLayer(self.config, name="layer_1")(x), position_bias


class _Stack(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        position_bias = None
        for i in range(self.config.num_layers):
            x, position_bias = _Block(self.config, has_position_bias=i == 0, name=f"block_{i}")(x, mask, position_bias)
        return _RMSNorm(self.config.layer_norm_epsilon, name="final_layer_norm")(x)


class T5EncoderModel(nn.Module):
    """T5's encoder stack with its (shared) token embedding."""

    config: T5Config

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> T5EncoderOutput:
        """Encodes token ids.

        Args:
          input_ids: [B, L] int token ids (any L: positions are relative).
          attention_mask: [B, L], 1 at real tokens and 0 at padding; None means all real.

        Returns:
          The ``T5EncoderOutput`` (float32). Hidden states at padding are computed but meaningless.
        """
        c = self.config
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        mask = (attention_mask != 0)[:, None, None, :]  # keys only: bidirectional attention
        h = nn.Embed(c.vocab_size, c.d_model, embedding_init=nn.initializers.normal(1.0), name="shared")(input_ids)
        return T5EncoderOutput(last_hidden_state=_Stack(c, name="encoder")(h, mask))


def init_params(config: T5Config, rng: jax.Array) -> dict[str, Any]:
    """Fresh parameters of ``T5EncoderModel(config)`` (call it under ``jax.jit`` or ``jax.eval_shape``)."""
    return T5EncoderModel(config).init(rng, jnp.zeros((1, 2), jnp.int32))["params"]


def read_config(directory: Path) -> T5Config:
    """The ``T5Config`` of ``directory/config.json`` (model_type "t5" or "mt5")."""
    path = directory / hf.CONFIG_FILE
    raw = hf.read_config_json(directory)
    model_type = raw.get("model_type")
    if model_type not in MODEL_TYPES:
        why = " (its blocks each have their own position bias)" if model_type == "umt5" else ""
        raise TextEncoderError(f"{path}: model_type {model_type!r} is not a T5 encoder{why}; "
                               f"supported: {', '.join(MODEL_TYPES)}")
    return hf.config_fields(raw, T5Config, _HF_DEFAULTS[model_type], path)


def _keep(name: str) -> bool:
    # A full T5ForConditionalGeneration also holds the decoder and lm_head: not read at all.
    return name.startswith(_ENCODER_PREFIX) or name == SHARED_WEIGHT


def params_from_hf(weights: dict[str, np.ndarray], config: T5Config, source: str = "weights") -> dict:
    """Flax params of ``T5EncoderModel(config)`` from the tensors of a T5 checkpoint.

    ``encoder.embed_tokens.weight`` stands in for ``shared.weight`` when only it was saved.

    Raises:
      TextEncoderError: a tensor is missing or its shape does not match ``config``.
    """
    tied = _ENCODER_PREFIX + "embed_tokens.weight"
    if SHARED_WEIGHT not in weights and tied in weights:
        weights = {**weights, SHARED_WEIGHT: weights[tied]}
    abstract = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    return hf.params_from_tensors(abstract, weights, hf.flax_to_torch_name, source=source, error=TextEncoderError)


def load_t5(name_or_path: str | Path) -> tuple[T5EncoderModel, dict, Path]:
    """Loads the encoder of a Hugging Face T5 directory (``T5EncoderModel`` or a full T5) or hub id.

    Returns:
      (module, params, directory): params are float32 numpy arrays.
    """
    directory = hf.resolve_directory(name_or_path)
    config = read_config(directory)  # a bad config is reported before the (larger) weights are read
    weights = hf.read_weights(directory, keep=_keep)
    return T5EncoderModel(config), params_from_hf(weights, config, source=hf.weights_source(directory)), directory
