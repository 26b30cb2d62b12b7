"""Losses against values computed by hand."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan import losses


def test_nonsaturating_against_log_sigmoid():
    logits = jnp.array([-2.0, 0.0, 3.0])
    sig = 1 / (1 + np.exp(-np.array([-2.0, 0.0, 3.0])))
    assert float(losses.nonsaturating_d_real(logits)) == pytest.approx(np.mean(-np.log(sig)), rel=1e-6)
    assert float(losses.nonsaturating_d_fake(logits)) == pytest.approx(np.mean(-np.log(1 - sig)), rel=1e-6)
    assert float(losses.nonsaturating_g(logits)) == pytest.approx(np.mean(-np.log(sig)), rel=1e-6)


def test_nonsaturating_is_stable_for_large_logits():
    assert np.isfinite(float(losses.nonsaturating_d_fake(jnp.array([1e4]))))
    assert float(losses.nonsaturating_d_real(jnp.array([-1e4]))) == pytest.approx(1e4)


def test_hinge_by_hand():
    logits = jnp.array([-2.0, 0.5, 3.0])
    assert float(losses.hinge_d_real(logits)) == pytest.approx((3.0 + 0.5 + 0.0) / 3)
    assert float(losses.hinge_d_fake(logits)) == pytest.approx((0.0 + 1.5 + 4.0) / 3)
    assert float(losses.hinge_g(logits)) == pytest.approx(-0.5)


def test_matching_aware_weights_fake_and_mismatch_by_half():
    real, fake, wrong = jnp.array([1.0]), jnp.array([-1.0]), jnp.array([0.5])
    h = losses.LOSSES["hinge"]
    expected = max(0, 1 - 1.0) + 0.5 * (max(0, 1 - 1.0) + max(0, 1 + 0.5))
    assert float(losses.matching_aware_d_loss(h, real, fake, wrong)) == pytest.approx(expected)


def test_lsgan_by_hand():
    logits = jnp.array([-1.0, 0.5, 2.0])
    lsgan = losses.LOSSES["lsgan"]
    assert float(lsgan.d_real(logits)) == pytest.approx(0.5 * (4.0 + 0.25 + 1.0) / 3)
    assert float(lsgan.d_fake(logits)) == pytest.approx(0.5 * (1.0 + 0.25 + 4.0) / 3)
    assert float(lsgan.g(logits)) == pytest.approx(0.5 * (4.0 + 0.25 + 1.0) / 3)
    assert lsgan.threshold == 0.5


def test_wasserstein_by_hand():
    logits = jnp.array([-1.0, 0.5, 3.5])
    w = losses.LOSSES["wasserstein"]
    assert float(w.d_real(logits)) == pytest.approx(-1.0)
    assert float(w.d_fake(logits)) == pytest.approx(1.0)
    assert float(w.g(logits)) == pytest.approx(-1.0)
    assert w.threshold == 0.0


def test_thresholds_default_to_zero_and_old_construction_still_works():
    assert losses.LOSSES["hinge"].threshold == 0.0
    assert losses.LOSSES["nonsaturating"].threshold == 0.0
    custom = losses.AdversarialLoss(losses.hinge_d_real, losses.hinge_d_fake, losses.hinge_g)
    assert custom.threshold == 0.0


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_losses_are_float32_for_bfloat16_logits(name):
    logits = jnp.array([-1.5, 0.25, 2.0], jnp.bfloat16)
    loss = losses.LOSSES[name]
    for term in (loss.d_real, loss.d_fake, loss.g):
        value = term(logits)
        assert value.dtype == jnp.float32 and value.shape == ()
        assert float(value) == pytest.approx(float(term(logits.astype(jnp.float32))), rel=1e-6)


def test_kl_by_hand():
    mu = jnp.array([[0.5, -1.0], [0.0, 2.0]])
    log_sigma = jnp.array([[0.0, np.log(2.0)], [np.log(0.5), 0.0]])
    m, ls = np.asarray(mu, np.float64), np.asarray(log_sigma, np.float64)
    per_example = 0.5 * np.sum(m ** 2 + np.exp(2 * ls) - 1 - 2 * ls, axis=1)
    assert float(losses.kl_to_standard_normal(mu, log_sigma)) == pytest.approx(per_example.mean(),
                                                                              rel=1e-6)


def test_kl_closed_form_cases():
    dim = 7
    zeros = jnp.zeros((3, dim))
    assert float(losses.kl_to_standard_normal(zeros, zeros)) == pytest.approx(0.0, abs=1e-7)
    kl = losses.kl_to_standard_normal
    assert float(kl(jnp.ones((3, dim)), zeros)) == pytest.approx(0.5 * dim)
    # StackGAN's parameterisation: log_var = 2 log sigma.
    log_var = jnp.full((3, dim), np.log(3.0))
    expected = 0.5 * dim * (3.0 - 1.0 - np.log(3.0))
    assert float(kl(zeros, 0.5 * log_var)) == pytest.approx(expected, rel=1e-6)
    assert kl(zeros.astype(jnp.bfloat16), zeros).dtype == jnp.float32


def test_kl_matches_monte_carlo():
    # KL(q || p) = E_q[log q(z) - log p(z)] for z = mu + sigma * eps.
    rng = np.random.default_rng(0)
    mu, log_sigma = np.array([[0.3, -0.7, 1.2]]), np.array([[-0.4, 0.2, 0.1]])
    sigma = np.exp(log_sigma)
    eps = rng.standard_normal((400_000, 3))
    z = mu + sigma * eps
    log_q = np.sum(-0.5 * eps ** 2 - log_sigma, axis=1)
    log_p = np.sum(-0.5 * z ** 2, axis=1)
    mc = np.mean(log_q - log_p)
    value = losses.kl_to_standard_normal(jnp.asarray(mu), jnp.asarray(log_sigma))
    assert float(value) == pytest.approx(mc, abs=5e-3)


def test_discriminator_accuracy_by_hand():
    real = jnp.array([1.0, -0.5, 2.0, 0.1])
    fake = jnp.array([-1.0, 0.3, -0.2, -3.0])
    wrong = jnp.array([0.0, 0.6, 0.7, 0.2])
    acc = losses.discriminator_accuracy(real, fake, wrong)
    assert float(acc["d_acc_real"]) == pytest.approx(3 / 4)
    assert float(acc["d_acc_fake"]) == pytest.approx(3 / 4)
    assert float(acc["d_acc_wrong"]) == pytest.approx(0.0)  # 0.0 is not < 0.0
    lsgan_threshold = losses.LOSSES["lsgan"].threshold
    acc = losses.discriminator_accuracy(real, fake, wrong, threshold=lsgan_threshold)
    assert float(acc["d_acc_real"]) == pytest.approx(2 / 4)
    assert float(acc["d_acc_fake"]) == pytest.approx(4 / 4)
    assert float(acc["d_acc_wrong"]) == pytest.approx(2 / 4)
    assert all(v.dtype == jnp.float32 for v in acc.values())
