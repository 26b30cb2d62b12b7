"""Text alignment on shapes: a classifier of the four attributes, trained on real images.

Whether a sample follows its prompt is judged by a small CNN that reads an image's colour,
shape, size and position. It is trained on real shapes images only, so it knows nothing of
any generator; its held-out accuracy on real images (near 100%) is the ceiling a perfect
generator would reach. The package ships trained weights in ``jaxgan/assets/attribute_classifier``;
``jaxgan train-attributes --out DIR`` retrains them.

Images are float NHWC in [-1, 1] (what the generators produce); any square resolution works,
since the classifier resizes to 32x32 with an antialiased filter first.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgan import pixels
from jaxgan.data import shapes

CLASSIFIER_RESOLUTION = 32
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "assets" / "attribute_classifier"
WEIGHTS_FILE = "weights.msgpack"
CONFIG_FILE = "config.json"
NUM_CLASSES: dict[str, int] = {name: len(values) for name, values in shapes.ATTRIBUTE_VALUES.items()}

# Augmentation strengths (in [-1, 1] pixel units and 32x32 pixels). GAN samples are slightly
# blurry and noisy, with a background that is not exactly black, in ways real renders never
# are; training only on clean renders would let the classifier lean on crisp edges and a
# perfect background (e.g. to tell a small circle from a small square) and fail on samples a
# person reads without trouble. Mild blur, noise and a raised black level remove that crutch
# without hiding anything a prompt asks for. The object's colour is never altered, since it
# is an attribute; the black-level lift raises only channel values below 13/255, and every
# channel of every shapes colour is at least 20/255.
MAX_BLUR_SIGMA = 1.0
MAX_NOISE_STD = 0.15
MAX_BLACK_LIFT = 0.1


class AttributeClassifier(nn.Module):
    """A small CNN with one softmax head per attribute, on 32x32 images in [-1, 1].

    The features are flattened rather than globally pooled so that the position head sees
    where the object is.
    """

    widths: Sequence[int] = (16, 32, 64)
    hidden: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        for width in self.widths:
            x = nn.relu(nn.Conv(width, (3, 3))(x))
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
        # The hidden layer is the shapes feature network of FID/KID/PR (metrics.features);
        # sown, so the parameter tree and the outputs stay as they were.
        self.sow("intermediates", "features", x)
        return {name: nn.Dense(k, name=f"head_{name}")(x) for name, k in NUM_CLASSES.items()}


@dataclasses.dataclass(frozen=True)
class TrainedClassifier:
    """A classifier module with its weights and the config it was saved with."""

    module: AttributeClassifier
    params: Any
    config: dict


def resize_to_classifier(images: jax.Array) -> jax.Array:
    """Float NHWC images of any square size -> the classifier's 32x32 input."""
    n, h, w, c = images.shape
    if (h, w) == (CLASSIFIER_RESOLUTION, CLASSIFIER_RESOLUTION):
        return images
    # Antialiasing matters when shrinking: plain linear sampling of a 256px image skips most
    # pixels, so thin or small objects would alias into the wrong size or shape.
    return jax.image.resize(images, (n, CLASSIFIER_RESOLUTION, CLASSIFIER_RESOLUTION, c),
                            "linear", antialias=True)


def _logits(module: AttributeClassifier, params: Any, images: jax.Array) -> dict[str, jax.Array]:
    return module.apply({"params": params}, resize_to_classifier(images.astype(jnp.float32)))


@functools.partial(jax.jit, static_argnums=0)
def _predict_chunk(module: AttributeClassifier, params: Any, images: jax.Array) -> jax.Array:
    logits = _logits(module, params, images)
    return jnp.stack([jnp.argmax(logits[name], -1) for name in shapes.ATTRIBUTES], -1)


def predict_attributes(classifier: TrainedClassifier, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Predicted (color, shape, size, position) indices, int32 [N, 4].

    Args:
      classifier: from ``load_attribute_classifier``.
      images: [N, R, R, 3], float in [-1, 1] or uint8 (converted); any R.
      batch_size: images per compiled call; the last chunk is padded so that every call has
        the same shape and compiles once per resolution.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3], got shape {images.shape}")
    if images.dtype == np.uint8:
        images = pixels.to_float(images)
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        pad = batch_size - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
        pred = _predict_chunk(classifier.module, classifier.params, jnp.asarray(chunk))
        out.append(np.asarray(pred)[:batch_size - pad])
    return np.concatenate(out).astype(np.int32) if out else np.zeros((0, 4), np.int32)


def attribute_accuracy(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Fraction right per attribute name, plus "all" (all four right), for [N, 4] indices."""
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape or pred.ndim != 2 or pred.shape[1] != len(shapes.ATTRIBUTES):
        raise ValueError(f"pred and true must both be [N, 4], got {pred.shape} and {true.shape}")
    right = pred == true
    acc = {name: float(right[:, i].mean()) for i, name in enumerate(shapes.ATTRIBUTES)}
    acc["all"] = float(right.all(axis=1).mean())
    return acc


def _blur(images: jax.Array, sigma: jax.Array) -> jax.Array:
    """Separable Gaussian blur with a 5-tap kernel and a per-image sigma [B] (in pixels)."""
    offsets = jnp.arange(-2, 3, dtype=jnp.float32)
    s = jnp.maximum(sigma, 1e-3)[:, None]
    k = jnp.exp(-0.5 * (offsets[None, :] / s) ** 2)
    k = k / k.sum(-1, keepdims=True)  # [B, 5]
    # Zero padding is the black background in [0, 1] terms; pad in that space.
    x = jnp.pad(images + 1.0, ((0, 0), (2, 2), (2, 2), (0, 0)))
    h, w = images.shape[1:3]
    x = sum(k[:, i, None, None, None] * x[:, i:i + h, :, :] for i in range(5))
    x = sum(k[:, i, None, None, None] * x[:, :, i:i + w, :] for i in range(5))
    return x - 1.0


def _augment(key: jax.Array, images: jax.Array) -> jax.Array:
    """Mild random black-level lift, blur and Gaussian noise per image (see MAX_BLUR_SIGMA for why)."""
    k_lift, k_blur, k_std, k_noise = jax.random.split(key, 4)
    b = images.shape[0]
    lift = jax.random.uniform(k_lift, (b, 1, 1, 1), maxval=MAX_BLACK_LIFT)
    images = jnp.maximum(images, -1.0 + lift)
    images = _blur(images, jax.random.uniform(k_blur, (b,), maxval=MAX_BLUR_SIGMA))
    std = jax.random.uniform(k_std, (b, 1, 1, 1), maxval=MAX_NOISE_STD)
    images = images + std * jax.random.normal(k_noise, images.shape)
    return jnp.clip(images, -1.0, 1.0)


def _loss(module: AttributeClassifier, params: Any, images: jax.Array, labels: jax.Array):
    logits = _logits(module, params, images)
    losses = [optax.softmax_cross_entropy_with_integer_labels(logits[name], labels[:, i]).mean()
              for i, name in enumerate(shapes.ATTRIBUTES)]
    acc = jnp.stack([jnp.argmax(logits[name], -1) == labels[:, i]
                     for i, name in enumerate(shapes.ATTRIBUTES)], -1).all(-1).mean()
    return sum(losses), acc


def train_attribute_classifier(steps: int, batch_size: int, seed: int, resolution: int = 32, *,
                               module: AttributeClassifier | None = None, learning_rate: float = 2e-3,
                               log: Callable[[str], None] | None = None, log_every: int = 200) -> Any:
    """Trains the classifier on the shapes train split and returns its params.

    Every step draws fresh examples ``[step * batch_size, (step + 1) * batch_size)`` of the
    train split, so nothing is seen twice and the test split stays held out. Adam with a
    warmup + cosine schedule; mild blur and noise augmentation.

    Args:
      steps: optimizer steps.
      batch_size: images per step.
      seed: seeds the data, the init and the augmentation.
      resolution: resolution the training images are rendered at (resized to 32x32 inside).
      module: the architecture; ``AttributeClassifier()`` by default.
      learning_rate: peak Adam learning rate.
      log: called with a progress line every ``log_every`` steps, if given.
    """
    module = module or AttributeClassifier()
    key_init, key_aug = jax.random.split(jax.random.key(seed))
    dummy = jnp.zeros((1, CLASSIFIER_RESOLUTION, CLASSIFIER_RESOLUTION, 3), jnp.float32)
    params = module.init(key_init, dummy)["params"]
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(steps // 20, 1), max(steps, 1))
    optimizer = optax.adam(schedule)
    opt_state = optimizer.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step_fn(params, opt_state, step, images, labels):
        images = _augment(jax.random.fold_in(key_aug, step), images)
        (loss, acc), grads = jax.value_and_grad(functools.partial(_loss, module), has_aux=True)(
            params, images, labels)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acc

    start = time.time()
    for step in range(steps):
        data = shapes.batch(step * batch_size, batch_size, resolution, seed, "train")
        params, opt_state, loss, acc = step_fn(params, opt_state, step, pixels.to_float(data["image"]),
                                               data["attrs"])
        if log is not None and ((step + 1) % log_every == 0 or step + 1 == steps):
            log(f"step {step + 1}/{steps}  loss {float(loss):.4f}  batch acc (all) {float(acc):.3f}"
                f"  {time.time() - start:.0f}s")
    return params


def save_attribute_classifier(path: str | Path, classifier: TrainedClassifier) -> None:
    """Writes ``weights.msgpack`` and ``config.json`` (with the weights' sha256) into ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights = flax.serialization.to_bytes(classifier.params)
    (path / WEIGHTS_FILE).write_bytes(weights)
    config = dict(classifier.config)
    config.update(resolution=CLASSIFIER_RESOLUTION, weights_file=WEIGHTS_FILE,
                  weights_sha256=hashlib.sha256(weights).hexdigest(),
                  architecture={"widths": list(classifier.module.widths), "hidden": classifier.module.hidden})
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def load_attribute_classifier(path: str | Path | None = None) -> TrainedClassifier:
    """Loads a saved classifier; the one shipped with jaxgan by default.

    Raises:
      FileNotFoundError: ``config.json`` or the weights file is missing.
      ValueError: either file is unreadable, or the weights do not match their sha256 or
        the architecture in ``config.json``.
    """
    path = Path(path) if path is not None else DEFAULT_DIR
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"attribute classifier config not found: {config_file}")
    try:
        config = json.loads(config_file.read_text())
        arch = config["architecture"]
        module = AttributeClassifier(widths=tuple(arch["widths"]), hidden=int(arch["hidden"]))
        weights_file = path / config.get("weights_file", WEIGHTS_FILE)
        expected_sha = config["weights_sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"attribute classifier config {config_file} is invalid: {e!r}") from None
    if not weights_file.is_file():
        raise FileNotFoundError(f"attribute classifier weights not found: {weights_file}")
    weights = weights_file.read_bytes()
    if hashlib.sha256(weights).hexdigest() != expected_sha:
        raise ValueError(f"attribute classifier weights {weights_file} are corrupt: "
                         f"sha256 does not match {config_file}")
    dummy = jnp.zeros((1, CLASSIFIER_RESOLUTION, CLASSIFIER_RESOLUTION, 3), jnp.float32)
    target = jax.eval_shape(lambda: module.init(jax.random.key(0), dummy)["params"])
    try:
        params = flax.serialization.from_bytes(target, weights)
        shapes_ok = jax.tree.all(jax.tree.map(lambda t, p: t.shape == np.shape(p), target, params))
    except Exception as e:  # msgpack and flax raise several types for a malformed file
        raise ValueError(f"attribute classifier weights {weights_file} are unreadable: {e!r}") from None
    if not shapes_ok:
        raise ValueError(f"attribute classifier weights {weights_file} do not fit the architecture "
                         f"in {config_file}")
    return TrainedClassifier(module, jax.tree.map(jnp.asarray, params), config)


@functools.lru_cache(maxsize=1)
def _shipped_classifier() -> TrainedClassifier:
    return load_attribute_classifier()


def evaluate_text_alignment(generate: Callable[[list[str], np.ndarray], np.ndarray],
                            num_per_combination: int = 1, template: int | None = 0, seed: int = 0,
                            classifier: TrainedClassifier | None = None, chunk: int = 144) -> dict[str, float]:
    """How often generated images show the attributes their captions ask for.

    Every one of the 432 (color, shape, size, position) combinations is captioned and sent
    ``num_per_combination`` times to ``generate(captions, attrs)``, which returns float images
    in [-1, 1], [n, R, R, 3] (any R). The classifier reads them back.

    Args:
      generate: the model under test; called with at most ``chunk`` captions at a time.
      num_per_combination: samples per combination.
      template: caption template index (``shapes.TEMPLATES``), or None for one drawn per
        caption from ``seed``.
      seed: shuffles the order of the requests (so no chunk is all one colour, which matters
        to generators whose output depends on the batch) and draws templates if asked.
      classifier: defaults to the one shipped with jaxgan.
      chunk: captions per call to ``generate``, to bound memory.

    Returns:
      Accuracy per attribute name and "all" (all four right), as in ``attribute_accuracy``.
    """
    classifier = classifier or _shipped_classifier()
    rng = np.random.default_rng(seed)
    attrs = np.repeat(shapes.all_combinations(), num_per_combination, axis=0)
    attrs = attrs[rng.permutation(len(attrs))]
    if template is None:
        templates = rng.integers(len(shapes.TEMPLATES), size=len(attrs))
    else:
        templates = np.full(len(attrs), template)
    captions = [shapes.caption(a, int(t)) for a, t in zip(attrs, templates)]
    preds = []
    for start in range(0, len(attrs), chunk):
        want = attrs[start:start + chunk]
        images = np.asarray(generate(captions[start:start + chunk], want))
        if images.ndim != 4 or images.shape[0] != len(want) or images.shape[-1] != 3:
            raise ValueError(f"generate returned shape {images.shape} for {len(want)} captions; "
                             f"expected [{len(want)}, R, R, 3]")
        preds.append(predict_attributes(classifier, images))
    return attribute_accuracy(np.concatenate(preds), attrs)


def heldout_accuracy(classifier: TrainedClassifier, seed: int = 0, num_test: int = 4096) -> dict[str, dict[str, float]]:
    """Accuracy on real images the classifier never saw, per set of images.

    The sets: the test split at 32 and 64 pixels, and every combination rendered at 32, 64,
    128 and 256 pixels (all resized to 32x32 by the classifier).
    """
    results = {}
    for res in (32, 64):
        n = num_test if res == 32 else num_test // 4
        data = shapes.batch(0, n, res, seed, "test")
        results[f"test_split_{res}px_n{n}"] = attribute_accuracy(
            predict_attributes(classifier, data["image"]), data["attrs"])
    combos = shapes.all_combinations()
    for res in (32, 64, 128, 256):
        images = shapes.images_for(combos, res, seed)
        results[f"all_combinations_{res}px"] = attribute_accuracy(predict_attributes(classifier, images), combos)
    return results


def train_and_save(out: str | Path, steps: int, batch_size: int, seed: int,
                   log: Callable[[str], None] | None = print) -> TrainedClassifier:
    """Trains a classifier, measures it on held-out real images and writes it to ``out``."""
    module = AttributeClassifier()
    start = time.time()
    params = train_attribute_classifier(steps, batch_size, seed, module=module, log=log)
    seconds = time.time() - start
    classifier = TrainedClassifier(module, params, {})
    # The held-out seed differs from the training seed so that even the test split's
    # jitter draws are new.
    config = {
        "training": {"steps": steps, "batch_size": batch_size, "seed": seed, "train_resolution": 32,
                     "max_blur_sigma": MAX_BLUR_SIGMA, "max_noise_std": MAX_NOISE_STD,
                     "max_black_lift": MAX_BLACK_LIFT,
                     "seconds": round(seconds, 1)},
        "heldout_accuracy": heldout_accuracy(classifier, seed=seed + 1),
    }
    classifier = TrainedClassifier(module, params, config)
    save_attribute_classifier(out, classifier)
    return load_attribute_classifier(out)


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``jaxgan train-attributes``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for weights.msgpack and config.json")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def run(args: argparse.Namespace) -> int:
    """``jaxgan train-attributes --out DIR``: train, evaluate, save."""
    classifier = train_and_save(args.out, args.steps, args.batch_size, args.seed)
    print(f"training took {classifier.config['training']['seconds']}s; held-out accuracy:")
    for name, acc in classifier.config["heldout_accuracy"].items():
        print(f"  {name:28s} " + "  ".join(f"{k} {v:.4f}" for k, v in acc.items()))
    print(f"wrote {Path(args.out) / WEIGHTS_FILE} and {Path(args.out) / CONFIG_FILE}")
    return 0
