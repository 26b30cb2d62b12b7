"""Sentence embeddings from token states: the pooling rules and sentence-transformers' config.

sentence-transformers (Reimers & Gurevych, 2019, "Sentence-BERT", arXiv:1908.10084) stores its
recipe beside the transformer: ``modules.json`` lists the modules in order (Transformer,
Pooling, optionally Normalize) and ``1_Pooling/config.json`` says which pooling. This module
reads that recipe and computes it; it knows nothing about which transformer came before.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxgan.text import hf
from jaxgan.text.errors import TextEncoderError

MODULES_FILE = "modules.json"
SENTENCE_BERT_CONFIG = "sentence_bert_config.json"
# "model": the model's own pooled output (CLIP's projected EOS state, BERT's pooler).
MODES = ("model", "cls", "mean", "max", "mean_sqrt_len")
_ST = "sentence_transformers.models."
# sentence-transformers' Pooling config keys -> our modes.
_ST_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
             "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len"}


@dataclasses.dataclass(frozen=True)
class Pooling:
    """How token states become one sentence vector; ``normalize`` scales it to unit L2 norm."""

    mode: str = "mean"
    normalize: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise TextEncoderError(f"unsupported pooling mode {self.mode!r}; supported: {', '.join(MODES)}")


def pool(pooling: Pooling, hidden: jax.Array, mask: jax.Array, own: jax.Array | None = None) -> jax.Array:
    """The sentence embedding of each row.

    Args:
      pooling: the rule.
      hidden: [B, L, D] last hidden states.
      mask: [B, L], nonzero at real tokens (padding never contributes).
      own: [B, Ds] the model's own pooled output; required for mode "model".

    Returns:
      [B, D] (or [B, Ds] for "model"), float32.
    """
    if pooling.mode == "model":
        if own is None:
            raise TextEncoderError("pooling mode 'model' needs a model with its own pooled output")
        out = own
    elif pooling.mode == "cls":
        out = hidden[:, 0]
    else:
        real = (mask != 0)[..., None]
        if pooling.mode == "max":
            # sentence-transformers fills padding with -1e9 rather than -inf: same result, never inf.
            out = jnp.where(real, hidden, -1e9).max(axis=1)
        else:
            total = jnp.where(real, hidden, 0).sum(axis=1)
            # The clamp only matters for an all-padding row, which then pools to zeros, not NaN.
            count = jnp.maximum(real.sum(axis=1).astype(hidden.dtype), 1e-9)
            out = total / (count if pooling.mode == "mean" else jnp.sqrt(count))
    if pooling.normalize:
        out = out / jnp.maximum(jnp.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out


def is_sentence_transformers(directory: Path) -> bool:
    """Whether ``directory`` is a sentence-transformers model (it has ``modules.json``)."""
    return (directory / MODULES_FILE).is_file()


def read_sentence_transformers(directory: Path, default: Pooling) -> tuple[Pooling, int | None]:
    """The pooling of a sentence-transformers directory and its ``max_seq_length``.

    Without ``modules.json`` this is ``(default, None)``. Supported module lists are
    Transformer, Pooling and an optional Normalize; anything else (Dense, a second
    transformer) changes the embedding and is refused, naming the module.
    """
    if not is_sentence_transformers(directory):
        return default, None
    modules = hf.read_json(directory / MODULES_FILE)
    if not isinstance(modules, list):
        raise TextEncoderError(f"{directory / MODULES_FILE} is not a JSON list")
    kinds = [str(m.get("type", "")).removeprefix(_ST) for m in modules]
    for kind in kinds:
        if kind not in ("Transformer", "Pooling", "Normalize"):
            raise TextEncoderError(f"{directory / MODULES_FILE}: module {kind!r} is not supported "
                                   "(supported: Transformer, Pooling, Normalize)")
    mode = default.mode
    pooling_module = next((m for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
    if pooling_module is not None:
        config = hf.read_json(directory / pooling_module.get("path", "1_Pooling") / hf.CONFIG_FILE)
        modes = [ours for key, ours in _ST_MODES.items() if config.get(key)]
        others = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k not in _ST_MODES]
        if len(modes) != 1 or others:
            chosen = modes + [k.removeprefix("pooling_mode_") for k in others]
            raise TextEncoderError(f"{directory / pooling_module.get('path', '')}: pooling {chosen} is not "
                                   "supported (exactly one of cls, mean, max, mean_sqrt_len)")
        mode = modes[0]
    max_seq_length = None
    if (directory / SENTENCE_BERT_CONFIG).is_file():
        max_seq_length = hf.read_json(directory / SENTENCE_BERT_CONFIG).get("max_seq_length")
    return Pooling(mode, normalize="Normalize" in kinds), (int(max_seq_length) if max_seq_length else None)
