"""The frozen text encoder interface: captions -> word and sentence embeddings.

Every encoder pads to a fixed ``max_length``, so the jitted encoder sees one shape per batch
size and never recompiles for longer or shorter captions. Its params are a separate argument
of a pure function, wrapped in ``stop_gradient``: they are never part of a trained state.
"""

from __future__ import annotations

import abc
import functools
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxgan.text import hf
from jaxgan.text.clip import ClipTextModel
from jaxgan.text.errors import TextEncoderError, TextEncoderNotFoundError

SHAPES_ENCODER = "shapes"
SHAPES_ENCODER_DIR = Path(__file__).resolve().parent.parent / "assets" / "shapes_text_encoder"


@flax.struct.dataclass
class TextEmbeddings:
    """What an encoder returns for a batch of B captions padded to L tokens."""

    words: jax.Array  # [B, L, D] float32, the last hidden state
    mask: jax.Array  # [B, L] bool, True at real tokens
    sentence: jax.Array  # [B, Ds] float32: text_embeds with a projection, else pooler_output


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


class ClipTextEncoder(TextEncoder):
    """A CLIP text model (Flax port) with its Hugging Face tokenizer."""

    def __init__(self, name: str, module: ClipTextModel, params: Any, tokenizer: Any, max_length: int):
        config = module.config
        if not 1 <= max_length <= config.max_position_embeddings:
            raise TextEncoderError(f"max_length {max_length} must be in [1, {config.max_position_embeddings}] "
                                   f"(the model's max_position_embeddings)")
        self.name, self.module, self.tokenizer, self.max_length = name, module, tokenizer, max_length
        self.word_dim, self.sentence_dim = config.hidden_size, config.sentence_dim
        self.params = jax.device_put(params)
        self.traces = 0  # how often encode_fn was traced: a recompile check for tests
        self.encode_fn = self._encode

    def _encode(self, params: Any, input_ids: jax.Array, attention_mask: jax.Array) -> TextEmbeddings:
        self.traces += 1  # runs at trace time only
        out = self.module.apply({"params": jax.lax.stop_gradient(params)}, input_ids, attention_mask)
        sentence = out.pooler_output if out.text_embeds is None else out.text_embeds
        return TextEmbeddings(words=out.last_hidden_state, mask=attention_mask != 0, sentence=sentence)

    def tokenize(self, captions: Sequence[str]) -> dict[str, np.ndarray]:
        tokens = self.tokenizer(check_captions(captions), padding="max_length", truncation=True,
                                max_length=self.max_length, return_tensors="np")
        return {k: np.asarray(tokens[k], np.int32) for k in ("input_ids", "attention_mask")}


def _load_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as e:  # transformers raises many kinds (OSError, ValueError, KeyError)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise TextEncoderError(f"cannot load the tokenizer of {directory}: {first}") from None
    if tokenizer.pad_token is None:
        # CLIP's own tokenizer pads with EOS; any id works since padding is masked.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_text_encoder(name_or_path: str = SHAPES_ENCODER, max_length: int | None = None) -> TextEncoder:
    """Loads a frozen text encoder.

    Args:
      name_or_path: "shapes" (the encoder shipped in ``jaxgan/assets``), a local Hugging Face
        directory of a CLIP text model, or a hub id.
      max_length: tokens per caption; default the smaller of the model's position count and
        the tokenizer's ``model_max_length``.

    Raises:
      TextEncoderError: (a ``ValueError``; ``TextEncoderNotFoundError`` is also a
        ``FileNotFoundError``) with a one-line message.
    """
    if name_or_path == SHAPES_ENCODER:
        if not (SHAPES_ENCODER_DIR / hf.CONFIG_FILE).is_file():
            raise TextEncoderNotFoundError(f"the shipped shapes encoder is missing from {SHAPES_ENCODER_DIR}; "
                                           "recreate it with python -m jaxgan.pretrain_text --out DIR")
        source = SHAPES_ENCODER_DIR
    else:
        source = name_or_path
    module, params, directory = hf.load_clip_text(source)
    tokenizer = _load_tokenizer(directory)
    if max_length is None:
        max_length = min(module.config.max_position_embeddings, int(tokenizer.model_max_length))
    return ClipTextEncoder(str(name_or_path), module, params, tokenizer, max_length)
