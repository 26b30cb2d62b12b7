"""Gradient penalties against hand computations on discriminators with known gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan import regularizers

B, H, W, C, S = 3, 4, 4, 2, 5


def _inputs(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (B, H, W, C)).astype(dtype)
    s = rng.normal(size=(B, S)).astype(dtype)
    return x, s


def _linear_d(a, b):
    """D(x, s) = sum(a * x) + sum(b * s): dD/dx = a, dD/ds = b for every example."""
    return lambda x, s: jnp.sum(a * x, axis=(1, 2, 3)) + s @ b


def _quadratic_d(c, b):
    """D(x, s) = c * sum(x^2) + sum(b * s^2): dD/dx = 2 c x, dD/ds = 2 b s."""
    return lambda x, s: c * jnp.sum(x ** 2, axis=(1, 2, 3)) + (s ** 2) @ b


def _mlp_d(params):
    """A small non-linear D for the finite-difference checks."""
    def d_fn(x, s):
        h = jnp.tanh(x.reshape(x.shape[0], -1) @ params["wx"] + s @ params["ws"])
        return jnp.sin(h) @ params["v"]
    return d_fn


def _mlp_params(dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(3), 3)
    return {"wx": 0.3 * jax.random.normal(keys[0], (H * W * C, 6), dtype),
            "ws": 0.3 * jax.random.normal(keys[1], (S, 6), dtype),
            "v": jax.random.normal(keys[2], (6,), dtype)}


def test_ma_gp_constant_gradient_by_hand():
    rng = np.random.default_rng(1)
    a = (0.1 * rng.normal(size=(H, W, C))).astype(np.float32)
    b = (0.2 * rng.normal(size=(S,))).astype(np.float32)
    x, s = _inputs()
    sq = np.sum(a.astype(np.float64) ** 2) + np.sum(b.astype(np.float64) ** 2)
    expected = 2.0 * np.sqrt(sq) ** 6
    value = regularizers.ma_gp(_linear_d(a, b), x, s)
    assert value.dtype == jnp.float32 and value.shape == ()
    assert float(value) == pytest.approx(expected, rel=1e-5)
    assert float(regularizers.ma_gp(_linear_d(a, b), x, s, weight=3.0, power=2.0)) == pytest.approx(
        3.0 * sq, rel=1e-5)


def test_ma_gp_input_dependent_gradient_by_hand():
    x, s = _inputs(2)
    c, b = 0.3, np.linspace(-0.5, 0.5, S).astype(np.float32)
    x64, s64 = x.astype(np.float64), s.astype(np.float64)
    g = np.sqrt(np.sum((2 * c * x64) ** 2, axis=(1, 2, 3)) + np.sum((2 * b * s64) ** 2, axis=1))
    expected = 2.0 * np.mean(g ** 6)
    assert float(regularizers.ma_gp(_quadratic_d(c, b), x, s)) == pytest.approx(expected, rel=1e-5)


def test_r1_by_hand():
    x, s = _inputs(4)
    c, b = 0.7, np.ones(S, np.float32)
    expected = 10.0 / 2 * np.mean(np.sum((2 * c * x.astype(np.float64)) ** 2, axis=(1, 2, 3)))
    value = regularizers.r1_penalty(_quadratic_d(c, b), x, s)
    assert value.dtype == jnp.float32
    assert float(value) == pytest.approx(expected, rel=1e-5)
    a = np.full((H, W, C), 0.25, np.float32)
    assert float(regularizers.r1_penalty(_linear_d(a, b), x, s, weight=4.0)) == pytest.approx(
        4.0 / 2 * H * W * C * 0.25 ** 2, rel=1e-6)


def test_r2_by_hand():
    # Same D and gamma convention as R1 (gamma / 2), evaluated at the fakes.
    x, s = _inputs(4)
    fake, _ = _inputs(12)
    c, b = 0.7, np.ones(S, np.float32)
    d_fn = _quadratic_d(c, b)
    expected = 10.0 / 2 * np.mean(np.sum((2 * c * fake.astype(np.float64)) ** 2, axis=(1, 2, 3)))
    value = regularizers.r2_penalty(d_fn, fake, s)
    assert value.dtype == jnp.float32
    assert float(value) == pytest.approx(expected, rel=1e-5)
    assert float(regularizers.r2_penalty(d_fn, fake, s)) == pytest.approx(float(regularizers.r1_penalty(d_fn, fake, s)))
    assert float(regularizers.r2_penalty(d_fn, fake, s)) != pytest.approx(float(regularizers.r1_penalty(d_fn, x, s)))


def test_r1r2_by_hand():
    real, s = _inputs(4)
    fake, _ = _inputs(12)
    c, b = 0.7, np.ones(S, np.float32)
    sq = lambda v: np.sum((2 * c * v.astype(np.float64)) ** 2, axis=(1, 2, 3))  # noqa: E731
    gamma = 0.3
    expected = gamma / 2 * (np.mean(sq(real)) + np.mean(sq(fake)))
    value = regularizers.r1r2_penalty(_quadratic_d(c, b), real, fake, s, weight=gamma)
    assert value.dtype == jnp.float32
    assert float(value) == pytest.approx(expected, rel=1e-5)
    # A constant gradient a: gamma / 2 * 2 ||a||^2, whatever the images.
    a = np.full((H, W, C), 0.25, np.float32)
    assert float(regularizers.r1r2_penalty(_linear_d(a, b), real, fake, s, weight=4.0)) == pytest.approx(
        4.0 / 2 * 2 * H * W * C * 0.25 ** 2, rel=1e-6)
    # The default gamma is R3GAN's 32 px value, and the config's default weight for r1r2.
    default = regularizers.r1r2_penalty(_linear_d(a, b), real, fake, s)
    assert float(default) == pytest.approx(0.05 * H * W * C * 0.25 ** 2, rel=1e-6)
    assert regularizers.DEFAULT_WEIGHTS["r1r2"] == 0.05 and regularizers.DEFAULT_WEIGHTS["r2"] == 10.0


@pytest.mark.parametrize("kind", ["r2", "r1r2"])
def test_penalty_from_config_r2_and_r1r2_lazily(kind):
    real, s = _inputs(4)
    fake, _ = _inputs(12)
    d_fn = _quadratic_d(0.7, jnp.ones(S))
    direct = {"r2": regularizers.r2_penalty(d_fn, fake, s, weight=2.0),
              "r1r2": regularizers.r1r2_penalty(d_fn, real, fake, s, weight=2.0)}[kind]
    penalty = regularizers.penalty_from_config(kind, weight=2.0)
    key = jax.random.key(0)
    assert float(penalty(d_fn, real, fake, s, key, 0, 1)) == pytest.approx(float(direct), rel=1e-6)
    assert float(penalty(d_fn, real, fake, s, key, jnp.int32(8), 4)) == pytest.approx(4 * float(direct), rel=1e-6)
    assert float(penalty(d_fn, real, fake, s, key, jnp.int32(9), 4)) == 0.0
    # Weight 0 means the paper's.
    paper = regularizers.penalty_from_config(kind)(d_fn, real, fake, s, key, 0, 1)
    assert float(paper) == pytest.approx(float(direct) * regularizers.DEFAULT_WEIGHTS[kind] / 2.0, rel=1e-6)


def test_r2_gradient_does_not_reach_the_generator():
    # The step passes stop_gradient(fake): G's parameters get nothing from R2.
    x, s = _inputs(3)
    d_fn = _quadratic_d(0.7, jnp.ones(S))

    def through_g(scale):
        fake = jax.lax.stop_gradient(scale * x)
        return regularizers.r2_penalty(d_fn, fake, s)

    assert float(jax.grad(through_g)(1.3)) == 0.0
    assert float(jax.grad(lambda c: regularizers.r2_penalty(_quadratic_d(c, jnp.ones(S)), x, s))(0.7)) > 0


def test_wgan_gp_by_hand():
    real, s = _inputs(5)
    fake, _ = _inputs(6)
    key = jax.random.key(7)
    c, b = 0.4, np.zeros(S, np.float32)
    eps = np.asarray(jax.random.uniform(key, (B, 1, 1, 1), jnp.float32), np.float64)
    x_hat = eps * real + (1 - eps) * fake
    norm = np.sqrt(np.sum((2 * c * x_hat) ** 2, axis=(1, 2, 3)))
    expected = 10.0 * np.mean((norm - 1) ** 2)
    value = regularizers.wgan_gp(_quadratic_d(c, b), real, fake, s, key)
    assert value.dtype == jnp.float32
    assert float(value) == pytest.approx(expected, rel=1e-5)
    # A constant gradient does not depend on eps: weight * (||a|| - 1)^2.
    a = np.full((H, W, C), 0.5, np.float32)
    value = regularizers.wgan_gp(_linear_d(a, b), real, fake, s, key, weight=2.0)
    assert float(value) == pytest.approx(2.0 * (np.sqrt(H * W * C * 0.25) - 1) ** 2, rel=1e-6)


def test_penalties_are_float32_for_bfloat16_inputs():
    x, s = _inputs()
    x, s = jnp.asarray(x, jnp.bfloat16), jnp.asarray(s, jnp.bfloat16)
    d_fn = _quadratic_d(0.3, jnp.ones(S, jnp.bfloat16))
    for value in (regularizers.ma_gp(d_fn, x, s), regularizers.r1_penalty(d_fn, x, s),
                  regularizers.r2_penalty(d_fn, x, s), regularizers.r1r2_penalty(d_fn, x, x[::-1], s),
                  regularizers.wgan_gp(d_fn, x, x[::-1], s, jax.random.key(0))):
        assert value.dtype == jnp.float32 and np.isfinite(float(value))


def test_zero_gradient_gives_finite_parameter_gradients():
    # A flat D: every input gradient is 0, where a plain sqrt would give inf * 0 = NaN.
    x, s = _inputs()
    key = jax.random.key(0)

    def penalties(scale):
        def d_fn(xx, ss):
            return scale * (jnp.sum(xx, axis=(1, 2, 3)) + jnp.sum(ss, axis=1))

        return (regularizers.ma_gp(d_fn, x, s) + regularizers.ma_gp(d_fn, x, s, power=1.0)
                + regularizers.wgan_gp(d_fn, x, x[::-1], s, key))

    grad = jax.grad(penalties)(0.0)
    assert np.isfinite(float(grad))


@pytest.mark.parametrize("name", ["ma_gp", "r1", "r2", "r1r2", "wgan_gp"])
def test_parameter_gradient_matches_finite_difference(name):
    with jax.enable_x64(True):
        x, s = _inputs(8, np.float64)
        fake, _ = _inputs(9, np.float64)
        key = jax.random.key(11)
        penalty = {
            "ma_gp": lambda d_fn: regularizers.ma_gp(d_fn, x, s),
            "r1": lambda d_fn: regularizers.r1_penalty(d_fn, x, s),
            "r2": lambda d_fn: regularizers.r2_penalty(d_fn, fake, s),
            "r1r2": lambda d_fn: regularizers.r1r2_penalty(d_fn, x, fake, s, weight=0.5),
            "wgan_gp": lambda d_fn: regularizers.wgan_gp(d_fn, x, fake, s, key),
        }[name]
        params = _mlp_params(jnp.float64)
        loss = jax.jit(lambda p: penalty(_mlp_d(p)))
        grads = jax.grad(loss)(params)
        direction = jax.tree.map(
            lambda p: jax.random.normal(jax.random.key(5), p.shape, p.dtype), params)
        h = 1e-5
        plus = loss(jax.tree.map(lambda p, d: p + h * d, params, direction))
        minus = loss(jax.tree.map(lambda p, d: p - h * d, params, direction))
        numeric = float((plus - minus) / (2 * h))
        analytic = float(sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads),
                                                                jax.tree.leaves(direction))))
        assert loss(params).dtype == jnp.float64
        assert abs(analytic) > 1e-6
        assert analytic == pytest.approx(numeric, rel=1e-6)


def test_lazy_scales_on_multiples_and_is_zero_otherwise():
    traces = []

    def penalty():
        return jnp.float32(1.5)

    @jax.jit
    def run(step):
        traces.append(1)
        return regularizers.lazy(penalty, step, every=4)

    values = [float(run(jnp.int32(step))) for step in range(10)]
    assert values == [6.0 if step % 4 == 0 else 0.0 for step in range(10)]
    assert len(traces) == 1


def test_lazy_gradient_and_every_one_has_no_cond():
    x, s = _inputs()

    def loss(c, step, every):
        d_fn = _quadratic_d(c, jnp.ones(S))
        return regularizers.lazy(lambda: regularizers.r1_penalty(d_fn, x, s), step, every)

    every_step = jax.grad(loss)(0.5, 0, 1)
    lazy_step = jax.grad(loss)(0.5, jnp.int32(8), 4)
    assert float(lazy_step) == pytest.approx(4 * float(every_step), rel=1e-6)
    assert float(jax.grad(loss)(0.5, jnp.int32(9), 4)) == 0.0
    jaxpr = str(jax.make_jaxpr(lambda c, st: loss(c, st, 1))(0.5, jnp.int32(3)))
    assert "cond" not in jaxpr
    assert "cond" in str(jax.make_jaxpr(lambda c, st: loss(c, st, 4))(0.5, jnp.int32(3)))


@pytest.mark.parametrize("every", [0, -2, 2.0])
def test_lazy_rejects_bad_intervals(every):
    with pytest.raises(ValueError, match="every must be"):
        regularizers.lazy(lambda: jnp.float32(1.0), 0, every)
