"""Contrastive pretraining of a small CLIP pair (or a text encoder alone) on the shapes dataset.

Nothing can be downloaded, so the shipped encoders are trained here, the way AttnGAN and DF-GAN
pretrain their DAMSM text encoder per dataset and then freeze it: a CLIP text transformer and
an image tower are trained with CLIP's symmetric InfoNCE loss (Radford et al., 2021,
arXiv:2103.00020) and a learnable temperature. By default the image tower is a small CLIP ViT
(``jaxgan.text.clip_vision``) and both towers are saved as one Hugging Face ``CLIPModel``
directory with a word-level tokenizer (``jaxgan.text.load_clip`` and transformers load it); the
``conv`` preset trains the older recipe, a small conv image encoder whose text side alone is
saved (the shipped ``shapes`` text encoder).

A fixed tenth of the (combination, template) captions is never trained on; the report
measures the encoder on those held-out captions and, for a pair, ``measure_clip_pair``'s
zero-shot attribute accuracy and retrieval on held-out real images.

    jaxgan pretrain-text --out DIR [--preset P --steps N --batch-size B --seed S]
    jaxgan measure-clip DIR          # measure_clip_pair of a saved CLIPModel directory
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgan import pixels
from jaxgan.data import shapes
from jaxgan.errors import UsageError
from jaxgan.metrics.clip_score import ClipScorer, load_clip_scorer
from jaxgan.text import clip_vision, separation
from jaxgan.text.clip import ClipTextConfig, ClipTextModel, init_params
from jaxgan.text.clip_hf import save_clip, save_clip_text
from jaxgan.text.clip_vision import ClipVisionConfig, ClipVisionModel
from jaxgan.text.encoder import TextEncoder, load_text_encoder
from jaxgan.text.tokenizer import BOS, COMMON_WORDS, EOS, PAD, build_word_tokenizer, save_tokenizer, words_of

# The held-out captions are the same for every training seed, so runs are comparable.
HOLDOUT_SEED = 1234
HOLDOUT_FRACTION = 0.1
# The jitter of the images rendered for the held-out captions (shapes.images_for); training
# draws its jitter from (seed, step), so these exact images are never trained on.
HOLDOUT_IMAGE_SEED = 4321
IMAGE_TOWERS = ("vit", "conv")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Hyperparameters of a pretraining run (text model, image tower, optimizer).

    ``image_tower`` "vit" is a CLIP ViT of ``vit_*`` fields at ``resolution`` (the pair is
    saved); "conv" is ``ImageEncoder`` of ``image_width`` (only the text side is saved).
    """

    # Sized so that the pair trains in about 10 minutes on 2 shared CPU cores.
    steps: int = 800
    batch_size: int = 128
    seed: int = 0
    resolution: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    hidden_size: int = 64
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 256
    max_position: int = 32
    projection_dim: int = 128
    image_tower: str = "vit"
    image_width: int = 32
    # 4 px patches on 32 px images: an 8x8 grid, fine enough for GALIP's D to read where the
    # object is (a 3x3 layout) and what its edges look like, at 65 tokens per image.
    vit_patch_size: int = 4
    vit_hidden_size: int = 64
    vit_num_layers: int = 4
    vit_num_heads: int = 4
    vit_intermediate_size: int = 256


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # The recipe of the shipped "shapes" text encoder (jaxgan/assets/shapes_text_encoder).
    "conv": dict(image_tower="conv", steps=1200, hidden_size=128, num_layers=4, intermediate_size=512),
    # For tests: compiles and runs in seconds.
    "tiny": dict(steps=3, batch_size=8, warmup_steps=1, hidden_size=16, num_layers=1, num_heads=2,
                 intermediate_size=32, projection_dim=16, image_width=4, resolution=16, vit_patch_size=4,
                 vit_hidden_size=16, vit_num_layers=1, vit_num_heads=2, vit_intermediate_size=32),
}


class ImageEncoder(nn.Module):
    """A small conv net: uint8 [B, R, R, 3] -> [B, out_dim].

    It flattens the last feature map instead of pooling it, because pooling would throw away
    where the object is, and position is one of the attributes captions describe.
    """

    width: int = 32
    out_dim: int = 128

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = pixels.to_float(images)
        # A 4x4 stride-2 stem sees every pixel at a quarter of the cost of a full-resolution layer.
        x = nn.gelu(nn.Conv(self.width, (4, 4), strides=2)(x))
        for mult in (2, 4):
            x = nn.gelu(nn.Conv(self.width * mult, (3, 3), strides=2)(x))
        x = nn.gelu(nn.Dense(4 * self.width)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.out_dim)(x)


def soft_clip_loss(text: jax.Array, image: jax.Array, logit_scale: jax.Array, same: jax.Array) -> jax.Array:
    """Symmetric InfoNCE with soft targets (CLIP's loss, Radford et al., 2021).

    ``logits = exp(logit_scale) * cos(text_i, image_j)``; the loss is the mean of the
    text->image and image->text cross-entropies against targets spread uniformly over the
    positives of each row. CLIP's hard targets (the diagonal) would be wrong here: a batch
    often holds several examples of one attribute combination, and hard targets would push a
    caption away from another image of its own combination, punishing the very invariance to
    wording and jitter the encoder should learn.

    Args:
      text: [B, D] text embeddings.
      image: [B, D] image embeddings.
      logit_scale: scalar log inverse temperature.
      same: [B, B] bool, True where text i and image j show the same combination (the
        diagonal is True).

    Returns:
      The scalar loss.
    """
    t = text / jnp.linalg.norm(text, axis=-1, keepdims=True)
    i = image / jnp.linalg.norm(image, axis=-1, keepdims=True)
    logits = jnp.exp(logit_scale) * t @ i.T
    targets = same / same.sum(axis=1, keepdims=True)
    text_to_image = -(targets * jax.nn.log_softmax(logits, axis=1)).sum(1).mean()
    image_to_text = -(targets.T * jax.nn.log_softmax(logits.T, axis=1)).sum(1).mean()
    return 0.5 * (text_to_image + image_to_text)


def all_captions() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every shapes caption: (captions, attrs [N, 4], templates [N]), combination-major."""
    combos = shapes.all_combinations()
    templates = np.tile(np.arange(len(shapes.TEMPLATES)), len(combos))
    attrs = np.repeat(combos, len(shapes.TEMPLATES), axis=0)
    return [shapes.caption(a, t) for a, t in zip(attrs, templates)], attrs, templates


def heldout_mask(fraction: float = HOLDOUT_FRACTION) -> np.ndarray:
    """bool [N] over ``all_captions()``: the captions training never sees."""
    n = shapes.NUM_COMBINATIONS * len(shapes.TEMPLATES)
    mask = np.zeros(n, bool)
    mask[np.random.default_rng(HOLDOUT_SEED).choice(n, int(round(fraction * n)), replace=False)] = True
    return mask


def build_tokenizer():
    """The word-level tokenizer: the shapes vocabulary plus common English words."""
    return build_word_tokenizer(words_of(all_captions()[0]) + list(COMMON_WORDS))


def text_config(cfg: PretrainConfig, tokenizer) -> ClipTextConfig:
    """The text model's architecture; EOS is the tokenizer's EOS (not 2), so pooling is at EOS."""
    return ClipTextConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, max_position_embeddings=cfg.max_position,
        hidden_act="quick_gelu", eos_token_id=tokenizer.token_to_id(EOS),
        projection_dim=cfg.projection_dim, bos_token_id=tokenizer.token_to_id(BOS),
        pad_token_id=tokenizer.token_to_id(PAD))


def vision_config(cfg: PretrainConfig) -> ClipVisionConfig:
    """The ViT image tower's architecture (CLIP's, so ``load_clip`` reads it back)."""
    return ClipVisionConfig(
        hidden_size=cfg.vit_hidden_size, intermediate_size=cfg.vit_intermediate_size,
        num_hidden_layers=cfg.vit_num_layers, num_attention_heads=cfg.vit_num_heads,
        image_size=cfg.resolution, patch_size=cfg.vit_patch_size, hidden_act="quick_gelu",
        projection_dim=cfg.projection_dim)


class VitImageTower(nn.Module):
    """uint8 [B, R, R, 3] -> CLIP ViT image embeddings [B, projection_dim].

    Pixels are normalised as CLIP's preprocessing does (``clip_vision.normalize_pixels``), so
    the saved tower scores real and generated images through ``ClipScorer`` and GALIP's step
    exactly as it saw them in training. Its params are those of ``ClipVisionModel``.
    """

    config: ClipVisionConfig

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = clip_vision.normalize_pixels(images.astype(jnp.float32) / 255.0)
        return ClipVisionModel(self.config, name="tower")(x).image_embeds


def _token_table(tokenizer, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    encodings = tokenizer.encode_batch(list(captions))
    # Training pads only to the longest caption, not max_position: with causal attention the
    # states of real tokens do not depend on padding after them, so this is the same model
    # at half the cost.
    length = max(len(e.ids) for e in encodings)
    ids = np.full((len(captions), length), tokenizer.token_to_id(PAD), np.int32)
    mask = np.zeros((len(captions), length), np.int32)
    for row, e in enumerate(encodings):
        ids[row, :len(e.ids)], mask[row, :len(e.ids)] = e.ids, 1
    return ids, mask


def _schedule(cfg: PretrainConfig) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, max(cfg.warmup_steps, 1),
                                              max(cfg.steps, cfg.warmup_steps + 1), cfg.learning_rate * 0.05)


def _make_step(text_model: ClipTextModel, image_model: nn.Module, optimizer: optax.GradientTransformation):
    def loss_fn(params, ids, mask, images, combo):
        text = text_model.apply({"params": params["text"]}, ids, mask).text_embeds
        image = image_model.apply({"params": params["image"]}, images)
        # CLIP clips the temperature so that logits stay below 100.
        scale = jnp.minimum(params["logit_scale"], jnp.log(100.0))
        same = combo[:, None] == combo[None, :]
        loss = soft_clip_loss(text, image, scale, same)
        logits = text @ (image / jnp.linalg.norm(image, axis=-1, keepdims=True)).T
        accuracy = jnp.mean(same[jnp.arange(len(combo)), jnp.argmax(logits, axis=1)])
        return loss, {"loss": loss, "accuracy": accuracy, "temperature": jnp.exp(-scale)}

    @jax.jit
    def step(params, opt_state, ids, mask, images, combo):
        grads, metrics = jax.grad(loss_fn, has_aux=True)(params, ids, mask, images, combo)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    return step


def evaluate(encoder: TextEncoder, batch_size: int = 864) -> dict[str, Any]:
    """Held-out separation of ``encoder``'s sentence embeddings.

    Returns:
      ``similarity``: mean cosine of held-out captions to same-combination captions in other
      templates (``same``) and to captions differing in exactly one attribute (per attribute);
      ``margin``: ``same`` minus each attribute's similarity; ``retrieval_heldout``: nearest
      neighbour accuracy of held-out captions (templates 1-5) among the 432 template-0
      captions; ``retrieval_all``: the same over every template 1-5 caption.
    """
    captions, attrs, templates = all_captions()
    sentence = np.concatenate([np.asarray(encoder(captions[i:i + batch_size]).sentence)
                               for i in range(0, len(captions), batch_size)])
    held = heldout_mask()
    names = shapes.ATTRIBUTES
    sims = separation.attribute_similarities(sentence, attrs, templates, np.flatnonzero(held), names)
    gallery = templates == 0
    queries = templates != 0
    retrieve = functools.partial(separation.retrieval_accuracy, gallery_embeddings=sentence[gallery],
                                 gallery_attrs=attrs[gallery])
    return {
        "similarity": sims,
        "margin": {name: sims["same"] - sims[name] for name in names},
        "retrieval_heldout": retrieve(sentence[held & queries], attrs[held & queries]),
        "retrieval_all": retrieve(sentence[queries], attrs[queries]),
        "heldout_captions": int(held.sum()),
    }


def format_report(report: dict[str, Any]) -> str:
    """A few human-readable lines of an ``evaluate`` report."""
    sims = report["similarity"]
    lines = [f"held-out captions: {report['heldout_captions']} of {len(heldout_mask())}",
             f"mean cosine, same combination (other template): {sims['same']:.3f}"]
    lines += [f"mean cosine, differs only in {name:8s}: {sims[name]:.3f}  (margin {report['margin'][name]:.3f})"
              for name in shapes.ATTRIBUTES]
    lines.append(f"nearest-neighbour retrieval among the 432 template-0 captions: "
                 f"held-out {report['retrieval_heldout']:.4f}, all templates 1-5 {report['retrieval_all']:.4f}")
    return "\n".join(lines)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _embed_images(scorer: ClipScorer, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Unit image embeddings of uint8 images, in batches of one shape (the last one padded)."""
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk), 0)])
        out.append(np.asarray(scorer.embed_images(scorer.preprocess(pixels.to_float(padded))))[:len(chunk)])
    return np.concatenate(out)


def _embed_texts(scorer: ClipScorer, captions: Sequence[str], batch_size: int) -> np.ndarray:
    out = []
    for start in range(0, len(captions), batch_size):
        chunk = list(captions[start:start + batch_size])
        padded = chunk + chunk[-1:] * (batch_size - len(chunk))
        out.append(np.asarray(scorer.embed_texts(padded))[:len(chunk)])
    return np.concatenate(out)


def _hits(similarity: np.ndarray, query_combo: np.ndarray, gallery_combo: np.ndarray, k: int) -> float:
    """Fraction of rows whose ``k`` most similar gallery items include one of the row's combination."""
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return float(np.mean((gallery_combo[top] == query_combo[:, None]).any(axis=1)))


def measure_clip_pair(scorer: ClipScorer, num_images: int = 864, batch_size: int = 288,
                      resolution: int | None = None) -> dict[str, Any]:
    """Zero-shot attribute accuracy and caption retrieval of a CLIP pair on real shapes images.

    Images are rendered at ``resolution`` (default the pair's ``image_size``) and go through
    the scorer's CLIP preprocessing (which resizes them to ``image_size``). Two measurements:

    - ``zero_shot``: ``num_images`` images of the shapes ``test`` split (never drawn in
      pretraining, which renders its own jitter) are each given the combination whose caption
      embedding is nearest (cosine) among the 432 combinations; a combination's embedding is
      the normalised mean of its 6 template captions (CLIP's prompt ensembling). Reported per
      attribute (colour, shape, size, position: the nearest combination's value equals the
      image's, from the dataset's attribute metadata) and for all four at once; chance is 1/8,
      1/3, 1/2, 1/9 and 1/432.
    - ``retrieval``: the held-out captions (``heldout_mask``, never trained on) and one image
      of each caption's combination (jitter from ``HOLDOUT_IMAGE_SEED``). ``image_to_text@k``:
      the fraction of images whose k nearest held-out captions include one of their
      combination; ``text_to_image@k`` the converse over the images. Several held-out captions
      may share a combination; any of them counts.

    Args:
      scorer: the pair (``metrics.clip_score.load_clip_scorer`` of a CLIPModel directory).
      num_images: test-split images for the zero-shot accuracy.
      batch_size: images and captions per compiled call.
      resolution: the side of the rendered images.

    Returns:
      {"zero_shot": {attribute: accuracy, ..., "all": ...}, "retrieval": {name: fraction},
      "images": num_images, "heldout_captions": n, "resolution": R}.
    """
    resolution = resolution or scorer.image_size
    captions, attrs, _ = all_captions()
    per_combo = len(shapes.TEMPLATES)
    text = _embed_texts(scorer, captions, batch_size)
    prompts = _unit(text.reshape(shapes.NUM_COMBINATIONS, per_combo, -1).mean(axis=1))
    test = shapes.batch(0, num_images, resolution, split="test")
    predicted = shapes.all_combinations()[np.argmax(_embed_images(scorer, test["image"], batch_size) @ prompts.T, 1)]
    correct = predicted == test["attrs"]
    zero_shot = {name: float(correct[:, i].mean()) for i, name in enumerate(shapes.ATTRIBUTES)}
    zero_shot["all"] = float(correct.all(axis=1).mean())

    held = heldout_mask()
    combo = np.repeat(np.arange(shapes.NUM_COMBINATIONS), per_combo)[held]
    images = _embed_images(scorer, shapes.images_for(attrs[held], resolution, HOLDOUT_IMAGE_SEED), batch_size)
    similarity = images @ text[held].T  # [image, caption]; image i shows caption i's combination
    retrieval = {f"{name}@{k}": _hits(sim, combo, combo, k) for k in (1, 5)
                 for name, sim in (("image_to_text", similarity), ("text_to_image", similarity.T))}
    return {"zero_shot": zero_shot, "retrieval": dict(sorted(retrieval.items())), "images": num_images,
            "heldout_captions": int(held.sum()), "resolution": resolution}


def format_pair_report(report: dict[str, Any]) -> str:
    """A few human-readable lines of a ``measure_clip_pair`` report."""
    zs = report["zero_shot"]
    lines = [f"zero-shot attribute accuracy, {report['images']} test-split images at {report['resolution']} px "
             "(nearest of 432 combination prompts):",
             "  " + "  ".join(f"{name} {100 * zs[name]:.1f}%" for name in (*shapes.ATTRIBUTES, "all"))]
    lines.append(f"retrieval among the {report['heldout_captions']} held-out captions and their images:")
    lines.append("  " + "  ".join(f"{name} {100 * v:.1f}%" for name, v in report["retrieval"].items()))
    return "\n".join(lines)


def _readme(cfg: PretrainConfig, command: str, seconds: float, report: dict[str, Any]) -> str:
    return f"""# shapes text encoder

A small CLIP text transformer (Hugging Face `CLIPTextModelWithProjection` format) trained by
`jaxgan.pretrain_text` with a symmetric InfoNCE loss (soft targets over same-combination
pairs, learnable temperature) against a small conv image encoder on the procedural shapes
dataset at {cfg.resolution}x{cfg.resolution}. Frozen and shipped with jaxgan; loaded by
`jaxgan.text.load_text_encoder("shapes")` and by `transformers`.

- command: `{command}`
- steps: {cfg.steps}, batch size: {cfg.batch_size}, seed: {cfg.seed}, learning rate: {cfg.learning_rate}
- text model: hidden {cfg.hidden_size}, {cfg.num_layers} layers, {cfg.num_heads} heads, intermediate
  {cfg.intermediate_size}, max positions {cfg.max_position}, projection {cfg.projection_dim}
- training time: {seconds:.0f} s on {os.cpu_count()} CPU cores
- tokenizer: word level, lowercase, whitespace + punctuation split, `<|startoftext|> ... <|endoftext|>`
- positions: training pads to the longest shapes caption (15 tokens); later positions are
  untrained, so prompts longer than that are outside what the encoder has seen

## Held-out numbers

{HOLDOUT_FRACTION:.0%} of the (combination, template) captions (fixed, seed {HOLDOUT_SEED}) were never trained on.

```
{format_report(report)}
```
"""


def _pair_readme(cfg: PretrainConfig, command: str, seconds: float, report: dict[str, Any],
                 pair: dict[str, Any], out_dir: Path) -> str:
    size_mb = (out_dir / "model.safetensors").stat().st_size / 1e6
    grid = cfg.resolution // cfg.vit_patch_size
    return f"""# shapes CLIP pair

A small CLIP (Hugging Face `CLIPModel` format: text transformer + ViT image tower) trained by
`jaxgan.pretrain_text` with a symmetric InfoNCE loss (soft targets over same-combination
pairs, learnable temperature) on the procedural shapes dataset at {cfg.resolution}x{cfg.resolution}.
Frozen and shipped with jaxgan: `jaxgan.text.load_clip("shapes_clip")` (both towers, as
`model.clip=shapes_clip` for `model.arch=galip`), `load_text_encoder("shapes_clip")` (the text
tower, as `text.encoder=shapes_clip`), and transformers' `CLIPModel.from_pretrained(DIR)`.

- command: `{command}`
- steps: {cfg.steps}, batch size: {cfg.batch_size}, seed: {cfg.seed}, learning rate: {cfg.learning_rate}
- text tower: hidden {cfg.hidden_size}, {cfg.num_layers} layers, {cfg.num_heads} heads, intermediate \
  {cfg.intermediate_size}, max positions {cfg.max_position}
- image tower: ViT on {cfg.resolution} px images, {cfg.vit_patch_size} px patches ({grid}x{grid} grid), \
  hidden {cfg.vit_hidden_size}, {cfg.vit_num_layers} layers, {cfg.vit_num_heads} heads, intermediate \
  {cfg.vit_intermediate_size}; pixels normalised with CLIP's mean and std \
  (other sizes are resized to {cfg.resolution} px)
- projection: {cfg.projection_dim}; weights: {size_mb:.1f} MB (float32)
- training time (the steps alone): {seconds:.0f} s on {os.cpu_count()} CPU cores
- tokenizer: word level, lowercase, whitespace + punctuation split, `<|startoftext|> ... <|endoftext|>`;
  training pads to the longest shapes caption (15 tokens), later positions are untrained

## Zero-shot attributes and retrieval (held-out images and captions)

`jaxgan measure-clip {out_dir}` (`jaxgan.pretrain_text.measure_clip_pair`, also run at the
end of the command above) gives these figures: each test-split image
gets the combination whose prompt (mean of its 6 template captions) is nearest; an attribute
is right when that combination's value is the image's. Retrieval runs over the
{HOLDOUT_FRACTION:.0%} of captions never trained on, one rendered image each (unseen jitter); a hit is a
caption or image of the same combination among the top k. Chance: colour 12.5%, shape 33.3%,
size 50%, position 11.1%, all four 0.23%. Held-out images differ from the training images in
their jitter only: training renders every combination.

```
{format_pair_report(pair)}
```

## Text-side separation (held-out captions)

```
{format_report(report)}
```
"""


def pretrain(cfg: PretrainConfig, out_dir: str | Path, progress: bool = True,
             command: str | None = None) -> dict[str, Any]:
    """Trains, writes ``out_dir`` in Hugging Face format, measures what was written.

    With the ViT image tower both towers are written as a ``CLIPModel`` directory; with the
    conv one only the text tower (``CLIPTextModelWithProjection``).

    Returns:
      The ``evaluate`` report of the saved text tower, and for a pair under ``"pair"`` the
      ``measure_clip_pair`` report (both also written to ``out_dir/README.md``).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    config = text_config(cfg, tokenizer)
    captions, attrs, templates = all_captions()
    ids, masks = _token_table(tokenizer, captions)
    trainable = np.flatnonzero(~heldout_mask())
    combo_of = np.repeat(np.arange(shapes.NUM_COMBINATIONS), len(shapes.TEMPLATES))

    if cfg.image_tower not in IMAGE_TOWERS:
        raise UsageError(f"image_tower {cfg.image_tower!r} is not one of {', '.join(IMAGE_TOWERS)}")
    vit = cfg.image_tower == "vit"
    text_model = ClipTextModel(config)
    image_model = VitImageTower(vision_config(cfg)) if vit else ImageEncoder(cfg.image_width, cfg.projection_dim)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                            optax.adamw(_schedule(cfg), weight_decay=cfg.weight_decay))

    @jax.jit  # one compiled init instead of one dispatch (and compile) per initializer
    def init(key):
        text_key, image_key = jax.random.split(key)
        images = jnp.zeros((1, cfg.resolution, cfg.resolution, 3), jnp.uint8)
        params = {"text": init_params(config, text_key),
                  "image": image_model.init(image_key, images)["params"],
                  "logit_scale": jnp.asarray(np.log(1 / 0.07), jnp.float32)}
        return params, optimizer.init(params)

    # XLA compiles threefry-based initializers slowly on CPU (seconds per conv layer); the
    # RNG-bit-generator keys compile in a fraction of that and are as deterministic here.
    params, opt_state = init(jax.random.key(cfg.seed, impl="rbg"))
    step_fn = _make_step(text_model, image_model, optimizer)

    start, previous = time.time(), None
    bar = tqdm(range(cfg.steps), disable=not progress, desc="pretrain text", dynamic_ncols=True)
    for step in bar:
        rng = np.random.default_rng([cfg.seed, step])
        rows = rng.choice(trainable, cfg.batch_size)
        jitter = rng.uniform(-shapes.MAX_JITTER, shapes.MAX_JITTER, (cfg.batch_size, 2))
        images = np.stack([shapes.render(attrs[r], cfg.resolution, tuple(j)) for r, j in zip(rows, jitter)])
        params, opt_state, metrics = step_fn(params, opt_state, ids[rows], masks[rows], images, combo_of[rows])
        # At most one step in flight: the next batch is drawn while this one runs, and the
        # progress bar shows steps done rather than steps queued.
        jax.block_until_ready(previous)
        previous = metrics
        if step % 25 == 0 or step == cfg.steps - 1:
            bar.set_postfix({k: f"{float(v):.3f}" for k, v in metrics.items()})
    seconds = time.time() - start

    if vit:
        # Saved at the temperature training used (clipped as in the loss).
        scale = float(min(float(params["logit_scale"]), np.log(100.0)))
        save_clip(out_dir, config, params["text"], vision_config(cfg), params["image"]["tower"], scale)
    else:
        save_clip_text(out_dir, config, params["text"])
    save_tokenizer(tokenizer, out_dir, cfg.max_position)
    report = evaluate(load_text_encoder(str(out_dir)))
    command = command or f"jaxgan pretrain-text --out {out_dir} --preset {'default' if vit else 'conv'} " \
                         f"--steps {cfg.steps} --batch-size {cfg.batch_size} --seed {cfg.seed}"
    if vit:
        report["pair"] = measure_clip_pair(load_clip_scorer(out_dir))
        readme = _pair_readme(cfg, command, seconds, report, report["pair"], out_dir)
    else:
        readme = _readme(cfg, command, seconds, report)
    (out_dir / "README.md").write_text(readme)
    return report


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``jaxgan pretrain-text``."""
    p = argparse.ArgumentParser(description="Pretrain a CLIP pair (or, --preset conv, a text encoder) on the "
                                "shapes data and save it.")
    p.add_argument("--out", required=True, help="directory for the Hugging Face format model")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    """``jaxgan pretrain-text``: trains, saves, prints the held-out numbers."""
    overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size),
                                   ("seed", args.seed)) if v is not None}
    cfg = dataclasses.replace(PretrainConfig(), **{**PRESETS[args.preset], **overrides})
    if cfg.steps < 1 or cfg.batch_size < 2:
        raise UsageError("--steps must be >= 1 and --batch-size >= 2")
    # The README written beside the weights records the command that reproduces them.
    command = (f"jaxgan pretrain-text --out {shlex.quote(str(args.out))} --preset {args.preset} "
               f"--steps {cfg.steps} --batch-size {cfg.batch_size} --seed {cfg.seed}")
    report = pretrain(cfg, args.out, progress=not args.no_progress, command=command)
    print(format_report(report))
    if "pair" in report:
        print(format_pair_report(report["pair"]))
    return 0


def build_measure_parser() -> argparse.ArgumentParser:
    """The flags of ``jaxgan measure-clip``."""
    p = argparse.ArgumentParser(description="Zero-shot attribute accuracy and held-out retrieval of a CLIP pair "
                                "on the shapes data (measure_clip_pair).")
    p.add_argument("clip", help="a Hugging Face CLIPModel directory, or shapes_clip (the shipped pair)")
    p.add_argument("--images", type=int, default=864, help="test-split images for the zero-shot accuracy")
    p.add_argument("--resolution", type=int, help="render the images at this size (default: the tower's input)")
    p.add_argument("--json", help="also write the report to this file")
    return p


def measure_run(args: argparse.Namespace) -> int:
    """``jaxgan measure-clip``: prints (and optionally writes) ``measure_clip_pair``."""
    if args.images < 1 or (args.resolution is not None and args.resolution < 8):
        raise UsageError("--images must be >= 1 and --resolution >= 8")
    report = measure_clip_pair(load_clip_scorer(args.clip), num_images=args.images, resolution=args.resolution)
    print(format_pair_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0
