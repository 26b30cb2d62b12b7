"""A word-level tokenizer for small captioned datasets, in Hugging Face format.

A dataset like shapes has a vocabulary of a few dozen words, so one id per word is enough and
keeps the embedding table tiny. A modest list of common English words is added so that
free-form prompts ("a red ball near the top") are not all [UNK]: the encoder never saw
those words in context, but an unseen known word is better than every word mapping to one
id. The result is saved as tokenizer.json + tokenizer_config.json, which
``transformers.AutoTokenizer.from_pretrained`` loads as a fast tokenizer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "<|startoftext|>", "<|endoftext|>"
# Fixed ids: the pad id differs from EOS so that HF's pooling rule (first EOS position) and
# padding never collide, and EOS is not 2, so HF does not apply its legacy argmax rule.
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS)

COMMON_WORDS: tuple[str, ...] = tuple("""
a an the one two three this that these there here is are was be it its of in on at to from
with and or but not no near by above below under over beside next between around inside
outside into onto up down upper lower middle centre center side corner edge half part
top bottom left right front back far close little big tiny huge medium sized size large
small long short tall wide thin round flat colored coloured color colour bright dark light
pale deep red green blue yellow magenta cyan white orange black purple pink violet brown
gray grey gold silver teal navy lime shape object thing item figure form circle square
triangle rectangle ball box block dot disk disc ring star cube sphere pyramid oval
background image picture photo drawing painting scene view frame located placed sitting
standing shown drawn painted has have showing shows with only single lone plain empty
solid simple of some very quite
""".split())


def words_of(texts: Iterable[str]) -> list[str]:
    """The distinct lowercase words of ``texts`` (punctuation dropped), in first-seen order."""
    seen: dict[str, None] = {}
    for text in texts:
        for word in re.findall(r"\w+", text.lower()):
            seen.setdefault(word, None)
    return list(seen)


def build_word_tokenizer(words: Iterable[str]) -> Tokenizer:
    """A word-level ``tokenizers.Tokenizer`` that lowercases and adds BOS ... EOS.

    Args:
      words: the vocabulary (lowercased; duplicates and special tokens are dropped). Common
        punctuation marks are always added.

    Returns:
      The tokenizer; ids 0..3 are [PAD], [UNK], BOS, EOS.
    """

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in [w.lower() for w in words] + list(",.;:!?'-"):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    # Punctuation is split off each word so "position," and "position" share an id.
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])])
    return tok


def save_tokenizer(tokenizer: Tokenizer, directory: str | Path, max_length: int) -> None:
    """Writes tokenizer.json and a tokenizer_config.json that ``AutoTokenizer`` understands.

    ``max_length`` becomes ``model_max_length`` (the encoder's position count).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    # Written by hand rather than by transformers' save_pretrained, whose class name for this
    # tokenizer changes between major versions; "PreTrainedTokenizerFast" loads in both 4.x and 5.x.
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS,
              "unk_token": UNK, "pad_token": PAD, "model_max_length": max_length,
              "clean_up_tokenization_spaces": False}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
