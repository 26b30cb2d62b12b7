"""Gradient penalties on the discriminator, as pure functions of a discriminator closure.

Each penalty takes ``d_fn(images, sentence) -> logits [B]``, typically
``lambda x, s: D.apply(params, x, s)``, differentiates it with respect to its *inputs*,
and returns a float32 scalar that is itself differentiable with respect to whatever
``d_fn`` closes over: the step puts the penalty inside its D loss and ``jax.grad`` of that
loss takes the double backward through it.

The gradient of sum_b D(x_b, s_b) with respect to x_b is the per-example gradient only
when D treats examples independently; with batch-coupled layers (BatchNorm in training
mode) it is the gradient of the batch sum, as in the reference implementations.

Gradients are taken in the inputs' own dtype (so D sees exactly what the loss sees) and
cast to float32 before any norm or power (float64, under ``jax_enable_x64``, is kept).
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import jax
import jax.numpy as jnp

DiscriminatorFn = Callable[[jax.Array, jax.Array], jax.Array]


def _f32(x: jax.Array) -> jax.Array:
    """At least float32: bfloat16/float16 -> float32; float64 stays float64."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _input_grads(d_fn: DiscriminatorFn, images: jax.Array, sentence: jax.Array,
                 argnums: tuple[int, ...]) -> tuple[jax.Array, ...]:
    """d sum_b D(x_b, s_b) / d inputs[argnums], each cast to float32."""
    def total(x, s):
        return jnp.sum(_f32(d_fn(x, s)))

    grads = jax.grad(total, argnums=argnums)(images, sentence)
    return tuple(_f32(g) for g in grads)


def _per_example_sq_norm(g: jax.Array) -> jax.Array:
    """||g_b||^2 over every axis but the first: [B, ...] -> [B]."""
    return jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=-1)


def _safe_sqrt(x: jax.Array) -> jax.Array:
    """sqrt(x) for x >= 0 whose gradient at 0 is 0 instead of inf (so no NaN downstream)."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def ma_gp(d_fn: DiscriminatorFn, images: jax.Array, sentence: jax.Array, weight: float = 2.0,
          power: float = 6.0) -> jax.Array:
    """DF-GAN's matching-aware zero-centred gradient penalty (MA-GP).

    On real images x with their matching sentences s:

        g_b = sqrt(||dD/dx_b||^2 + ||dD/ds_b||^2)      (the norm of both gradients together)
        MA-GP = weight * mean_b(g_b ** power)

    Penalising the gradient at the real, matching pairs flattens D around them, so the
    generator's samples converge towards them (DF-GAN, sec. 3.3). g^p is computed as
    (g^2)^(p/2), which is exact and has a finite (zero) gradient at g = 0 for p >= 2; for
    p < 2 a tiny epsilon is added to g^2 to keep it finite.

    Args:
      d_fn: ``d_fn(images, sentence) -> logits [B]``.
      images: real images [B, H, W, C] (any float dtype).
      sentence: their matching sentence embeddings [B, S].
      weight: k in the paper; DF-GAN's code uses 2.
      power: p in the paper; DF-GAN's code uses 6.

    Returns:
      The scalar penalty, float32.

    References:
      Tao, Tang, Wu, Jing, Bao & Xu, 2022, "DF-GAN: A Simple and Effective Baseline for
      Text-to-Image Synthesis", arXiv:2008.05865, sec. 3.3, eq. 3 (MA-GP).

    Example:
        d_fn = lambda images, sentence: discriminator.apply(variables, images, sentence)
        penalty = ma_gp(d_fn, real_images, sentences, weight=2.0, power=6.0)
    """
    grad_x, grad_s = _input_grads(d_fn, images, sentence, argnums=(0, 1))
    sq = _per_example_sq_norm(grad_x) + _per_example_sq_norm(grad_s)
    if power < 2:
        sq = sq + 1e-12
    return weight * jnp.mean(jnp.power(sq, power / 2.0))


def r1_penalty(d_fn: DiscriminatorFn, images: jax.Array, sentence: jax.Array,
               weight: float = 10.0) -> jax.Array:
    """R1: weight / 2 * mean_b ||dD(x_b, s_b)/dx_b||^2 on real data.

    The zero-centred penalty on real images only (the sentence is held fixed); ``weight`` is
    gamma in the paper.

    Args:
      d_fn: ``d_fn(images, sentence) -> logits [B]``.
      images: real images [B, H, W, C] (any float dtype).
      sentence: their sentence embeddings [B, S].
      weight: gamma.

    Returns:
      The scalar penalty, float32.

    References:
      Mescheder, Geiger & Nowozin, 2018, "Which Training Methods for GANs do actually
      Converge?", arXiv:1801.04406, sec. 4.1, eq. 9.

    Example:
        penalty = r1_penalty(d_fn, real_images, sentences, weight=10.0)
    """
    (grad_x,) = _input_grads(d_fn, images, sentence, argnums=(0,))
    return 0.5 * weight * jnp.mean(_per_example_sq_norm(grad_x))


def r2_penalty(d_fn: DiscriminatorFn, fake: jax.Array, sentence: jax.Array,
               weight: float = 10.0) -> jax.Array:
    """R2: weight / 2 * mean_b ||dD(x~_b, s_b)/dx~_b||^2 on generated data x~ = G(z).

    R1's zero-centred penalty moved to the fakes: the gradient is taken with respect to the
    generated images themselves, which the caller passes under ``jax.lax.stop_gradient`` (the
    step does), so the penalty trains D only. The sentence is held fixed. Same weighting as
    ``r1_penalty``: ``weight`` is gamma and the penalty is gamma / 2 times the mean squared norm.

    Args:
      d_fn: ``d_fn(images, sentence) -> logits [B]``.
      fake: generated images [B, H, W, C] (any float dtype), no gradient to G.
      sentence: the sentence embeddings they were generated from [B, S].
      weight: gamma.

    Returns:
      The scalar penalty, float32.

    References:
      Mescheder, Geiger & Nowozin, 2018, "Which Training Methods for GANs do actually
      Converge?", arXiv:1801.04406, sec. 4.1, eq. 10 (R2).

    Example:
        penalty = r2_penalty(d_fn, jax.lax.stop_gradient(fake_images), sentences, weight=10.0)
    """
    (grad_x,) = _input_grads(d_fn, fake, sentence, argnums=(0,))
    return 0.5 * weight * jnp.mean(_per_example_sq_norm(grad_x))


def r1r2_penalty(d_fn: DiscriminatorFn, real: jax.Array, fake: jax.Array, sentence: jax.Array,
                 weight: float = 0.05) -> jax.Array:
    """R3GAN's pair: gamma / 2 * (mean_b ||dD/dx_b||^2 + mean_b ||dD/dx~_b||^2) = R1 + R2.

    Zero-centred gradient penalties on both the real images x and the generated images x~
    (no gradient to G), each with the same gamma, summed: ``r1_penalty(real, gamma) +
    r2_penalty(fake, gamma)``. With the relativistic pairing loss this is the regularised
    RpGAN for which R3GAN proves local convergence. brownvc/R3GAN takes the gradient with
    respect to the images before its augmentation; here, as for every jaxgan penalty, D
    sees the images unaugmented.

    Args:
      d_fn: ``d_fn(images, sentence) -> logits [B]``.
      real: real images [B, H, W, C].
      fake: generated images, same shape, no gradient to G.
      sentence: sentence embeddings [B, S], the condition for both.
      weight: gamma. R3GAN's values depend on the dataset (CIFAR-10 at 32 px 0.05,
        ImageNet-32 0.5, FFHQ-64 2, FFHQ-256 150, each ramped down 10x over training);
        the default is its 32 px CIFAR-10 value.

    Returns:
      The scalar penalty, float32.

    References:
      Huang, Gokaslan, Kuleshov & Tompkin, 2024, "The GAN is dead; long live the GAN! A
      Modern GAN Baseline", arXiv:2501.05441, sec. 2 (RpGAN + R1 + R2).
      Mescheder, Geiger & Nowozin, 2018, arXiv:1801.04406, sec. 4.1 (R1, R2).

    Example:
        penalty = r1r2_penalty(d_fn, real_images, jax.lax.stop_gradient(fake_images), sentences)
    """
    return (r1_penalty(d_fn, real, sentence, weight=weight)
            + r2_penalty(d_fn, fake, sentence, weight=weight))


def wgan_gp(d_fn: DiscriminatorFn, real: jax.Array, fake: jax.Array, sentence: jax.Array,
            key: jax.Array, weight: float = 10.0) -> jax.Array:
    """WGAN-GP: weight * mean_b (||dD(x_hat_b, s_b)/dx_hat_b||_2 - 1)^2.

    x_hat = eps * real + (1 - eps) * fake with one eps ~ U[0, 1] per example, drawn as
    ``jax.random.uniform(key, (B, 1, ..., 1), jnp.float32)`` (one 1 per non-batch axis of
    ``real``; float64 instead when ``real`` is float64); x_hat is cast back to ``real``'s
    dtype before D sees it. The norm's gradient
    at a zero gradient is taken as 0 (a safe sqrt), so a flat D gives no NaN.

    Args:
      d_fn: ``d_fn(images, sentence) -> logits [B]``.
      real: real images [B, H, W, C].
      fake: generated images, same shape.
      sentence: sentence embeddings [B, S], the condition for both.
      key: PRNG key for eps.
      weight: lambda in the paper.

    Returns:
      The scalar penalty, float32.

    References:
      Gulrajani, Ahmed, Arjovsky, Dumoulin & Courville, 2017, "Improved Training of
      Wasserstein GANs", arXiv:1704.00028, Algorithm 1.

    Example:
        penalty = wgan_gp(d_fn, real_images, fake_images, sentences, key, weight=10.0)
    """
    real32, fake32 = _f32(real), _f32(fake)
    eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), real32.dtype)
    x_hat = eps * real32 + (1.0 - eps) * fake32
    (grad_x,) = _input_grads(d_fn, x_hat.astype(real.dtype), sentence, argnums=(0,))
    norm = _safe_sqrt(_per_example_sq_norm(grad_x))
    return weight * jnp.mean(jnp.square(norm - 1.0))


def lazy(penalty_value_fn: Callable[[], jax.Array], step: jax.Array | int,
         every: int) -> jax.Array:
    """Lazy regularisation: ``every * penalty`` on steps divisible by ``every``, else 0.

    Computing a gradient penalty (a double backward) on one step in ``every`` and scaling it
    by ``every`` keeps its expected contribution while cutting its cost; StyleGAN2 uses
    every = 16 for R1. ``step`` may be traced: the choice is a ``jax.lax.cond``, so a new step
    value does not recompile. With ``every == 1`` the penalty is computed every step and no
    cond is emitted. Under ``vmap`` a cond becomes a select and both branches run.

    Args:
      penalty_value_fn: a zero-argument function returning the scalar penalty, e.g.
        ``lambda: r1_penalty(d_fn, x, s)``.
      step: the training step (a traced integer is fine).
      every: the interval, a Python int >= 1 (static).

    Returns:
      The scalar (float32) to add to the D loss.

    References:
      Karras, Laine, Aittala, Hellsten, Lehtinen & Aila, 2020, "Analyzing and Improving the
      Image Quality of StyleGAN", arXiv:1912.04958, sec. 4 (lazy regularization).

    Example:
        value = lazy(lambda: r1_penalty(d_fn, real, sentence), step, every=16)
    """
    try:
        interval = operator.index(every)
    except TypeError:
        interval = 0
    if interval < 1:
        raise ValueError(f"lazy: every must be a static integer >= 1, got {every!r}")
    if interval == 1:
        return _f32(penalty_value_fn())
    dtype = jnp.promote_types(jax.eval_shape(penalty_value_fn).dtype, jnp.float32)
    return jax.lax.cond(
        jnp.asarray(step) % interval == 0,
        lambda: interval * _f32(penalty_value_fn()),
        lambda: jnp.zeros((), dtype))


# The weight each paper uses, for train.penalty_weight = 0. R1 and R2 alone keep Mescheder
# et al.'s gamma = 10; R1 + R2 takes R3GAN's gamma at 32 px (CIFAR-10, 0.05), tuned for that
# pair with its relativistic loss. R3GAN's gamma grows with resolution and data (up to 150 at
# FFHQ-256): set train.penalty_weight for other data.
DEFAULT_WEIGHTS = {"magp": 2.0, "r1": 10.0, "r2": 10.0, "r1r2": 0.05, "wgan_gp": 10.0}
Penalty = Callable[[DiscriminatorFn, jax.Array, jax.Array, jax.Array, jax.Array, jax.Array, int], jax.Array]


def penalty_from_config(kind: str, weight: float = 0.0, power: float = 6.0) -> Penalty:
    """The step's gradient penalty: ``penalty(d_fn, real, fake, sentence, key, step, every)``.

    Args:
      kind: "none", "magp" (on real images and their sentences), "r1" (on real images),
        "r2" (on generated images), "r1r2" (both, R3GAN) or "wgan_gp" (on real/fake
        interpolates). R1, R2 and R1 + R2 are weight / 2 times the mean squared gradient norm.
      weight: the penalty's weight; 0 means the paper's (``DEFAULT_WEIGHTS``).
      power: MA-GP's exponent p.

    Returns:
      A function giving the scalar to add to the D loss, lazily every ``every`` steps.

    Example:
        penalty = penalty_from_config("magp", weight=2.0, power=6.0)
        reg = penalty(d_fn, real, fake, sentence, key, step, every=1)
    """
    if kind == "none":
        return lambda d_fn, real, fake, sentence, key, step, every: jnp.zeros((), jnp.float32)
    if kind not in DEFAULT_WEIGHTS:
        raise ValueError(f"unknown gradient penalty {kind!r}; choose from none, {', '.join(DEFAULT_WEIGHTS)}")
    w = weight or DEFAULT_WEIGHTS[kind]

    def penalty(d_fn, real, fake, sentence, key, step, every):
        if kind == "magp":
            value = lambda: ma_gp(d_fn, real, sentence, weight=w, power=power)  # noqa: E731
        elif kind == "r1":
            value = lambda: r1_penalty(d_fn, real, sentence, weight=w)  # noqa: E731
        elif kind == "r2":
            value = lambda: r2_penalty(d_fn, fake, sentence, weight=w)  # noqa: E731
        elif kind == "r1r2":
            value = lambda: r1r2_penalty(d_fn, real, fake, sentence, weight=w)  # noqa: E731
        else:
            value = lambda: wgan_gp(d_fn, real, fake, sentence, key, weight=w)  # noqa: E731
        return lazy(value, step, every)

    return penalty
