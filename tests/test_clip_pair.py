"""The CLIP pair writer, the shapes pair's measurements and the shipped pair.

``save_clip`` is checked against transformers' ``CLIPModel`` on a random tiny config;
``measure_clip_pair`` against scorers whose embeddings are read off the pixels and the caption
words, where the right answers are known; the shipped pair by name.
"""

import jax
import numpy as np
import pytest
import torch
import transformers

from jaxgan import presets, pretrain_text
from jaxgan.data import shapes
from jaxgan.models.galip import check_tower
from jaxgan.text import ClipTextConfig, ClipVisionConfig, clip_hf, clip_vision, load_clip, load_text_encoder, save_clip
from jaxgan.text import clip as clip_text

pytestmark = pytest.mark.usefixtures("quick_compiles")  # tiny programs, each compiled once


def test_save_clip_writes_a_clipmodel_transformers_loads_alike(tmp_path):
    text = ClipTextConfig(vocab_size=40, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=16, eos_token_id=39, projection_dim=24,
                          bos_token_id=1, pad_token_id=0)
    vision = ClipVisionConfig(hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=24)
    text_params = jax.jit(clip_text.init_params, static_argnums=0)(text, jax.random.key(0))
    vision_params = jax.jit(clip_vision.init_params, static_argnums=0)(vision, jax.random.key(1))
    save_clip(tmp_path, text, text_params, vision, vision_params, logit_scale=1.7)

    ours = load_clip(tmp_path)
    assert ours.logit_scale == pytest.approx(1.7)
    for saved, loaded in ((text_params, ours.text.params), (vision_params, ours.vision.params)):
        assert jax.tree.all(jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), b), saved, loaded))

    model = transformers.CLIPModel.from_pretrained(tmp_path).eval()
    ids = np.array([[1, 5, 9, 39, 0, 0], [1, 7, 3, 12, 8, 39]], np.int64)
    mask = (np.arange(6) < np.array([[4], [6]])).astype(np.int64)
    pixels = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        text_ref = model.text_projection(model.text_model(input_ids=torch.from_numpy(ids),
                                                          attention_mask=torch.from_numpy(mask)).pooler_output)
        image_ref = model.visual_projection(
            model.vision_model(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2))).pooler_output)
    assert model.logit_scale.item() == pytest.approx(1.7)
    # Jitted: eager Flax would compile op by op.
    text_ours = jax.jit(lambda p, i, m: ours.text.apply(p, i, m).text_embeds)(ours.text.params, ids, mask)
    image_ours = jax.jit(lambda p, x: ours.vision.apply(p, x).image_embeds)(ours.vision.params, pixels)
    for a, b in ((text_ours, text_ref), (image_ours, image_ref)):
        b = b.numpy()
        assert np.abs(np.asarray(a) - b).max() < 1e-5 * np.abs(b).max()


# --- measure_clip_pair against scorers that know the answer ---------------------------------

def _one_hot(attrs: np.ndarray) -> np.ndarray:
    sizes = [len(v) for v in shapes.ATTRIBUTE_VALUES.values()]
    out = np.concatenate([np.eye(n)[attrs[:, i]] for i, n in enumerate(sizes)], axis=1)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _caption_attrs(caption: str) -> list[int]:
    words = caption.replace(",", " ").split()
    positions = [p for p in shapes.POSITIONS if f" {p} " in f" {caption.replace(',', ' ')} "]
    return [next(i for i, v in enumerate(values) if v in words) for values in
            (shapes.COLOR_NAMES, shapes.SHAPES, shapes.SIZE_NAMES)] + \
        [shapes.POSITIONS.index(max(positions, key=len))]


def _image_attrs(image01: np.ndarray) -> list[int]:
    """Colour, shape, size and position read off a rendered image (64 px: shapes are 10+ px)."""
    r = image01.shape[0]
    mask = image01.max(axis=-1) > 0.5
    ys, xs = np.nonzero(mask)
    solid = image01[image01.max(axis=-1) > 0.9 * image01.max()]
    rgb = np.array(list(shapes.COLORS.values())) / 255.0
    color = int(np.argmin(((rgb - solid.mean(axis=0)) ** 2).sum(axis=1)))
    side = xs.max() - xs.min() + 1
    fill = mask.sum() / (side * (ys.max() - ys.min() + 1))
    shape = 2 if fill < 0.65 else 0 if fill < 0.9 else 1  # triangle 1/2, circle pi/4, square 1
    size = int(side > 0.22 * r)
    position = 3 * int((ys.min() + ys.max()) / 2 * 3 // r) + int((xs.min() + xs.max()) / 2 * 3 // r)
    return [color, shape, size, position]


class _ReadingScorer:
    """A perfect "CLIP": embeddings are one-hot attributes, from pixels and from caption words.
    ``color_shift`` relabels the images' colours, so image colour never matches text colour."""

    image_size = 64

    def __init__(self, color_shift: int = 0):
        self.color_shift = color_shift

    def preprocess(self, images):
        return (np.asarray(images) + 1.0) / 2.0

    def embed_images(self, images01):
        attrs = np.array([_image_attrs(x) for x in images01])
        attrs[:, 0] = (attrs[:, 0] + self.color_shift) % len(shapes.COLORS)
        return _one_hot(attrs)

    def embed_texts(self, captions):
        return _one_hot(np.array([_caption_attrs(c) for c in captions]))


def test_a_perfect_pair_measures_perfect_and_a_colour_blind_one_fails_colour_only():
    perfect = pretrain_text.measure_clip_pair(_ReadingScorer(), num_images=96, batch_size=96)
    assert perfect["zero_shot"] == {"color": 1.0, "shape": 1.0, "size": 1.0, "position": 1.0, "all": 1.0}
    assert set(perfect["retrieval"].values()) == {1.0} and len(perfect["retrieval"]) == 4
    assert (perfect["heldout_captions"], perfect["resolution"]) == (259, 64)

    shifted = pretrain_text.measure_clip_pair(_ReadingScorer(color_shift=1), num_images=96, batch_size=96)
    assert shifted["zero_shot"] == {"color": 0.0, "shape": 1.0, "size": 1.0, "position": 1.0, "all": 0.0}


def test_hits_counts_a_same_combination_item_among_the_top_k():
    similarity = np.array([[0.9, 0.8, 0.1], [0.9, 0.2, 0.3], [0.1, 0.2, 0.3]])
    query, gallery = np.array([5, 7, 7]), np.array([5, 7, 7])
    assert pretrain_text._hits(similarity, query, gallery, 1) == pytest.approx(2 / 3)  # row 1 ranks item 0 first
    assert pretrain_text._hits(similarity, query, gallery, 2) == 1.0


# --- the shipped pair --------------------------------------------------------------------------

def test_the_shipped_pair_loads_by_name_and_fits_the_shapes_galip_preset():
    assert (clip_hf.SHAPES_CLIP_DIR / "model.safetensors").stat().st_size < 5e6
    pair = load_clip("shapes_clip")
    assert pair.directory == clip_hf.SHAPES_CLIP_DIR
    encoder = load_text_encoder("shapes_clip")
    assert encoder.sentence_dim == pair.vision.config.projection_dim == pair.text.config.projection_dim
    config = presets.get_config("galip64_shapes")
    assert (config.model.clip, config.text.encoder) == ("shapes_clip", "shapes_clip")
    check_tower(config.model, pair.vision)  # its layers, grid and resolution fit the tower
