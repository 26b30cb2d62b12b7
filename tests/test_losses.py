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
