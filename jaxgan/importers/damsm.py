"""Converting AttnGAN's released DAMSM text encoder into a jaxgan DAMSM directory.

The release (AttnGAN's ``DAMSMencoders/``, the encoders DF-GAN reuses) has two files:

- ``text_encoder*.pth`` (``text_encoder200.pth`` for CUB, ``text_encoder100.pth`` for COCO):
  ``torch.save(text_encoder.state_dict())`` of ``RNN_ENCODER`` (AttnGAN ``pretrain_DAMSM.py``),
  a flat state dict ``encoder.weight`` [ntoken, 300] and ``rnn.{weight_ih,weight_hh,bias_ih,
  bias_hh}_l0`` plus their ``_reverse`` twins;
- the captions pickle (``captions.pickle``, DF-GAN's ``captions_DAMSM.pickle``):
  ``[train_captions, test_captions, ixtoword, wordtoix]``; DF-GAN's ``sample.py`` builds the
  encoder with ``ntoken = len(wordtoix)``.

``convert_damsm`` reads both without running code from them (``torch_files``), checks that the
state dict has exactly the tensors ``RNN_ENCODER(len(wordtoix))`` has, and writes config.json,
model.safetensors and vocab.json, which ``load_text_encoder`` reads with neither torch nor pickle.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from jaxgan.importers.torch_files import (
    ImportFileError,
    check_state_dict,
    load_plain_pickle,
    load_torch_file,
    state_dict_from,
)
from jaxgan.text import damsm
from jaxgan.text.errors import TextEncoderError

# Index of wordtoix in the captions pickle [train_captions, test_captions, ixtoword, wordtoix].
WORDTOIX = 3


def read_vocabulary(path: str | Path) -> dict[str, int]:
    """``wordtoix`` of an AttnGAN/DF-GAN captions pickle, read with the restricted unpickler.

    Raises:
      ImportFileError: the file is unsafe or unreadable, or not of the captions-pickle layout.
    """
    obj = load_plain_pickle(path)
    if not isinstance(obj, (list, tuple)) or len(obj) <= WORDTOIX or not isinstance(obj[WORDTOIX], Mapping):
        what = f"a {len(obj)}-item {type(obj).__name__}" if isinstance(obj, (list, tuple)) else type(obj).__name__
        raise ImportFileError(f"{path}: expected [train_captions, test_captions, ixtoword, wordtoix], got {what}")
    try:
        # Indices are checked against the embedding once its size is known (convert_damsm).
        return damsm.check_vocab(obj[WORDTOIX], None, str(path))
    except TextEncoderError as e:
        raise ImportFileError(str(e)) from None


def _sizes(tensors: Mapping[str, np.ndarray], vocab_size: int) -> damsm.DamsmConfig:
    """The config the file's own widths imply (300 and 256 for every release), so that a file
    of other widths is checked against itself and a missing tensor is named, not a KeyError."""
    embedding = tensors.get("encoder.weight")
    recurrent = tensors.get("rnn.weight_hh_l0")
    embedding_dim = int(embedding.shape[1]) if embedding is not None and embedding.ndim == 2 else 300
    per_direction = int(recurrent.shape[1]) if recurrent is not None and recurrent.ndim == 2 else 128
    return damsm.DamsmConfig(vocab_size=vocab_size, embedding_dim=embedding_dim, hidden_size=2 * per_direction)


def convert_damsm(text_encoder: str | Path, vocab: str | Path, out_dir: str | Path) -> Path:
    """Writes a jaxgan DAMSM directory from the official ``text_encoder*.pth`` and captions pickle.

    Args:
      text_encoder: the ``RNN_ENCODER`` state dict (a DataParallel ``module.`` prefix is dropped).
      vocab: the captions pickle whose ``wordtoix`` (item 3) the encoder was trained with.
      out_dir: a new or empty directory.

    Returns:
      ``out_dir``, which ``jaxgan.text.load_text_encoder`` loads.

    Raises:
      ImportFileError: torch is missing; a file is missing, unsafe or of another layout; a
        tensor is missing, unexpected or mis-shaped for ``len(wordtoix)`` words (one line listing
        the first differences); ``out_dir`` is a file or a non-empty directory.

    Example:
        convert_damsm("text_encoder200.pth", "captions_DAMSM.pickle", "encoders/damsm_cub")
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ImportFileError(f"{out_dir} already exists and is not an empty directory; refusing to overwrite it")
    wordtoix = read_vocabulary(vocab)
    tensors = state_dict_from(load_torch_file(text_encoder), text_encoder)
    config = _sizes(tensors, len(wordtoix))
    check_state_dict(damsm.expected_shapes(config), tensors,
                     f"{text_encoder} (RNN_ENCODER with {len(wordtoix)} words from {Path(vocab).name})")
    try:
        return damsm.save_damsm(out_dir, config, tensors, wordtoix)
    except TextEncoderError as e:  # a vocabulary index beyond the embedding
        raise ImportFileError(str(e)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``jaxgan import damsm``."""
    parser.add_argument("--text-encoder", required=True, type=Path, metavar="FILE.pth",
                        help="the official RNN_ENCODER state dict, e.g. text_encoder200.pth (CUB)")
    parser.add_argument("--vocab", required=True, type=Path, metavar="CAPTIONS.pickle",
                        help="the captions pickle holding wordtoix (captions.pickle / captions_DAMSM.pickle)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="a new or empty directory for the jaxgan DAMSM encoder")


def run(args: argparse.Namespace) -> int:
    """``jaxgan import damsm``: converts, then says what it wrote."""
    out = convert_damsm(args.text_encoder, args.vocab, args.out)
    config = damsm.read_config(out)
    print(f"wrote {out}: DAMSM text encoder, {config.vocab_size} words, {config.hidden_size}-d words and "
          f"sentence; use it with --set text.encoder={out}")
    return 0

