"""The training step: one pure function that updates D, then G, then the EMA generator.

``make_train_step`` binds the static pieces (config, modules, loss, device axis) and
returns ``train_step(state, batch) -> (state, metrics)``. The same function is compiled
with ``jax.jit`` over a mesh or with ``jax.pmap`` (see ``jaxgan.parallel``); under pmap it
is given ``axis_name`` and averages gradients, statistics and metrics over it.

A batch is a dict: ``image`` uint8 [B, R, R, 3], ``sentence`` and ``wrong_sentence``
float32 [B, S] (embeddings of the caption and of a mismatched caption from the frozen text
encoder, computed outside the step so its params never meet the optimizer).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxgan.config import Config
from jaxgan.losses import LOSSES, matching_aware_d_loss
from jaxgan.state import GANState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def example_noise(key: jax.Array, batch_size: int, z_dim: int, axis_name: str | None) -> jax.Array:
    """z ~ N(0, I) [B, Z], one key per global example index.

    Keying by the global index makes the noise independent of how the batch is split
    across devices, so 1 device, jit over 8 and pmap over 8 train the same model.
    """
    offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * batch_size
    index = offset + jnp.arange(batch_size)
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (z_dim,)))(index)


def images_to_float(images: jax.Array) -> jax.Array:
    """uint8 [0, 255] -> float32 [-1, 1]; done on device so the host sends 4x fewer bytes."""
    return images.astype(jnp.float32) / 127.5 - 1.0


def _norm(tree: Any) -> jax.Array:
    return optax.tree.norm(tree)


def make_train_step(config: Config, generator: nn.Module, discriminator: nn.Module,
                    axis_name: str | None = None) -> Callable[[GANState, Batch], tuple[GANState, Metrics]]:
    """Builds the pure step for ``config``; ``axis_name`` is the pmap axis, None under jit."""
    loss = LOSSES[config.train.loss]
    ema_decay = config.train.ema_decay

    def mean_over_devices(tree):
        return tree if axis_name is None else jax.lax.pmean(tree, axis_name)

    def train_step(state: GANState, batch: Batch) -> tuple[GANState, Metrics]:
        real = images_to_float(batch["image"])
        sentence, wrong_sentence = batch["sentence"], batch["wrong_sentence"]
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        z = example_noise(key, real.shape[0], config.model.z_dim, axis_name)

        # G runs forward once; its VJP is kept for the G update after D has moved, as a
        # PyTorch loop reuses the fake batch's graph.
        def generate(g_params):
            fake, updates = generator.apply({"params": g_params, "batch_stats": state.g_stats},
                                            z, sentence, train=True, mutable=["batch_stats"])
            return fake, updates["batch_stats"]

        fake, g_vjp, g_stats = jax.vjp(generate, state.g_params, has_aux=True)

        # --- D update: (real, caption) real; (fake, caption) and (real, wrong caption) fake.
        def d_loss_fn(d_params):
            (real_logits, wrong_logits), upd = discriminator.apply(
                {"params": d_params, "batch_stats": state.d_stats}, real, sentence, wrong_sentence,
                train=True, mutable=["batch_stats"])
            fake_logits, upd = discriminator.apply(
                {"params": d_params, "batch_stats": upd["batch_stats"]},
                jax.lax.stop_gradient(fake), sentence, train=True, mutable=["batch_stats"])
            d_loss = matching_aware_d_loss(loss, real_logits, fake_logits, wrong_logits)
            logits = {"d_real_logit": real_logits.mean(), "d_fake_logit": fake_logits.mean(),
                      "d_wrong_logit": wrong_logits.mean()}
            return d_loss, (upd["batch_stats"], logits)

        (d_loss, (d_stats, logits)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
            state.d_params)
        d_grads = mean_over_devices(d_grads)
        d_updates, d_opt_state = state.d_tx.update(d_grads, state.d_opt_state, state.d_params)
        d_params = optax.apply_updates(state.d_params, d_updates)

        # --- G update against the updated D. D's statistics from this pass are discarded:
        # they describe a batch D was not trained on.
        def g_loss_fn(fake_images):
            fake_logits, _ = discriminator.apply(
                {"params": d_params, "batch_stats": d_stats}, fake_images, sentence,
                train=True, mutable=["batch_stats"])
            return loss.g(fake_logits)

        g_loss, d_fake = jax.value_and_grad(g_loss_fn)(fake)
        (g_grads,) = g_vjp(d_fake)
        g_grads = mean_over_devices(g_grads)
        g_updates, g_opt_state = state.g_tx.update(g_grads, state.g_opt_state, state.g_params)
        g_params = optax.apply_updates(state.g_params, g_updates)
        # Warm-up (as in Keras/TF EMA): early on the average would be mostly the random
        # init, so the decay grows from 0.1 to ema_decay over the first steps.
        decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
        ema_params = optax.incremental_update(g_params, state.ema_params, 1.0 - decay)

        # The EMA generator needs statistics of its own activations: the raw generator's
        # running statistics do not match the averaged weights, and samples come out dim
        # and washed out (BigGAN recomputes "standing statistics" for the same reason).
        _, ema_updates = generator.apply({"params": ema_params, "batch_stats": state.ema_stats}, z,
                                         sentence, train=True, mutable=["batch_stats"])

        new_state = state.replace(
            step=state.step + 1, g_params=g_params, d_params=d_params,
            # Per-device BN under pmap leaves each device its own running statistics;
            # averaging keeps the replicas identical (a no-op when BN is synchronised).
            g_stats=mean_over_devices(g_stats), d_stats=mean_over_devices(d_stats),
            g_opt_state=g_opt_state, d_opt_state=d_opt_state, ema_params=ema_params,
            ema_stats=mean_over_devices(ema_updates["batch_stats"]))
        metrics = mean_over_devices({
            "d_loss": d_loss, "g_loss": g_loss, **logits,
        })
        metrics.update({
            "d_grad_norm": _norm(d_grads), "g_grad_norm": _norm(g_grads),
            "d_update_norm": _norm(d_updates), "g_update_norm": _norm(g_updates),
            "d_param_norm": _norm(d_params), "g_param_norm": _norm(g_params),
        })
        return new_state, metrics

    return train_step
