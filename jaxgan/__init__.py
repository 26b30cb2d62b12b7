"""jaxgan: text-conditioned GANs in JAX/Flax with one compiled training step.

The pieces a user composes:

    config = jaxgan.get_config("default", ["train.steps=1000"])
    jaxgan.train_and_evaluate(config, "workdir")          # what train.py runs

    generator, discriminator = jaxgan.build_models(config.model)
    state = jaxgan.init_state(config, generator, discriminator, sentence_dim=128)
    step = jax.jit(jaxgan.make_train_step(config, generator, discriminator))
    state, metrics = step(state, batch)                   # both networks, both optimizers
"""

from jaxgan.config import Config, ConfigError, apply_overrides, get_config
from jaxgan.losses import LOSSES, AdversarialLoss, matching_aware_d_loss
from jaxgan.models import build_models
from jaxgan.state import GANState, init_state
from jaxgan.step import make_train_step
from jaxgan.train import train_and_evaluate

__all__ = [
    "Config", "ConfigError", "apply_overrides", "get_config", "LOSSES", "AdversarialLoss",
    "matching_aware_d_loss", "build_models", "GANState", "init_state", "make_train_step",
    "train_and_evaluate",
]
