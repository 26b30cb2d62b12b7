"""Feature networks of the evaluation: images in, features and class probabilities out.

A ``FeatureNetwork`` is a pure function of (variables, images) plus what the protocol must
pin about it: the hash of its weights and the resizer in front of it. Images arrive as float
NHWC in [-1, 1] after quantisation to uint8 (``jaxgan.pixels.quantize``), so generated and real images
take the same path. Two networks exist:

* ``shapes``: the shipped attribute classifier (``jaxgan/assets/attribute_classifier``),
  trained on real shapes images only. Features: its 128-unit hidden layer. Class
  probabilities: the joint distribution over the 432 (colour, shape, size, position)
  combinations, the product of its four softmax heads. It also reads the attributes, for
  text-alignment accuracy.
* ``inception``: InceptionV3 in the FID variant (``jaxgan.metrics.inception``), weights from
  a local file. Features: pool3, 2048-d. Class probabilities: softmax over its 1008 logits.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxgan import pixels
from jaxgan.data import shapes
from jaxgan.errors import JaxganError
from jaxgan.metrics import attributes, inception

Outputs = dict[str, jax.Array]


class FeatureNetworkError(JaxganError, ValueError):
    """A feature network that cannot be loaded: an unknown name, missing or unreadable weights."""


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureNetwork:
    """A feature extractor and what the evaluation protocol records about it.

    Attributes:
      name: "shapes" or "inception".
      apply: ``apply(variables, images) -> {"features": [N, D], "probs": [N, C], ...}`` on
        float images in [-1, 1], any square size (the network resizes); pure and jittable.
      variables: its weights.
      weights_sha256: sha256 of the weights file it was loaded from.
      resizer: how images are brought to the network's input size, in words.
      reads_attributes: whether ``apply`` also returns ``attrs`` [N, 4] (shapes only).
      feature_scale: the features are divided by it (already inside ``apply``).
    """

    name: str
    apply: Callable[[Any, jax.Array], Outputs]
    variables: Any
    weights_sha256: str
    resizer: str
    reads_attributes: bool = False
    feature_scale: float = 1.0

    @property
    def identity(self) -> dict[str, Any]:
        """What the protocol records about the network: anything that changes a feature."""
        return {"name": self.name, "weights_sha256": self.weights_sha256, "resizer": self.resizer,
                "feature_scale": self.feature_scale}


def _joint(heads: list[jax.Array]) -> jax.Array:
    """Per-attribute softmax heads -> joint probabilities over every combination [N, prod C]."""
    joint = jax.nn.softmax(heads[0].astype(jnp.float32), -1)
    for logits in heads[1:]:
        p = jax.nn.softmax(logits.astype(jnp.float32), -1)
        joint = (joint[:, :, None] * p[:, None, :]).reshape(joint.shape[0], -1)
    return joint


def shapes_feature_network(path: str | Path | None = None) -> FeatureNetwork:
    """The attribute classifier as a feature network (the shipped one by default)."""
    classifier = attributes.load_attribute_classifier(path)
    module = classifier.module
    # The hidden units are ReLUs with an RMS of about 12 on real images. Dividing by the
    # measured RMS (shipped in config.json) brings FID and KID to the scale of Inception
    # features, where KID's cubic kernel (x.y / d + 1)^3 is designed to work.
    scale = float(classifier.config.get("feature_scale", 1.0))

    def apply(params: Any, images: jax.Array) -> Outputs:
        x = attributes.resize_to_classifier(images.astype(jnp.float32))
        logits, extra = module.apply({"params": params}, x, mutable=["intermediates"])
        heads = [logits[name] for name in shapes.ATTRIBUTES]
        return {"features": extra["intermediates"]["features"][0] / scale,
                "probs": _joint(heads),
                "attrs": jnp.stack([jnp.argmax(h, -1) for h in heads], -1).astype(jnp.int32)}

    return FeatureNetwork(
        name="shapes", apply=apply, variables=classifier.params,
        weights_sha256=classifier.config["weights_sha256"],
        resizer=f"jax.image.resize linear, antialiased, to {attributes.CLASSIFIER_RESOLUTION}px",
        reads_attributes=True, feature_scale=scale)


def measure_feature_scale(path: str | Path | None = None, count: int = 10_000, seed: int = 0) -> float:
    """RMS of the classifier's hidden features over ``count`` real train-split images at 32px.

    What ``config.json``'s ``feature_scale`` holds; measured once, with ``jaxgan feature-scale``.
    """
    classifier = attributes.load_attribute_classifier(path)
    total, n = 0.0, 0
    for start in range(0, count, 500):
        images = pixels.to_float(jnp.asarray(shapes.batch(start, min(500, count - start), 32, seed, "train")["image"]))
        _, extra = classifier.module.apply({"params": classifier.params}, images, mutable=["intermediates"])
        f = extra["intermediates"]["features"][0]
        total += float(jnp.sum(jnp.square(f.astype(jnp.float32))))
        n += f.size
    return (total / n) ** 0.5


def inception_feature_network(path: str | Path) -> FeatureNetwork:
    """InceptionV3 (FID variant) from a weights file in jaxgan's format (see ``metrics.inception``)."""
    module, variables, sha256 = inception.load_fid_inception(path)
    run = inception.make_inception_fn(module)

    def apply(variables: Any, images: jax.Array) -> Outputs:
        out = run(variables, images)
        return {"features": out["pool"], "probs": jax.nn.softmax(out["logits"].astype(jnp.float32), -1)}

    return FeatureNetwork(
        name="inception", apply=apply, variables=variables, weights_sha256=sha256,
        resizer="bilinear, half-pixel centres, no antialiasing, to 299px "
                "(as pytorch-fid's F.interpolate(align_corners=False))")


def clip_image_network(scorer: Any) -> FeatureNetwork:
    """The image tower of a ``metrics.clip_score.ClipScorer``: unit image embeddings as features."""

    def apply(params: Any, images: jax.Array) -> Outputs:
        return {"features": scorer.image_fn(params, scorer.preprocess_fn(images))}

    return FeatureNetwork(
        name="clip", apply=apply, variables=scorer.vision_params, weights_sha256=scorer.weights_sha256,
        resizer=f"shorter side to {scorer.image_size}px, jax.image.resize cubic (antialiased when "
                "shrinking), centre crop, CLIP mean/std")


def needs_attributes(spec: str) -> bool:
    """Whether the feature network ``spec`` judges only sources with the shapes attribute labels
    (``ExampleSource.attributes``): the shapes attribute classifier does."""
    return spec.partition(":")[0] == "shapes"


def load_feature_network(spec: str) -> FeatureNetwork:
    """``"shapes"``, ``"shapes:DIR"`` or ``"inception:FILE"`` -> the feature network.

    Raises:
      FeatureNetworkError: an unknown name, or weights that are missing or unreadable (one line).
    """
    name, _, arg = spec.partition(":")
    if name == "inception" and not arg:
        raise FeatureNetworkError("the inception feature network needs its weights file: "
                                  "inception:PATH (convert one with jaxgan convert-inception)")
    try:
        if name == "shapes":
            return shapes_feature_network(arg or None)
        if name == "inception":
            return inception_feature_network(arg)
    except (FileNotFoundError, ValueError) as e:  # the weights loaders' one-line errors
        raise FeatureNetworkError(str(e)) from None
    raise FeatureNetworkError(f"unknown feature network {spec!r}; valid: shapes, shapes:DIR, inception:FILE")


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``jaxgan feature-scale``."""
    parser = argparse.ArgumentParser(description="Measure the shapes feature network's feature scale "
                                                 "(config.json's feature_scale).")
    parser.add_argument("--classifier", default=None, help="classifier directory (default: shipped)")
    return parser


def run(args: argparse.Namespace) -> int:
    """``jaxgan feature-scale``: prints ``measure_feature_scale`` of the classifier."""
    print(f"feature_scale {measure_feature_scale(args.classifier):.6f}")
    return 0
