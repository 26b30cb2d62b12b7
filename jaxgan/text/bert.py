"""A Flax (linen) port of BERT's encoder (Devlin et al., 2019, arXiv:1810.04805).

It computes what Hugging Face's ``BertModel`` computes, which covers MiniLM and the BERT-based
sentence-transformers models (Reimers & Gurevych, 2019): word + learned position + token-type
embeddings and a LayerNorm, then post-LayerNorm encoder layers (masked self-attention, a GELU
MLP, each wrapped as ``LayerNorm(x + sublayer(x))``), and, when the weights have one, the
pooler (dense + tanh on the [CLS] state). Token types are all 0: one caption is one segment.
Flax modules are named as Hugging Face's (``layer.N`` becomes ``layer_N``), so the tensor
mapping below is a rename plus transposed Linear weights. Written from the architecture
description; the parity tests compare it with the PyTorch model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxgan.text import hf
from jaxgan.text.errors import TextEncoderError

MODEL_TYPES = ("bert",)
POOLER_WEIGHT = "pooler.dense.weight"
# Checkpoints of BertForMaskedLM, BertForPreTraining, ... prefix the encoder's tensors with it.
_PREFIX = "bert."

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}
# Keys a config.json may leave out take Hugging Face's BertConfig defaults.
_HF_DEFAULTS = {"vocab_size": 30522}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face ``BertConfig`` that change the encoder's output.

    ``add_pooler`` is not in config.json: it is True when the weights hold the pooler.
    """

    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    position_embedding_type: str = "absolute"
    add_pooler: bool = True

    def __post_init__(self):
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {self.hidden_act!r}; supported: {sorted(ACTIVATIONS)}")
        if self.position_embedding_type != "absolute":
            raise ValueError(f"unsupported position_embedding_type {self.position_embedding_type!r}; "
                             "supported: 'absolute'")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")

    @property
    def sentence_dim(self) -> int:
        """Width of the pooler output (the hidden width)."""
        return self.hidden_size


@flax.struct.dataclass
class BertOutput:
    """Hugging Face's output fields; ``pooler_output`` is None without a pooler."""

    last_hidden_state: jax.Array  # [B, L, hidden]
    pooler_output: jax.Array | None  # [B, hidden], tanh(dense(state at [CLS]))


def _layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
    # Two-pass variance, as PyTorch computes it: with eps 1e-12 the one-pass formula loses digits.
    return nn.LayerNorm(epsilon=config.layer_norm_eps, use_fast_variance=False, name=name)


def _dense(features: int, name: str) -> nn.Dense:
    return nn.Dense(features, kernel_init=nn.initializers.normal(0.02), name=name)


class _SelfAttention(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        c = self.config
        heads = c.num_attention_heads
        head_dim = c.hidden_size // heads

        def project(name: str) -> jax.Array:
            y = _dense(c.hidden_size, name)(x)
            return y.reshape(*y.shape[:-1], heads, head_dim)

        q, k, v = project("query"), project("key"), project("value")
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * head_dim ** -0.5
        # A finite fill (not -inf) keeps a fully masked row finite instead of NaN.
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        return jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(x.shape)


class _AddNorm(nn.Module):
    """Hugging Face's ``BertSelfOutput`` / ``BertOutput``: LayerNorm(residual + dense(h))."""

    config: BertConfig

    @nn.compact
    def __call__(self, h: jax.Array, residual: jax.Array) -> jax.Array:
        return _layer_norm(self.config, "LayerNorm")(_dense(self.config.hidden_size, "dense")(h) + residual)


class _Attention(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        # "self" is Hugging Face's module name, kept so the tensor names map one to one.
        return _AddNorm(self.config, name="output")(_SelfAttention(self.config, name="self")(x, mask), x)


class _Intermediate(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return ACTIVATIONS[self.config.hidden_act](_dense(self.config.intermediate_size, "dense")(x))


class _Layer(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = _Attention(self.config, name="attention")(x, mask)
        return _AddNorm(self.config, name="output")(_Intermediate(self.config, name="intermediate")(x), x)


class _Encoder(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        for i in range(self.config.num_hidden_layers):
            x = _Layer(self.config, name=f"layer_{i}")(x, mask)
        return x


class _Embeddings(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        c = self.config
        length = input_ids.shape[-1]
        if length > c.max_position_embeddings:
            raise ValueError(f"sequence length {length} exceeds max_position_embeddings "
                             f"{c.max_position_embeddings}")
        init = nn.initializers.normal(0.02)
        words = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=init, name="word_embeddings")(input_ids)
        positions = nn.Embed(c.max_position_embeddings, c.hidden_size, embedding_init=init,
                             name="position_embeddings")(jnp.arange(length))
        # Every token is in segment 0, so the token-type embedding is its row 0 for all.
        token_type = nn.Embed(c.type_vocab_size, c.hidden_size, embedding_init=init,
                              name="token_type_embeddings")(jnp.zeros((), jnp.int32))
        return _layer_norm(c, "LayerNorm")(words + token_type + positions[None])


class _Pooler(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        return jnp.tanh(_dense(self.config.hidden_size, "dense")(hidden[:, 0]))


class BertModel(nn.Module):
    """BERT's encoder; with ``config.add_pooler`` also its pooler."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> BertOutput:
        """Encodes token ids.

        Args:
          input_ids: [B, L] int token ids, L <= max_position_embeddings.
          attention_mask: [B, L], 1 at real tokens and 0 at padding; None means all real.

        Returns:
          The ``BertOutput`` (float32). Hidden states at padding are computed but meaningless.
        """
        c = self.config
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        mask = (attention_mask != 0)[:, None, None, :]  # keys only: bidirectional attention
        h = _Embeddings(c, name="embeddings")(input_ids)
        h = _Encoder(c, name="encoder")(h, mask)
        pooled = _Pooler(c, name="pooler")(h) if c.add_pooler else None
        return BertOutput(last_hidden_state=h, pooler_output=pooled)


def init_params(config: BertConfig, rng: jax.Array) -> dict[str, Any]:
    """Fresh parameters of ``BertModel(config)`` (call it under ``jax.jit`` or ``jax.eval_shape``)."""
    ids = jnp.zeros((1, min(2, config.max_position_embeddings)), jnp.int32)
    return BertModel(config).init(rng, ids)["params"]


def read_config(directory: Path, add_pooler: bool = True) -> BertConfig:
    """The ``BertConfig`` of ``directory/config.json`` (model_type "bert")."""
    path = directory / hf.CONFIG_FILE
    raw = hf.read_config_json(directory)
    if raw.get("model_type") not in MODEL_TYPES:
        raise TextEncoderError(f"{path}: model_type {raw.get('model_type')!r} is not a BERT model (expected 'bert')")
    return hf.config_fields(raw, BertConfig, _HF_DEFAULTS, path, add_pooler=add_pooler)


def _torch_names(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Tensors under ``BertModel``'s names: no ``bert.`` prefix, LayerNorm ``gamma``/``beta``
    (the names of the original TensorFlow checkpoints) as ``weight``/``bias``."""
    prefixed = any(k.startswith(_PREFIX) for k in weights)
    out = {}
    for name, value in weights.items():
        if prefixed:
            if not name.startswith(_PREFIX):
                continue  # a task head (cls.*, classifier.*): not part of the encoder
            name = name.removeprefix(_PREFIX)
        if name.endswith(".gamma") or name.endswith(".beta"):
            name = name.rsplit(".", 1)[0] + (".weight" if name.endswith(".gamma") else ".bias")
        out[name] = value
    return out


def params_from_hf(weights: dict[str, np.ndarray], config: BertConfig, source: str = "weights") -> dict:
    """Flax params of ``BertModel(config)`` from Hugging Face tensors (already under BertModel names).

    Raises:
      TextEncoderError: a tensor is missing or its shape does not match ``config``.
    """
    abstract = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    return hf.params_from_tensors(abstract, weights, hf.flax_to_torch_name, source=source, error=TextEncoderError)


def load_bert(name_or_path: str | Path) -> tuple[BertModel, dict, Path]:
    """Loads a Hugging Face BERT directory (``BertModel`` or a BERT with a task head) or hub id.

    Returns:
      (module, params, directory): params are float32 numpy arrays; the model has a pooler
      exactly when the weights hold ``pooler.dense.weight``.
    """
    directory = hf.resolve_directory(name_or_path)
    read_config(directory)  # a bad config is reported before the (larger) weights are read
    # position_ids is a buffer some checkpoints save, not a parameter.
    weights = _torch_names(hf.read_weights(directory, keep=lambda name: not name.endswith("position_ids")))
    config = read_config(directory, add_pooler=POOLER_WEIGHT in weights)
    return BertModel(config), params_from_hf(weights, config, source=hf.weights_source(directory)), directory
