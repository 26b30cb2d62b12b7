"""Parity of the Flax T5 encoder port with transformers' PyTorch T5EncoderModel (relu and
gated-gelu feed-forwards, a full T5 checkpoint, mT5), the encoder with a tokenizer, and errors."""

import json

import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file
from transformers.models.t5.modeling_t5 import T5Attention

from jaxgan.text import Pooling, T5EncoderModel, TextEncoderError, load_t5, load_text_encoder
from jaxgan.text.t5 import relative_position_buckets

# Measured: at most 1.5e-6 (float32 on CPU).
TOLERANCE = 1e-5
VOCAB = 100
# Longer than relative_attention_max_distance (128): exact, log-spaced and clamped buckets all occur.
LENGTH = 140
WORDS = "a small red bird with black wings man riding motorcycle on road".split()


def _config(feed_forward_proj, **overrides):
    fields = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                  feed_forward_proj=feed_forward_proj, decoder_start_token_id=0)
    return {**fields, **overrides}


def _save(directory, model):
    model.eval().save_pretrained(directory)
    vocab = ([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("▁" + w, -1.0 - i) for i, w in enumerate(WORDS)]
             + [("▁", -20.0)] + [(c, -30.0) for c in "abcdefghijklmnopqrstuvwxyz"])
    transformers.T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=30).save_pretrained(directory)
    return model


def _ids(seed=0):
    """Rows of random ids ending in </s> (id 1), then padding, at lengths LENGTH, 60 and 5."""
    ids = np.random.default_rng(seed).integers(3, VOCAB, (3, LENGTH))
    mask = np.ones_like(ids)
    for row, length in enumerate((LENGTH, 60, 5)):
        ids[row, length - 1] = 1
        ids[row, length:], mask[row, length:] = 0, 0
    return ids, mask


def _torch_hidden(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()


def _max_error_at_real_tokens(words, expected, mask):
    real = np.asarray(mask, bool)
    return float(np.abs(np.asarray(words)[real] - expected[real]).max())


@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (16, 20), (64, 50)])
def test_relative_position_buckets_match_hugging_face(num_buckets, max_distance):
    position = torch.arange(LENGTH)
    expected = T5Attention._relative_position_bucket(position[None, :] - position[:, None], bidirectional=True,
                                                     num_buckets=num_buckets, max_distance=max_distance)
    assert (relative_position_buckets(LENGTH, num_buckets, max_distance) == expected.numpy()).all()


@pytest.mark.parametrize("feed_forward_proj,model_class", [
    ("relu", transformers.T5EncoderModel),
    ("gated-gelu", transformers.T5EncoderModel),
    ("gated-gelu", transformers.T5ForConditionalGeneration),  # decoder tensors are not read
])
def test_matches_t5_encoder_model(tmp_path, feed_forward_proj, model_class):
    torch.manual_seed(0)
    reference = _save(tmp_path, model_class(transformers.T5Config(**_config(feed_forward_proj))))
    module, params, _ = load_t5(tmp_path)
    assert isinstance(module, T5EncoderModel) and module.config.feed_forward_proj == feed_forward_proj
    assert set(params) == {"shared", "encoder"}
    ids, mask = _ids()
    expected = _torch_hidden(reference.get_encoder(), ids, mask)
    out = module.apply({"params": params}, ids, mask)
    assert _max_error_at_real_tokens(out.last_hidden_state, expected, mask) < TOLERANCE


def test_mt5_encoder_is_t5s(tmp_path):
    torch.manual_seed(1)
    reference = _save(tmp_path, transformers.MT5EncoderModel(transformers.MT5Config(**_config("gated-gelu"))))
    module, params, _ = load_t5(tmp_path)
    ids, mask = _ids(seed=1)
    out = module.apply({"params": params}, ids, mask)
    assert _max_error_at_real_tokens(out.last_hidden_state, _torch_hidden(reference, ids, mask), mask) < TOLERANCE


def test_encoder_tokenizes_and_mean_pools(tmp_path):
    torch.manual_seed(2)
    reference = _save(tmp_path, transformers.T5EncoderModel(transformers.T5Config(**_config("gated-gelu"))))
    encoder = load_text_encoder(str(tmp_path))
    # No position limit: the tokenizer's model_max_length (30), at most 512.
    assert (encoder.max_length, encoder.word_dim, encoder.sentence_dim) == (30, 32, 32)
    assert encoder.pooling == Pooling("mean")
    captions = ["a small red bird with black wings", "a man riding", "a red motorcycle on the road " * 5]
    tokens = encoder.tokenize(captions)
    assert tokens["input_ids"].shape == (3, 30) and (tokens["input_ids"][0, :8] == list(range(3, 10)) + [1]).all()
    assert encoder.overflows(captions).tolist() == [False, False, True]
    hidden = _torch_hidden(reference, tokens["input_ids"], tokens["attention_mask"])
    out = encoder(captions)
    mask = tokens["attention_mask"]
    assert _max_error_at_real_tokens(out.words, hidden, mask) < TOLERANCE
    expected = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    assert np.abs(np.asarray(out.sentence) - expected).max() < TOLERANCE


def test_unsupported_configs_and_missing_tensors_are_clear_errors(tmp_path):
    torch.manual_seed(3)
    _save(tmp_path, transformers.T5EncoderModel(transformers.T5Config(**_config("relu"))))
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "umt5"}))
    with pytest.raises(TextEncoderError, match="model_type 'umt5' is not supported; supported: bert, clip"):
        load_text_encoder(str(tmp_path))
    with pytest.raises(TextEncoderError, match=r"'umt5' is not a T5 encoder \(its blocks each have their own "
                                               r"position bias\); supported: t5, mt5"):
        load_t5(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "feed_forward_proj": "gated-silu"}))
    with pytest.raises(TextEncoderError,
                       match="unsupported feed_forward_proj 'gated-silu'; supported: relu, gated-gelu"):
        load_t5(tmp_path)

    (tmp_path / "config.json").write_text(json.dumps(config))
    weights = load_file(tmp_path / "model.safetensors")
    del weights["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(TextEncoderError, match="lacks encoder.block.0.layer.0.SelfAttention.relative_attention_bias"):
        load_text_encoder(str(tmp_path))
