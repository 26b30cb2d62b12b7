"""The DAMSM text encoder: converted from the official file layout, it tokenises and encodes as
AttnGAN's ``RNN_ENCODER`` and DF-GAN's caption handling do (the PyTorch reference in benchmarks/)."""

import json
import os
import pickle
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package

from benchmarks import damsm_reference  # noqa: E402
from jaxgan import cli  # noqa: E402
from jaxgan.importers.damsm import convert_damsm  # noqa: E402
from jaxgan.importers.torch_files import ImportFileError  # noqa: E402
from jaxgan.text import TextEncoderError, damsm, load_text_encoder  # noqa: E402

WORDS = ("this bird has a red crown and black wings with white belly small beak the yellow "
         "grey long tail feathers bill is brown orange blue green short pointed s").split()
WORDTOIX = {"<end>": 0, **{w: i + 1 for i, w in enumerate(dict.fromkeys(WORDS))}}
CAPTIONS = [
    "This bird has a red crown.",  # upper case and punctuation
    "A small bird: zzyzx wings, qwerty belly!",  # unknown words are dropped
    # 28 known words: more than 18, so the encoder keeps the first 18
    "this bird has a red crown and black wings with white belly small beak the yellow grey long tail "
    "feathers bill is brown orange blue green short pointed",
    "the bird's beak",  # "bird's" -> "bird", "s"
    "Grey\ufffd\ufffdbill, café wings",  # the original's U+FFFD pair becomes a space; "café" -> "caf", unknown
]


def _official_files(tmp_path, seed=0):
    """A random RNN_ENCODER state dict and a captions pickle, as the release lays them out."""
    return damsm_reference.official_files(tmp_path, WORDTOIX, seed)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("damsm")
    reference, pth, vocab = _official_files(tmp_path)
    out = convert_damsm(pth, vocab, tmp_path / "encoder")
    return reference, load_text_encoder(str(out)), out


def test_directory_is_native_and_loads_as_damsm(converted):
    _, encoder, out = converted
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    config = json.loads((out / "config.json").read_text())
    assert config == {"model_type": "damsm", "vocab_size": len(WORDTOIX), "embedding_dim": 300,
                      "hidden_size": 256, "max_words": 18}
    assert json.loads((out / "vocab.json").read_text()) == WORDTOIX
    assert isinstance(encoder.module, damsm.DamsmTextModel)
    assert (encoder.max_length, encoder.word_dim, encoder.sentence_dim) == (18, 256, 256)


def test_token_ids_follow_the_original_rule(converted):
    _, encoder, _ = converted
    original = damsm_reference.tokenize(WORDTOIX, CAPTIONS)
    assert [len(c) for c in original] == [6, 5, 28, 4, 3]
    tokens = encoder.tokenize(CAPTIONS)
    for row, ids, mask in zip(original, tokens["input_ids"], tokens["attention_mask"]):
        kept = row[:18]
        np.testing.assert_array_equal(ids, kept + [0] * (18 - len(kept)))
        np.testing.assert_array_equal(mask, [1] * len(kept) + [0] * (18 - len(kept)))
    np.testing.assert_array_equal(encoder.overflows(CAPTIONS), [False, False, True, False, False])
    assert [encoder.tokenizer.convert_ids_to_tokens(i) for i in tokens["input_ids"][3][:4]] == \
        ["the", "bird", "s", "beak"]


def test_words_and_sentence_match_the_pytorch_reference(converted):
    reference, encoder, _ = converted
    ids = [row[:18] for row in damsm_reference.tokenize(WORDTOIX, CAPTIONS)]  # the same ids and cap_lens
    words_ref, sent_ref = damsm_reference.encode(reference, ids)
    out = encoder(CAPTIONS)
    steps = words_ref.shape[-1]  # pad_packed_sequence pads to the longest caption: 18 here
    assert steps == 18
    words = np.asarray(out.words)
    np.testing.assert_allclose(words, words_ref.transpose(0, 2, 1), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(out.sentence), sent_ref, atol=1e-5, rtol=0)
    assert np.abs(sent_ref).max() > 0.05  # the comparison is not of near-zero numbers
    # Padding is zero, as pad_packed_sequence leaves it, and the mask says where words are.
    lengths = np.array([len(r) for r in ids])
    np.testing.assert_array_equal(np.asarray(out.mask), np.arange(18)[None] < lengths[:, None])
    assert not np.any(words[~np.asarray(out.mask)])
    # The backward direction starts at each caption's own last word: its state there is one step
    # from zero, so a caption's embedding does not depend on the batch's padding length.
    alone = encoder(CAPTIONS[:1])
    np.testing.assert_allclose(np.asarray(alone.sentence[0]), np.asarray(out.sentence[0]), atol=1e-6)


def test_a_longer_max_length_reproduces_dfgan_sample_py(converted):
    reference, encoder, out_dir = converted
    # DF-GAN's sample.py keeps every known word: the 28-word caption in full.
    words_ref, sent_ref = damsm_reference.encode(reference, damsm_reference.tokenize(WORDTOIX, CAPTIONS))
    longer = load_text_encoder(str(out_dir), max_length=32)
    out = longer(CAPTIONS)
    np.testing.assert_allclose(np.asarray(out.words[:, :28]), words_ref.transpose(0, 2, 1), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(out.sentence), sent_ref, atol=1e-5, rtol=0)
    # The cut caption (first 18 words) is a different sentence from the whole one.
    assert np.abs(np.asarray(out.sentence[2]) - np.asarray(encoder(CAPTIONS[2:3]).sentence[0])).max() > 1e-3


def test_params_are_frozen(converted):
    _, encoder, _ = converted
    tokens = encoder.tokenize(CAPTIONS[:2])

    def total(params):
        out = encoder.encode_fn(params, jnp.asarray(tokens["input_ids"]), jnp.asarray(tokens["attention_mask"]))
        return out.sentence.sum() + out.words.sum()

    grads = jax.grad(total)(encoder.params)
    assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(grads))


def test_caption_without_a_known_word_is_a_one_line_error(converted):
    _, encoder, _ = converted
    with pytest.raises(TextEncoderError, match=r"caption 'Zzyzx\? Qwerty!' has no word in the DAMSM vocabulary"):
        encoder(["a red bird", "Zzyzx? Qwerty!"])


def test_fingerprint_follows_weights_and_length(converted, tmp_path):
    _, encoder, out = converted
    assert load_text_encoder(str(out)).fingerprint() == encoder.fingerprint()
    assert load_text_encoder(str(out), max_length=24).fingerprint() != encoder.fingerprint()
    _, pth, vocab = _official_files(tmp_path, seed=1)
    other = load_text_encoder(str(convert_damsm(pth, vocab, tmp_path / "other")))
    assert other.fingerprint() != encoder.fingerprint()


def test_missing_or_mismatched_tensors_are_listed_in_one_line(tmp_path):
    reference, _, vocab = _official_files(tmp_path)
    state = reference.state_dict()
    del state["rnn.bias_hh_l0_reverse"]
    state["module.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ImportFileError) as e:
        convert_damsm(tmp_path / "broken.pth", vocab, tmp_path / "out")
    message = str(e.value)
    assert "\n" not in message
    assert "2 differences" in message and "missing rnn.bias_hh_l0_reverse" in message and "unexpected extra" in message
    # A vocabulary of another dataset: the embedding has a row per word of the encoder's own.
    smaller = dict(list(WORDTOIX.items())[:-3])
    vocab.write_bytes(pickle.dumps([[], [], {}, smaller], protocol=2))
    torch.save(reference.state_dict(), tmp_path / "good.pth")
    with pytest.raises(ImportFileError, match=rf"encoder.weight has shape \({len(WORDTOIX)}, 300\), "
                                              rf"expected \({len(smaller)}, 300\)"):
        convert_damsm(tmp_path / "good.pth", vocab, tmp_path / "out")
    assert not (tmp_path / "out").exists()


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_cli_refuses_an_evil_vocabulary_and_a_used_out_dir(tmp_path, capsys):
    _, pth, vocab = _official_files(tmp_path)
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps([[], [], {}, {"a": 1}, _RunsCode()], protocol=2))
    argv = ["import", "damsm", "--text-encoder", str(pth), "--vocab", str(evil), "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "evil.pickle: unsafe or invalid pickle: refuses global" in err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    assert cli.main(["import", "damsm", "--text-encoder", str(pth), "--vocab", str(vocab), "--out", str(used)]) == 2
    assert "not an empty directory; refusing to overwrite" in capsys.readouterr().err
    assert cli.main(["import", "damsm", "--text-encoder", str(pth), "--vocab", str(vocab),
                     "--out", str(tmp_path / "new")]) == 0
    assert f"DAMSM text encoder, {len(WORDTOIX)} words" in capsys.readouterr().out
    assert (tmp_path / "new" / "model.safetensors").is_file()
