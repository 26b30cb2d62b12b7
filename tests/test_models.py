"""Model shapes, dtypes, upsampling options and the device-aware BatchNorm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan.config import get_config
from jaxgan.models import build_models
from jaxgan.models.layers import BatchNorm, upsample_nearest


@pytest.mark.parametrize("resolution", [32, 64, 128, 256])
def test_generator_and_discriminator_shapes(resolution):
    cfg = get_config("tiny", [f"model.resolution={resolution}"]).model
    g, d = build_models(cfg)
    z, s = jnp.ones((2, cfg.z_dim)), jnp.ones((2, 7))
    gv = jax.eval_shape(lambda: g.init(jax.random.key(0), z, s, train=False))
    x = jax.eval_shape(lambda v: g.apply(v, z, s, train=False), gv)
    assert x.shape == (2, resolution, resolution, 3)
    dv = jax.eval_shape(lambda x: d.init(jax.random.key(1), x, s, s, train=False), x)
    logits, wrong = jax.eval_shape(lambda v, x: d.apply(v, x, s, s, train=False), dv, x)
    assert logits.shape == wrong.shape == (2,)


def test_generator_output_is_tanh_range_and_uses_the_text():
    cfg = get_config("tiny").model
    g, _ = build_models(cfg)
    z = jax.random.normal(jax.random.key(0), (4, cfg.z_dim))
    s = jax.random.normal(jax.random.key(1), (4, 7))
    v = g.init(jax.random.key(2), z, s, train=False)
    x = g.apply(v, z, s, train=False)
    assert float(jnp.abs(x).max()) <= 1.0
    assert float(jnp.abs(x - g.apply(v, z, -s, train=False)).max()) > 1e-4


def test_bfloat16_compute_keeps_float32_params():
    cfg = get_config("tiny", ["model.dtype=bfloat16"]).model
    g, d = build_models(cfg)
    z, s = jnp.ones((2, cfg.z_dim)), jnp.ones((2, 7))
    gv = g.init(jax.random.key(0), z, s, train=False)
    assert {p.dtype for p in jax.tree.leaves(gv)} == {jnp.dtype(jnp.float32)}
    x = g.apply(gv, z, s, train=False)
    dv = d.init(jax.random.key(1), x, s, train=False)
    assert {p.dtype for p in jax.tree.leaves(dv)} == {jnp.dtype(jnp.float32)}
    assert d.apply(dv, x, s, train=False).dtype == jnp.float32  # logits for the loss in f32
    hidden = jax.make_jaxpr(lambda: g.apply(gv, z, s, train=False))()
    assert "bf16" in str(hidden)


def test_conv_transpose_option():
    cfg = get_config("tiny", ["model.upsample=conv_transpose"]).model
    g, _ = build_models(cfg)
    z, s = jnp.ones((2, cfg.z_dim)), jnp.ones((2, 7))
    v = g.init(jax.random.key(0), z, s, train=False)
    assert "ConvTranspose_0" in v["params"]["Upsample_0"]
    assert g.apply(v, z, s, train=False).shape == (2, 32, 32, 3)


def test_upsample_nearest_repeats_pixels():
    x = jnp.arange(8.0).reshape(1, 2, 2, 2)
    np.testing.assert_array_equal(upsample_nearest(x), jnp.repeat(jnp.repeat(x, 2, 1), 2, 2))


def test_batchnorm_groups_normalise_each_group_alone():
    x = jax.random.normal(jax.random.key(0), (8, 3, 3, 4)) * 3 + jnp.arange(8.0)[:, None, None, None]
    bn = BatchNorm(groups=2)
    v = bn.init(jax.random.key(1), x, train=False)
    y, upd = bn.apply(v, x, train=True, mutable=["batch_stats"])
    for g in range(2):
        part = np.asarray(x[4 * g:4 * g + 4], np.float64)
        ref = (part - part.mean((0, 1, 2))) / np.sqrt(part.var((0, 1, 2)) + 1e-5)
        np.testing.assert_allclose(y[4 * g:4 * g + 4], ref, atol=1e-5)
    # Running statistics move 10% of the way to the mean of the group statistics.
    groups = np.asarray(x, np.float64).reshape(2, -1, 4)
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * groups.mean(1).mean(0), atol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * groups.var(1).mean(0), atol=1e-5)
    # Inference mode uses the running statistics, so one sample does not depend on another.
    v2 = {"params": v["params"], "batch_stats": upd["batch_stats"]}
    np.testing.assert_allclose(bn.apply(v2, x[:1], train=False), bn.apply(v2, x, train=False)[:1], atol=1e-6)
