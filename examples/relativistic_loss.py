"""A relativistic loss of your own in jaxgan's compiled step, trained by a hand-written loop.

    python examples/relativistic_loss.py --steps 300 --out runs/relativistic_loss.png

The loss is a relativistic pairing hinge: D ranks each real pair above the fake it is paired
with by a margin of 1, and G ranks its fakes above the reals (Jolicoeur-Martineau 2018, "The
relativistic discriminator", arXiv:1807.00734, with f(t) = max(0, 1 + t)). D's loss sees the
real, fake and mismatched-caption logits together; G's loss asks for D's logits on the real
batch (``g_needs_real``), which the step computes with the updated D and no gradient to it.
Two pure functions: nothing in jaxgan is edited or subclassed. The training loop is
``train_with`` of ``examples/custom_loss.py``, imported from beside this file.
"""

import jax
import jax.numpy as jnp
from custom_loss import train_with

import jaxgan


def d_loss(real: jax.Array, fake: jax.Array, wrong: jax.Array) -> jax.Array:
    """Each real pair above its fake and above the same image with a wrong caption, 1/2 each."""
    return 0.5 * (jnp.mean(jax.nn.relu(1.0 - (real - fake))) + jnp.mean(jax.nn.relu(1.0 - (real - wrong))))


def g_loss(fake: jax.Array, real: jax.Array) -> jax.Array:
    """Each fake above the real it is paired with."""
    return jnp.mean(jax.nn.relu(1.0 - (fake - real)))


RP_HINGE = jaxgan.GANLoss(d=d_loss, g=g_loss, g_needs_real=True, accuracy=jaxgan.pairwise_accuracy)


def main(argv=None) -> dict:
    return train_with(RP_HINGE, argv, __doc__.splitlines()[0], "relativistic_loss.png")


if __name__ == "__main__":
    main()
