"""A diversity term on the generator: two samples of one caption should differ with their noise.

A conditional GAN is free to ignore z and draw one image per caption; nothing in the
adversarial loss rewards variety within a caption. DSGAN's term asks G for a change in the
image at least in proportion to the change in z (Yang et al. 2019); MSGAN's (Mao et al. 2019)
is the same ratio inside 1 / (ratio + eps). jaxgan uses DSGAN's bounded form: its gradient is
that of a linear function of the ratio until the bound is reached, and 0 past it, whereas
MSGAN's 1 / (ratio + eps) has a gradient of order 1 / ratio^2, largest (up to 1 / eps^2) for
exactly the collapsed generator it is meant to cure.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _per_example_l1(a: jax.Array, b: jax.Array) -> jax.Array:
    """mean |a - b| over every axis but the first: [B, ...] x [B, ...] -> [B]."""
    d = jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))
    return d.reshape(d.shape[0], -1).mean(axis=1)


def diversity_ratio(images_a: jax.Array, images_b: jax.Array, z_a: jax.Array, z_b: jax.Array,
                    tau: float) -> jax.Array:
    """DSGAN's term L_z = mean_i min(d_I(a_i, b_i) / d_z(z_a_i, z_b_i), tau), which G maximises.

    a_i = G(c_i, z_a_i) and b_i = G(c_i, z_b_i) are two samples of the same caption c_i;
    d_I is the mean absolute pixel difference, d_z the mean absolute noise difference (both
    L1 norms divided by their sizes, so the ratio does not depend on resolution or z_dim). The
    bound tau stops G from buying the term with ever larger image changes.

    Args:
      images_a, images_b: [K, H, W, C] pairs of generated images.
      z_a, z_b: [K, Z] their noise.
      tau: the bound.

    Returns:
      The scalar L_z (float32); the step adds -diversity_weight * L_z to G's loss.

    References:
      Yang, Hong, Jang, Zhao & Lee, 2019, "Diversity-Sensitive Conditional Generative
      Adversarial Networks", ICLR, arXiv:1901.09024, eq. 2.
      Mao, Lee, Tseng, Ma & Yang, 2019, "Mode Seeking Generative Adversarial Networks for
      Diverse Image Synthesis", CVPR, arXiv:1903.05628, eq. 2 (the same ratio).

    Example:
        term = diversity_ratio(fake[:k], twins, z[:k], z_twin, tau=1.0)
    """
    ratio = _per_example_l1(images_a, images_b) / _per_example_l1(z_a, z_b)
    return jnp.mean(jnp.minimum(ratio, tau))
