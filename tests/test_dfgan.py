"""DF-GAN generator and discriminator, and the optional CA, word attention, self-attention and SN."""

import math
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan.losses import conditioning_kl
from jaxgan.models import build_models
from jaxgan.models.dfgan import (
    Affine,
    DFBlock,
    DFDiscriminator,
    DFGenerator,
    GBlock,
    MatchingHead,
    dfgan_channels,
    dfgan_d_channels,
)
from jaxgan.models.layers import (
    ConditioningAugmentation,
    Conv,
    SelfAttention,
    WordAttention,
    upsample_bilinear,
    upsample_nearest,
)
from jaxgan.presets import apply_overrides, get_config

Z, S, W, L = 16, 12, 10, 6  # noise, sentence, word dims; caption length

pytestmark = pytest.mark.usefixtures("quick_compiles")


def _inputs(batch=2, seed=0):
    k = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(k[0], (batch, Z)), jax.random.normal(k[1], (batch, S)),
            jax.random.normal(k[2], (batch, L, W)))


def _perturb(params, seed=0, scale=0.1):
    """Noise on every param, so the zero-initialised gates (affines, gammas, scales) are open.

    NumPy, not jax.random: nothing to compile.
    """
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: (np.asarray(p) + scale * rng.standard_normal(p.shape)).astype(np.float32), params)


def _jit(fn, *args):
    """``jax.jit(fn)`` compiled for ``args`` with XLA's backend optimisations off.

    These models are tiny, so compiling dominates: level 0 compiles the inits about 4x
    faster. The result only accepts arguments shaped like ``args``.
    """
    return jax.jit(fn).lower(*args).compile(compiler_options={"xla_backend_optimization_level": 0})


def _init(module, *args, rngs=None, **kwargs):
    """``module.init`` compiled (eager init compiles every random op on its own: much slower)."""
    rngs = rngs or jax.random.key(0)
    return _jit(lambda: module.init(rngs, *args, **kwargs))()


def _count(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def test_channel_lists_match_dfgan():
    nf = 32
    assert dfgan_channels(256, nf) == [8 * nf, 8 * nf, 8 * nf, 8 * nf, 4 * nf, 2 * nf, nf]
    assert dfgan_d_channels(256, nf) == [nf, 2 * nf, 4 * nf, 8 * nf, 8 * nf, 8 * nf, 8 * nf]
    assert dfgan_channels(128, nf) == [8 * nf, 8 * nf, 8 * nf, 4 * nf, 2 * nf, nf]
    assert dfgan_channels(64, nf) == [8 * nf, 8 * nf, 4 * nf, 2 * nf, nf]
    with pytest.raises(ValueError, match="power of two"):
        dfgan_channels(48, nf)


@pytest.mark.parametrize("resolution", [32, 64, 128, 256])
def test_shapes_and_dtypes(resolution):
    g, d = DFGenerator(resolution, width=4), DFDiscriminator(resolution, width=4)
    z, s, _ = _inputs()
    gv = jax.eval_shape(lambda: g.init(jax.random.key(0), z, s, train=False))
    x = jax.eval_shape(lambda v: g.apply(v, z, s, train=False), gv)
    assert x.shape == (2, resolution, resolution, 3) and x.dtype == jnp.float32
    n_blocks = resolution.bit_length() - 3  # 4x4 -> resolution
    assert {k for k in gv["params"] if k.startswith("block_")} == {f"block_{i}" for i in range(n_blocks)}
    dv = jax.eval_shape(lambda x: d.init(jax.random.key(1), x, s, s, train=False), x)
    logits, wrong = jax.eval_shape(lambda v, x: d.apply(v, x, s, s, train=False), dv, x)
    assert logits.shape == wrong.shape == (2,) and logits.dtype == jnp.float32
    feats = jax.eval_shape(lambda v, x: d.apply(v, x, method="features"), dv, x)
    assert feats.shape == (2, 4, 4, 32)


def test_reference_config_channels_and_param_counts():
    # nf=32 at 256px, 100-d noise, 256-d DAMSM sentence: the published DF-GAN configuration.
    g, d = DFGenerator(256, 32), DFDiscriminator(256, 32)
    z, s = jnp.ones((1, 100)), jnp.ones((1, 256))
    gp = jax.eval_shape(lambda: g.init(jax.random.key(0), z, s, train=False))["params"]
    dp = jax.eval_shape(lambda: d.init(jax.random.key(0), jnp.ones((1, 256, 256, 3)), s, train=False))["params"]
    ch = dfgan_channels(256, 32)
    assert gp["fc"]["kernel"].shape == (100, 16 * ch[0])
    for i, (c_in, c_out) in enumerate(zip(ch[:-1], ch[1:])):
        block = gp[f"block_{i}"]
        assert block["conv_0"]["kernel"].shape == (3, 3, c_in, c_out)
        assert block["conv_1"]["kernel"].shape == (3, 3, c_out, c_out)
        assert ("shortcut" in block) == (c_in != c_out)
        assert block["fuse_0"]["affine_0"]["gamma_0"]["kernel"].shape == (356, c_in)
        assert block["fuse_1"]["affine_1"]["beta_1"]["kernel"].shape == (c_out, c_out)
    dch = dfgan_d_channels(256, 32)
    trunk = dp["trunk"]
    assert trunk["conv_img"]["kernel"].shape == (3, 3, 3, 32)
    for i, (c_in, c_out) in enumerate(zip(dch[:-1], dch[1:])):
        assert trunk[f"block_{i}"]["conv_0"]["kernel"].shape == (4, 4, c_in, c_out)
    assert dp["matcher"]["joint"]["kernel"].shape == (3, 3, 256 + 256, 64)
    assert dp["matcher"]["logit"]["kernel"].shape == (4, 4, 64, 1)
    # Measured: G 9.74M + D 6.72M; DF-GAN reports "about 18M" with its text encoder setup.
    assert 10e6 < _count(gp) + _count(dp) < 25e6


MASK = jnp.array([[True] * 4 + [False] * 2, [True] * 2 + [False] * 4])


@pytest.fixture(scope="module")
def plain():
    """The published architecture at 32px, nf=4: modules, params (at init and perturbed), jitted calls."""
    g, d = DFGenerator(32, width=4), DFDiscriminator(32, width=4)
    z, s, _ = _inputs(2)
    gp = _init(g, z, s, train=False)["params"]
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1, maxval=1)
    dp = _init(d, x, s, train=False)["params"]
    gen = _jit(lambda p, z, s: g.apply({"params": p}, z, s, train=False), gp, z, s)
    disc = _jit(lambda p, x, s: d.apply({"params": p}, x, s, train=False), dp, x, s)
    return types.SimpleNamespace(g=g, d=d, z=z, s=s, x=x, gp=gp, dp=dp, gen=gen, disc=disc)


FULL_G = dict(resolution=32, width=4, ca=True, ca_dim=6, attention_resolutions=(8, 16), self_attention_resolution=16)
FULL_D = dict(resolution=32, width=4, spectral_norm=True, self_attention_resolution=8)


@pytest.fixture(scope="module")
def full():
    """Every option on: CA, word attention at 8 and 16, self-attention in G and D, SN in D."""
    g, d = DFGenerator(**FULL_G), DFDiscriminator(**FULL_D)
    z, s, words = _inputs(2)
    gv = _init(g, z, s, words, MASK, train=False)
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1, maxval=1)
    dv = _init(d, x, s, train=False)
    gp = gv["params"]
    gen = _jit(lambda p, z, s, w, m: g.apply({"params": p}, z, s, w, m, train=False,
                                             mutable=["intermediates", "losses"]), gp, z, s, words, MASK)
    gen_train = _jit(lambda p, z, s, w, m, key: g.apply({"params": p}, z, s, w, m, train=True, rngs={"ca": key}),
                     gp, z, s, words, MASK, jax.random.key(0))
    disc = _jit(lambda v, x, s: d.apply(v, x, s, train=False), dv, x, s)
    return types.SimpleNamespace(g=g, d=d, z=z, s=s, words=words, x=x, gv=gv, dv=dv, gp=_perturb(gv["params"], 0, 0.05),
                                 gen=gen, gen_train=gen_train, disc=disc)


def test_generator_is_tanh_ranged_and_uses_text_through_the_fusion(plain):
    x = plain.gen(plain.gp, plain.z, plain.s)
    assert float(jnp.abs(x).max()) <= 1.0
    # The affines start as identities, so at init the text has no effect at all...
    np.testing.assert_array_equal(x, plain.gen(plain.gp, plain.z, -plain.s))
    # ...and once their last layers move, it does.
    p = _perturb(plain.gp, 1, 0.05)
    assert float(jnp.abs(plain.gen(p, plain.z, plain.s) - plain.gen(p, plain.z, -plain.s)).max()) > 1e-3


def test_affine_and_df_block_start_as_identity():
    h = jax.random.normal(jax.random.key(0), (3, 4, 4, 5))
    cond = jax.random.normal(jax.random.key(1), (3, 7))
    aff = Affine(5)
    np.testing.assert_array_equal(aff.apply(_init(aff, h, cond), h, cond), h)
    block = DFBlock(5)
    np.testing.assert_allclose(block.apply(_init(block, h, cond), h, cond),
                               nn.leaky_relu(nn.leaky_relu(h, 0.2), 0.2), rtol=1e-6)


def test_df_block_with_norm_is_a_conditional_batchnorm():
    h = jax.random.normal(jax.random.key(0), (6, 4, 4, 5))
    cond = jax.random.normal(jax.random.key(1), (6, 7))
    # Open the affines so the text really scales and shifts the normalised features.
    block = DFBlock(5, norm=True)
    variables = {**_init(block, h, cond, train=False), "params": _perturb(_init(block, h, cond)["params"], 2, 0.3)}
    train = _jit(lambda v, h, c: block.apply(v, h, c, train=True, mutable=["batch_stats"]), variables, h, cond)
    out, updates = train(variables, h, cond)
    # Training mode normalises over the batch: a per-channel rescale and shift of the input
    # (what a drifting residual stream does) changes nothing...
    a, b = jnp.linspace(0.5, 3.0, 5), jnp.linspace(-2.0, 2.0, 5)
    # (To BatchNorm's epsilon: 1e-5 against variances down to 0.25.)
    np.testing.assert_allclose(train(variables, a * h + b, cond)[0], out, rtol=1e-4, atol=1e-4)
    # ...which is not true of the paper's block, whose affines see the raw features.
    plain_block = DFBlock(5)
    plain_vars = {"params": {k: v for k, v in variables["params"].items() if k != "norm"}}
    plain_out = plain_block.apply(plain_vars, h, cond)
    assert float(jnp.abs(plain_block.apply(plain_vars, a * h + b, cond) - plain_out).max()) > 0.1
    # The running statistics move towards the batch's (momentum 0.9 from mean 0, var 1).
    np.testing.assert_allclose(updates["batch_stats"]["norm"]["mean"], 0.1 * h.mean((0, 1, 2)), rtol=1e-4, atol=1e-6)
    # Inference uses them, so a sample does not depend on the rest of its batch.
    infer = _jit(lambda v, h, c: block.apply(v, h, c, train=False), variables, h, cond)
    np.testing.assert_allclose(infer(variables, h, cond)[:3],
                               infer(variables, jnp.concatenate([h[:3], -h[3:]]), cond)[:3], atol=1e-6)


def test_bilinear_shortcut_changes_only_how_the_shortcut_is_upsampled():
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 6))
    cond = jax.random.normal(jax.random.key(1), (2, 7))
    nearest, bilinear = GBlock(3), GBlock(3, shortcut_upsample="bilinear")
    variables = {"params": _perturb(_init(nearest, x, cond)["params"])}
    # The same params: a checkpoint of either loads into the other.
    assert jax.tree.structure(_init(bilinear, x, cond)) == jax.tree.structure(variables)
    shortcut = variables["params"]["shortcut"]
    s = x @ shortcut["kernel"][0, 0] + shortcut["bias"]  # the 1x1 conv, at the low resolution
    difference = bilinear.apply(variables, x, cond) - nearest.apply(variables, x, cond)
    np.testing.assert_allclose(difference, upsample_bilinear(s) - upsample_nearest(s), atol=1e-5)
    assert float(jnp.abs(difference).max()) > 0.01
    with pytest.raises(ValueError, match="shortcut_upsample must be 'nearest' or 'bilinear'"):
        GBlock(3, shortcut_upsample="bicubic").init(jax.random.key(0), x, cond)


def test_discriminator_residual_gammas_start_at_zero(plain):
    gammas = {k: b["gamma"] for k, b in plain.dp["trunk"].items() if k.startswith("block_")}
    assert len(gammas) == 3 and all(float(g) == 0.0 for g in gammas.values())
    # So the residual convs do not touch the output yet.
    p = jax.tree.map(lambda a: a, plain.dp)
    p["trunk"]["block_1"]["conv_0"]["kernel"] = p["trunk"]["block_1"]["conv_0"]["kernel"] * 3.0
    np.testing.assert_array_equal(plain.disc(p, plain.x, plain.s), plain.disc(plain.dp, plain.x, plain.s))
    # head(features(x), s) is the same function as D(x, s), for reusing one trunk pass.
    def two_halves(p, x, s):
        return plain.d.apply({"params": p}, plain.d.apply({"params": p}, x, method="features"), s, method="head")

    p = _perturb(plain.dp, 6, 0.05)
    np.testing.assert_allclose(_jit(two_halves, p, plain.x, plain.s)(p, plain.x, plain.s),
                               plain.disc(p, plain.x, plain.s), rtol=1e-5, atol=1e-6)


def test_matching_head_width_and_projection_term_by_hand():
    h = jax.random.normal(jax.random.key(0), (3, 4, 4, 8))
    s = jax.random.normal(jax.random.key(1), (3, S))
    plain_head = MatchingHead(width=4)
    variables = _init(plain_head, h, s, False)
    assert variables["params"]["joint"]["kernel"].shape == (3, 3, 8 + S, 8)  # 2nf, DF-GAN's
    assert _init(MatchingHead(width=4, hidden=20), h, s, False)["params"]["joint"]["kernel"].shape[-1] == 20
    head = MatchingHead(width=4, projection=True)
    params = _perturb(_init(head, h, s, False)["params"], 1)
    # The projection term is the only difference: <mean_hw lrelu(h), W s> per example.
    without = {k: v for k, v in params.items() if k != "projection"}
    pooled = np.where(np.asarray(h) > 0, h, 0.2 * np.asarray(h)).mean((1, 2))
    expected = (pooled * (np.asarray(s) @ params["projection"]["kernel"])).sum(-1)
    got = head.apply({"params": params}, h, s, False) - plain_head.apply({"params": without}, h, s, False)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert float(np.abs(expected).min()) > 1e-3


def test_word_attention_ignores_padding_and_sows_the_map():
    h = jax.random.normal(jax.random.key(0), (2, 4, 4, 8))
    words = jax.random.normal(jax.random.key(1), (2, L, W))
    mask = jnp.array([[True] * 3 + [False] * 3, [True] * L])
    att = WordAttention()
    v = _init(att, h, words, mask)
    assert float(v["params"]["scale"]) == 0.0
    np.testing.assert_array_equal(att.apply(v, h, words, mask), h)  # identity at init
    p = {**v["params"], "scale": jnp.ones(())}
    run = _jit(lambda w, m: att.apply({"params": p}, h, w, m, mutable=["intermediates"]), words, mask)
    out, col = run(words, mask)
    probs = col["intermediates"]["attention"]
    assert probs.shape == (2, 16, L)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    assert float(jnp.abs(probs[0, :, 3:]).max()) == 0.0
    padded = words.at[0, 4].set(100.0)  # a padding position of caption 0
    np.testing.assert_allclose(run(padded, mask)[0], out, atol=1e-6)
    real = words.at[0, 1].set(100.0)
    assert float(jnp.abs(run(real, mask)[0] - out)[0].max()) > 1e-3
    # A caption of padding alone attends nowhere instead of producing NaN.
    np.testing.assert_array_equal(run(words, jnp.zeros_like(mask))[0], h)


def test_generator_word_attention_masks_padding_end_to_end(full):
    x, col = full.gen(full.gp, full.z, full.s, full.words, MASK)
    assert col["intermediates"]["attn_8"]["attention"].shape == (2, 64, L)
    assert col["intermediates"]["attn_16"]["attention"].shape == (2, 256, L)
    padded = full.words.at[0, 5].set(-50.0).at[1, 2].set(9.0)
    np.testing.assert_allclose(full.gen(full.gp, full.z, full.s, padded, MASK)[0], x, atol=1e-6)
    real = full.words.at[1, 1].set(9.0)
    assert float(jnp.abs(full.gen(full.gp, full.z, full.s, real, MASK)[0] - x).max()) > 1e-4
    with pytest.raises(ValueError, match="word embeddings"):
        jax.eval_shape(lambda: full.g.apply(full.gv, full.z, full.s, train=False))
    bad = DFGenerator(32, width=4, attention_resolutions=(64,))
    with pytest.raises(ValueError, match="not feature-map sizes"):
        jax.eval_shape(lambda: bad.init(jax.random.key(0), full.z, full.s, full.words, train=False))


def test_conditioning_augmentation():
    s = jax.random.normal(jax.random.key(0), (3, S))
    ca = ConditioningAugmentation(5)
    v = _init(ca, s, train=False)
    a, col = ca.apply(v, s, train=False, rngs={"ca": jax.random.key(2)}, mutable=["losses"])
    b = ca.apply(v, s, train=False, rngs={"ca": jax.random.key(3)})
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, col["losses"]["mu"])
    assert col["losses"]["mu"].shape == col["losses"]["log_sigma"].shape == (3, 5)
    c = ca.apply(v, s, train=True, rngs={"ca": jax.random.key(2)})
    d = ca.apply(v, s, train=True, rngs={"ca": jax.random.key(3)})
    assert float(jnp.abs(c - d).min()) > 0
    np.testing.assert_array_equal(c, ca.apply(v, s, train=True, rngs={"ca": jax.random.key(2)}))


def test_generator_with_ca_sows_mu_and_is_deterministic_in_eval(full):
    x, col = full.gen(full.gp, full.z, full.s, full.words, MASK)
    assert col["losses"]["ca"]["mu"].shape == (2, 6) and col["losses"]["ca"]["log_sigma"].shape == (2, 6)
    np.testing.assert_array_equal(full.gen(full.gp, full.z, full.s, full.words, MASK)[0], x)
    a = full.gen_train(full.gp, full.z, full.s, full.words, MASK, jax.random.key(5))
    b = full.gen_train(full.gp, full.z, full.s, full.words, MASK, jax.random.key(6))
    assert float(jnp.abs(a - b).max()) > 1e-4


def test_self_attention_starts_as_identity(full):
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 16))
    sa = SelfAttention()
    v = _init(sa, x)
    np.testing.assert_array_equal(sa.apply(v, x), x)
    assert float(jnp.abs(sa.apply({"params": {**v["params"], "gamma": jnp.ones(())}}, x) - x).max()) > 1e-3
    assert float(full.gv["params"]["self_attn_16"]["gamma"]) == 0.0
    assert float(full.dv["params"]["trunk"]["self_attn_8"]["gamma"]) == 0.0


def test_spectral_norm_top_singular_value_is_one(full):
    d, x, s, params = full.d, full.x, full.s, full.dv["params"]

    def power_steps(stats):
        def body(_, stats):
            _, upd = d.apply({"params": params, "batch_stats": stats}, x, s, s, train=True, mutable=["batch_stats"])
            return upd["batch_stats"]
        return jax.lax.fori_loop(0, 50, body, stats)

    stats = _jit(power_steps, full.dv["batch_stats"])(full.dv["batch_stats"])
    flat_params = {"/".join(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
    checked = 0
    for path, sigma in jax.tree_util.tree_leaves_with_path(stats):
        keys = [k.key for k in path]
        if not keys[-1].endswith("/sigma"):
            continue
        # batch_stats .../SpectralNorm_i/{layer}/kernel/sigma normalises params .../{layer}/kernel.
        kernel = flat_params["/".join(keys[:-2] + [keys[-1][:-len("/sigma")]])]
        top = np.linalg.svd(np.asarray(kernel).reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
        np.testing.assert_allclose(top / float(sigma), 1.0, rtol=0.02)
        checked += 1
    assert checked == 1 + 3 * 3 + 4 + 2  # conv_img, 3 blocks x (conv_0, conv_1, shortcut), SA f/g/h/v, head
    # The logits see the normalised kernels: scaling a kernel changes nothing.
    p2 = jax.tree.map(lambda a: a, params)
    p2["trunk"]["conv_img"]["kernel"] = p2["trunk"]["conv_img"]["kernel"] * 7.0
    out = full.disc({"params": params, "batch_stats": stats}, x, s)
    np.testing.assert_allclose(full.disc({"params": p2, "batch_stats": stats}, x, s), out, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("impl", ["conv", "matmul"])
@pytest.mark.parametrize("kernel_size,padding", [(3, "SAME"), (4, "VALID"), (1, "SAME")])
def test_conv_equals_nn_conv(impl, kernel_size, padding):
    x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3))
    layer = Conv(4, kernel_size, padding, impl=impl)
    v = _init(layer, x)
    v = {"params": {**v["params"], "bias": jax.random.normal(jax.random.key(2), (4,))}}
    plain_conv = nn.Conv(4, (kernel_size, kernel_size), padding=padding)
    np.testing.assert_allclose(layer.apply(v, x), plain_conv.apply(v, x), atol=2e-5)
    g1 = _jit(jax.grad(lambda p: jnp.sum(layer.apply({"params": p}, x) ** 2)), v["params"])(v["params"])
    g2 = _jit(jax.grad(lambda p: jnp.sum(plain_conv.apply({"params": p}, x) ** 2)), v["params"])(v["params"])
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)


def test_conv_impls_give_the_same_models(plain):
    # conv_impl changes how convs run, not the params or the function.
    g = DFGenerator(32, width=4, conv_impl="matmul")
    d = DFDiscriminator(32, width=4, conv_impl="matmul")
    gp, dp = _perturb(plain.gp, 2, 0.05), _perturb(plain.dp, 3, 0.05)
    x = _jit(lambda p: g.apply({"params": p}, plain.z, plain.s, train=False), gp)(gp)
    np.testing.assert_allclose(x, plain.gen(gp, plain.z, plain.s), atol=1e-5)
    logits = _jit(lambda p: d.apply({"params": p}, plain.x, plain.s, train=False), dp)(dp)
    np.testing.assert_allclose(logits, plain.disc(dp, plain.x, plain.s), atol=1e-4, rtol=1e-4)


def test_bfloat16_is_close_to_float32_with_float32_params_and_outputs(full):
    g16 = DFGenerator(**FULL_G, dtype=jnp.bfloat16)
    d16 = DFDiscriminator(**FULL_D, dtype=jnp.bfloat16)
    gv = jax.eval_shape(lambda: g16.init(jax.random.key(0), full.z, full.s, full.words, MASK, train=False))
    assert {p.dtype for p in jax.tree.leaves(gv)} == {jnp.dtype(jnp.float32)}
    dv = jax.eval_shape(lambda: d16.init(jax.random.key(0), full.x, full.s, train=False))
    assert {p.dtype for p in jax.tree.leaves(dv)} == {jnp.dtype(jnp.float32)}
    def run(p):
        return g16.apply({"params": p}, full.z, full.s, full.words, MASK, train=False)

    assert "bf16" in str(jax.make_jaxpr(run)(full.gp))
    x16, x32 = _jit(run, full.gp)(full.gp), full.gen(full.gp, full.z, full.s, full.words, MASK)[0]
    assert x16.dtype == jnp.float32 and bool(jnp.isfinite(x16).all())
    assert float(jnp.abs(x16 - x32).max()) < 0.1 and float(jnp.abs(x16 - x32).mean()) < 0.02
    dp = {"params": _perturb(full.dv["params"], 4, 0.05), "batch_stats": full.dv["batch_stats"]}
    l16 = _jit(lambda v: d16.apply(v, full.x, full.s, train=False), dp)(dp)
    l32 = full.disc(dp, full.x, full.s)
    assert l16.dtype == jnp.float32 and bool(jnp.isfinite(l16).all())
    np.testing.assert_allclose(l16, l32, atol=0.05 * (1 + float(jnp.abs(l32).max())))


def test_jit_forward_and_backward_with_every_option_is_finite(full):
    g, d = full.g, full.d
    wrong = jnp.roll(full.s, 1, axis=0)
    gp, dp = full.gp, _perturb(full.dv["params"], 5, 0.05)

    def loss(gp, dp, stats, key):
        fake, col = g.apply({"params": gp}, full.z, full.s, full.words, MASK, train=True, rngs={"ca": key},
                            mutable=["losses"])
        (logits, wrong_logits), upd = d.apply({"params": dp, "batch_stats": stats}, fake, full.s, wrong,
                                              train=True, mutable=["batch_stats"])
        kl = conditioning_kl(col["losses"])
        return jnp.sum(logits) + jnp.sum(wrong_logits) + kl, upd

    def step(gp, dp, stats, key):
        (value, upd), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(gp, dp, stats, key)
        # The matching-aware gradient penalty needs D differentiable in the image and the sentence.
        def score(x, t):
            return jnp.sum(d.apply({"params": dp, "batch_stats": upd["batch_stats"]}, x, t, train=False))

        return value, upd, grads, jax.grad(score, argnums=(0, 1))(full.x, full.s)

    args = (gp, dp, full.dv["batch_stats"], jax.random.key(3))
    value, upd, grads, (gx, gs) = _jit(step, *args)(*args)
    assert bool(jnp.isfinite(value))
    assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves((grads, upd, gx, gs)))
    assert float(jnp.abs(grads[0]["fc"]["kernel"]).max()) > 0
    assert float(jnp.abs(grads[0]["ca"]["Dense_0"]["kernel"]).max()) > 0
    assert float(jnp.abs(gx).max()) > 0 and float(jnp.abs(gs).max()) > 0


def _model(arch, **fields):
    """The tiny preset's model as ``arch``'s config, with ``fields`` changed."""
    overrides = {"model.arch": arch, **{f"model.{k}": v for k, v in fields.items()}}
    return apply_overrides(get_config("tiny"), overrides).model


def test_build_models_dispatches_on_arch():
    cfg = get_config("tiny").model
    g, d = build_models(cfg)
    assert type(g).__name__ == "Generator" and type(d).__name__ == "Discriminator"
    g, d = build_models(_model(arch="dfgan"))
    assert isinstance(g, DFGenerator) and isinstance(d, DFDiscriminator)
    assert (g.width, g.resolution, g.ca, g.attention_resolutions, d.spectral_norm) == (8, 32, False, (), False)
    g, d = build_models(_model(arch="dfgan", ca=True, word_attention="8,16", self_attention=16,
                               spectral_norm=True))
    assert (g.ca, g.attention_resolutions, g.self_attention_resolution) == (True, (8, 16), 16)
    assert (d.spectral_norm, d.self_attention_resolution) == (True, 16)
    g, _ = build_models(_model(arch="dfgan", g_norm="batch"), bn_groups=2)
    assert (g.norm, g.bn_groups) == ("batch", 2)
    g, _ = build_models(_model(arch="dfgan", g_shortcut="bilinear"))
    assert g.shortcut_upsample == "bilinear"
    _, d = build_models(_model(arch="dfgan", d_head_width=64, d_projection=True))
    assert (d.head_hidden, d.projection) == (64, True)
    # model.d_width sets D's width alone, in both architectures; 0 means model.width.
    for arch in ("dfgan", "dcgan"):
        g, d = build_models(_model(arch=arch, d_width=16))
        assert (g.width, d.width) == (8, 16)
        assert build_models(_model(arch=arch))[1].width == 8
