"""ADA: the per-image probability p of DiffAugment's ops, adapted in the step (Karras et al. 2020).

The step-level tests use a stub discriminator whose logit is ``bias + scale * mean(image)``
(with D's learning rate 0, so a forced sign stays forced) and a one-layer generator: they test
the controller's plumbing through ``make_train_step``, compiled in seconds.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan import augment
from jaxgan.checkpoint import Checkpointer, compare_configs
from jaxgan.config import ConfigError, to_dict, validate
from jaxgan.data import ImageFolderSource, TfdsSource, shapes, source_type
from jaxgan.parallel import data_fsdp_parallel
from jaxgan.presets import get_config
from jaxgan.program import check_mirroring
from jaxgan.state import init_state, with_hyperparams
from jaxgan.step import make_train_step

S = 8  # sentence width
BATCH = 16
POLICY = "color,translation,cutout,flip"


class StubG(nn.Module):
    resolution: int

    @nn.compact
    def __call__(self, z, sentence, train=False):
        r = self.resolution
        return jnp.tanh(nn.Dense(r * r * 3)(jnp.concatenate([z, sentence], -1))).reshape(-1, r, r, 3)


class StubD(nn.Module):
    """logit = bias + scale * mean(image): the sign of D(real) is whatever the test sets."""

    @nn.compact
    def __call__(self, images, text, wrong_text=None, train=False):
        bias = self.param("bias", nn.initializers.zeros, ())
        scale = self.param("scale", nn.initializers.zeros, ())
        logit = lambda x: bias + scale * x.astype(jnp.float32).mean(axis=(1, 2, 3))  # noqa: E731
        return logit(images) if wrong_text is None else (logit(images), logit(images))


def _config(*overrides):
    return get_config("tiny", [f"train.batch_size={BATCH}", "model.z_dim=4", "train.d_lr=0",
                               f"train.augment={POLICY}", "data.mirror=true", "train.ada_target=0.6",
                               "train.ada_interval=1", f"train.ada_kimg={BATCH / 100}", *overrides])


def _batch(bright):
    """Real images all +0.5 (bright[i]) or -0.5 grey, as uint8."""
    level = np.where(np.asarray(bright), 191, 64).astype(np.uint8)
    image = np.broadcast_to(level[:, None, None, None], (len(level), 32, 32, 3)).copy()
    sentence = np.random.default_rng(0).normal(size=(len(level), S)).astype(np.float32)
    return {"image": image, "sentence": sentence, "wrong_sentence": sentence[::-1].copy()}


def _state(config, bias=0.0, scale=0.0, p=0.0):
    state = init_state(config, StubG(32), StubD(), S)
    d_params = {"bias": jnp.float32(bias), "scale": jnp.float32(scale)}
    return state.replace(d_params=d_params, hparams={**state.hparams, "ada_p": jnp.float32(p)})


def _images(n=4, size=16, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, size, size, 3), minval=-1, maxval=1)


# --- the augmentation at p -------------------------------------------------------------------

def test_p_zero_is_the_identity_and_p_one_is_plain_diffaugment_on_the_same_key(quick_compiles):
    images, key = _images(), jax.random.key(3)
    per_example = jax.jit(augment.augment_examples(POLICY))  # diff_augment per example, as the step uses it
    plain = per_example(key, images, 0)
    assert not np.array_equal(plain, images)
    np.testing.assert_array_equal(per_example(key, images, 0, p=jnp.float32(1.0)), plain)
    np.testing.assert_array_equal(per_example(key, images, 0, p=jnp.float32(0.0)), images)


def test_each_image_is_augmented_with_probability_p(quick_compiles):
    # One op: each output is its input (mask off) or the op's output on the same key (mask on).
    images = _images(n=400, size=8, seed=1)
    op = jax.jit(augment.augment_examples("cutout"))
    full = np.asarray(op(jax.random.key(5), images, 0))
    half = np.asarray(op(jax.random.key(5), images, 0, p=0.3))
    same = np.all(half == np.asarray(images), axis=(1, 2, 3))
    cut = np.all(half == full, axis=(1, 2, 3))
    assert np.all(same | cut)
    # Binomial(400, 0.3): mean 120, sd 9.2; [90, 150] is beyond 3 sd either side.
    assert 90 <= cut.sum() <= 150


def test_flip_mirrors_left_right():
    images = _images(n=2, size=4)
    out = augment.flip_horizontal(images, jnp.array([True, False]))
    np.testing.assert_array_equal(out[0], np.asarray(images)[0, :, ::-1])
    np.testing.assert_array_equal(out[1], images[1])


# --- the controller ---------------------------------------------------------------------------

def test_controller_moves_p_every_interval_by_the_papers_speed():
    # batch 64, interval 4, kimg 0.64: one adjustment is 64 * 4 / 640 = 0.4.
    constants = dict(target=0.6, interval=4, batch_size=64, kimg=0.64, max_p=0.8)
    ada = augment.ada_init()
    trace = []
    for rt in [1.0, 1.0, 1.0, 0.0,    # mean 0.75 > 0.6: up 0.4
               1.0, 1.0, 1.0, 1.0,    # up again, clipped at max_p 0.8
               0.0, 1.0, 1.0, 0.0]:   # mean 0.5 < 0.6: down 0.4
        ada = augment.ada_adjust(ada, jnp.float32(rt), **constants)
        trace.append(float(ada["ada_p"]))
    np.testing.assert_allclose(trace, [0, 0, 0, 0.4, 0.4, 0.4, 0.4, 0.8, 0.8, 0.8, 0.8, 0.4], atol=1e-6)
    assert float(ada["ada_rt_count"]) == 0 and float(ada["ada_rt_sum"]) == 0
    for _ in range(8):  # falls and stops at 0
        ada = augment.ada_adjust(ada, jnp.float32(-1.0), **constants)
    assert float(ada["ada_p"]) == 0.0


def test_p_rises_on_an_overfitting_d_and_falls_when_d_calls_reals_fake(quick_compiles):
    # Adjustment 16 * 1 / (0.16 * 1000) = 0.1 a step, ceiling 0.35.
    config = _config("train.ada_max_p=0.35")
    step = jax.jit(make_train_step(config, StubG(32), StubD()))
    batch = _batch([True] * BATCH)

    state, seen = _state(config, bias=5.0), []
    for _ in range(5):
        state, metrics = step(state, batch)
        seen.append((float(metrics["ada_p"]), float(metrics["ada_rt"])))
    np.testing.assert_allclose(seen, [(0, 1), (0.1, 1), (0.2, 1), (0.3, 1), (0.35, 1)], atol=1e-6)
    assert float(state.hparams["ada_p"]) == pytest.approx(0.35)  # never above ada_max_p

    state, seen = _state(config, bias=-5.0, p=0.25), []
    for _ in range(4):
        state, metrics = step(state, batch)
        seen.append(float(metrics["ada_p"]))
        assert float(metrics["ada_rt"]) == -1.0
    np.testing.assert_allclose(seen, [0.25, 0.15, 0.05, 0.0], atol=1e-6)
    assert float(state.hparams["ada_p"]) == 0.0


def test_rt_is_the_global_batch_mean_under_pmap(quick_compiles):
    # 12 of 16 real images bright (logit +), device 7's two dark: its own r_t would be -1 and
    # p would fall there, while the global r_t is (12 - 4) / 16 = 0.5 > target 0.3: p rises.
    config = _config("train.parallel=pmap", "train.num_devices=8", "train.ada_target=0.3")
    dp = data_fsdp_parallel(config)
    step = dp.compile(make_train_step(config, StubG(32), StubD(), dp.axis_name))
    bright = [True] * BATCH
    bright[2:4] = bright[14:16] = [False, False]  # device 1's and device 7's two images
    state, metrics = step(dp.put_state(_state(config, scale=10.0)), dp.put_batch(_batch(bright)))
    assert float(dp.to_host(metrics)["ada_rt"]) == pytest.approx(0.5)
    p = state.hparams["ada_p"]  # [8], one copy per device: all must have moved the same way
    np.testing.assert_allclose([float(np.asarray(s.data).ravel()[0]) for s in p.addressable_shards], [0.1] * 8,
                               atol=1e-6)


# --- the state, checkpoints and the config ----------------------------------------------------

def test_p_is_a_state_leaf_only_with_ada_and_survives_a_checkpoint(tmp_path):
    plain = init_state(get_config("tiny", ["model.z_dim=4"]), StubG(32), StubD(), S)
    assert set(plain.hparams) == {"penalty_weight", "kl_weight", "ema_decay"}  # old checkpoints' structure
    config = _config()
    state = _state(config, p=0.37)
    state = state.replace(hparams={**state.hparams, "ada_rt_sum": jnp.float32(1.5), "ada_rt_count": jnp.float32(2)})
    checkpoints = Checkpointer(tmp_path, asynchronous=False)
    checkpoints.save(7, state, {"step": 7}, config)
    abstract = jax.eval_shape(lambda: init_state(config, StubG(32), StubD(), S))
    restored, _ = checkpoints.restore(abstract, config)
    checkpoints.close()
    assert {k: float(restored.hparams[k]) for k in augment.ADA_KEYS} == {
        "ada_p": pytest.approx(0.37), "ada_rt_sum": 1.5, "ada_rt_count": 2}
    resumed, _ = with_hyperparams(restored, config)  # a resume's config pass keeps p
    assert float(resumed.hparams["ada_p"]) == pytest.approx(0.37)


def test_ada_constants_are_refused_on_resume_and_need_a_policy():
    saved = to_dict(_config())
    changes = compare_configs(saved, _config("train.ada_target=0.5", "train.ada_max_p=0.7"))
    assert [key for key, _, _ in changes.refused] == ["train.ada_target", "train.ada_max_p"]
    with pytest.raises(ConfigError, match="train.ada_target needs a train.augment policy"):
        validate(get_config("tiny", ["train.ada_target=0.6"]))
    with pytest.raises(ConfigError, match="train.ada_max_p must be in"):
        get_config("tiny", ["train.ada_max_p=1.5"])


def test_flip_needs_a_source_or_a_user_that_allows_mirroring():
    assert not shapes.ShapesSource.mirror_safe  # its captions name left and right
    assert not ImageFolderSource.mirror_safe and not TfdsSource.mirror_safe
    with pytest.raises(ConfigError, match="train.augment has flip, but dataset shapes"):
        check_mirroring(get_config("tiny", ["train.augment=color,flip"]))
    check_mirroring(get_config("tiny", ["train.augment=color,flip", "data.mirror=true"]))
    check_mirroring(get_config("tiny", ["train.augment=color,translation"]))

    class Mirrorable(shapes.ShapesSource):
        mirror_safe = True

    assert Mirrorable.mirror_safe and source_type("shapes") is shapes.ShapesSource
