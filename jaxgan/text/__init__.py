"""Frozen text encoders: a Flax port of CLIP's text tower, a Hugging Face loader and writer,
the encoder interface, and the word-level tokenizer of the shipped shapes encoder.

    encoder = load_text_encoder()            # the shipped "shapes" encoder
    out = encoder(["a small red circle in the top left"])
    out.words, out.mask, out.sentence         # [B, L, D], [B, L], [B, Ds]
"""

from jaxgan.text.clip import ClipTextConfig, ClipTextModel, ClipTextOutput, init_params, pool_at_eos
from jaxgan.text.encoder import (SHAPES_ENCODER_DIR, ClipTextEncoder, TextEmbeddings, TextEncoder,
                                 check_captions, load_text_encoder)
from jaxgan.text.errors import TextEncoderError, TextEncoderNotFoundError
from jaxgan.text.hf import load_clip_text, save_clip_text

__all__ = [
    "ClipTextConfig", "ClipTextModel", "ClipTextOutput", "init_params", "pool_at_eos",
    "SHAPES_ENCODER_DIR", "ClipTextEncoder", "TextEmbeddings", "TextEncoder", "check_captions",
    "load_text_encoder", "TextEncoderError", "TextEncoderNotFoundError", "load_clip_text",
    "save_clip_text",
]
