"""Frozen text encoders and CLIP's towers: Flax ports of CLIP's text and image towers, BERT,
T5's encoder and AttnGAN's DAMSM LSTM, a Hugging Face directory loader (and writers for CLIP
directories), the encoder interface, and the word-level tokenizer of the shipped shapes encoder.

    encoder = load_text_encoder()            # the shipped "shapes" encoder; also "minilm",
    out = encoder(["a small red circle in the top left"])   # or a Hugging Face directory
    out.words, out.mask, out.sentence         # [B, L, D], [B, L], [B, Ds]
    encoder.overflows(captions), encoder.fingerprint()

    clip = load_clip("clip-vit-base-patch32")  # both towers of a CLIPModel directory, frozen
    pixels = to_pixel_values(images, clip.vision.config.image_size)   # differentiable
    out = clip.vision.apply(clip.vision.params, pixels, hidden_layers=(2, 5, 9))
"""

from jaxgan.text.bert import BertConfig, BertModel, BertOutput, load_bert
from jaxgan.text.clip import ClipTextConfig, ClipTextModel, ClipTextOutput, init_params, pool_at_eos
from jaxgan.text.clip_hf import ClipTowers, FrozenTower, load_clip, load_clip_text, save_clip, save_clip_text
from jaxgan.text.clip_vision import ClipVisionConfig, ClipVisionModel, ClipVisionOutput, patch_grid, to_pixel_values
from jaxgan.text.damsm import DamsmConfig, DamsmTextModel, DamsmTokenizer, load_damsm, save_damsm
from jaxgan.text.encoder import (
                                 SHAPES_ENCODER_DIR,
                                 SUPPORTED_MODEL_TYPES,
                                 ClipTextEncoder,
                                 DamsmTextEncoder,
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
    "ClipTowers", "FrozenTower", "load_clip", "load_clip_text", "save_clip", "save_clip_text",
    "ClipVisionConfig", "ClipVisionModel", "ClipVisionOutput", "patch_grid", "to_pixel_values",
    "DamsmConfig", "DamsmTextModel", "DamsmTokenizer", "load_damsm", "save_damsm",
    "SHAPES_ENCODER_DIR", "SUPPORTED_MODEL_TYPES", "ClipTextEncoder", "DamsmTextEncoder", "HFTextEncoder",
    "TextEmbeddings", "TextEncoder", "check_captions", "load_text_encoder",
    "TextEncoderError", "TextEncoderNotFoundError", "Pooling",
    "T5Config", "T5EncoderModel", "T5EncoderOutput", "load_t5",
]
