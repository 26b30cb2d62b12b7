"""GANState: the one pytree that training carries from step to step."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxgan.config import Config


class GANState(struct.PyTreeNode):
    """Everything a training step reads and writes; a checkpoint is exactly this pytree.

    The optimizers are static fields: their hyperparameters are part of the compiled
    program, their states (moments, counts) are leaves. The frozen text encoder is not here.
    """

    step: jax.Array
    g_params: Any
    d_params: Any
    g_stats: Any  # generator BatchNorm running statistics
    d_stats: Any
    g_opt_state: optax.OptState
    d_opt_state: optax.OptState
    ema_params: Any  # exponential moving average of g_params, used for sampling
    ema_stats: Any  # BatchNorm running statistics of the EMA generator itself
    key: jax.Array  # raw uint32 key data, so checkpoints need no typed-key handling
    skipped: jax.Array  # steps whose update was skipped for a non-finite loss or gradient
    streak: jax.Array  # consecutive skipped steps up to now (0 after a good step)
    g_tx: optax.GradientTransformation = struct.field(pytree_node=False)
    d_tx: optax.GradientTransformation = struct.field(pytree_node=False)


def make_optimizers(config: Config) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """Adam for each network with its own learning rate (DCGAN: lr 2e-4, betas (0.5, 0.999))."""
    t = config.train
    return (optax.adam(t.g_lr, b1=t.beta1, b2=t.beta2), optax.adam(t.d_lr, b1=t.beta1, b2=t.beta2))


def init_state(config: Config, generator: nn.Module, discriminator: nn.Module,
               sentence_dim: int) -> GANState:
    """Fresh state from ``config.train.seed``; pure, so it can run under ``jax.eval_shape``."""
    key = jax.random.key(config.train.seed)
    g_key, d_key, train_key = jax.random.split(key, 3)
    res = config.model.resolution
    z = jnp.zeros((1, config.model.z_dim), jnp.float32)
    sentence = jnp.zeros((1, sentence_dim), jnp.float32)
    image = jnp.zeros((1, res, res, 3), jnp.float32)
    g_vars = generator.init(g_key, z, sentence, train=False)
    d_vars = discriminator.init(d_key, image, sentence, sentence, train=False)
    g_tx, d_tx = make_optimizers(config)
    return GANState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_vars["params"],
        d_params=d_vars["params"],
        g_stats=g_vars["batch_stats"],
        d_stats=d_vars["batch_stats"],
        g_opt_state=g_tx.init(g_vars["params"]),
        d_opt_state=d_tx.init(d_vars["params"]),
        # A copy, not an alias: the step donates the state, and one buffer cannot be donated twice.
        ema_params=jax.tree.map(jnp.copy, g_vars["params"]),
        ema_stats=jax.tree.map(jnp.copy, g_vars["batch_stats"]),
        key=jax.random.key_data(train_key),
        skipped=jnp.zeros((), jnp.int32),
        streak=jnp.zeros((), jnp.int32),
        g_tx=g_tx,
        d_tx=d_tx,
    )


def abstract_state(config: Config, generator: nn.Module, discriminator: nn.Module,
                   sentence_dim: int) -> GANState:
    """The state's shapes and dtypes (no arrays allocated): the target a checkpoint restores into."""
    return jax.eval_shape(lambda: init_state(config, generator, discriminator, sentence_dim))
