"""CLIP score: how well generated images match their captions, judged by a separate CLIP model.

A full Hugging Face ``CLIPModel`` directory (config.json with ``text_config`` and
``vision_config``, weights, tokenizer files, as ``CLIPModel.save_pretrained`` and the hub write
them) is loaded into the two Flax towers (``jaxgan.text.clip_hf.load_clip``) and its tokenizer:

    scorer = load_clip_scorer("path/to/clip-vit-base-patch32")
    check_not_training_model(scorer, [hash_of_the_training_text_encoder])
    cos = clip_score(scorer.embed_images(scorer.preprocess(images)), scorer.embed_texts(captions))
    aggregate_clip_scores(cos)   # {"clip_score": ..., "clip_score_torchmetrics": ..., "n": ...}

For many devices, jit ``scorer.preprocess_fn`` and ``scorer.image_fn(scorer.vision_params,
pixel_values)`` with the image batch sharded; both are pure. On GPUs, float32 matmuls may run
at reduced (TF32) precision unless ``jax.default_matmul_precision("highest")`` is set.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgan.errors import JaxganError
from jaxgan.text import clip_hf, hf
from jaxgan.text.clip import LEGACY_EOS_TOKEN_ID
from jaxgan.text.clip_vision import CLIP_MEAN, ClipVisionModel, normalize_pixels
from jaxgan.text.encoder import ClipTextEncoder
from jaxgan.text.errors import TextEncoderError, TextEncoderNotFoundError


class ClipScoreError(JaxganError, ValueError):
    """A CLIP model that cannot be loaded or must not be used for evaluation (one-line message)."""


def text_tower_sha256(params: Any) -> str:
    """SHA-256 over the text transformer's tensors of a Flax ``ClipTextModel`` param tree.

    Canonical form: the tensors under Hugging Face's ``text_model.`` names, sorted by name, each
    hashed as its name, shape and float32 little-endian C-order bytes in Hugging Face's layout.
    So the same weights hash alike whether they come from a ``CLIPModel`` or a
    ``CLIPTextModel(WithProjection)`` directory, whatever dtype the file stores. ``text_projection``
    is left out: an encoder with or without it shares the transformer, and that is what must
    not be reused for evaluation.
    """
    digest = hashlib.sha256()
    tensors = clip_hf.hf_from_params(params)
    for name in sorted(tensors):
        if name == clip_hf.PROJECTION_WEIGHT:
            continue
        value = np.ascontiguousarray(tensors[name], "<f4")
        digest.update(f"{name}:{'x'.join(map(str, value.shape))}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def files_sha256(files: Sequence[Path]) -> str:
    """SHA-256 of the files' bytes, concatenated in the given order (one file: its sha256sum)."""
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def preprocess_images(images: jax.Array, image_size: int) -> jax.Array:
    """CLIP's preprocessing of NHWC images in [-1, 1], as pure jittable JAX.

    Steps: map to [0, 1] and clip; resize so the shorter side is ``image_size`` (the longer one
    ``int(image_size * long / short)``, as Hugging Face computes it) with
    ``jax.image.resize(method="cubic", antialias=True)``, i.e. Keys' bicubic kernel (a = -0.5)
    widened when downsampling; clip to [0, 1] again (bicubic overshoots, PIL saturates); centre
    crop ``image_size`` square; normalise by ``CLIP_MEAN`` / ``CLIP_STD``.

    Hugging Face's ``CLIPImageProcessor`` (PIL backend) resizes 8-bit images with PIL's bicubic
    filter and rounds to 8 bits afterwards; the resampling details differ slightly from JAX's.
    tests/test_clip_score.py measures it on smooth 8-bit images, down- and upsampled: at most
    about one 8-bit step (0.3 on average), up to half a step of which is that rounding. Images
    already ``image_size`` square are not resampled, and match it to float rounding.

    Args:
      images: [B, H, W, C] float in [-1, 1].
      image_size: the vision tower's input side.

    Returns:
      [B, image_size, image_size, C] float32 pixel values.
    """
    x = jnp.clip((jnp.asarray(images, jnp.float32) + 1.0) / 2.0, 0.0, 1.0)
    b, h, w, c = x.shape
    if c != len(CLIP_MEAN):
        raise ValueError(f"images have {c} channels; CLIP expects {len(CLIP_MEAN)} (RGB, NHWC)")
    if w <= h:
        new_h, new_w = int(image_size * h / w), image_size
    else:
        new_h, new_w = image_size, int(image_size * w / h)
    if (new_h, new_w) != (h, w):
        x = jnp.clip(jax.image.resize(x, (b, new_h, new_w, c), method="cubic", antialias=True), 0.0, 1.0)
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    return normalize_pixels(x[:, top:top + image_size, left:left + image_size])


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Rows scaled to unit L2 norm (a zero row stays zero)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def clip_score(image_embeds: jax.Array, text_embeds: jax.Array) -> jax.Array:
    """Cosine similarity of each image with its own caption.

    Args:
      image_embeds: [N, D] (normalised or not).
      text_embeds: [N, D], row i the caption of image i.

    Returns:
      [N] cosines in [-1, 1].
    """
    if image_embeds.shape != text_embeds.shape:
        raise ValueError(f"image embeddings {image_embeds.shape} and text embeddings {text_embeds.shape} "
                         "must pair up row by row")
    return jnp.sum(l2_normalize(image_embeds) * l2_normalize(text_embeds), axis=-1)


def aggregate_clip_scores(cosines: Any) -> dict[str, float]:
    """The CLIP score of a set of image-caption pairs under the two conventions in use.

    CLIPScore (Hessel et al., 2021, "CLIPScore: A Reference-free Evaluation Metric for Image
    Captioning", arXiv:2104.08718) is ``w * max(cos, 0)`` with w = 2.5. Text-to-image papers
    report other scalings of the same cosine:

    - ``clip_score``: the mean cosine itself, the convention GALIP (Tao et al., 2023) reports
      (e.g. 0.3338 on COCO).
    - ``clip_score_torchmetrics``: the mean of ``100 * max(cos, 0)``, torchmetrics'
      ``CLIPScore`` convention (w = 100); Hessel's value is 0.025 times it.

    Args:
      cosines: [N] per-pair cosines from ``clip_score``.

    Returns:
      ``clip_score``, ``clip_score_torchmetrics`` and ``n`` (the number of pairs).
    """
    cos = np.asarray(jax.device_get(cosines), np.float64).reshape(-1)
    if not cos.size:
        raise ValueError("no image-caption pairs to score")
    return {"clip_score": float(cos.mean()),
            "clip_score_torchmetrics": float((100.0 * np.maximum(cos, 0.0)).mean()),
            "n": int(cos.size)}


def _image_embeds(module: ClipVisionModel, params: Any, pixel_values: jax.Array) -> jax.Array:
    out = module.apply({"params": jax.lax.stop_gradient(params)}, pixel_values)
    return l2_normalize(out.image_embeds)


def _text_embeds(encoder: ClipTextEncoder, params: Any, input_ids: jax.Array,
                 attention_mask: jax.Array) -> jax.Array:
    return l2_normalize(encoder.encode_fn(params, input_ids, attention_mask).sentence)


class ClipScorer:
    """Both CLIP towers, ``logit_scale`` and the tokenizer of one ``CLIPModel`` directory.

    Attributes:
      name: what it was loaded from; directory: the resolved local directory.
      image_size: the side of the square images the vision tower takes.
      vision_module, vision_params: the image tower and its params (float32, on the default device).
      text_encoder: a ``ClipTextEncoder`` (tokenizer + text tower); text_params are its params.
      logit_scale: the learned log temperature (``exp(logit_scale)`` is 100 in trained CLIPs).
      preprocess_fn: pure ``images in [-1, 1] -> pixel_values``.
      image_fn: pure ``(vision_params, pixel_values) -> [B, P]`` unit embeddings.
      text_fn: pure ``(text_params, input_ids, attention_mask) -> [B, P]`` unit embeddings.
    """

    def __init__(self, name: str, directory: Path, vision_module: ClipVisionModel, vision_params: Any,
                 text_encoder: ClipTextEncoder, logit_scale: float, weight_files: Sequence[Path]):
        self.name, self.directory = name, directory
        self.vision_module, self.vision_params = vision_module, jax.device_put(vision_params)
        self.text_encoder, self.logit_scale = text_encoder, logit_scale
        self.image_size = vision_module.config.image_size
        self._weight_files = list(weight_files)
        self.preprocess_fn: Callable[[jax.Array], jax.Array] = functools.partial(
            preprocess_images, image_size=self.image_size)
        self.image_fn: Callable[[Any, jax.Array], jax.Array] = functools.partial(_image_embeds, vision_module)
        self.text_fn: Callable[[Any, jax.Array, jax.Array], jax.Array] = functools.partial(
            _text_embeds, text_encoder)

    @property
    def text_params(self) -> Any:
        return self.text_encoder.params

    @functools.cached_property
    def weights_sha256(self) -> str:
        """SHA-256 of the weights file(s), for the evaluation protocol (read once, on first use)."""
        return files_sha256(self._weight_files)

    @functools.cached_property
    def text_weights_sha256(self) -> str:
        """``text_tower_sha256`` of the text tower: compare it with the training text encoder's."""
        return text_tower_sha256(self.text_params)

    def preprocess(self, images: Any) -> jax.Array:
        """``preprocess_images`` of NHWC images in [-1, 1] (compiled once per input shape)."""
        return self._preprocess_jit(jnp.asarray(images, jnp.float32))

    def embed_images(self, pixel_values: Any) -> jax.Array:
        """[B, P] unit image embeddings of preprocessed pixel values."""
        return self._image_jit(self.vision_params, jnp.asarray(pixel_values, jnp.float32))

    def embed_texts(self, captions: Sequence[str]) -> jax.Array:
        """[B, P] unit text embeddings of caption strings (batches padded as the text encoder does)."""
        return l2_normalize(self.text_encoder(captions).sentence)

    def score(self, images: Any, captions: Sequence[str]) -> jax.Array:
        """Per-pair cosines of NHWC images in [-1, 1] and their captions."""
        return clip_score(self.embed_images(self.preprocess(images)), self.embed_texts(captions))

    @functools.cached_property
    def _preprocess_jit(self) -> Callable:
        return jax.jit(self.preprocess_fn)

    @functools.cached_property
    def _image_jit(self) -> Callable:
        return jax.jit(self.image_fn)


def check_not_training_model(scorer: ClipScorer, training_text_hashes: Iterable[str]) -> None:
    """Refuses an evaluation CLIP whose weights were used in training.

    Args:
      scorer: the evaluation model.
      training_text_hashes: ``text_tower_sha256`` of every text encoder used in training (and
        any weights-file hashes of CLIP models used there).

    Raises:
      ClipScoreError: the scorer's text tower (or weights file) hashes like a training model.
    """
    hashes = {h.lower() for h in training_text_hashes}
    if scorer.text_weights_sha256 in hashes:
        raise ClipScoreError(f"the evaluation CLIP {scorer.name} has the same text tower as a model used in "
                             f"training (sha256 {scorer.text_weights_sha256[:12]}); use a separate CLIP")
    if scorer.weights_sha256 in hashes:
        raise ClipScoreError(f"the evaluation CLIP {scorer.name} has the same weights file as a model used in "
                             f"training (sha256 {scorer.weights_sha256[:12]}); use a separate CLIP")


def load_clip_scorer(name_or_path: str | Path, max_length: int | None = None) -> ClipScorer:
    """Loads a full Hugging Face ``CLIPModel`` directory (or hub id) for evaluation.

    Args:
      name_or_path: a local directory (never touches the network) or a hub id.
      max_length: tokens per caption; default the smaller of the text tower's position count
        and the tokenizer's ``model_max_length`` (77 for OpenAI's CLIP).

    Raises:
      ClipScoreError: one line naming the problem (missing directory, config.json, vision_config,
        weights, tensor or tokenizer; a tensor of the wrong shape).
    """
    try:
        clip = clip_hf.load_clip(name_or_path)
    except TextEncoderNotFoundError as e:
        raise ClipScoreError(f"cannot find the CLIP model {name_or_path}: {e}") from None
    except TextEncoderError as e:
        raise ClipScoreError(str(e)) from None
    directory, text_config = clip.directory, clip.text.config
    config_path = directory / hf.CONFIG_FILE
    try:
        tokenizer = hf.load_tokenizer(directory)
    except TextEncoderError as e:
        raise ClipScoreError(str(e)) from None
    # With a non-legacy id, pooling reads the first position holding it: a tokenizer that ends
    # captions with another id would silently pool at the wrong token.
    if text_config.eos_token_id != LEGACY_EOS_TOKEN_ID and tokenizer.eos_token_id != text_config.eos_token_id:
        raise ClipScoreError(f"{config_path}: text_config.eos_token_id {text_config.eos_token_id} differs from "
                             f"the tokenizer's {tokenizer.eos_token_id}")
    if max_length is None:
        max_length = min(text_config.max_position_embeddings, int(tokenizer.model_max_length))
    try:
        encoder = ClipTextEncoder(str(name_or_path), clip.text.module, clip.text.params, tokenizer, max_length)
    except TextEncoderError as e:
        raise ClipScoreError(str(e)) from None
    return ClipScorer(str(name_or_path), directory, clip.vision.module, clip.vision.params, encoder,
                      clip.logit_scale, clip.weight_files)
