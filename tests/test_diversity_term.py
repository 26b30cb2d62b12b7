"""DSGAN's diversity-sensitive term on G (Yang et al. 2019): value, gradient, and its place in the step."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan.checkpoint import compare_configs
from jaxgan.config import to_dict
from jaxgan.diversity import diversity_ratio
from jaxgan.losses import nonsaturating_g
from jaxgan.parallel import data_fsdp_parallel
from jaxgan.presets import get_config
from jaxgan.state import init_state
from jaxgan.step import example_noise, make_train_step

S, Z, BATCH, RES = 8, 4, 4, 32


class StubG(nn.Module):
    @nn.compact
    def __call__(self, z, sentence, train=False):
        h = nn.Dense(RES * RES * 3)(jnp.concatenate([z, sentence], -1))
        return jnp.tanh(h).reshape(-1, RES, RES, 3)


class StubD(nn.Module):
    @nn.compact
    def __call__(self, images, text, wrong_text=None, train=False):
        w = self.param("w", nn.initializers.normal(0.1), (RES * RES * 3,))
        logit = lambda x: x.reshape(x.shape[0], -1).astype(jnp.float32) @ w  # noqa: E731
        return logit(images) if wrong_text is None else (logit(images), logit(images))


def test_value_against_a_hand_computed_one():
    a = np.zeros((2, 2, 2, 1), np.float32)
    b = np.stack([np.full((2, 2, 1), 0.5), np.full((2, 2, 1), 1.0)]).astype(np.float32)
    z_a = np.array([[0.0, 0.0], [0.0, 0.0]], np.float32)
    z_b = np.array([[1.0, -1.0], [0.5, 0.5]], np.float32)
    # Pair 0: mean|da| 0.5 / mean|dz| 1 = 0.5. Pair 1: 1 / 0.5 = 2, bounded by tau 1.5.
    assert float(diversity_ratio(a, b, z_a, z_b, tau=1.5)) == pytest.approx((0.5 + 1.5) / 2)
    assert float(diversity_ratio(a, b, z_a, z_b, tau=10.0)) == pytest.approx((0.5 + 2.0) / 2)


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.normal(size=(3, 4, 4, 2))) for _ in range(2))
    z_a, z_b = (jnp.asarray(rng.normal(size=(3, 5))) for _ in range(2))
    grad = np.asarray(jax.grad(lambda x: diversity_ratio(x, b, z_a, z_b, tau=100.0))(a), np.float64)

    def f64(x):  # the formula in float64 numpy, for central differences without float32 rounding
        d_i = np.abs(x - np.asarray(b, np.float64)).reshape(3, -1).mean(1)
        return float(np.mean(d_i / np.abs(np.asarray(z_a, np.float64) - np.asarray(z_b, np.float64)).mean(1)))

    direction, eps, x = rng.normal(size=a.shape), 1e-6, np.asarray(a, np.float64)
    numeric = (f64(x + eps * direction) - f64(x - eps * direction)) / (2 * eps)
    assert float(np.sum(grad * direction)) == pytest.approx(numeric, rel=1e-4)
    # Past tau the ratio is constant: no gradient.
    assert not np.any(np.asarray(jax.grad(lambda x: diversity_ratio(x, b, z_a, z_b, tau=1e-3))(a)))


def test_one_sgd_step_on_the_term_pushes_two_samples_of_one_caption_apart():
    gen, sentence = StubG(), jnp.ones((1, S))
    z1, z2 = jax.random.normal(jax.random.key(1), (1, Z)), jax.random.normal(jax.random.key(2), (1, Z))
    params = gen.init(jax.random.key(0), z1, sentence)["params"]
    # A near-collapsed generator: the noise's weights scaled down 100x.
    params["Dense_0"]["kernel"] = params["Dense_0"]["kernel"].at[:Z].multiply(0.01)

    @jax.jit
    def distance(p):
        return jnp.abs(gen.apply({"params": p}, z1, sentence) - gen.apply({"params": p}, z2, sentence)).mean()

    def g_loss(p):  # G minimises -L_z
        return -diversity_ratio(gen.apply({"params": p}, z1, sentence), gen.apply({"params": p}, z2, sentence),
                                z1, z2, tau=1.0)

    grad = jax.jit(jax.grad(g_loss))(params)
    before = distance(params)
    after = distance(jax.tree.map(lambda x, g: x - g, params, grad))
    against = distance(jax.tree.map(lambda x, g: x + g, params, grad))  # the opposite step
    assert after > 1.2 * before and against < before


def test_two_steps_with_the_term_are_finite_and_its_gradient_reaches_g(quick_compiles):
    w, lr = 2.0, 0.5
    config = get_config("tiny", [f"train.batch_size={BATCH}", f"model.z_dim={Z}", "train.optimizer=sgd",
                                 "train.d_lr=0", f"train.g_lr={lr}", f"train.diversity_weight={w}",
                                 "train.diversity_tau=5"])
    g, d = StubG(), StubD()
    state = init_state(config, g, d, S)
    assert float(state.hparams["diversity_weight"]) == w
    assert "diversity_weight" not in init_state(get_config("tiny", [f"model.z_dim={Z}"]), g, d, S).hparams
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (BATCH, RES, RES, 3), dtype=np.uint8),
             "sentence": rng.normal(size=(BATCH, S)).astype(np.float32)}
    batch["wrong_sentence"] = batch["sentence"][::-1].copy()

    # What the step should do to G: plain SGD on softplus(-D(G(z))) - w * L_z, the twins of the
    # even examples drawn with the step's noise streams (jaxgan.step).
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    z = example_noise(key, BATCH, Z, None)
    k_twin = jax.random.fold_in(key, 2**31 - 2)
    z_twin = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(k_twin, i), (Z,)))(jnp.arange(0, BATCH, 2))
    s = jnp.asarray(batch["sentence"])

    def expected_loss(p):
        out = g.apply({"params": p}, jnp.concatenate([z, z_twin]), jnp.concatenate([s, s[::2]]))
        fake = out[:BATCH]
        adv = nonsaturating_g(d.apply({"params": state.d_params}, fake, s))
        return adv - w * diversity_ratio(fake[::2], out[BATCH:], z[::2], z_twin, 5.0)

    expected = jax.tree.map(lambda x, gr: x - lr * gr, state.g_params, jax.grad(expected_loss)(state.g_params))
    step = jax.jit(make_train_step(config, g, d))
    first, metrics = step(state, batch)
    for got, want in zip(jax.tree.leaves(first.g_params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert float(metrics["g_loss"]) == pytest.approx(float(expected_loss(state.g_params)), rel=1e-5)

    second, metrics = step(first, batch)
    values = {k: float(v) for k, v in metrics.items()}
    assert all(np.isfinite(list(values.values()))) and values["skipped"] == 0
    assert 0 < values["g_diversity"] <= 5.0


def test_turning_the_term_on_or_off_is_refused_on_resume_changing_it_applied():
    on = to_dict(get_config("tiny", ["train.diversity_weight=1"]))
    off = to_dict(get_config("tiny"))
    assert [k for k, _, _ in compare_configs(off, get_config("tiny", ["train.diversity_weight=1"])).refused] == [
        "train.diversity_weight"]
    assert [k for k, _, _ in compare_configs(on, get_config("tiny")).refused] == ["train.diversity_weight"]
    changes = compare_configs(on, get_config("tiny", ["train.diversity_weight=0.5"]))
    assert changes.refused == () and changes.applied == (("train.diversity_weight", 1.0, 0.5),)


def test_the_twins_do_not_depend_on_the_device_layout(quick_compiles):
    # Twins are drawn for even global indices with noise keyed by that index: one device and
    # pmap over 4 (2 examples each) train the same G.
    rng = np.random.default_rng(1)
    batch = {"image": rng.integers(0, 256, (8, RES, RES, 3), dtype=np.uint8),
             "sentence": rng.normal(size=(8, S)).astype(np.float32)}
    batch["wrong_sentence"] = batch["sentence"][::-1].copy()
    results = []
    for layout in (["train.num_devices=1"], ["train.num_devices=4", "train.parallel=pmap"]):
        config = get_config("tiny", ["train.batch_size=8", f"model.z_dim={Z}", "train.optimizer=sgd",
                                     "train.g_lr=0.5", "train.diversity_weight=2", *layout])
        dp = data_fsdp_parallel(config)
        step = dp.compile(make_train_step(config, StubG(), StubD(), dp.axis_name))
        state, metrics = step(dp.put_state(init_state(config, StubG(), StubD(), S)), dp.put_batch(batch))
        results.append((dp.to_host(state).g_params, float(dp.to_host(metrics)["g_diversity"])))
    (one, div_one), (four, div_four) = results
    assert div_one == pytest.approx(div_four, rel=1e-5)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(four)):
        np.testing.assert_allclose(a, b, atol=1e-5)
