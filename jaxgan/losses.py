"""Adversarial losses as small pure functions of discriminator logits.

The step takes a ``GANLoss``: D's loss sees D's logits on the real, fake and mismatched-text
(wrong) pairs together, and G's loss sees the fake logits and, when the loss asks for them,
the real ones, as a relativistic loss needs. The older form, ``AdversarialLoss``, a triple of
functions of one set of logits each (D on real, D on fake, G on fake), is still accepted:
``as_gan_loss`` wraps it with ``matching_aware_d_loss``, the way GAN-INT-CLS combines them.

Every value is a mean over the batch, in float32 whatever the logits' dtype (bfloat16 logits
are cast first, so the reductions do not lose precision; float64, under ``jax_enable_x64``,
is kept). Also here: the conditioning-augmentation KL term of StackGAN and the discriminator
accuracies the step reports.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


def _f32(x: jax.Array) -> jax.Array:
    """At least float32: bfloat16/float16 (and ints) -> float32; float64 stays float64."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def nonsaturating_d_real(logits: jax.Array) -> jax.Array:
    """-log sigmoid(D(x)) = softplus(-D(x)) (Goodfellow et al., 2014, arXiv:1406.2661)."""
    return jnp.mean(jax.nn.softplus(-_f32(logits)))


def nonsaturating_d_fake(logits: jax.Array) -> jax.Array:
    """-log(1 - sigmoid(D(G(z)))) = softplus(D(G(z))) (Goodfellow et al., 2014)."""
    return jnp.mean(jax.nn.softplus(_f32(logits)))


def nonsaturating_g(logits: jax.Array) -> jax.Array:
    """The non-saturating generator loss -log sigmoid(D(G(z))) (Goodfellow et al., 2014, sec. 3)."""
    return jnp.mean(jax.nn.softplus(-_f32(logits)))


def hinge_d_real(logits: jax.Array) -> jax.Array:
    """max(0, 1 - D(x)) (Lim & Ye, 2017, "Geometric GAN", arXiv:1705.02894; used by DF-GAN)."""
    return jnp.mean(jax.nn.relu(1.0 - _f32(logits)))


def hinge_d_fake(logits: jax.Array) -> jax.Array:
    """max(0, 1 + D(G(z))) (Lim & Ye, 2017)."""
    return jnp.mean(jax.nn.relu(1.0 + _f32(logits)))


def hinge_g(logits: jax.Array) -> jax.Array:
    """-D(G(z)) (Lim & Ye, 2017)."""
    return -jnp.mean(_f32(logits))


def lsgan_d_real(logits: jax.Array) -> jax.Array:
    """Least-squares D loss on real data: 1/2 * mean((D(x) - b)^2) with b = 1.

    References:
      Mao, Li, Xie, Lau, Wang & Smolley, 2017, "Least Squares Generative Adversarial
      Networks", arXiv:1611.04076, eq. 2 with the a=0, b=1, c=1 coding.
    """
    return 0.5 * jnp.mean(jnp.square(_f32(logits) - 1.0))


def lsgan_d_fake(logits: jax.Array) -> jax.Array:
    """Least-squares D loss on fake data: 1/2 * mean((D(G(z)) - a)^2), a = 0 (Mao et al., 2017)."""
    return 0.5 * jnp.mean(jnp.square(_f32(logits)))


def lsgan_g(logits: jax.Array) -> jax.Array:
    """Least-squares G loss: 1/2 * mean((D(G(z)) - c)^2) with c = 1 (Mao et al., 2017)."""
    return 0.5 * jnp.mean(jnp.square(_f32(logits) - 1.0))


def wasserstein_d_real(logits: jax.Array) -> jax.Array:
    """Critic loss on real data: -mean D(x).

    D is a critic whose outputs estimate the Wasserstein-1 distance only when it is kept
    1-Lipschitz: pair this loss with ``jaxgan.regularizers.wgan_gp`` (or weight clipping).

    References:
      Arjovsky, Chintala & Bottou, 2017, "Wasserstein GAN", arXiv:1701.07875, Algorithm 1.
    """
    return -jnp.mean(_f32(logits))


def wasserstein_d_fake(logits: jax.Array) -> jax.Array:
    """Critic loss on fake data: mean D(G(z)) (Arjovsky et al., 2017)."""
    return jnp.mean(_f32(logits))


def wasserstein_g(logits: jax.Array) -> jax.Array:
    """Generator loss: -mean D(G(z)) (Arjovsky et al., 2017)."""
    return -jnp.mean(_f32(logits))


class AdversarialLoss(NamedTuple):
    """The three terms of a GAN loss; each maps logits [B] to a scalar.

    ``threshold`` is the logit at which D's decision flips between fake and real, used by
    ``discriminator_accuracy``: 0 for the logistic, hinge and Wasserstein losses; 0.5 for
    least squares, halfway between its fake (0) and real (1) targets.

    Example:
        hinge = AdversarialLoss(d_real=lambda x: jnp.mean(jax.nn.relu(1 - x)),
                               d_fake=lambda x: jnp.mean(jax.nn.relu(1 + x)), g=lambda x: -jnp.mean(x))
    """

    d_real: Callable[[jax.Array], jax.Array]
    d_fake: Callable[[jax.Array], jax.Array]
    g: Callable[[jax.Array], jax.Array]
    threshold: float = 0.0


def matching_aware_d_loss(loss: AdversarialLoss | GANLoss, real: jax.Array, fake: jax.Array,
                          wrong: jax.Array) -> jax.Array:
    """L_D = l_real(D(x, t)) + (l_fake(D(G(z, t), t)) + l_fake(D(x, t_wrong))) / 2.

    The matching-aware discriminator of GAN-INT-CLS (Reed et al., 2016, arXiv:1605.05396,
    Algorithm 1): a real image with a mismatched caption counts as fake, so D must judge the
    pair, not just the image. DF-GAN weights its hinge terms the same way. Given a
    ``GANLoss``, this is that loss's own D loss, ``loss.d(real, fake, wrong)``.

    Example:
        d_loss = matching_aware_d_loss(LOSSES["hinge"], real_logits, fake_logits, wrong_logits)
    """
    if isinstance(loss, GANLoss):
        return loss.d(real, fake, wrong)
    return loss.d_real(real) + 0.5 * (loss.d_fake(fake) + loss.d_fake(wrong))


class GANLoss(NamedTuple):
    """A GAN loss as two pure functions that see every set of logits they need.

    ``d(real, fake, wrong) -> scalar`` is D's whole adversarial loss, given D's logits [B] on
    (real image, its caption), (generated image, its caption) and (real image, a mismatched
    caption). ``g(fake, real) -> scalar`` is G's loss, given D's logits on the generated
    pairs and, when ``g_needs_real`` is true, on the real pairs; otherwise ``real`` is None
    and the step spends no D forward on it. The real logits of G's pass come from the
    updated D on the real batch (augmented like the fakes, D's BatchNorm statistics of that
    pass discarded) under ``jax.lax.stop_gradient``: G's update is the only one they enter.

    ``accuracy(real, fake, wrong) -> {"d_acc_real", "d_acc_fake", "d_acc_wrong"}`` says how
    often D decides right; None means ``discriminator_accuracy`` at ``threshold``, the logit
    where D's decision flips between fake and real (0 for the logistic, hinge and Wasserstein
    losses, 0.5 for least squares).

    Example:
        # Relativistic pairing with a hinge: D ranks each real above its fake by a margin.
        rp_hinge = GANLoss(
            d=lambda real, fake, wrong: jnp.mean(jax.nn.relu(1 - (real - fake))),
            g=lambda fake, real: jnp.mean(jax.nn.relu(1 - (fake - real))),
            g_needs_real=True, accuracy=pairwise_accuracy)
        step = make_train_step(config, generator, discriminator, loss=rp_hinge)
    """

    d: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
    g: Callable[[jax.Array, jax.Array | None], jax.Array]
    g_needs_real: bool = False
    threshold: float = 0.0
    accuracy: Callable[[jax.Array, jax.Array, jax.Array], dict[str, jax.Array]] | None = None

    def accuracies(self, real: jax.Array, fake: jax.Array, wrong: jax.Array) -> dict[str, jax.Array]:
        """D's accuracies on the three kinds of pairs, with this loss's decision rule."""
        if self.accuracy is None:
            return discriminator_accuracy(real, fake, wrong, self.threshold)
        return self.accuracy(real, fake, wrong)


def as_gan_loss(loss: GANLoss | AdversarialLoss) -> GANLoss:
    """``loss`` in the new form: a ``GANLoss`` as is; an ``AdversarialLoss`` triple wrapped.

    The triple's D loss becomes its ``matching_aware_d_loss`` and its G loss ignores the real
    logits, so a wrapped triple computes exactly what the step computed from it before.

    Example:
        as_gan_loss(AdversarialLoss(hinge_d_real, hinge_d_fake, hinge_g)).d(real, fake, wrong)
    """
    if isinstance(loss, GANLoss):
        return loss
    if not isinstance(loss, AdversarialLoss):
        raise TypeError(f"a loss is a GANLoss or an AdversarialLoss, got {type(loss).__name__}")
    g_fake = loss.g

    def g(fake: jax.Array, real: jax.Array | None = None) -> jax.Array:
        return g_fake(fake)

    return GANLoss(d=functools.partial(matching_aware_d_loss, loss), g=g, threshold=loss.threshold)


def rpgan_d(real: jax.Array, fake: jax.Array) -> jax.Array:
    """Relativistic pairing D loss: mean_b softplus(D(fake_b) - D(real_b)).

    = -log sigmoid(D(x_b) - D(G(z_b))): D learns to rank each real above the fake it is
    paired with (example b with example b of the batch), not to score either absolutely.
    f(t) = softplus(t) is the logistic choice; R3GAN uses it.

    References:
      Jolicoeur-Martineau, 2018, "The relativistic discriminator: a key element missing
      from standard GAN", arXiv:1807.00734 (the relativistic standard GAN, RSGAN).
      Huang, Gokaslan, Kuleshov & Tompkin, 2024, "The GAN is dead; long live the GAN! A
      Modern GAN Baseline", arXiv:2501.05441, sec. 2 (RpGAN; brownvc/R3GAN pairs each
      real with one fake of the batch, as here).
    """
    real, fake = _f32(real), _f32(fake)
    return jnp.mean(jax.nn.softplus(fake - real))


def rpgan_g(fake: jax.Array, real: jax.Array) -> jax.Array:
    """Relativistic pairing G loss: mean_b softplus(D(real_b) - D(fake_b)) (Jolicoeur-Martineau
    2018, RSGAN; Huang et al. 2024, sec. 2). ``real`` is a constant for G."""
    real, fake = _f32(real), _f32(fake)
    return jnp.mean(jax.nn.softplus(real - fake))


def ragan_d(real: jax.Array, fake: jax.Array) -> jax.Array:
    """Relativistic average D loss (RaSGAN):

        L_D = mean_b softplus(mean(D(fake)) - D(real_b)) + mean_b softplus(D(fake_b) - mean(D(real)))

    each real is judged against the average fake and each fake against the average real.
    The means are over the batch the step sees (per device under pmap, the global batch under
    jit), and D's gradient flows through them.

    References:
      Jolicoeur-Martineau, 2018, "The relativistic discriminator: a key element missing
      from standard GAN", arXiv:1807.00734 (the relativistic average standard GAN,
      RaSGAN).
    """
    real, fake = _f32(real), _f32(fake)
    return (jnp.mean(jax.nn.softplus(jnp.mean(fake) - real))
            + jnp.mean(jax.nn.softplus(fake - jnp.mean(real))))


def ragan_g(fake: jax.Array, real: jax.Array) -> jax.Array:
    """Relativistic average G loss (RaSGAN), D's loss with the roles swapped:

        L_G = mean_b softplus(mean(D(real)) - D(fake_b)) + mean_b softplus(D(real_b) - mean(D(fake)))

    Both terms reach G: the second through mean(D(fake)). (Jolicoeur-Martineau 2018,
    arXiv:1807.00734, RaSGAN.)
    """
    real, fake = _f32(real), _f32(fake)
    return (jnp.mean(jax.nn.softplus(jnp.mean(real) - fake))
            + jnp.mean(jax.nn.softplus(real - jnp.mean(fake))))


def matching_aware_relativistic(d_loss: Callable[[jax.Array, jax.Array], jax.Array]
                                ) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """The matching-aware form of a relativistic D loss ``d_loss(real, negative)``:

        L_D(real, fake, wrong) = (d_loss(real, fake) + d_loss(real, wrong)) / 2

    The real image with a mismatched caption is a second kind of negative, ranked against
    the real pairs exactly as the fakes are; for the pairing loss, wrong_b is the same image
    as real_b, so that pair differs only in the caption. The halving matches
    ``matching_aware_d_loss``: the real pairs keep weight 1 (1/2 + 1/2) and each kind of
    negative gets 1/2. G's loss is unchanged (G makes no mismatched pairs).

    Example:
        d = matching_aware_relativistic(rpgan_d)
        d(real_logits, fake_logits, wrong_logits)
    """
    def d(real: jax.Array, fake: jax.Array, wrong: jax.Array) -> jax.Array:
        return 0.5 * (d_loss(real, fake) + d_loss(real, wrong))

    return d


def pairwise_accuracy(real: jax.Array, fake: jax.Array, wrong: jax.Array) -> dict[str, jax.Array]:
    """A relativistic pairing D's accuracies: how often it ranks a real pair above its negative.

    ``d_acc_real`` = ``d_acc_fake`` = mean_b(D(real_b) > D(fake_b)) (one decision per pair),
    ``d_acc_wrong`` = mean_b(D(real_b) > D(wrong_b)) (same image, right vs wrong caption).

    Example:
        pairwise_accuracy(real_logits, fake_logits, wrong_logits)["d_acc_real"]  # 0.5: chance
    """
    real, fake, wrong = _f32(real), _f32(fake), _f32(wrong)
    real_over_fake = jnp.mean(real > fake, dtype=jnp.float32)
    return {"d_acc_real": real_over_fake, "d_acc_fake": real_over_fake,
            "d_acc_wrong": jnp.mean(real > wrong, dtype=jnp.float32)}


def average_accuracy(real: jax.Array, fake: jax.Array, wrong: jax.Array) -> dict[str, jax.Array]:
    """A relativistic average D's accuracies: each pair against the other kind's mean logit.

    ``d_acc_real`` = mean(D(real_b) > mean D(fake)), ``d_acc_fake`` = mean(D(fake_b) <
    mean D(real)), ``d_acc_wrong`` = mean(D(wrong_b) < mean D(real)).
    """
    real, fake, wrong = _f32(real), _f32(fake), _f32(wrong)
    real_mean = jnp.mean(real)
    return {"d_acc_real": jnp.mean(real > jnp.mean(fake), dtype=jnp.float32),
            "d_acc_fake": jnp.mean(fake < real_mean, dtype=jnp.float32),
            "d_acc_wrong": jnp.mean(wrong < real_mean, dtype=jnp.float32)}


LOSSES: dict[str, GANLoss] = {
    "nonsaturating": as_gan_loss(AdversarialLoss(nonsaturating_d_real, nonsaturating_d_fake, nonsaturating_g)),
    "hinge": as_gan_loss(AdversarialLoss(hinge_d_real, hinge_d_fake, hinge_g)),
    "lsgan": as_gan_loss(AdversarialLoss(lsgan_d_real, lsgan_d_fake, lsgan_g, threshold=0.5)),
    "wasserstein": as_gan_loss(AdversarialLoss(wasserstein_d_real, wasserstein_d_fake, wasserstein_g)),
    "rpgan": GANLoss(d=matching_aware_relativistic(rpgan_d), g=rpgan_g, g_needs_real=True,
                     accuracy=pairwise_accuracy),
    "ragan": GANLoss(d=matching_aware_relativistic(ragan_d), g=ragan_g, g_needs_real=True,
                     accuracy=average_accuracy),
}


def kl_to_standard_normal(mu: jax.Array, log_sigma: jax.Array) -> jax.Array:
    """KL(N(mu, diag sigma^2) || N(0, I)), summed over dimensions, averaged over the batch.

    Per example: 0.5 * sum_j (mu_j^2 + sigma_j^2 - 1 - 2 log sigma_j); the result is the
    mean of that over the leading (batch) axis, in float32.

    This is the regulariser of conditioning augmentation: the sentence embedding is mapped
    to (mu, sigma), the generator is conditioned on mu + sigma * eps, and the KL term keeps
    the conditioning manifold smooth.

    Parameterisation: the inputs are mu and **log sigma** (log standard deviation).
    StackGAN's released code predicts the log *variance* instead, log_var = 2 log sigma
    (and samples with std = exp(0.5 * log_var)); pass ``log_sigma = 0.5 * log_var`` for it.
    Its code also takes the mean over all elements rather than summing over dimensions,
    i.e. its value is this one divided by the embedding dimension: rescale the weight.

    Args:
      mu: means, [B, D] (or [B, ...]: every axis but the first is summed).
      log_sigma: log standard deviations, same shape as ``mu``.

    Returns:
      The scalar KL, float32.

    References:
      Zhang, Xu, Li, Zhang, Wang, Huang & Metaxas, 2017, "StackGAN: Text to Photo-realistic
      Image Synthesis with Stacked Generative Adversarial Networks", arXiv:1612.03242,
      sec. 3.1 (conditioning augmentation).
    """
    mu, log_sigma = _f32(mu), _f32(log_sigma)
    per_dim = jnp.square(mu) + jnp.exp(2.0 * log_sigma) - 1.0 - 2.0 * log_sigma
    per_example = 0.5 * jnp.sum(per_dim.reshape(per_dim.shape[0], -1), axis=-1)
    return jnp.mean(per_example)


def discriminator_accuracy(real_logits: jax.Array, fake_logits: jax.Array,
                           wrong_logits: jax.Array, threshold: float = 0.0) -> dict[str, jax.Array]:
    """How often D's decision is right on each kind of pair, float32 fractions in [0, 1].

    ``d_acc_real`` = mean(D(x, t) > threshold), ``d_acc_fake`` = mean(D(G(z), t) < threshold),
    ``d_acc_wrong`` = mean(D(x, t_wrong) < threshold). Use ``AdversarialLoss.threshold`` of
    the loss in use (0.5 for least squares, 0 otherwise). A D near 1.0 everywhere has beaten
    G; ``d_acc_wrong`` near 0.5 says D ignores the text.

    Args:
      real_logits: D on real images with their captions, [B].
      fake_logits: D on generated images with their captions, [B].
      wrong_logits: D on real images with mismatched captions, [B].
      threshold: the decision logit.

    Returns:
      A dict with the three scalar accuracies.
    """
    return {
        "d_acc_real": jnp.mean(_f32(real_logits) > threshold, dtype=jnp.float32),
        "d_acc_fake": jnp.mean(_f32(fake_logits) < threshold, dtype=jnp.float32),
        "d_acc_wrong": jnp.mean(_f32(wrong_logits) < threshold, dtype=jnp.float32),
    }


def conditioning_kl(sown: Any) -> jax.Array:
    """Sum of ``kl_to_standard_normal`` over every (mu, log_sigma) pair a generator sowed.

    Conditioning augmentation layers sow ``mu`` and ``log_sigma`` into the "losses"
    collection; this finds each pair in that (nested) collection. No pair gives 0.
    """
    total = jnp.zeros((), jnp.float32)
    if isinstance(sown, Mapping):
        if "mu" in sown and "log_sigma" in sown:
            total = total + kl_to_standard_normal(_unbox(sown["mu"]), _unbox(sown["log_sigma"]))
        for name, value in sown.items():
            if name not in ("mu", "log_sigma"):
                total = total + conditioning_kl(value)
    return total


def _unbox(value: Any) -> jax.Array:
    # ``sow`` keeps a tuple of values unless told to overwrite; take the last either way.
    return value[-1] if isinstance(value, tuple) else value
