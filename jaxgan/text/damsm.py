"""A Flax (linen) port of AttnGAN's DAMSM text encoder (Xu et al., CVPR 2018, arXiv:1711.10485).

DAMSM's text half (``RNN_ENCODER`` in taoxugit/AttnGAN ``code/model.py``, reused unchanged by
DF-GAN's ``code/models/DAMSM.py``) is a word embedding (``ninput`` 300) followed by one
bidirectional LSTM layer of ``nhidden // 2`` units per direction (256 in total for the released
CUB and COCO encoders). Captions are packed (``pack_padded_sequence``), so the forward direction
reads words 0..n-1 and the backward direction starts at each caption's own last word n-1;
padding never enters either. The original returns ``words_emb`` [B, nhidden, T] (the LSTM output,
zero past each caption's length) and ``sent_emb`` [B, nhidden] (the final hidden state of the
forward direction, then of the backward one); this port returns the words as [B, T, nhidden].
The embedding's dropout and the LSTM's inter-layer dropout do nothing at inference (one layer,
eval mode), so there is none here.

Parameters keep PyTorch's names and layouts (``encoder.weight``, ``rnn.weight_ih_l0``, ...,
``rnn.bias_hh_l0_reverse``; LSTM gates in PyTorch's order i, f, g, o), so a jaxgan DAMSM
directory stores exactly the tensors of the official state dict.

A DAMSM directory (what ``jaxgan import damsm`` writes) holds:

- ``config.json``: ``{"model_type": "damsm", "vocab_size", "embedding_dim", "hidden_size", "max_words"}``;
- ``model.safetensors``: the tensors under the official names;
- ``vocab.json``: the word -> index map (AttnGAN's ``wordtoix``; index 0 is ``<end>``, the padding).

Tokenisation is the original's (AttnGAN ``datasets.py`` ``load_captions``/``build_dictionary``,
DF-GAN ``lib/utils.py`` ``tokenize``): replace "\\ufffd\\ufffd" with a space, lower-case, take
the runs of ``\\w`` characters (nltk's ``RegexpTokenizer(r'\\w+')``), drop non-ASCII characters
from each, keep the words the vocabulary has (others are dropped, not mapped to an unknown
token), pad with index 0. A caption with more than ``max_words`` known words keeps its first
``max_words``: see docs/text-encoders.md for why and what the originals do.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxgan.text import hf
from jaxgan.text.errors import TextEncoderError

MODEL_TYPES = ("damsm",)
VOCAB_FILE = "vocab.json"
# AttnGAN's build_dictionary puts '<end>' at index 0; captions are padded with it.
PAD_WORD, PAD_ID = "<end>", 0
# The original's cfg.TEXT.WORDS_NUM (AttnGAN miscc/config.py; DF-GAN cfg/*.yml).
WORDS_NUM = 18
_WORD = re.compile(r"\w+")
# The fingerprint's description of the rule below: bump it when the rule changes.
TOKENIZER_RULE = "damsm-words/1: replace \\ufffd\\ufffd, lower, \\w+, ascii-only, known words, first max_length"


@dataclasses.dataclass(frozen=True)
class DamsmConfig:
    """The sizes of ``RNN_ENCODER``: ``ntoken``, ``ninput``, ``nhidden`` (both directions) and
    the caption length the tokenizer pads to by default (``cfg.TEXT.WORDS_NUM``)."""

    vocab_size: int
    embedding_dim: int = 300
    hidden_size: int = 256
    max_words: int = WORDS_NUM

    def __post_init__(self):
        for name in ("vocab_size", "embedding_dim", "hidden_size", "max_words"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % 2:
            raise ValueError(f"hidden_size {self.hidden_size} must be even (two LSTM directions)")

    @property
    def sentence_dim(self) -> int:
        """Width of the sentence embedding (both directions' final states)."""
        return self.hidden_size


@flax.struct.dataclass
class DamsmOutput:
    """The original's outputs, words transposed to [B, T, D]."""

    words: jax.Array  # [B, T, hidden_size], zero past each caption's length
    sentence: jax.Array  # [B, hidden_size]: [forward final h, backward final h]


def _torch_uniform(bound: float) -> Any:
    """PyTorch's LSTM (and AttnGAN's embedding) init: U(-bound, bound)."""
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class _BiLSTM(nn.Module):
    """``nn.LSTM(E, H, 1, batch_first=True, bidirectional=True)`` over packed sequences."""

    features: int  # H, per direction

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        h_dim, (batch, steps, e_dim) = self.features, x.shape
        init = _torch_uniform(h_dim ** -0.5)
        # Position t is a real word of caption b iff t < lengths[b]: what packing feeds the LSTM.
        valid = (jnp.arange(steps)[None, :] < lengths[:, None]).T[:, :, None]  # [T, B, 1]

        def direction(suffix: str, reverse: bool) -> tuple[jax.Array, jax.Array]:
            w_ih = self.param(f"weight_ih_l0{suffix}", init, (4 * h_dim, e_dim))
            w_hh = self.param(f"weight_hh_l0{suffix}", init, (4 * h_dim, h_dim))
            b_ih = self.param(f"bias_ih_l0{suffix}", init, (4 * h_dim,))
            b_hh = self.param(f"bias_hh_l0{suffix}", init, (4 * h_dim,))
            # Input projections of every step at once; only h @ W_hh is sequential.
            inputs = jnp.einsum("bte,ge->tbg", x, w_ih, precision=jax.lax.Precision.HIGHEST) + (b_ih + b_hh)

            def step(carry: tuple[jax.Array, jax.Array], xs: tuple[jax.Array, jax.Array]):
                h, c = carry
                gates_x, real = xs
                gates = gates_x + jnp.dot(h, w_hh.T, precision=jax.lax.Precision.HIGHEST)
                i, f, g, o = jnp.split(gates, 4, axis=-1)  # PyTorch's gate order
                c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
                h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
                # Padding leaves the state as it is, so the backward pass starts from zeros at
                # the caption's last word and the forward pass ends holding it.
                return ((jnp.where(real, h_new, h), jnp.where(real, c_new, c)),
                        jnp.where(real, h_new, 0.0))

            zeros = jnp.zeros((batch, h_dim), x.dtype)
            (h_last, _), outputs = jax.lax.scan(step, (zeros, zeros), (inputs, valid), reverse=reverse)
            return outputs.swapaxes(0, 1), h_last

        forward, h_forward = direction("", reverse=False)
        backward, h_backward = direction("_reverse", reverse=True)
        return jnp.concatenate([forward, backward], -1), jnp.concatenate([h_forward, h_backward], -1)


class DamsmTextModel(nn.Module):
    """AttnGAN's ``RNN_ENCODER`` (LSTM, bidirectional, one layer) at inference."""

    config: DamsmConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, lengths: jax.Array) -> DamsmOutput:
        """Encodes padded word ids.

        Args:
          input_ids: [B, T] int word ids, each caption's words first, then padding.
          lengths: [B] int, each caption's word count (at least 1, at most T).

        Returns:
          ``DamsmOutput``: words [B, T, hidden_size] (zero at padding) and sentence [B, hidden_size].
        """
        c = self.config
        emb = nn.Embed(c.vocab_size, c.embedding_dim, embedding_init=_torch_uniform(0.1), name="encoder")(input_ids)
        words, sentence = _BiLSTM(c.hidden_size // 2, name="rnn")(emb, jnp.asarray(lengths, jnp.int32))
        return DamsmOutput(words=words, sentence=sentence)


def init_params(config: DamsmConfig, rng: jax.Array) -> dict[str, Any]:
    """Fresh parameters of ``DamsmTextModel(config)``, initialised as PyTorch initialises them."""
    return DamsmTextModel(config).init(rng, jnp.ones((1, 2), jnp.int32), jnp.array([2]))["params"]


def torch_name(path: tuple[str, ...]) -> str:
    """The state-dict name of a flattened param path: ``("rnn", "weight_ih_l0")`` ->
    ``rnn.weight_ih_l0``, the embedding table ``("encoder", "embedding")`` -> ``encoder.weight``."""
    return ".".join(path[:-1] + (hf.LEAF_NAMES.get(path[-1], path[-1]),))


def expected_shapes(config: DamsmConfig) -> dict[str, tuple[int, ...]]:
    """State-dict name -> shape of ``RNN_ENCODER`` with ``config``'s sizes (the official layout)."""
    abstract = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    return {torch_name(path): tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(abstract).items()}


class DamsmTokenizer:
    """The original's caption -> word ids rule over a ``wordtoix`` vocabulary.

    Attributes:
      vocab: word -> index (``<end>`` is 0, the padding).
    """

    def __init__(self, vocab: Mapping[str, int]):
        self.vocab = dict(vocab)
        self._words = {index: word for word, index in self.vocab.items()}

    def words(self, caption: str) -> list[str]:
        """Every vocabulary word of ``caption``, in order (no length limit)."""
        tokens = _WORD.findall(caption.replace("\ufffd\ufffd", " ").lower())
        ascii_only = (t.encode("ascii", "ignore").decode("ascii") for t in tokens)
        return [t for t in ascii_only if t and t in self.vocab]

    def ids(self, caption: str) -> list[int]:
        """The indices of ``words(caption)``."""
        return [self.vocab[w] for w in self.words(caption)]

    def convert_ids_to_tokens(self, index: int) -> str:
        """The word of an index (what ``TrainedGenerator.attention`` labels its maps with)."""
        return self._words.get(int(index), "<unk>")

    def description(self) -> str:
        """Canonical JSON of the rule and the vocabulary (for an encoder's fingerprint)."""
        return json.dumps({"rule": TOKENIZER_RULE, "vocab": sorted(self.vocab.items())}, ensure_ascii=True)


def read_config(directory: Path) -> DamsmConfig:
    """The ``DamsmConfig`` of ``directory/config.json`` (model_type "damsm")."""
    path = directory / hf.CONFIG_FILE
    raw = hf.read_config_json(directory)
    if raw.get("model_type") not in MODEL_TYPES:
        raise TextEncoderError(f"{path}: model_type {raw.get('model_type')!r} is not a DAMSM encoder "
                               "(expected 'damsm')")
    if "vocab_size" not in raw:
        raise TextEncoderError(f"{path}: no vocab_size")
    return hf.config_fields(raw, DamsmConfig, {}, path)


def check_vocab(vocab: Any, vocab_size: int | None, source: str) -> dict[str, int]:
    """``vocab`` as a word -> index dict, or a one-line ``TextEncoderError`` naming ``source``:
    every key a string, every index an int in [0, vocab_size) (``None``: any index >= 0)."""
    if not isinstance(vocab, Mapping):
        raise TextEncoderError(f"{source}: the vocabulary is a {type(vocab).__name__}, not a word -> index map")
    for word, index in vocab.items():
        if not isinstance(word, str) or not isinstance(index, int) or isinstance(index, bool):
            raise TextEncoderError(f"{source}: vocabulary entry {word!r}: {index!r} is not a word and an index")
        if index < 0 or (vocab_size is not None and index >= vocab_size):
            raise TextEncoderError(f"{source}: word {word!r} has index {index}, outside the embedding's "
                                   f"{vocab_size} rows")
    return dict(vocab)


def save_damsm(directory: str | Path, config: DamsmConfig, tensors: Mapping[str, np.ndarray],
               vocab: Mapping[str, int]) -> Path:
    """Writes a DAMSM directory: config.json, model.safetensors (``tensors`` under the official
    state-dict names, float32) and vocab.json. Returns the directory.

    Raises:
      TextEncoderError: a tensor is missing or mis-shaped for ``config``, or the vocabulary is
        not a word -> index map within the embedding.
    """
    # safetensors is a dependency of the Hugging Face loaders; it is only needed when writing.
    from safetensors.numpy import save_file

    directory = Path(directory)
    expected = expected_shapes(config)
    for name, shape in expected.items():
        if name not in tensors or tuple(np.shape(tensors[name])) != shape:
            got = "missing" if name not in tensors else f"shape {tuple(np.shape(tensors[name]))}"
            raise TextEncoderError(f"DAMSM tensor {name}: {got}, expected shape {shape}")
    vocab = check_vocab(vocab, config.vocab_size, "vocabulary")
    directory.mkdir(parents=True, exist_ok=True)
    config_json = {"model_type": MODEL_TYPES[0], **dataclasses.asdict(config)}
    (directory / hf.CONFIG_FILE).write_text(json.dumps(config_json, indent=2) + "\n")
    save_file({name: np.ascontiguousarray(tensors[name], np.float32) for name in expected},
              str(directory / hf.WEIGHTS_FILE))
    (directory / VOCAB_FILE).write_text(json.dumps(vocab, indent=0, sort_keys=True, ensure_ascii=True) + "\n")
    return directory


def load_damsm(directory: str | Path) -> tuple[DamsmTextModel, dict, DamsmTokenizer]:
    """Loads a DAMSM directory written by ``save_damsm`` (no torch, no pickle).

    Returns:
      (module, params, tokenizer): params are float32 numpy arrays.

    Raises:
      TextEncoderError: (``TextEncoderNotFoundError`` for a missing file) a bad config, a
        missing or mis-shaped tensor, or a vocabulary that is not a word -> index map.
    """
    directory = Path(directory)
    config = read_config(directory)
    abstract = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    params = hf.params_from_tensors(abstract, hf.read_weights(directory), torch_name,
                                    source=hf.weights_source(directory), error=TextEncoderError)
    vocab = check_vocab(hf.read_json(directory / VOCAB_FILE), config.vocab_size, str(directory / VOCAB_FILE))
    return DamsmTextModel(config), params, DamsmTokenizer(vocab)
