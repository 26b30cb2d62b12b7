"""Parity of the Flax CLIP text port with transformers' PyTorch models, the HF writer, and errors."""

import json

import jax
import numpy as np
import pytest
import torch
import transformers
from helpers import save_tiny_hf_clip
from safetensors.numpy import load_file, save_file

from jaxgan.text import ClipTextConfig, TextEncoderError, init_params, load_clip_text, save_clip_text

VOCAB, LENGTH = 99, 12


def _hf_config(eos_token_id: int, hidden_act: str = "quick_gelu") -> transformers.CLIPTextConfig:
    return transformers.CLIPTextConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=16, projection_dim=24, hidden_act=hidden_act, eos_token_id=eos_token_id,
        bos_token_id=1, pad_token_id=0)


def _tokens(eos_token_id: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of BOS, random words, EOS, then padding (masked), at lengths 12, 8 and 5."""
    rng = np.random.default_rng(seed)
    legacy = eos_token_id == 2
    # The legacy rule pools at the largest id, so there the EOS is the largest id in the vocabulary.
    eos = VOCAB - 1 if legacy else eos_token_id
    ids = rng.integers(3, VOCAB - 1, (3, LENGTH))
    ids[ids == eos] = 3
    ids[:, 0] = 1
    mask = np.ones_like(ids)
    for row, length in enumerate((LENGTH, 8, 5)):
        ids[row, length - 1] = eos
        mask[row, length:] = 0
        # Row 2 pads with the EOS id itself, as CLIP's tokenizer does: pooling must take the first.
        ids[row, length:] = 0 if row < 2 else eos
    return ids, mask


def _torch(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))


@pytest.mark.parametrize("eos_token_id,hidden_act", [(2, "quick_gelu"), (7, "quick_gelu"), (7, "gelu")])
def test_matches_clip_text_model_with_projection(tmp_path, eos_token_id, hidden_act):
    torch.manual_seed(0)
    reference = transformers.CLIPTextModelWithProjection(_hf_config(eos_token_id, hidden_act)).eval()
    reference.save_pretrained(tmp_path)
    module, params, _ = load_clip_text(tmp_path)
    assert module.config.projection_dim == 24 and module.config.eos_token_id == eos_token_id

    ids, mask = _tokens(eos_token_id)
    expected = _torch(reference, ids, mask)
    pooled = _torch(reference.text_model, ids, mask).pooler_output
    out = module.apply({"params": params}, ids, mask)
    assert np.abs(out.last_hidden_state - expected.last_hidden_state.numpy()).max() < 1e-4
    assert np.abs(out.pooler_output - pooled.numpy()).max() < 1e-4
    assert np.abs(out.text_embeds - expected.text_embeds.numpy()).max() < 1e-4


@pytest.mark.parametrize("eos_token_id", [2, 7])
def test_matches_clip_text_model_without_projection(tmp_path, eos_token_id):
    torch.manual_seed(1)
    reference = transformers.CLIPTextModel(_hf_config(eos_token_id)).eval()
    reference.save_pretrained(tmp_path)
    module, params, _ = load_clip_text(tmp_path)
    assert module.config.projection_dim is None and "text_projection" not in params

    ids, mask = _tokens(eos_token_id, seed=1)
    expected = _torch(reference, ids, mask)
    out = module.apply({"params": params}, ids, mask)
    assert out.text_embeds is None
    assert np.abs(out.last_hidden_state - expected.last_hidden_state.numpy()).max() < 1e-4
    assert np.abs(out.pooler_output - expected.pooler_output.numpy()).max() < 1e-4


def test_written_directory_loads_in_torch_with_the_same_outputs(tmp_path):
    config = ClipTextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=16, eos_token_id=7,
                            projection_dim=24, bos_token_id=1, pad_token_id=0)
    # Random values of the right shapes (no compiled init needed): the writer only renames.
    rng = np.random.default_rng(3)
    shapes = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    params = jax.tree.map(lambda s: (0.2 * rng.normal(size=s.shape)).astype(np.float32), shapes)
    save_clip_text(tmp_path, config, params)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "clip_text_model"
    assert saved["architectures"] == ["CLIPTextModelWithProjection"]

    reference, info = transformers.CLIPTextModelWithProjection.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids, mask = _tokens(7, seed=2)
    expected = _torch(reference.eval(), ids, mask)
    module, loaded, _ = load_clip_text(tmp_path)
    assert jax.tree.all(jax.tree.map(np.array_equal, loaded, jax.device_get(params)))
    out = module.apply({"params": params}, ids, mask)
    assert np.abs(out.last_hidden_state - expected.last_hidden_state.numpy()).max() < 1e-4
    assert np.abs(out.text_embeds - expected.text_embeds.numpy()).max() < 1e-4


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    transformers.CLIPTextModelWithProjection(_hf_config(7)).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_missing_directory_and_files_are_clear_errors(tmp_path, saved):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clip_text(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clip_text("./no/such/encoder")
    (saved / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        load_clip_text(saved)
    (saved / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_clip_text(saved)


def test_wrong_model_type_is_a_clear_error(saved):
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert' is not a CLIP text model"):
        load_clip_text(saved)


def test_shape_mismatch_and_missing_tensor_are_clear_errors(saved):
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, "vocab_size": 50}))
    with pytest.raises(TextEncoderError, match=r"token_embedding.weight has shape \(99, 32\), but config.json "
                                               r"implies \(50, 32\)"):
        load_clip_text(saved)
    (saved / "config.json").write_text(json.dumps(config))
    weights = load_file(saved / "model.safetensors")
    del weights["text_model.encoder.layers.1.mlp.fc2.weight"]
    save_file(weights, saved / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(TextEncoderError, match="lacks text_model.encoder.layers.1.mlp.fc2.weight"):
        load_clip_text(saved)


def test_reads_the_text_tower_of_a_full_clip_model(tmp_path):
    # The text tower is _hf_config(7)'s; the vision tower is only there to be skipped.
    reference = save_tiny_hf_clip(tmp_path, VOCAB, eos=7, bos=1, pad=0, image_size=8, patch_size=4, seed=2,
                                  vision=dict(hidden_size=16, intermediate_size=20, num_hidden_layers=1,
                                              num_attention_heads=2))
    module, params, _ = load_clip_text(tmp_path)
    ids, mask = _tokens(7, seed=3)
    with torch.no_grad():
        pooled = reference.text_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).pooler_output
        expected = reference.text_projection(pooled).numpy()
    out = module.apply({"params": params}, ids, mask)
    assert np.abs(out.text_embeds - expected).max() < 1e-4
