"""Contrastive text-encoder pretraining: the loss, the held-out split, a tiny end-to-end run."""

import json

import jax.numpy as jnp
import numpy as np
import optax
import torch
import transformers

from jaxgan import cli, pretrain_text
from jaxgan.text import load_text_encoder
from jaxgan.text.separation import attribute_similarities, retrieval_accuracy


def test_soft_clip_loss_with_distinct_pairs_is_clips_loss():
    rng = np.random.default_rng(0)
    text, image = rng.normal(size=(2, 6, 5)).astype(np.float32)
    scale = jnp.log(10.0)
    loss = pretrain_text.soft_clip_loss(text, image, scale, np.eye(6, dtype=bool))
    t = text / np.linalg.norm(text, axis=1, keepdims=True)
    i = image / np.linalg.norm(image, axis=1, keepdims=True)
    logits = 10.0 * t @ i.T
    labels = np.arange(6)
    expected = 0.5 * (optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
                      + optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean())
    assert abs(float(loss) - float(expected)) < 1e-5


def test_soft_targets_do_not_push_apart_same_combination_pairs():
    # Rows 0 and 1 show the same combination. Soft targets prefer their embeddings to coincide;
    # CLIP's hard targets prefer them apart, which is what soft targets avoid.
    same = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], bool)
    together = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    apart = np.array([[1, 0.5, 0], [1, -0.5, 0], [0, 1, 0], [0, 0, 1]], np.float32)

    def loss(emb, targets):
        return float(pretrain_text.soft_clip_loss(emb, emb, jnp.log(10.0), targets))

    assert loss(together, same) < loss(apart, same)
    hard = np.eye(4, dtype=bool)
    assert loss(apart, hard) < loss(together, hard)


def test_heldout_split_is_fixed_and_a_tenth():
    mask = pretrain_text.heldout_mask()
    assert mask.shape == (2592,) and mask.sum() == 259
    assert np.array_equal(mask, pretrain_text.heldout_mask())


def test_separation_metrics_on_constructed_embeddings():
    attrs = np.array([[0, 0], [0, 0], [1, 0], [0, 1]])
    templates = np.array([0, 1, 1, 1])
    emb = np.array([[1, 0, 0], [1, 0.1, 0], [0, 1, 0], [0.6, 0.8, 0]])
    sims = attribute_similarities(emb, attrs, templates, np.array([0]), ("a", "b"))
    assert sims["same"] > 0.99 and abs(sims["a"]) < 1e-9 and abs(sims["b"] - 0.6) < 1e-9
    assert retrieval_accuracy(emb[1:2], attrs[1:2], emb[[0, 2, 3]], attrs[[0, 2, 3]]) == 1.0
    assert retrieval_accuracy(emb[2:3], np.array([[9, 9]]), emb[[0, 3]], attrs[[0, 3]]) == 0.0


def test_tiny_pretraining_writes_a_clip_pair_jaxgan_and_torch_load(tmp_path, capsys):
    out = tmp_path / "pair"
    assert cli.main(["pretrain-text", "--out", str(out), "--preset", "tiny", "--steps", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "retrieval" in printed and "zero-shot attribute accuracy" in printed
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"):
        assert (out / name).is_file(), name
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    readme = (out / "README.md").read_text()
    assert "--preset tiny --steps 2" in readme and "image_to_text@5" in readme

    encoder = load_text_encoder(str(out))
    assert (encoder.max_length, encoder.word_dim, encoder.sentence_dim) == (32, 16, 16)
    captions = ["a small red circle in the top left", "the right has a large cyan square"]
    ours = encoder(captions)
    model = transformers.CLIPModel.from_pretrained(out).eval()
    assert model.config.vision_config.image_size == 16
    tokens = transformers.AutoTokenizer.from_pretrained(out)(captions, padding="max_length", max_length=32,
                                                             return_tensors="pt")
    with torch.no_grad():
        expected = model.text_projection(model.text_model(**tokens).pooler_output).numpy()
    assert np.abs(np.asarray(ours.sentence) - expected).max() < 1e-4
