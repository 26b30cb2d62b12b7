"""The shipped shapes text encoder: loading, tokenizing, encoding, recompiles, separation,
overflow flags and fingerprints."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxgan import pretrain_text
from jaxgan.data import shapes
from jaxgan.text import SHAPES_ENCODER_DIR, HFTextEncoder, Pooling, TextEmbeddings, TextEncoderError, load_text_encoder


@pytest.fixture(scope="module")
def encoder():
    return load_text_encoder()


@pytest.fixture(scope="module")
def report(encoder):
    return pretrain_text.evaluate(encoder)


def test_shipped_encoder_dims(encoder):
    assert (encoder.max_length, encoder.word_dim, encoder.sentence_dim) == (32, 128, 128)
    assert encoder.module.config.eos_token_id not in (2, encoder.tokenizer.pad_token_id)
    assert encoder.module.config.eos_token_id == encoder.tokenizer.eos_token_id


def test_tokenize_pads_and_truncates_to_max_length(encoder):
    captions = ["a small red circle in the top left", "Large BLUE square, bottom!", "circle " * 50]
    tokens = encoder.tokenize(captions)
    for key in ("input_ids", "attention_mask"):
        assert tokens[key].shape == (3, 32) and tokens[key].dtype == np.int32
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    assert mask.sum(1).tolist() == [10, 8, 32]
    tok = encoder.tokenizer
    assert (ids[:, 0] == tok.bos_token_id).all()
    assert ids[0, 9] == ids[1, 7] == ids[2, 31] == tok.eos_token_id  # truncation keeps the EOS
    assert (ids[0, 10:] == tok.pad_token_id).all()
    # Case and punctuation do not matter; everyday words are in the vocabulary.
    assert tok.unk_token_id not in ids[:2]
    assert tok.unk_token_id not in encoder.tokenize(["a red ball near the top"])["input_ids"]


def test_encode_shapes_and_types(encoder):
    out = encoder(["a small red circle in the top left", "the right has a large cyan square"])
    assert isinstance(out, TextEmbeddings)
    assert out.words.shape == (2, 32, 128) and out.words.dtype == jnp.float32
    assert out.mask.shape == (2, 32) and out.mask.dtype == jnp.bool_
    assert out.mask.sum(1).tolist() == [10, 9]
    assert out.sentence.shape == (2, 128) and out.sentence.dtype == jnp.float32
    assert np.isfinite(np.asarray(out.sentence)).all()


def test_jit_does_not_recompile_for_new_captions_of_the_same_batch_size(encoder):
    first = encoder.tokenize(["a small red circle in the top left", "large blue square, bottom"])
    encoder.encode_tokens(first["input_ids"], first["attention_mask"])
    traces = encoder.traces
    for captions in (["one small white triangle on a black background, center", "red"],
                     ["there is a large magenta triangle at the bottom right of the image", "green circle top"]):
        tokens = encoder.tokenize(captions)
        encoder.encode_tokens(tokens["input_ids"], tokens["attention_mask"])
    assert encoder.traces == traces


def test_call_pads_batches_to_a_few_sizes(encoder):
    captions = ["a small red circle in the top left", "the right has a large cyan square",
                "one large white triangle on a black background, top", "small green circle, center",
                "a picture of a small orange square located at the bottom left"]
    encoder(captions[:3])
    traces = encoder.traces
    five = encoder(captions)
    assert encoder.traces == traces  # 3 and 5 captions share the batch size 8
    assert five.sentence.shape == (5, 128) and five.words.shape == (5, 32, 128)
    one = encoder(captions[4:])
    assert np.abs(np.asarray(one.sentence[0]) - np.asarray(five.sentence[4])).max() < 1e-5


def test_params_are_never_differentiated(encoder):
    tokens = encoder.tokenize(["a small red circle in the top left"])
    grads = jax.grad(lambda p: encoder.encode_fn(p, tokens["input_ids"], tokens["attention_mask"]).sentence.sum())(
        encoder.params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("captions,match", [
    ([""], "empty prompt"), (["a red circle", "   "], "empty prompt"), ([None], "not a string"),
    ([3], "not a string"), ("a red circle", "not a single string"), ([], "no captions"),
])
def test_bad_captions_are_clear_errors(encoder, captions, match):
    with pytest.raises(ValueError, match=match):
        encoder(captions)
    with pytest.raises(TextEncoderError):
        encoder.tokenize(captions)


def test_max_length_beyond_the_positions_is_an_error():
    with pytest.raises(TextEncoderError, match="max_length 40 must be in"):
        load_text_encoder("shapes", max_length=40)


def test_torch_loads_the_shipped_encoder_with_the_same_embeddings(encoder):
    captions = ["a small red circle in the top left", "there is a large blue square at the bottom of the image"]
    model = transformers.CLIPTextModelWithProjection.from_pretrained(SHAPES_ENCODER_DIR).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(SHAPES_ENCODER_DIR)
    tokens = tokenizer(captions, padding="max_length", max_length=32, return_tensors="pt")
    with torch.no_grad():
        expected = model(**tokens)
    out = encoder(captions)
    assert np.abs(np.asarray(out.sentence) - expected.text_embeds.numpy()).max() < 1e-4
    assert np.abs(np.asarray(out.words) - expected.last_hidden_state.numpy()).max() < 1e-4


@pytest.mark.parametrize("attribute", shapes.ATTRIBUTES)
def test_held_out_captions_separate_every_attribute(report, attribute):
    # Same combination in another template must be clearly closer than one changed attribute.
    assert report["margin"][attribute] > 0.1, report


def test_held_out_retrieval(report):
    assert report["retrieval_heldout"] >= 0.95, report
    assert report["retrieval_all"] >= 0.95, report


def test_overflows_flags_captions_longer_than_max_length(encoder):
    captions = ["a small red circle in the top left", "circle " * 50, "red " * 30, "red " * 31]
    # BOS and EOS count: 30 words fill the 32 tokens exactly, 31 do not fit.
    assert encoder.overflows(captions).tolist() == [False, True, False, True]
    assert encoder.overflows(captions).dtype == np.bool_
    with pytest.raises(TextEncoderError, match="empty prompt"):
        encoder.overflows(["a red circle", ""])


def test_fingerprint_identifies_what_the_encoder_computes(encoder):
    fingerprint = encoder.fingerprint()
    assert len(fingerprint) == 64 and int(fingerprint, 16) >= 0
    assert load_text_encoder("shapes").fingerprint() == fingerprint
    assert load_text_encoder("shapes", max_length=16).fingerprint() != fingerprint
    changed = jax.tree.map(lambda x: x, encoder.params)
    changed["final_layer_norm"]["bias"] = changed["final_layer_norm"]["bias"].at[0].add(1e-6)
    same_but = functools.partial(HFTextEncoder, "shapes", encoder.module, tokenizer=encoder.tokenizer,
                                 max_length=encoder.max_length)
    assert same_but(params=encoder.params).fingerprint() == fingerprint
    assert same_but(params=changed).fingerprint() != fingerprint
    assert same_but(params=encoder.params, pooling=Pooling("mean")).fingerprint() != fingerprint
