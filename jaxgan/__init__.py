"""jaxgan: text-conditioned GANs in JAX/Flax with one compiled training step.

The pieces a user composes:

    config = jaxgan.get_config("default", ["train.steps=1000"])
    jaxgan.train_and_evaluate(config, "workdir")          # what train.py runs

    generator, discriminator = jaxgan.build_models(config.model)
    state = jaxgan.init_state(config, generator, discriminator, sentence_dim=128)
    step = jax.jit(jaxgan.make_train_step(config, generator, discriminator))
    state, metrics = step(state, batch)                   # both networks, both optimizers
"""

import importlib
from typing import Any

# Names are imported on first use, so that importing a light submodule (the input pipeline's
# worker processes import jaxgan.data.prepare) does not load JAX, Flax and the models.
_EXPORTS = {
    # configs and the whole training run
    "Config": "jaxgan.config", "ConfigError": "jaxgan.config", "ModelConfig": "jaxgan.config",
    "apply_overrides": "jaxgan.presets", "get_config": "jaxgan.presets", "train_and_evaluate": "jaxgan.train",
    # models, state and the compiled step
    "build_models": "jaxgan.models", "ARCHITECTURES": "jaxgan.models", "GANState": "jaxgan.state",
    "init_state": "jaxgan.state",
    "make_train_step": "jaxgan.step", "build_train_program": "jaxgan.program", "TrainProgram": "jaxgan.program",
    # losses, regularisers, augmentation: pure functions a step composes
    "LOSSES": "jaxgan.losses", "GANLoss": "jaxgan.losses", "as_gan_loss": "jaxgan.losses",
    "pairwise_accuracy": "jaxgan.losses", "AdversarialLoss": "jaxgan.losses", "matching_aware_d_loss": "jaxgan.losses",
    "ma_gp": "jaxgan.regularizers", "r1_penalty": "jaxgan.regularizers", "r2_penalty": "jaxgan.regularizers",
    "r1r2_penalty": "jaxgan.regularizers", "wgan_gp": "jaxgan.regularizers",
    "lazy": "jaxgan.regularizers", "penalty_from_config": "jaxgan.regularizers",
    "diff_augment": "jaxgan.augment", "augment_examples": "jaxgan.augment",
    # text encoders and data
    "load_text_encoder": "jaxgan.text", "ExampleSource": "jaxgan.data.source", "make_source": "jaxgan.data",
    "Pipeline": "jaxgan.data.pipeline", "EmbeddingTable": "jaxgan.data.embeddings",
    "embedding_table": "jaxgan.data.embeddings",
    # many GANs in one compiled step
    "init_members": "jaxgan.sweep", "make_sweep_step": "jaxgan.sweep", "member": "jaxgan.sweep",
    # sampling
    "make_generate_fn": "jaxgan.sampling", "sample_noise": "jaxgan.sampling",
    "save_captioned_grid": "jaxgan.sampling", "TrainedGenerator": "jaxgan.workdir",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'jaxgan' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
