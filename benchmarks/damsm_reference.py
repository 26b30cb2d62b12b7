"""A PyTorch reference of AttnGAN's DAMSM text encoder and of DF-GAN's caption handling.

Written from the published definitions (taoxugit/AttnGAN ``code/model.py`` ``RNN_ENCODER`` with
``cfg.RNN_TYPE = 'LSTM'``; tobran/DF-GAN ``code/lib/utils.py`` ``tokenize``,
``sort_example_captions``, ``encode_tokens``, ``rm_sort``), so that its ``state_dict`` has the
official file layout and its outputs are what the released code computes. Used only by the
parity tests (``tests/test_text_damsm.py``, ``tests/test_dfgan_import.py``): nothing under ``jaxgan/`` imports torch.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class RNNEncoder(nn.Module):
    """``RNN_ENCODER(ntoken, ninput=300, drop_prob=0.5, nhidden=256, nlayers=1, bidirectional=True)``."""

    def __init__(self, ntoken: int, ninput: int = 300, nhidden: int = 256, drop_prob: float = 0.5):
        super().__init__()
        self.nhidden = nhidden // 2  # per direction
        self.encoder = nn.Embedding(ntoken, ninput)
        self.drop = nn.Dropout(drop_prob)
        # One layer: the LSTM's dropout argument acts between layers only (torch warns about it).
        self.rnn = nn.LSTM(ninput, self.nhidden, 1, batch_first=True, bidirectional=True)
        self.encoder.weight.data.uniform_(-0.1, 0.1)  # init_weights

    def init_hidden(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(2, batch, self.nhidden)
        return zeros, zeros.clone()

    def forward(self, captions: torch.Tensor, cap_lens: torch.Tensor,
                hidden: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(words_emb [B, nhidden, max(cap_lens)], sent_emb [B, nhidden]) of captions sorted by
        decreasing length, as the original."""
        emb = self.drop(self.encoder(captions))
        packed = pack_padded_sequence(emb, cap_lens.tolist(), batch_first=True)
        output, (h, _) = self.rnn(packed, hidden)
        output = pad_packed_sequence(output, batch_first=True)[0]
        words_emb = output.transpose(1, 2)
        sent_emb = h.transpose(0, 1).contiguous().view(-1, self.nhidden * 2)
        return words_emb, sent_emb


def tokenize(wordtoix: Mapping[str, int], sentences: Sequence[str]) -> list[list[int]]:
    """DF-GAN's ``lib/utils.py`` ``tokenize`` on sentences instead of a file's lines (nltk's
    ``RegexpTokenizer(r'\\w+').tokenize`` is ``re.findall(r'\\w+', text)``): no length limit."""
    captions = []
    for sent in sentences:
        sent = sent.replace("\ufffd\ufffd", " ")
        tokens = re.findall(r"\w+", sent.lower())
        rev = []
        for t in tokens:
            t = t.encode("ascii", "ignore").decode("ascii")
            if len(t) > 0 and t in wordtoix:
                rev.append(wordtoix[t])
        captions.append(rev)
    return captions


@torch.no_grad()
def encode(model: RNNEncoder, captions: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """DF-GAN's ``prepare_sample_data``: pad to the longest caption, sort by decreasing length,
    encode, undo the sort. Returns (words_emb [B, nhidden, T], sent_emb [B, nhidden]) in input order."""
    model.eval()
    cap_lens = np.array([len(c) for c in captions])
    order = np.argsort(cap_lens)[::-1]
    ids = np.zeros((len(captions), cap_lens.max()), np.int64)
    for row, index in enumerate(order):
        ids[row, :cap_lens[index]] = captions[index]
    words, sent = model(torch.from_numpy(ids), torch.from_numpy(cap_lens[order].copy()),
                        model.init_hidden(len(captions)))
    unsorted_words, unsorted_sent = torch.empty_like(words), torch.empty_like(sent)
    unsorted_words[torch.from_numpy(order.copy())] = words
    unsorted_sent[torch.from_numpy(order.copy())] = sent
    return unsorted_words.numpy(), unsorted_sent.numpy()


def official_files(out_dir: str | Path, wordtoix: Mapping[str, int], seed: int = 0,
                   name: str = "text_encoder200.pth") -> tuple[RNNEncoder, Path, Path]:
    """A random ``RNNEncoder(len(wordtoix))`` and its release files in ``out_dir``: the state dict
    (``torch.save(text_encoder.state_dict())``, as AttnGAN's ``pretrain_DAMSM.py``) and the
    captions pickle ``[train_captions, test_captions, ixtoword, wordtoix]`` (protocol 2, as
    Python 2 wrote it). Returns (module, state-dict path, pickle path)."""
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    reference = RNNEncoder(len(wordtoix))
    pth = out_dir / name
    torch.save(reference.state_dict(), pth)
    vocab = out_dir / "captions_DAMSM.pickle"
    ixtoword = {i: w for w, i in wordtoix.items()}
    vocab.write_bytes(pickle.dumps([[[1, 2, 3]], [[4, 5]], ixtoword, dict(wordtoix)], protocol=2))
    return reference, pth, vocab
