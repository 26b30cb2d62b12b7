"""Frozen text encoders: Flax ports of CLIP's text tower, BERT and T5's encoder, a Hugging Face
directory loader (and a writer for CLIP), the encoder interface, and the word-level tokenizer
of the shipped shapes encoder.

    encoder = load_text_encoder()            # the shipped "shapes" encoder; also "minilm",
    out = encoder(["a small red circle in the top left"])   # or a Hugging Face directory
    out.words, out.mask, out.sentence         # [B, L, D], [B, L], [B, Ds]
    encoder.overflows(captions), encoder.fingerprint()
"""

from jaxgan.text.bert import BertConfig, BertModel, BertOutput, load_bert
from jaxgan.text.clip import ClipTextConfig, ClipTextModel, ClipTextOutput, init_params, pool_at_eos
from jaxgan.text.clip_hf import load_clip_text, save_clip_text
from jaxgan.text.encoder import (
                                 SHAPES_ENCODER_DIR,
                                 SUPPORTED_MODEL_TYPES,
                                 ClipTextEncoder,
                                 HFTextEncoder,
                                 TextEmbeddings,
                                 TextEncoder,
                                 check_captions,
                                 load_text_encoder,
)
from jaxgan.text.errors import TextEncoderError, TextEncoderNotFoundError
from jaxgan.text.pooling import Pooling
from jaxgan.text.t5 import T5Config, T5EncoderModel, T5EncoderOutput, load_t5

__all__ = [
    "BertConfig", "BertModel", "BertOutput", "load_bert",
    "ClipTextConfig", "ClipTextModel", "ClipTextOutput", "init_params", "pool_at_eos",
    "load_clip_text", "save_clip_text",
    "SHAPES_ENCODER_DIR", "SUPPORTED_MODEL_TYPES", "ClipTextEncoder", "HFTextEncoder", "TextEmbeddings",
    "TextEncoder", "check_captions", "load_text_encoder",
    "TextEncoderError", "TextEncoderNotFoundError", "Pooling",
    "T5Config", "T5EncoderModel", "T5EncoderOutput", "load_t5",
]
