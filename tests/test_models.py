"""Model shapes, dtypes, upsampling options and the device-aware BatchNorm."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan.models import build_models
from jaxgan.models.layers import BatchNorm, DownConv, ResizeConv, upsample_bilinear, upsample_nearest
from jaxgan.presets import get_config


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


def test_upsample_bilinear_by_hand_and_against_jax_image_resize():
    # One row [0, 4]: half-pixel centres put the outputs at -1/4, 1/4, 3/4 and 5/4 of the
    # input spacing, clamped at the edges: 0, 1, 3, 4. Columns are constant, so they stay.
    x = jnp.array([0.0, 4.0]).reshape(1, 1, 2, 1)
    np.testing.assert_array_equal(upsample_bilinear(x)[0, :, :, 0], [[0.0, 1.0, 3.0, 4.0]] * 2)
    x = jax.random.normal(jax.random.key(0), (2, 5, 3, 4))
    np.testing.assert_allclose(upsample_bilinear(x), jax.image.resize(x, (2, 10, 6, 4), "bilinear"), atol=1e-6)


@pytest.mark.parametrize("impl", ["conv", "matmul"])
@pytest.mark.parametrize("size", [1, 4, 5])
def test_resize_conv_equals_nearest_resize_then_3x3_conv(impl, size):
    # The sub-pixel form must be the same function as materialising the upsampled image and
    # convolving it, in value and in both gradients.
    x = jax.random.normal(jax.random.key(0), (2, size, size + 1, 6))
    layer = ResizeConv(5, impl=impl)
    v = layer.init(jax.random.key(1), x)
    v = {"params": {**v["params"], "bias": jax.random.normal(jax.random.key(2), (5,))}}

    def reference(params, x):
        y = jax.lax.conv_general_dilated(upsample_nearest(x), params["kernel"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + params["bias"]

    out = layer.apply(v, x)
    ref = reference(v["params"], x)
    assert out.shape == (2, 2 * size, 2 * size + 2, 5)
    np.testing.assert_allclose(out, ref, atol=2e-5)
    cot = jax.random.normal(jax.random.key(3), out.shape)
    grads = jax.vjp(lambda p, x: layer.apply({"params": p}, x), v["params"], x)[1](cot)
    ref_grads = jax.vjp(reference, v["params"], x)[1](cot)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("impl", ["conv", "matmul"])
def test_down_conv_equals_a_strided_4x4_conv(impl):
    x = jax.random.normal(jax.random.key(0), (3, 8, 12, 5))
    layer = DownConv(7, impl=impl)
    v = layer.init(jax.random.key(1), x)
    v = {"params": {**v["params"], "bias": jax.random.normal(jax.random.key(2), (7,))}}
    plain = nn.Conv(7, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))
    out = layer.apply(v, x)
    np.testing.assert_allclose(out, plain.apply(v, x), atol=2e-5)
    cot = jax.random.normal(jax.random.key(3), out.shape)
    grads = jax.vjp(lambda p, x: layer.apply({"params": p}, x), v["params"], x)[1](cot)
    ref_grads = jax.vjp(lambda p, x: plain.apply({"params": p}, x), v["params"], x)[1](cot)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)


def test_resize_conv_keeps_the_param_tree_of_a_plain_conv():
    # Same names and shapes as nn.Conv under Upsample, so checkpoints do not depend on the form.
    cfg = get_config("tiny").model
    g, _ = build_models(cfg)
    v = jax.eval_shape(lambda: g.init(jax.random.key(0), jnp.ones((2, cfg.z_dim)), jnp.ones((2, 7)), train=False))
    conv = v["params"]["Upsample_0"]["Conv_0"]
    assert set(conv) == {"kernel"} and conv["kernel"].shape == (3, 3, 32, 16)
    assert set(v["params"]["Upsample_2"]["Conv_0"]) == {"kernel", "bias"}
    _, d = build_models(cfg)
    v = jax.eval_shape(lambda: d.init(jax.random.key(0), jnp.ones((2, 32, 32, 3)), jnp.ones((2, 7)), train=False))
    shapes = {k: jax.tree.map(lambda a: a.shape, p) for k, p in v["params"].items() if k.startswith("Conv")}
    assert shapes == {"Conv_0": {"kernel": (4, 4, 3, 8), "bias": (8,)}, "Conv_1": {"kernel": (4, 4, 8, 16)},
                      "Conv_2": {"kernel": (4, 4, 16, 32)}, "Conv_3": {"kernel": (1, 1, 48, 32)},
                      "Conv_4": {"kernel": (4, 4, 32, 1), "bias": (1,)}}


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
