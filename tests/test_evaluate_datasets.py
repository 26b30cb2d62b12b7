"""Evaluation on datasets other than shapes: reference images and captions from the dataset."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxgan.config import ConfigError
from jaxgan.data.folder import ImageFolderSource
from jaxgan.data.source import DataError
from jaxgan.metrics.dataset_eval import EvalExamples, dataset_real_source
from jaxgan.metrics.evaluate import ImageSource, evaluate
from jaxgan.metrics.features import FeatureNetwork
from jaxgan.metrics.protocol import EvalProtocol
from jaxgan.presets import get_config

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
SMALL = dict(num_samples=48, num_reference=48, kid_subsets=5, kid_subset_size=24, is_splits=4)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """120 noisy squares of three colours with their captions, and two corrupt files."""
    root = tmp_path_factory.mktemp("eval-folder")
    rng = np.random.default_rng(0)
    for i in range(120):
        name = list(COLOURS)[i % 3]
        pixels = np.clip(np.array(COLOURS[name]) + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"{i:03d}.png")
        (root / f"{i:03d}.txt").write_text(f"a {name} square\nsomething {name}\n")
    for name in ("bad1", "bad2"):
        (root / f"{name}.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
        (root / f"{name}.txt").write_text("a red square\n")
    return root


def _tiny_network() -> FeatureNetwork:
    """Features: the image at 4x4; class probabilities from the mean colour (stand-ins for
    Inception's pool features and logits, at a cost a test can pay)."""

    def apply(variables, images):
        small = jax.image.resize(images, (images.shape[0], 4, 4, 3), "linear")
        logits = 4.0 * jnp.mean(images, axis=(1, 2)) @ variables["w"]
        return {"features": small.reshape(images.shape[0], -1), "probs": jax.nn.softmax(logits, -1)}

    return FeatureNetwork("tiny", apply, {"w": jnp.eye(3)}, "0" * 64, "linear to 4x4")


def _protocol(folder, **kwargs):
    return EvalProtocol(dataset=str(folder), features="inception:unused", fit="crop", resolution=32,
                        **(SMALL | kwargs))


def _constant(real: ImageSource) -> ImageSource:
    return ImageSource("constant", {}, lambda _c, inputs: jnp.zeros((inputs["index"].shape[0], 32, 32, 3)),
                       lambda start, size: {}, real.captions)


def test_real_images_score_near_the_ceiling_and_constant_images_far_from_it(folder, tmp_path):
    protocol = _protocol(folder)
    examples = EvalExamples(ImageFolderSource(folder), protocol)
    reference = dataset_real_source(examples)
    network = _tiny_network()
    real = evaluate(dataset_real_source(examples, offset=48), protocol, network=network, cache_dir=tmp_path,
                    reference=reference, progress=False).metrics
    const = evaluate(_constant(reference), protocol, network=network, cache_dir=tmp_path,
                     reference=reference, progress=False).metrics
    assert real["fid"] * 10 < const["fid"] and real["precision"] > 0.8 and const["precision"] == 0.0
    # Three balanced colour classes: an Inception score near 3 for real images, 1 for a constant.
    assert real["is"] > 2.5 and const["is"] == pytest.approx(1.0, abs=1e-3)
    assert not any(k.startswith("alignment") for k in real)  # attribute labels exist on shapes only
    # The corrupt files were skipped, never part of the reference.
    assert "bad" not in "".join(examples.source.path(i) for i in examples._usable)


def test_samples_cycle_over_the_captions_with_a_seeded_choice(folder):
    examples = EvalExamples(ImageFolderSource(folder), _protocol(folder))
    first, again = examples.captions(0, 122), examples.captions(122, 122)
    # 122 captioned examples (the corrupt files have captions too); sample i + 122 reuses example i.
    assert {c.split()[0] for c in first} == {"a", "something"}  # both captions of an example are drawn
    assert [c.split()[1] for c in again] == [c.split()[1] for c in first]  # the same example, its colour
    assert examples.captions(5, 3) == first[5:8]


def test_a_reference_larger_than_the_usable_split_is_a_one_line_error(folder):
    examples = EvalExamples(ImageFolderSource(folder), _protocol(folder))
    with pytest.raises(DataError, match="has 120 usable images, fewer than the 121 asked for"):
        examples.images(0, 121)


def test_the_shapes_feature_network_is_refused_on_other_data(folder):
    with pytest.raises(ConfigError, match="judges the shapes dataset only"):
        EvalProtocol(dataset=str(folder), fit="crop")
    # And shapes protocols keep the hash they had before datasets existed.
    assert "fit" not in EvalProtocol().reference_spec({})


def test_training_on_a_folder_evaluates_periodically(folder, tmp_path, monkeypatch):
    from jaxgan.metrics import features
    from jaxgan.train import train_and_evaluate

    monkeypatch.setattr(features, "load_feature_network", lambda spec: _tiny_network())
    overrides = {"data.dataset": folder, "data.workers": 0, "data.embedding_cache": tmp_path / "cache",
                 "train.num_devices": 1, "train.steps": 2, "train.checkpoint_every": 2, "train.sample_every": 2,
                 "eval.every": 2, "eval.features": "inception:unused", "eval.num_samples": 48,
                 "eval.num_reference": 48}
    config = get_config("tiny", [f"{k}={v}" for k, v in overrides.items()])
    monkeypatch.setenv("JAXGAN_CACHE", str(tmp_path / "stats"))
    train_and_evaluate(config, tmp_path / "run", progress=False)
    (row,) = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert row["step"] == 2 and np.isfinite(row["fid"]) and row["fid"] > 0 and "alignment_all" not in row
    assert (tmp_path / "run" / "eval.png").exists()
