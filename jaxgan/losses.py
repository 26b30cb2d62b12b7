"""Adversarial losses as small pure functions of discriminator logits.

Each loss is a triple (D on real, D on fake, G on fake), all means over the batch, in
float32. ``matching_aware_d_loss`` combines them the way GAN-INT-CLS does.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


def nonsaturating_d_real(logits: jax.Array) -> jax.Array:
    """-log sigmoid(D(x)) = softplus(-D(x)) (Goodfellow et al., 2014)."""
    return jnp.mean(jax.nn.softplus(-logits))


def nonsaturating_d_fake(logits: jax.Array) -> jax.Array:
    """-log(1 - sigmoid(D(G(z)))) = softplus(D(G(z))) (Goodfellow et al., 2014)."""
    return jnp.mean(jax.nn.softplus(logits))


def nonsaturating_g(logits: jax.Array) -> jax.Array:
    """The non-saturating generator loss -log sigmoid(D(G(z))) (Goodfellow et al., 2014, sec. 3)."""
    return jnp.mean(jax.nn.softplus(-logits))


def hinge_d_real(logits: jax.Array) -> jax.Array:
    """max(0, 1 - D(x)) (Lim & Ye, 2017, "Geometric GAN"; used by DF-GAN)."""
    return jnp.mean(jax.nn.relu(1.0 - logits))


def hinge_d_fake(logits: jax.Array) -> jax.Array:
    """max(0, 1 + D(G(z))) (Lim & Ye, 2017)."""
    return jnp.mean(jax.nn.relu(1.0 + logits))


def hinge_g(logits: jax.Array) -> jax.Array:
    """-D(G(z)) (Lim & Ye, 2017)."""
    return -jnp.mean(logits)


class AdversarialLoss(NamedTuple):
    """The three terms of a GAN loss; each maps logits [B] to a scalar."""

    d_real: Callable[[jax.Array], jax.Array]
    d_fake: Callable[[jax.Array], jax.Array]
    g: Callable[[jax.Array], jax.Array]


LOSSES: dict[str, AdversarialLoss] = {
    "nonsaturating": AdversarialLoss(nonsaturating_d_real, nonsaturating_d_fake, nonsaturating_g),
    "hinge": AdversarialLoss(hinge_d_real, hinge_d_fake, hinge_g),
}


def matching_aware_d_loss(loss: AdversarialLoss, real: jax.Array, fake: jax.Array,
                          wrong: jax.Array) -> jax.Array:
    """L_D = l_real(D(x, t)) + (l_fake(D(G(z, t), t)) + l_fake(D(x, t_wrong))) / 2.

    The matching-aware discriminator of GAN-INT-CLS (Reed et al., 2016, Algorithm 1): a real
    image with a mismatched caption counts as fake, so D must judge the pair, not just the
    image. DF-GAN weights its hinge terms the same way.
    """
    return loss.d_real(real) + 0.5 * (loss.d_fake(fake) + loss.d_fake(wrong))
