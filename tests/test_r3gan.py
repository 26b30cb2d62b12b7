"""The r3gan architecture: shapes, fix-up init, resampling and grouped convs, FLOPs, a short
training run, and output parity with its PyTorch reference (benchmarks/torch_r3gan.py)."""

import math
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package

from helpers import random_batch, train_steps  # noqa: E402

from benchmarks.torch_r3gan import build_torch_r3gan, load_flax_params  # noqa: E402
from jaxgan import flops  # noqa: E402
from jaxgan.bench import _cost  # noqa: E402
from jaxgan.config import ConfigError  # noqa: E402
from jaxgan.models import R3GANConfig, build_models, r3gan_channels  # noqa: E402
from jaxgan.models.layers import Conv, downsample_bilinear  # noqa: E402
from jaxgan.models.r3gan import LRELU_GAIN, ResidualBlock  # noqa: E402
from jaxgan.presets import apply_overrides, get_config  # noqa: E402

SENTENCE_DIM = 24
U = float(np.finfo(np.float32).eps)


def _model(**fields) -> R3GANConfig:
    """A small r3gan config: width 8, group width 4, text 16, z 16."""
    base = {"model.arch": "r3gan", "model.width": 8, "model.group_width": 4, "model.z_dim": 16,
            "model.text_dim": 16, "model.width_cap": 4, "model.conv_impl": "matmul"}
    return apply_overrides(get_config("tiny"), base | {f"model.{k}": v for k, v in fields.items()}).model


def _init(cfg, batch=3, seed=0):
    g, d = build_models(cfg)
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(batch, cfg.z_dim)).astype(np.float32)
    s = rng.normal(size=(batch, SENTENCE_DIM)).astype(np.float32)
    x = rng.uniform(-1, 1, size=(batch, cfg.resolution, cfg.resolution, 3)).astype(np.float32)
    # Jitted: an eager init runs each of the many small layers op by op.
    gv = jax.jit(lambda: g.init(jax.random.key(1), z, s, train=False))()
    dv = jax.jit(lambda: d.init(jax.random.key(2), x, s, s, train=False))()
    return g, d, gv["params"], dv["params"], z, s, x


def _perturb(params, seed):
    """Every leaf moved off its init (zero-initialised branches and biases included), so the
    parity test exercises every path: N(0, (0.5 / sqrt(fan_in))^2) on kernels, N(0, 0.1^2) on vectors."""
    leaves, tree = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    out = []
    for leaf in leaves:
        std = 0.1 if leaf.ndim == 1 else 0.5 / math.sqrt(math.prod(leaf.shape[:-1]))
        out.append(np.asarray(leaf) + std * rng.normal(size=leaf.shape).astype(np.float32))
    return jax.tree.unflatten(tree, out)


@pytest.mark.parametrize("resolution", [32, 64])
def test_shapes_and_dtypes(resolution, quick_compiles):
    cfg = _model(resolution=resolution)
    g, d, gp, dp, z, s, x = _init(cfg)
    g_tanh, _ = build_models(_model(resolution=resolution, output="tanh"))

    @jax.jit
    def forward(gp, dp):
        image = g.apply({"params": gp}, z, s)
        return image, g_tanh.apply({"params": gp}, z, s), d.apply({"params": dp}, image, s, s[::-1])

    image, squashed, (logits, wrong) = forward(gp, dp)
    assert image.shape == (3, resolution, resolution, 3) and image.dtype == jnp.float32
    assert logits.shape == wrong.shape == (3,) and logits.dtype == jnp.float32
    assert bool(jnp.isfinite(image).all()) and bool(jnp.isfinite(logits).all())
    # R3GAN's output is linear; output=tanh squashes the same image.
    np.testing.assert_allclose(squashed, jnp.tanh(image), atol=1e-5)
    # Channels per size: doubling from full resolution toward 4x4, capped at width * width_cap.
    assert r3gan_channels(resolution, 8, 4) == ([32, 32, 16, 8] if resolution == 32 else [32, 32, 32, 16, 8])
    assert gp["basis"].shape == (4, 4, 32) and dp["basis"]["kernel"].shape == (4, 4, 1, 32)
    assert gp["stage_8_0"]["grouped"]["kernel"].shape == (3, 3, 4, 64)  # 64 widened channels, 16 groups of 4


def test_presets_build_and_bad_group_width_is_one_line():
    for name, res in (("r3gan32", 32), ("r3gan64", 64), ("r3gan128", 128)):
        cfg = get_config(name)
        assert isinstance(cfg.model, R3GANConfig) and cfg.model.resolution == res
        build_models(cfg.model)
    with pytest.raises(ConfigError, match="group_width=12 must divide") as e:
        get_config("r3gan32", ["model.group_width=12"])
    assert "\n" not in str(e.value)


def test_residual_block_is_the_identity_at_init_with_fixup_gains():
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 64))
    block = ResidualBlock(expansion=2, group_width=16, num_blocks=16, conv_impl="matmul")
    params = block.init(jax.random.key(1), x)["params"]
    assert np.array_equal(np.asarray(block.apply({"params": params}, x)), np.asarray(x))
    assert not np.asarray(params["project"]["kernel"]).any()
    # He init with R3GAN's gain: sqrt(2 / 1.04) * L^(-1/4) over sqrt(fan_in), L = 16 blocks.
    gain = LRELU_GAIN * 16 ** -0.25
    for name, fan_in in (("expand", 64), ("grouped", 9 * 16)):
        std = float(np.std(params[name]["kernel"]))
        assert std == pytest.approx(gain / math.sqrt(fan_in), rel=0.05), name
    # Once the last conv is non-zero, the branch adds to x.
    params = {**params, "project": {"kernel": jnp.ones_like(params["project"]["kernel"]) * 0.01}}
    assert float(jnp.abs(block.apply({"params": params}, x) - x).max()) > 1e-3


@pytest.mark.parametrize("impl", ["conv", "matmul"])
def test_grouped_conv_equals_flax_feature_groups(impl):
    x = jax.random.normal(jax.random.key(0), (2, 6, 5, 12))
    for k, padding, groups, features in ((3, "SAME", 4, 8), (1, "SAME", 2, 6), (4, "VALID", 12, 12)):
        ref = nn.Conv(features, (k, k), padding=padding, feature_group_count=groups)
        variables = ref.init(jax.random.key(1), x)
        got = Conv(features, k, padding, impl=impl, groups=groups).apply(variables, x)
        np.testing.assert_allclose(got, ref.apply(variables, x), atol=1e-5)


def test_downsample_bilinear_by_hand_and_against_jax_image_resize():
    row = jnp.arange(8.0).reshape(1, 1, 8, 1) ** 2
    # [1, 3, 3, 1] / 8 at stride 2, renormalised where taps fall outside: ends over 7.
    by_hand = [(3 * 0 + 3 * 1 + 4) / 7, (1 + 3 * 4 + 3 * 9 + 16) / 8, (9 + 3 * 16 + 3 * 25 + 36) / 8,
               (25 + 3 * 36 + 3 * 49) / 7]
    np.testing.assert_allclose(downsample_bilinear(jnp.tile(row, (1, 2, 1, 1)))[0, 0, :, 0], by_hand, rtol=1e-6)
    x = jax.random.normal(jax.random.key(0), (2, 8, 16, 3))
    np.testing.assert_allclose(downsample_bilinear(x), jax.image.resize(x, (2, 4, 8, 3), "bilinear"), atol=1e-6)


def test_projection_head_is_affine_in_the_sentence(quick_compiles):
    """logit = psi(phi) + <E s, phi>: a mix of two captions scores the mix of their logits,
    and a mismatched caption moves the logit by <E (s - s'), phi>, which is not zero."""
    g, d, gp, dp, z, s, x = _init(_model())
    s2 = s[::-1] * 2.0
    score = jax.jit(lambda t: d.apply({"params": dp}, x, t))
    np.testing.assert_allclose(score(0.25 * s + 0.75 * s2), 0.25 * score(s) + 0.75 * score(s2), atol=1e-5)
    assert float(jnp.abs(score(s) - score(s2)).min()) > 1e-4


def _fan_in_path(cfg: R3GANConfig, net: str) -> int:
    """The summed lengths of the dot products along the network's deepest path: the count that
    bounds float32 rounding (each length-n dot product is off by at most n * u relatively,
    Higham, "Accuracy and Stability of Numerical Algorithms", 3.1; the bounds add along the
    path, since the init's gains keep each layer's scale near 1)."""
    per_block = lambda c: c + 9 * cfg.group_width + cfg.expansion * c  # noqa: E731
    chans = r3gan_channels(cfg.resolution, cfg.width, cfg.width_cap)
    blocks = cfg.blocks * sum(per_block(c) for c in chans)
    resampling = 16 * (len(chans) - 1)  # up to 4 x 4 bilinear taps per resampling
    if net == "g":
        text_to_basis = SENTENCE_DIM + cfg.z_dim + 2 * cfg.text_dim  # embed, basis scale, a conditional bias
        return text_to_basis + sum(chans[:-1]) + blocks + resampling + chans[-1]
    return 3 + sum(chans[1:]) + blocks + resampling + 16 + chans[0] + 2 * cfg.text_dim + SENTENCE_DIM


def test_output_parity_with_the_torch_reference(quick_compiles):
    cfg = _model(blocks=1)
    g, d, gp, dp, z, s, x = _init(cfg, batch=4)
    gp, dp = _perturb(gp, 3), _perturb(dp, 4)
    wrong = s[::-1].copy()
    fake = np.array(jax.jit(lambda p: g.apply({"params": p}, z, s))(gp))  # writable, for torch
    logits, wrong_logits = jax.jit(lambda p: d.apply({"params": p}, fake, s, wrong))(dp)

    tg, td = build_torch_r3gan(cfg, SENTENCE_DIM)
    load_flax_params(tg, gp)
    load_flax_params(td, dp)
    count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
    assert sum(p.numel() for p in tg.parameters()) == count(gp)
    assert sum(p.numel() for p in td.parameters()) == count(dp)
    with torch.no_grad():
        t_fake = tg(torch.from_numpy(z), torch.from_numpy(s)).permute(0, 2, 3, 1).numpy()
        # D reads jaxgan's images, so its comparison does not inherit G's rounding.
        t_logits, t_wrong = td(torch.from_numpy(fake).permute(0, 3, 1, 2), torch.from_numpy(s),
                               torch.from_numpy(wrong))
    # Relative bounds of u * n, n about 600-900 here: under 1e-4, so a wrong layer cannot pass.
    assert U * max(_fan_in_path(cfg, "g"), _fan_in_path(cfg, "d")) < 1e-4
    g_tol = U * _fan_in_path(cfg, "g") * max(1.0, float(np.abs(fake).max()))
    d_tol = U * _fan_in_path(cfg, "d") * max(1.0, float(np.abs(logits).max()))
    print(f"G max error {np.abs(t_fake - fake).max():.2e} (bound {g_tol:.2e}), "
          f"D {np.abs(t_logits.numpy() - np.asarray(logits)).max():.2e} (bound {d_tol:.2e})")
    assert np.abs(t_fake - fake).max() <= g_tol
    assert np.abs(t_logits.numpy() - np.asarray(logits)).max() <= d_tol
    assert np.abs(t_wrong.numpy() - np.asarray(wrong_logits)).max() <= d_tol
    assert float(np.abs(fake).std()) > 0.1 and float(np.abs(np.asarray(logits) - np.asarray(wrong_logits)).min()) > 0


def test_flops_of_a_block_by_hand_and_against_xla():
    b, size, c, e, gw = 2, 8, 32, 2, 8
    x = jnp.zeros((b, size, size, c))
    block = ResidualBlock(expansion=e, group_width=gw, conv_impl="conv")
    variables = block.init(jax.random.key(0), x)
    layers = flops.trace_layers(block, variables, x)
    taps = (2 + 3 * (size - 2) + 2) ** 2  # 3x3 SAME: edge outputs see 2 taps per axis
    wide = c * e
    by_hand = b * (size * size * c * wide + taps * gw * wide + size * size * wide * c)
    assert [layer.kind for layer in layers] == ["Conv"] * 3
    assert sum(layer.macs for layer in layers) == by_hand
    compiled = jax.jit(lambda v, x: block.apply(v, x)).lower(variables, x).compile()
    xla = _cost(compiled).get("flops")
    if xla:  # best effort: XLA adds the biases, activations and the residual sum
        assert xla == pytest.approx(flops.forward_flops(layers), rel=0.1)
    # The matmul form multiplies the padding taps too.
    matmul = ResidualBlock(expansion=e, group_width=gw, conv_impl="matmul")
    grouped = flops.trace_layers(matmul, variables, x)[1]
    assert grouped.macs == b * size * size * 9 * gw * wide


def test_two_training_steps_are_finite(quick_compiles):
    cfg = get_config("r3gan32", ["model.width=4", "model.blocks=1", "model.group_width=4", "model.z_dim=8",
                                 "model.text_dim=8", "train.batch_size=4", "train.num_devices=1"])
    state, history = train_steps(cfg, SENTENCE_DIM, 2, lambda i: random_batch(4, 32, SENTENCE_DIM, seed=i))
    assert int(state.step) == 2 and int(state.skipped) == 0
    for metrics in history:
        assert all(math.isfinite(v) for v in metrics.values())
    assert history[0]["d_loss"] != history[1]["d_loss"]
