"""The compiled step: parallel equivalence, no recompiles, the losses it optimises."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_batch, train_steps, tree_max_abs_diff

from jaxgan.losses import LOSSES, matching_aware_d_loss
from jaxgan.models import build_models
from jaxgan.presets import get_config
from jaxgan.state import GANState, init_state
from jaxgan.step import batch_spread, example_noise, make_train_step, saturated_fraction

SENTENCE_DIM = 12
BATCH = 16


def _train(overrides, steps=3, count_traces=None):
    # Plain SGD, whose update is linear in the gradient: layouts differ only in the order of
    # their sums, which Adam would turn into steps of about the learning rate wherever a
    # gradient is near zero (docs/design.md, "Tests that compare layouts"). A learning rate
    # 100x the default makes "moved from init" far exceed the tolerance.
    cfg = get_config("tiny", [f"train.batch_size={BATCH}", "train.optimizer=sgd", "train.g_lr=2e-2",
                              "train.d_lr=2e-2", *overrides])
    return train_steps(cfg, SENTENCE_DIM, steps, lambda i: random_batch(BATCH, 32, SENTENCE_DIM, seed=i),
                       count_traces)


def _learned(state: GANState):
    return (state.g_params, state.d_params, state.g_stats, state.d_stats, state.ema_params, state.ema_stats,
            state.g_opt_state, state.d_opt_state)


def test_eight_devices_train_the_same_model_as_one():
    assert jax.device_count() == 8
    single, h1 = _train(["train.num_devices=1"])
    jit8, h2 = _train(["train.num_devices=8", "train.parallel=jit"])
    pmap8, h3 = _train(["train.num_devices=8", "train.parallel=pmap"])
    for other, hist in ((jit8, h2), (pmap8, h3)):
        diff = tree_max_abs_diff(_learned(single), _learned(other))
        print("max abs diff vs one device:", diff)
        assert diff < 1e-5
        assert int(other.step) == 3
        for a, b in zip(h1, hist):
            assert a["d_loss"] == pytest.approx(b["d_loss"], rel=1e-4)
            assert a["g_loss"] == pytest.approx(b["g_loss"], rel=1e-4)
            # The collapse gauges describe the global batch whatever the layout.
            for key in ("fake_spread", "real_spread", "fake_saturated"):
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    # Training moved the params: equality is not the trivial kind.
    g, d = build_models(get_config("tiny").model)
    fresh = init_state(get_config("tiny"), g, d, SENTENCE_DIM)
    assert tree_max_abs_diff(fresh.g_params, single.g_params) > 3e-3


@pytest.mark.usefixtures("quick_compiles")  # jit against pmap, both compiled the same quick way
def test_per_device_batchnorm_is_the_same_under_jit_and_pmap():
    jit8, _ = _train(["train.num_devices=8", "model.bn_sync=false"])
    pmap8, _ = _train(["train.num_devices=8", "train.parallel=pmap", "model.bn_sync=false"])
    synced, _ = _train(["train.num_devices=8"])
    assert tree_max_abs_diff(_learned(jit8), _learned(pmap8)) < 2e-4
    # ... and it is a different model from synchronised BN.
    assert tree_max_abs_diff(jit8.g_params, synced.g_params) > 1e-3


@pytest.mark.usefixtures("quick_compiles")  # counts traces, which XLA's passes do not change
@pytest.mark.parametrize("mode", ["jit", "pmap"])
def test_step_compiles_once(mode):
    traces = []
    _train([f"train.parallel={mode}", "train.num_devices=2"], steps=4, count_traces=traces)
    assert len(traces) == 1


def test_noise_does_not_depend_on_the_device_split():
    key = jax.random.key(3)
    whole = example_noise(key, 8, 5, None)
    split = jax.vmap(lambda _: example_noise(key, 4, 5, "i"), axis_name="i")(jnp.arange(2))
    np.testing.assert_allclose(whole, split.reshape(8, 5), atol=0)


def test_first_d_loss_is_the_matching_aware_loss_of_the_initial_models():
    cfg = get_config("tiny", [f"train.batch_size={BATCH}", "train.num_devices=1", "train.loss=hinge"])
    g, d = build_models(cfg.model)
    state = init_state(cfg, g, d, SENTENCE_DIM)
    batch = random_batch(BATCH, 32, SENTENCE_DIM, seed=0)
    _, metrics = jax.jit(make_train_step(cfg, g, d))(state, batch)

    # Recompute by hand from the same pieces: noise, G, D on real/fake/mismatched.
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), 0)
    z = example_noise(key, BATCH, cfg.model.z_dim, None)
    fake, _ = g.apply({"params": state.g_params, "batch_stats": state.g_stats}, z, batch["sentence"],
                      train=True, mutable=["batch_stats"])
    real = batch["image"].astype(np.float32) / 127.5 - 1
    dv = {"params": state.d_params, "batch_stats": state.d_stats}
    (r, w), upd = d.apply(dv, real, batch["sentence"], batch["wrong_sentence"], train=True, mutable=["batch_stats"])
    f, _ = d.apply({"params": state.d_params, **upd}, fake, batch["sentence"], train=True, mutable=["batch_stats"])
    expected = matching_aware_d_loss(LOSSES["hinge"], r, f, w)
    assert float(metrics["d_loss"]) == pytest.approx(float(expected), rel=1e-5)


def test_text_encoder_params_are_not_in_the_trained_state():
    cfg = get_config("tiny")
    g, d = build_models(cfg.model)
    state = init_state(cfg, g, d, SENTENCE_DIM)
    leaves = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]}
    assert not any("text_model" in leaf or "token_embedding" in leaf for leaf in leaves)
    # Both optimizers hold exactly their own network's params.
    assert jax.tree.structure(state.g_opt_state.inner_state[0].mu) == jax.tree.structure(state.g_params)
    assert jax.tree.structure(state.d_opt_state.inner_state[0].mu) == jax.tree.structure(state.d_params)


def test_collapse_gauges_against_numpy():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (6, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(batch_spread(jnp.asarray(images)), images.std(0).mean(), rtol=1e-5)
    # Identical samples (a collapsed generator) have no spread.
    assert float(batch_spread(jnp.asarray(np.repeat(images[:1], 6, 0)))) < 1e-3
    # Nearly identical samples near the tanh asymptote: the one-pass E[x^2] - E[x]^2 reads
    # 8.5e-5 here, 9x the true spread; the two-pass form matches float64.
    near = (-0.999 + 1e-5 * rng.standard_normal((32, 16, 16, 3))).astype(np.float32)
    np.testing.assert_allclose(batch_spread(jnp.asarray(near)), near.astype(np.float64).std(0).mean(), rtol=1e-3)
    x = jnp.array([[-1.0, -0.995, -0.5, 0.0], [0.2, 0.98, 0.991, 1.0]])
    assert float(saturated_fraction(x)) == 4 / 8
    # pmap: the moments are averaged over the axis, so 2 devices x 3 give the 6-image value.
    two = jax.pmap(lambda x: batch_spread(x, "d"), axis_name="d",
                   devices=jax.devices()[:2])(images.reshape(2, 3, 4, 4, 3))
    np.testing.assert_allclose(two, [images.std(0).mean()] * 2, rtol=1e-5)
