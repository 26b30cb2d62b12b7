"""Generator and discriminator architectures (pure Flax linen modules) and their registry.

Each architecture lives in its own module with its config class (a ``ModelConfig`` subclass
holding the options only it has) and a build function, and is registered below by the name
``model.arch`` gives it. Adding an architecture is its module plus one line in
``ARCHITECTURES``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn

from jaxgan.config import ModelConfig
from jaxgan.models.dcgan import DCGANConfig, Discriminator, Generator, build_dcgan
from jaxgan.models.dfgan import DFDiscriminator, DFGANConfig, DFGenerator, build_dfgan, dfgan_channels, dfgan_d_channels
from jaxgan.models.galip import GALIPConfig, GalipDiscriminator, GalipGenerator, build_galip, galip_step_pieces
from jaxgan.models.layers import DTYPES, resolve_conv_impl
from jaxgan.models.r3gan import R3Discriminator, R3GANConfig, R3Generator, build_r3gan, r3gan_channels


class Architecture(NamedTuple):
    """A registered architecture: its model config class, the function that builds its pair
    ``(config, bn_groups, bn_axis_name) -> (generator, discriminator)`` and, if it needs any,
    the pieces of the training step it brings ``(config, generator, discriminator) -> {name:
    piece}`` (keyword arguments of ``jaxgan.step.make_train_step``, e.g. GALIP's ``d_input``
    and ``g_loss_term``)."""

    config: type[ModelConfig]
    build: Callable[..., tuple[nn.Module, nn.Module]]
    step_pieces: Callable[..., dict[str, Any]] | None = None


# model.arch -> its architecture. The name must be the config class's ``arch``.
ARCHITECTURES: dict[str, Architecture] = {
    "dcgan": Architecture(DCGANConfig, build_dcgan),
    "dfgan": Architecture(DFGANConfig, build_dfgan),
    "r3gan": Architecture(R3GANConfig, build_r3gan),
    "galip": Architecture(GALIPConfig, build_galip, galip_step_pieces),
}


def build_models(cfg: ModelConfig, bn_groups: int = 1,
                 bn_axis_name: str | None = None) -> tuple[nn.Module, nn.Module]:
    """The (generator, discriminator) pair a model config describes (``cfg.arch``).

    ``bn_groups`` / ``bn_axis_name`` choose how BatchNorm statistics span devices; see
    ``jaxgan.models.layers.BatchNorm`` (DF-GAN uses them only with ``model.g_norm=batch``).

    Example:
        generator, discriminator = build_models(get_config("dfgan64").model)
    """
    arch = ARCHITECTURES.get(cfg.arch)
    if arch is None or type(cfg) is not arch.config:
        raise ValueError(f"{type(cfg).__name__} with model.arch={cfg.arch!r} is not a registered architecture; "
                         f"valid: {', '.join(f'{n} ({a.config.__name__})' for n, a in ARCHITECTURES.items())}")
    return arch.build(cfg, bn_groups, bn_axis_name)


def step_pieces(cfg: ModelConfig, generator: nn.Module, discriminator: nn.Module) -> dict[str, Any]:
    """The training-step pieces the architecture of ``cfg`` brings (none for most): pass them to
    ``make_train_step`` with the pair ``build_models`` built.

    Example:
        g, d = build_models(config.model)
        step = make_train_step(config, g, d, **step_pieces(config.model, g, d))
    """
    make = ARCHITECTURES[cfg.arch].step_pieces
    return {} if make is None else make(cfg, generator, discriminator)


def sentence_width(generator: nn.Module) -> int | None:
    """The sentence-embedding width ``generator`` needs (GALIP: its CLIP's projection width, as
    G's CLIP term compares the two), or None when any width works.

    Example:
        sentence_dim = sentence_width(generator) or 128  # e.g. for synthetic batches
    """
    return getattr(generator, "sentence_dim", None)


__all__ = ["ARCHITECTURES", "Architecture", "DCGANConfig", "DFGANConfig", "Generator", "Discriminator",
           "DFGenerator", "DFDiscriminator", "dfgan_channels", "dfgan_d_channels", "R3GANConfig", "R3Generator",
           "R3Discriminator", "r3gan_channels", "GALIPConfig", "GalipGenerator", "GalipDiscriminator",
           "build_models", "step_pieces", "sentence_width",
           "resolve_conv_impl", "DTYPES"]
