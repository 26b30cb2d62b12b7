"""The training step: one pure function that updates D, then G, then the EMA generator.

``make_train_step`` binds the static pieces (config, modules, loss, device axis) and
returns ``train_step(state, batch, frozen=None) -> (state, metrics)``; ``frozen`` holds the
params of frozen components inside G and D (GALIP's CLIP tower, ``jaxgan.state.frozen_params``),
an input of the compiled step that is read, never differentiated, updated or donated. The
same function is compiled with ``jax.jit`` over a mesh or with ``jax.pmap`` (see
``jaxgan.parallel``); under pmap it is given ``axis_name`` and averages gradients,
statistics and metrics over it.

A batch is a dict: ``image`` uint8 [B, R, R, 3], ``sentence`` and ``wrong_sentence``
float32 [B, S] (embeddings of the caption and of a mismatched caption from the frozen text
encoder, computed outside the step so its params never meet the optimizer), and, for
generators with word attention, ``words`` [B, L, W] and ``word_mask`` bool [B, L].
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxgan import pixels
from jaxgan.augment import ada_adjust, augment_examples
from jaxgan.config import Config
from jaxgan.diversity import diversity_ratio
from jaxgan.losses import LOSSES, AdversarialLoss, GANLoss, as_gan_loss, conditioning_kl
from jaxgan.regularizers import Penalty, penalty_from_config
from jaxgan.schedules import ema_half_life_mode
from jaxgan.state import GANState, scheduled_metrics, with_frozen, with_scheduled_values, word_inputs

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
Frozen = dict[str, Any]


def example_noise(key: jax.Array, batch_size: int, z_dim: int, axis_name: str | None) -> jax.Array:
    """z ~ N(0, I) [B, Z], one key per global example index.

    Keying by the global index makes the noise independent of how the batch is split
    across devices, so 1 device, jit over 8 and pmap over 8 train the same model.
    """
    offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * batch_size
    index = offset + jnp.arange(batch_size)
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (z_dim,)))(index)


def _norm(tree: Any) -> jax.Array:
    return optax.tree.norm(tree)


def batch_spread(images: jax.Array, axis_name: str | None = None) -> jax.Array:
    """Mean over pixels and channels of the standard deviation across the (global) batch.

    A mode-collapse gauge: generated images that all look alike have a spread near 0 while
    the real batch keeps its own. Under pmap the moments are averaged over ``axis_name``
    first, so the value is the global batch's whatever the device layout.
    """
    def global_mean(v: jax.Array) -> jax.Array:
        v = v.mean(0)
        return v if axis_name is None else jax.lax.pmean(v, axis_name)

    # Two passes, as in layers.BatchNorm: E[x^2] - E[x]^2 cancels near |x| = 1, which is
    # where a collapsed generator sits, and would report a spread of ~1e-4 for identical images.
    x = images.astype(jnp.float32)
    mean = global_mean(x)
    return jnp.mean(jnp.sqrt(global_mean(jnp.square(x - mean))))


def saturated_fraction(images: jax.Array, threshold: float = 0.99) -> jax.Array:
    """Share of pixel values with |x| > threshold: where tanh's gradient is below 2%.

    A generator pushed deep into its tanh gets almost no gradient through it; on data with
    a constant background at -1 (shapes) a fraction near 1 with a collapsed spread is the
    all-black failure of a normalisation-free generator.
    """
    return jnp.mean(jnp.abs(images.astype(jnp.float32)) > threshold, dtype=jnp.float32)


def _all_finite(*values: jax.Array) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in values]))


Augment = Callable[[jax.Array, jax.Array, Any], jax.Array]
# An architecture's term in G's loss: (fake images, sentences, frozen) -> (scalar, metrics).
GLossTerm = Callable[[jax.Array, jax.Array, Frozen], tuple[jax.Array, Metrics]]


def make_train_step(config: Config, generator: nn.Module, discriminator: nn.Module,
                    axis_name: str | None = None, *, loss: GANLoss | AdversarialLoss | None = None,
                    penalty: Penalty | None = None, augment: Augment | None = None,
                    d_input: Callable[[jax.Array, Frozen], jax.Array] | None = None,
                    g_loss_term: GLossTerm | None = None) -> Callable[..., tuple[GANState, Metrics]]:
    """Builds the pure step for ``config``; ``axis_name`` is the pmap axis, None under jit.

    The variants (loss, gradient penalty, DiffAugment, conditioning augmentation, word
    attention) are chosen here, once, from the config; the step below composes them. A
    researcher's own pure functions replace the config's choice, with no change to jaxgan:

    Args:
      loss: a ``GANLoss``, D's loss of the (real, fake, wrong) logits and G's of the fake
        (and, if it asks, the real) logits, or an ``AdversarialLoss`` triple (see
        ``jaxgan.losses``; default ``LOSSES[train.loss]``).
      penalty: ``penalty(d_fn, real, fake, sentence, key, step, every) -> scalar`` added to D's
        loss, where ``d_fn(images, sentence) -> logits`` (default from ``train.penalty``; see
        ``jaxgan.regularizers``).
      augment: ``augment(key, images, offset) -> images`` applied to every image D sees,
        differentiable (default: DiffAugment with ``train.augment``). With ADA
        (``train.ada_target > 0``) it is called as ``augment(key, images, offset, p=p)``, p
        the state's adapted probability of each op.
      d_input: ``d_input(images, frozen) -> x``, what D scores instead of the (augmented) images:
        a frozen, differentiable encoder whose params come from the step's ``frozen`` (GALIP's
        CLIP features). The penalty then differentiates with respect to x. Default: the images.
      g_loss_term: ``g_loss_term(fake, sentence, frozen) -> (scalar, metrics)`` added to G's
        loss and differentiated with it (GALIP's CLIP similarity); its metrics join the step's.
      An architecture's own pieces come from ``jaxgan.models.step_pieces``.

    Example:
        rp_hinge = GANLoss(d=lambda real, fake, wrong: jnp.mean(jax.nn.relu(1 - (real - fake))),
                           g=lambda fake, real: jnp.mean(jax.nn.relu(1 - (fake - real))),
                           g_needs_real=True)
        step = jax.jit(make_train_step(config, generator, discriminator, loss=rp_hinge))
    """
    t = config.train
    loss = as_gan_loss(loss or LOSSES[t.loss])
    # A built-in penalty is computed at unit weight and scaled by the state's penalty_weight
    # (a sweepable value); a penalty of one's own carries its own weight.
    builtin_penalty = penalty is None
    penalty = penalty or penalty_from_config(t.penalty, 1.0, t.penalty_power)
    augment_at = augment or augment_examples(t.augment)
    ada = t.ada_target > 0
    twins = t.diversity_weight > 0  # a second sample for half the batch (jaxgan.diversity)
    ema_half_life = ema_half_life_mode(t)

    def mean_over_devices(tree):
        return tree if axis_name is None else jax.lax.pmean(tree, axis_name)

    def diversity_part(weight: jax.Array, fake_all: jax.Array, z_all: jax.Array,
                       d_fake: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(DSGAN's L_z over the (even example, twin) pairs, the cotangent of G's whole output:
        d_fake padded over the twins, plus the gradient of G's -weight * L_z)."""
        n = d_fake.shape[0]
        ratio, grad = jax.value_and_grad(
            lambda x: diversity_ratio(x[:n:2], x[n:], z_all[:n:2], z_all[n:], t.diversity_tau))(fake_all)
        padded = jnp.concatenate([d_fake, jnp.zeros((fake_all.shape[0] - n,) + d_fake.shape[1:], d_fake.dtype)])
        return ratio, padded - (weight * grad).astype(d_fake.dtype)

    def train_step(state: GANState, batch: Batch, frozen: Frozen | None = None) -> tuple[GANState, Metrics]:
        # Scheduled values (learning rates, beta2, hparams leaves, the EMA decay) at this step's
        # images seen; a no-op without schedules.
        state = with_scheduled_values(state, config)
        frozen = frozen or {}
        encode = (lambda images: images) if d_input is None else functools.partial(d_input, frozen=frozen)
        augment = functools.partial(augment_at, p=state.hparams["ada_p"]) if ada else augment_at
        real = pixels.to_float(batch["image"])
        sentence, wrong_sentence = batch["sentence"], batch["wrong_sentence"]
        words = word_inputs(config, batch.get("words"), batch.get("word_mask"))
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        batch_size = real.shape[0]
        z = example_noise(key, batch_size, config.model.z_dim, axis_name)
        # Everything else random comes from a key no example index reaches (z uses
        # fold_in(key, i) for the example indices i).
        k_ca, k_aug_d, k_aug_g, k_penalty = jax.random.split(jax.random.fold_in(key, 2**31 - 1), 4)
        offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * batch_size
        g_inputs = (z, sentence, words)
        if twins:
            # G's one pass also draws a second sample ("twin") of each even example's caption,
            # its noise keyed by that example's global index in a stream of its own, so the
            # pairs do not depend on the device layout (for an even per-device batch).
            k_twin = jax.random.fold_in(key, 2**31 - 2)
            z_twin = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(k_twin, i), (config.model.z_dim,)))(
                offset + jnp.arange(0, batch_size, 2))
            g_inputs = (jnp.concatenate([z, z_twin]), jnp.concatenate([sentence, sentence[::2]]),
                        {k: jnp.concatenate([v, v[::2]]) for k, v in words.items()})
        if axis_name is not None:
            # CA draws its noise for the local batch; each device must draw its own. (So with
            # model.ca, pmap and jit draw different CA noise; everything else matches.)
            k_ca = jax.random.fold_in(k_ca, jax.lax.axis_index(axis_name))

        # G runs forward once; its VJP is kept for the G update after D has moved, as a
        # PyTorch loop reuses the fake batch's graph.
        # With conditioning augmentation G also returns its KL term, so one VJP carries both.
        def generate(g_params):
            g_z, g_sentence, g_words = g_inputs
            fake, updates = generator.apply(with_frozen({"params": g_params, "batch_stats": state.g_stats}, frozen),
                                            g_z, g_sentence, **g_words, train=True, rngs={"ca": k_ca},
                                            mutable=["batch_stats", "losses"])
            return (fake, conditioning_kl(updates.get("losses", {}))), updates.get("batch_stats", {})

        (fake, kl), g_vjp, g_stats = jax.vjp(generate, state.g_params, has_aux=True)
        fake_all, fake = fake, fake[:batch_size]

        def d_apply(d_params, d_stats, images, text, wrong_text=None):
            variables = with_frozen({"params": d_params, "batch_stats": d_stats}, frozen)
            out, upd = discriminator.apply(variables, images, text, wrong_text, train=True, mutable=["batch_stats"])
            return out, upd.get("batch_stats", {})

        # --- D update: (real, caption) real; (fake, caption) and (real, wrong caption) fake.
        def d_loss_fn(d_params):
            seen_real = encode(augment(k_aug_d, real, offset))
            (real_logits, wrong_logits), stats = d_apply(d_params, state.d_stats, seen_real, sentence,
                                                         wrong_sentence)
            seen_fake = encode(augment(jax.random.fold_in(k_aug_d, 1), jax.lax.stop_gradient(fake), offset))
            fake_logits, stats = d_apply(d_params, stats, seen_fake, sentence)
            adversarial = loss.d(real_logits, fake_logits, wrong_logits)
            # The penalty sees D as a function of (image, sentence); its BatchNorm statistics
            # (dcgan) are not updated by this extra pass.
            d_fn = lambda x, s: d_apply(d_params, stats, x, s)[0]  # noqa: E731
            reg = penalty(d_fn, encode(real), encode(jax.lax.stop_gradient(fake)), sentence, k_penalty,
                          state.step, t.penalty_every)
            if builtin_penalty:
                reg = state.hparams["penalty_weight"] * reg
            aux = {"d_real_logit": real_logits.mean(), "d_fake_logit": fake_logits.mean(),
                   "d_wrong_logit": wrong_logits.mean(), "d_penalty": reg,
                   **loss.accuracies(real_logits, fake_logits, wrong_logits)}
            return adversarial + reg, (stats, aux)

        (d_loss, (d_stats, d_aux)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
            state.d_params)
        d_grads = mean_over_devices(d_grads)
        d_updates, d_opt_state = state.d_tx.update(d_grads, state.d_opt_state, state.d_params)
        d_params = optax.apply_updates(state.d_params, d_updates)

        # --- G update against the updated D. D's statistics from this pass are discarded:
        # they describe a batch D was not trained on.
        real_logits_g = None
        if loss.g_needs_real:
            # A relativistic G loss ranks its fakes against D(real): the updated D on the real
            # batch, a constant for G (it does not depend on G) and no gradient to D.
            seen_real = encode(augment(jax.random.fold_in(k_aug_g, 1), real, offset))
            real_logits_g = jax.lax.stop_gradient(d_apply(d_params, d_stats, seen_real, sentence)[0])

        def g_loss_fn(fake_images):
            seen = encode(augment(k_aug_g, fake_images, offset))
            fake_logits, _ = d_apply(d_params, d_stats, seen, sentence)
            adversarial = loss.g(fake_logits, real_logits_g)
            if g_loss_term is None:
                return adversarial, (adversarial, {})
            term, term_metrics = g_loss_term(fake_images, sentence, frozen)
            return adversarial + term, (adversarial, term_metrics)

        (g_arch_loss, (g_adv, g_term_metrics)), d_fake = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
        kl_weight = state.hparams["kl_weight"]
        if twins:  # G maximises L_z: -weight * L_z joins G's loss, its gradient joins d_fake
            g_diversity, d_fake = diversity_part(state.hparams["diversity_weight"], fake_all, g_inputs[0], d_fake)
        (g_grads,) = g_vjp((d_fake, kl_weight.astype(kl.dtype)))
        g_loss = g_arch_loss + kl_weight * kl
        if twins:
            g_loss = g_loss - state.hparams["diversity_weight"] * g_diversity
        g_grads = mean_over_devices(g_grads)
        g_updates, g_opt_state = state.g_tx.update(g_grads, state.g_opt_state, state.g_params)
        g_params = optax.apply_updates(state.g_params, g_updates)
        # Warm-up (as in Keras/TF EMA): early on the average would be mostly the random
        # init, so the decay grows from 0.1 to ema_decay over the first steps. A half-life in
        # images (train.ema_kimg) has StyleGAN's own ramp-up instead (train.ema_rampup).
        decay = state.hparams["ema_decay"]
        if not ema_half_life:
            decay = jnp.minimum(decay, (1.0 + state.step) / (10.0 + state.step))
        ema_params = optax.incremental_update(g_params, state.ema_params, 1.0 - decay)

        # The EMA generator needs statistics of its own activations: the raw generator's
        # running statistics do not match the averaged weights, and samples come out dim
        # and washed out (BigGAN recomputes "standing statistics" for the same reason).
        _, ema_updates = generator.apply(with_frozen({"params": ema_params, "batch_stats": state.ema_stats}, frozen),
                                         z, sentence, **words, train=True, rngs={"ca": k_ca}, mutable=["batch_stats"])

        d_grad_norm, g_grad_norm = _norm(d_grads), _norm(g_grads)
        # A non-finite loss or gradient skips the update: no NaN ever reaches the params,
        # the optimizer moments or the EMA. The step counter still advances (the batch is
        # consumed), and the loop stops after train.max_skips skips in a row.
        finite = _all_finite(d_loss, g_loss, d_grad_norm, g_grad_norm)
        if axis_name is not None:
            finite = jax.lax.pmin(finite.astype(jnp.int32), axis_name) > 0
        updated = state.replace(
            g_params=g_params, d_params=d_params,
            # Per-device BN under pmap leaves each device its own running statistics;
            # averaging keeps the replicas identical (a no-op when BN is synchronised).
            g_stats=mean_over_devices(g_stats), d_stats=mean_over_devices(d_stats),
            g_opt_state=g_opt_state, d_opt_state=d_opt_state, ema_params=ema_params,
            ema_stats=mean_over_devices(ema_updates.get("batch_stats", {})))
        ada_metrics = {}
        if ada:
            # r_t = E[sign(D(real) - threshold)] = 2 * acc_real - 1, over the global batch.
            rt = 2.0 * mean_over_devices(d_aux["d_acc_real"]) - 1.0
            adapted = ada_adjust(state.hparams, rt, target=t.ada_target, interval=t.ada_interval,
                                 batch_size=t.batch_size, kimg=t.ada_kimg, max_p=t.ada_max_p)
            updated = updated.replace(hparams={**updated.hparams, **adapted})
            ada_metrics = {"ada_p": state.hparams["ada_p"], "ada_rt": rt}
        new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
        new_state = new_state.replace(
            step=state.step + 1, key=state.key,
            skipped=state.skipped + (~finite).astype(jnp.int32),
            streak=jnp.where(finite, 0, state.streak + 1).astype(jnp.int32))
        metrics = mean_over_devices({"d_loss": d_loss, "g_loss": g_loss, "g_adversarial": g_adv, "g_kl": kl,
                                     "fake_saturated": saturated_fraction(fake), **d_aux, **g_term_metrics})
        metrics.update({
            "d_grad_norm": d_grad_norm, "g_grad_norm": g_grad_norm,
            "d_update_norm": _norm(d_updates), "g_update_norm": _norm(g_updates),
            "d_param_norm": _norm(new_state.d_params), "g_param_norm": _norm(new_state.g_params),
            "skipped": new_state.skipped, "nonfinite_streak": new_state.streak,
            "fake_spread": batch_spread(fake, axis_name), "real_spread": batch_spread(real, axis_name),
            **ada_metrics,
            **scheduled_metrics(state, config, decay),
        })
        if twins:
            metrics["g_diversity"] = mean_over_devices(g_diversity)
        return new_state, metrics

    return train_step
