"""Evaluation end to end: the shapes metrics separate real from broken images, the numbers do
not depend on the device count, reference statistics are cached by hash, CLIP score refuses a
training model, and the protocol hash covers every field."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_clip_score import clip_dir  # noqa: F401  (a tiny random CLIPModel directory)

from jaxgan.config import ConfigError
from jaxgan.metrics import evaluate as evaluate_lib
from jaxgan.metrics.evaluate import evaluate, generator_source, real_source
from jaxgan.metrics.features import shapes_feature_network
from jaxgan.metrics.protocol import EvalProtocol, ReferenceStats
from jaxgan.metrics.sanity import constant, grey
from jaxgan.metrics.sharded import evaluation_mesh
from jaxgan.models import build_models
from jaxgan.presets import get_config

N = 1024
# Shape fidelity and caption diversity on small draws: they cost host time per sample.
SMALL = dict(num_samples=N, num_reference=N, kid_subsets=10, kid_subset_size=500, fidelity_samples=256,
             diversity_captions=20)


@pytest.fixture(scope="module")
def network():
    return shapes_feature_network()


@pytest.mark.parametrize("data_seed", [0, 1])
def test_real_images_score_near_the_ceiling_and_broken_generators_far_from_it(tmp_path, network, data_seed):
    protocol = EvalProtocol(data_seed=data_seed, seed=data_seed, **SMALL)
    real = real_source("train", data_seed, 32)
    # Grey images keep every shape but no palette colour (swapping channels would not do: it
    # maps most palette colours onto others, which only text alignment can see, not FID).
    results = {s.name: evaluate(s, protocol, network=network, cache_dir=tmp_path, progress=False).metrics
               for s in (real, grey(real), constant(real, 32))}
    real_m, wrong, const = results[real.name], results["grey"], results["constant"]
    # Two disjoint real samples: FID near 0 (estimator bias at n=1024), KID within noise of 0,
    # precision and recall near 1, captions read back perfectly.
    assert real_m["fid"] < 2.0 and abs(real_m["kid"]) < 0.02
    assert real_m["precision"] > 0.9 and real_m["recall"] > 0.9
    assert real_m["alignment_all"] == 1.0
    # The ordering real < wrong colours < constant holds for every distance, with margins.
    assert 20 * real_m["fid"] < wrong["fid"] < const["fid"]
    assert real_m["kid"] + 0.5 < wrong["kid"] < const["kid"]
    assert const["precision"] == 0.0 and const["recall"] == 0.0 and const["is"] == pytest.approx(1.0)
    assert real_m["is"] > 3 * wrong["is"] > 3 * const["is"]
    assert wrong["alignment_color"] < 0.5
    # Shape fidelity: real images of the train split score as the test split's ceiling does;
    # grey shapes keep their outline but lose contrast and colour; a constant image has no object.
    assert real_m["fidelity_iou_real"] > 0.99 and real_m["fidelity_iou_ratio"] == pytest.approx(1.0, abs=0.005)
    assert real_m["fidelity_color_error"] < 0.01 and wrong["fidelity_color_error"] > 0.1
    assert wrong["fidelity_iou"] < 0.95 * real_m["fidelity_iou"] and const["fidelity_iou_ratio"] < 0.5
    # Real images of one attribute combination differ by their jitter only: a small, nonzero spread.
    assert real_m["diversity_groups"] == 20 and 0 < real_m["diversity_spread_real"] < real_m["diversity_pairwise_real"]


@pytest.fixture(scope="module")
def tiny_generator():
    config = get_config("tiny")
    generator, _ = build_models(config.model)
    z = jnp.zeros((1, config.model.z_dim))
    variables = generator.init(jax.random.key(3), z, jnp.zeros((1, 16)), train=False)
    # A fixed random projection stands in for a text encoder (deterministic per caption).
    table = np.random.default_rng(0).normal(size=(4096, 16)).astype(np.float32)
    embed = lambda captions: {"sentence": table[[hash(c) % 4096 for c in captions]]}  # noqa: E731
    return generator, variables, config.model.z_dim, embed


def test_metrics_are_identical_on_1_and_8_devices(tmp_path, network, tiny_generator):
    generator, variables, z_dim, embed = tiny_generator
    protocol = EvalProtocol(num_samples=600, num_reference=600, kid_subsets=5, kid_subset_size=300,
                            fidelity_samples=100, diversity_captions=10)
    source = generator_source(generator, variables, z_dim, embed, protocol)
    one = evaluate(source, protocol, evaluation_mesh(1), network, cache_dir=tmp_path, per_device=32,
                   progress=False)
    eight = evaluate(source, protocol, evaluation_mesh(8), network, cache_dir=tmp_path, per_device=32,
                     progress=False)
    assert one.num_devices == 1 and eight.num_devices == 8
    assert one.protocol.hash == eight.protocol.hash
    assert one.metrics == eight.metrics  # bitwise: each device computes the same blocks
    assert evaluate_lib.format_metrics(one.metrics) == evaluate_lib.format_metrics(eight.metrics)


def test_noise_is_a_function_of_seed_and_index_only():
    index = jnp.arange(10, dtype=jnp.int32)
    whole = evaluate_lib.protocol_noise(0, index, 8)
    parts = jnp.concatenate([evaluate_lib.protocol_noise(0, index[:3], 8),
                             evaluate_lib.protocol_noise(0, index[3:], 8)])
    np.testing.assert_array_equal(whole, parts)
    assert not np.allclose(whole, evaluate_lib.protocol_noise(1, index, 8))
    truncated = evaluate_lib.protocol_noise(0, jnp.arange(2000, dtype=jnp.int32), 8, truncation=0.5)
    assert float(jnp.abs(truncated).max()) <= 0.5 and float(truncated.std()) > 0.2


def test_scaled_truncated_noise_is_dfgans_distribution():
    # DF-GAN's evaluation draws truncnorm.rvs(-2, 2) * 0.88 (tobran/DF-GAN lib/utils.py,
    # truncated_noise): bounds +-1.76, not +-2, and a spread of 0.88 times the truncated one.
    from scipy import stats

    z = np.asarray(evaluate_lib.protocol_noise(0, jnp.arange(4000, dtype=jnp.int32), 8, 2.0, 0.88)).ravel()
    reference = stats.truncnorm(-2, 2, scale=0.88)
    assert float(np.abs(z).max()) <= 0.88 * 2 + 1e-6
    assert stats.kstest(z, reference.cdf).pvalue > 1e-3
    assert stats.kstest(z, stats.truncnorm(-2, 2).cdf).pvalue < 1e-6  # the unscaled one is told apart
    np.testing.assert_allclose(z.std(), reference.std(), rtol=0.02)


def test_reference_statistics_are_computed_once_and_cached_by_hash(tmp_path, network, monkeypatch):
    protocol = EvalProtocol(num_samples=256, num_reference=256, kid_subsets=2, kid_subset_size=100)
    stats, path = evaluate_lib.reference_stats(protocol, network, evaluation_mesh(2), tmp_path, progress=False)
    assert path.exists() and path.parent == tmp_path
    np.testing.assert_allclose(stats.mu, stats.features.astype(np.float64).mean(0), rtol=1e-10)
    np.testing.assert_allclose(stats.sigma, np.cov(stats.features.astype(np.float64), rowvar=False), rtol=1e-8)

    def no_recompute(*args, **kwargs):
        raise AssertionError("reference statistics were recomputed instead of read from the cache")

    monkeypatch.setattr(evaluate_lib, "extract", no_recompute)
    again, again_path = evaluate_lib.reference_stats(protocol, network, evaluation_mesh(2), tmp_path, progress=False)
    assert again_path == path and again.sha256 == stats.sha256
    # Another reference size is another spec, hence another file.
    other = dataclasses.replace(protocol, num_reference=128)
    assert other.reference_spec(network.identity) != protocol.reference_spec(network.identity)
    # A damaged cache file is named, with what to do about it.
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="unreadable.*delete the file"):
        ReferenceStats.load(path)


def test_protocol_hash_covers_every_field(network):
    from jaxgan.metrics.protocol import ResolvedProtocol

    base = EvalProtocol()
    resolved = ResolvedProtocol(base, network.identity, "r" * 64)
    assert resolved.hash == ResolvedProtocol(EvalProtocol(), network.identity, "r" * 64).hash
    changes = dict(data_seed=1, split="train", num_samples=5000, num_reference=5000, resolution=64,
                   generator="raw", truncation=0.7, truncation_scale=0.88, seed=1, kid_subsets=50, kid_subset_size=100,
                   pr_k=5,
                   is_splits=5, fidelity_samples=1000, diversity_captions=50, diversity_samples=5)
    hashes = {resolved.hash}
    for field, value in changes.items():
        hashes.add(ResolvedProtocol(dataclasses.replace(base, **{field: value}), network.identity, "r" * 64).hash)
    hashes.add(ResolvedProtocol(base, {**network.identity, "weights_sha256": "0" * 64}, "r" * 64).hash)
    hashes.add(ResolvedProtocol(base, {**network.identity, "feature_scale": 1.0}, "r" * 64).hash)
    hashes.add(ResolvedProtocol(base, network.identity, "s" * 64).hash)
    hashes.add(ResolvedProtocol(base, network.identity, "r" * 64, clip_weights_sha256="c" * 64).hash)
    assert len(hashes) == len(changes) + 5
    # Turning the added measures off gives back the hash of the protocol from before they existed.
    off = dataclasses.replace(base, fidelity_samples=0, diversity_captions=0)
    assert {"fidelity_samples", "diversity_captions", "diversity_samples"}.isdisjoint(
        ResolvedProtocol(off, network.identity, "r" * 64).to_dict())
    json.dumps(resolved.to_dict())  # what the report writes


@pytest.mark.parametrize("bad, message", [
    (dict(num_samples=0), "num_samples must be positive"),
    (dict(split="validation"), "split must be train or test"),
    (dict(generator="best"), "generator must be ema or raw"),
    (dict(truncation=-1.0), "truncation"),
    (dict(truncation_scale=0.0), "truncation_scale must be a positive finite number"),
    (dict(pr_k=2000, num_samples=1000), "pr_k"),
    (dict(captions_per_image=5), "one caption per image"),
    (dict(fidelity_samples=-1), "fidelity_samples must be 0"),
    (dict(diversity_samples=1), "diversity_samples must be at least 2"),
])
def test_bad_protocols_are_one_line_errors(bad, message):
    with pytest.raises(ConfigError, match=message) as info:
        EvalProtocol(**bad)
    assert "\n" not in str(info.value)


def test_clip_score_is_reported_and_refused_for_a_training_model(tmp_path, network, clip_dir):  # noqa: F811
    from jaxgan.metrics.clip_score import ClipScoreError, load_clip_scorer, text_tower_sha256
    from jaxgan.text import load_clip_text

    scorer = load_clip_scorer(clip_dir[0])
    protocol = EvalProtocol(num_samples=64, num_reference=64, kid_subsets=2, kid_subset_size=32, is_splits=2)
    real = real_source("train", 0, 32)
    result = evaluate(real, protocol, network=network, cache_dir=tmp_path, clip_scorer=scorer, progress=False)
    # By hand: the cosine of each image's CLIP embedding with its own caption's.
    captions, _ = real.captions(0, 64)
    images = jnp.asarray(real.inputs(0, 64)["image"], jnp.float32) / 127.5 - 1.0
    cos = np.sum(np.asarray(scorer.embed_images(scorer.preprocess(images)))
                 * np.asarray(scorer.embed_texts(captions)), -1)
    assert result.metrics["clip_score"] == pytest.approx(float(cos.mean()), abs=1e-5)
    assert result.metrics["clip_score_torchmetrics"] == pytest.approx(float(100 * np.maximum(cos, 0).mean()), abs=1e-3)
    assert result.protocol.clip_weights_sha256 == scorer.weights_sha256
    # The same CLIP's text tower as the training text encoder: no CLIP score.
    _, params, _ = load_clip_text(clip_dir[0])
    with pytest.raises(ClipScoreError):
        evaluate(real, protocol, network=network, cache_dir=tmp_path, clip_scorer=scorer,
                 training_text_hashes=[text_tower_sha256(params)], progress=False)


def test_metrics_are_printed_to_four_significant_digits():
    shown = evaluate_lib.format_metrics({"fid": 0.27095, "is": 317.9064, "kid": -0.000891, "big": 15350.6,
                                         "alignment_all": 0.96745})
    assert shown == {"fid": "0.2710", "is": "317.9", "kid": "-0.0008910", "big": "15351", "alignment_all": "96.75%"}
