"""The CLIP scorer against transformers' PyTorch CLIPModel, its hashes, preprocessing and errors."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from helpers import max_rel_diff, save_tiny_hf_clip
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from safetensors.numpy import load_file, save_file

from jaxgan.metrics.clip_score import (
    ClipScoreError,
    aggregate_clip_scores,
    check_not_training_model,
    clip_score,
    load_clip_scorer,
    text_tower_sha256,
)
from jaxgan.text import load_clip_text, save_clip_text
from jaxgan.text.tokenizer import BOS, EOS, PAD, build_word_tokenizer, save_tokenizer

WORDS = "a an the red green blue small large circle square triangle photo of dog cat on left right top".split()
CAPTIONS = ["a red circle", "the large blue square on the left", "a photo of a cat",
            "green triangle top right", "a dog", "small square"]
IMAGE_SIZE, MAX_POSITIONS = 32, 16


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny random CLIPModel with a word-level tokenizer whose ids match its config."""
    directory = tmp_path_factory.mktemp("clip")
    tokenizer = build_word_tokenizer(WORDS)
    vocab = tokenizer.get_vocab()
    model = save_tiny_hf_clip(directory, tokenizer.get_vocab_size(), eos=vocab[EOS], bos=vocab[BOS], pad=vocab[PAD],
                              image_size=IMAGE_SIZE, max_positions=MAX_POSITIONS)
    save_tokenizer(tokenizer, directory, max_length=MAX_POSITIONS)
    return directory, model


@pytest.fixture(scope="module")
def scorer(clip_dir):
    return load_clip_scorer(clip_dir[0])


@pytest.fixture
def broken(clip_dir, tmp_path):
    """A copy of the CLIP directory to break."""
    return shutil.copytree(clip_dir[0], tmp_path / "clip")


def test_embeddings_and_scores_match_transformers(clip_dir, scorer):
    _, model = clip_dir
    assert scorer.image_size == IMAGE_SIZE and scorer.text_encoder.max_length == MAX_POSITIONS
    assert scorer.logit_scale == pytest.approx(model.logit_scale.item())
    pixels = np.random.default_rng(0).normal(size=(len(CAPTIONS), IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    tokens = scorer.text_encoder.tokenize(CAPTIONS)
    with torch.no_grad():
        vision = model.vision_model(pixel_values=torch.tensor(pixels).permute(0, 3, 1, 2))
        image_ref = model.visual_projection(vision.pooler_output)
        text_ref = model.get_text_features(input_ids=torch.tensor(tokens["input_ids"], dtype=torch.long),
                                           attention_mask=torch.tensor(tokens["attention_mask"])).pooler_output
    image_ref = torch.nn.functional.normalize(image_ref, dim=-1).numpy()
    text_ref = torch.nn.functional.normalize(text_ref, dim=-1).numpy()

    out = scorer.vision_module.apply({"params": scorer.vision_params}, pixels)
    assert max_rel_diff(out.last_hidden_state, vision.last_hidden_state.numpy()) < 1e-5
    assert max_rel_diff(out.pooler_output, vision.pooler_output.numpy()) < 1e-5
    image = scorer.embed_images(pixels)
    text = scorer.embed_texts(CAPTIONS)
    assert image.shape == text.shape == (len(CAPTIONS), 24)
    cosines = clip_score(image, text)
    print(f"relative max error: hidden {max_rel_diff(out.last_hidden_state, vision.last_hidden_state.numpy()):.1e}, "
          f"image {max_rel_diff(image, image_ref):.1e}, text {max_rel_diff(text, text_ref):.1e}, "
          f"cosine abs {np.abs(cosines - (image_ref * text_ref).sum(-1)).max():.1e}")
    assert max_rel_diff(image, image_ref) < 1e-5
    assert max_rel_diff(text, text_ref) < 1e-5
    assert np.abs(cosines - (image_ref * text_ref).sum(-1)).max() < 1e-5
    # The pure function, jitted with the batch sharded over two devices, agrees.
    mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
    batch = jnp.asarray(np.concatenate([pixels, pixels[:2]]))  # 8 rows, split evenly
    sharded = jax.device_put(batch, NamedSharding(mesh, PartitionSpec("data")))
    assert np.abs(jax.jit(scorer.image_fn)(scorer.vision_params, sharded)[:len(CAPTIONS)] - image).max() < 1e-6


def test_text_tower_hash_matches_the_training_encoder_and_is_refused(clip_dir, scorer, tmp_path):
    _, params, _ = load_clip_text(clip_dir[0])
    assert text_tower_sha256(params) == scorer.text_weights_sha256
    # The hash ignores where the tensors were stored: a text-only copy (jaxgan's writer) hashes alike.
    module, _, _ = load_clip_text(clip_dir[0])
    save_clip_text(tmp_path / "text", module.config, params)
    assert text_tower_sha256(load_clip_text(tmp_path / "text")[1]) == scorer.text_weights_sha256
    assert len(scorer.weights_sha256) == 64 and scorer.weights_sha256 != scorer.text_weights_sha256

    perturbed = jax.tree.map(np.copy, params)
    perturbed["encoder"]["layers_1"]["mlp"]["fc2"]["bias"][0] += 1e-3
    other = text_tower_sha256(perturbed)
    assert other != scorer.text_weights_sha256
    check_not_training_model(scorer, [other])
    with pytest.raises(ClipScoreError, match="same text tower as a model used in training"):
        check_not_training_model(scorer, [other, text_tower_sha256(params).upper()])
    with pytest.raises(ClipScoreError, match="same weights file"):
        check_not_training_model(scorer, [scorer.weights_sha256])


def test_clip_score_by_hand():
    image = jnp.array([[1.0, 0.0], [2.0, 0.0]])  # the second is not unit length: clip_score normalises
    text = jnp.array([[0.6, 0.8], [-0.2, np.sqrt(1 - 0.04)]])
    cosines = clip_score(image, text)
    np.testing.assert_allclose(cosines, [0.6, -0.2], atol=1e-6)
    summary = aggregate_clip_scores(cosines)
    assert summary["clip_score"] == pytest.approx(0.2, abs=1e-6)
    assert summary["clip_score_torchmetrics"] == pytest.approx(30.0, abs=1e-4)
    assert summary["n"] == 2
    with pytest.raises(ValueError, match="pair up"):
        clip_score(image, text[:1])


@pytest.mark.parametrize("height,width", [(48, 40), (21, 24), (IMAGE_SIZE, IMAGE_SIZE)])
def test_preprocess_is_close_to_the_hugging_face_processor(scorer, height, width):
    # Smooth images (upsampled noise), as generated ones are; pure pixel noise differs more.
    rng = np.random.default_rng(height)
    coarse = rng.uniform(0, 255, (2, height // 4 + 1, width // 4 + 1, 3))
    smooth = np.asarray(jax.image.resize(coarse, (2, height, width, 3), "linear"))
    images = np.clip(np.round(smooth), 0, 255).astype(np.uint8)
    processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                                   crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    reference = processor(images=list(images), return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
    ours = np.asarray(scorer.preprocess(images / 127.5 - 1.0))
    assert ours.shape == reference.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)
    # The difference in 8-bit steps (undo the normalisation's division by the std).
    steps = np.abs(ours - reference) * np.array([0.26862954, 0.26130258, 0.27577711]) * 255
    print(f"{height}x{width}: max {steps.max():.2f}, mean {steps.mean():.3f} (8-bit steps)")
    if (height, width) == (IMAGE_SIZE, IMAGE_SIZE):
        assert steps.max() < 1e-3  # no resampling: only float rounding
    else:
        assert steps.max() < 2 and steps.mean() < 0.5


def test_missing_directory_config_and_weights(broken, tmp_path):
    with pytest.raises(ClipScoreError, match="does not exist"):
        load_clip_scorer(tmp_path / "nope")
    (broken / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    with pytest.raises(ClipScoreError, match="has no model.safetensors"):
        load_clip_scorer(broken)
    (broken / "config.json").unlink()
    with pytest.raises(ClipScoreError, match="has no config.json"):
        load_clip_scorer(broken)


def test_text_only_directory_is_refused(broken):
    config = json.loads((broken / "config.json").read_text())
    text_only = {**config["text_config"], "model_type": "clip_text_model"}
    (broken / "config.json").write_text(json.dumps(text_only))
    with pytest.raises(ClipScoreError, match="has no vision_config"):
        load_clip_scorer(broken)


def test_wrong_shapes_and_missing_tensors(broken):
    config = json.loads((broken / "config.json").read_text())
    config["vision_config"]["patch_size"] = 4
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ClipScoreError, match=r"vision_model.embeddings.patch_embedding.weight has shape "
                                             r"\(32, 3, 8, 8\), but config.json implies \(32, 3, 4, 4\)"):
        load_clip_scorer(broken)
    config["vision_config"]["patch_size"] = 8
    config["projection_dim"] = 12
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ClipScoreError, match=r"text_projection.weight has shape \(24, 32\)"):
        load_clip_scorer(broken)
    config["projection_dim"] = 24
    (broken / "config.json").write_text(json.dumps(config))
    weights = load_file(broken / "model.safetensors")
    del weights["vision_model.encoder.layers.1.mlp.fc2.weight"], weights["logit_scale"]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ClipScoreError, match="lacks vision_model.encoder.layers.1.mlp.fc2.weight$"):
        load_clip_scorer(broken)
    weights["vision_model.encoder.layers.1.mlp.fc2.weight"] = np.zeros((32, 40), np.float32)
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ClipScoreError, match="lacks logit_scale$"):
        load_clip_scorer(broken)


def test_tokenizer_that_disagrees_on_eos_is_refused(broken):
    config = json.loads((broken / "config.json").read_text())
    config["text_config"]["eos_token_id"] = 5
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ClipScoreError, match="eos_token_id 5 differs from the tokenizer's 3"):
        load_clip_scorer(broken)
