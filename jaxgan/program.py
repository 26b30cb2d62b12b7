"""The compiled training program a config describes: device layout, models, step, state.

``build_train_program(config)`` is the one place that turns a config into the compiled
``train_step`` and its state. ``train.py`` trains with it and ``jaxgan.bench`` times it, so
the benchmark measures exactly the function training runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from jaxgan.augment import parse_policy
from jaxgan.config import Config, ConfigError
from jaxgan.data import source_type
from jaxgan.models import build_models, step_pieces
from jaxgan.parallel import DataFsdpParallel, data_fsdp_parallel
from jaxgan.state import GANState, abstract_state, frozen_params, init_state
from jaxgan.step import Metrics, make_train_step


@dataclasses.dataclass(frozen=True)
class TrainProgram:
    """What a config compiles to: the device layout, the two modules, the step and the frozen
    params G and D read (GALIP's CLIP tower; {} for most models), placed once in the step's
    layout: pass them as the step's third argument.

    Example:
        program = build_train_program(config)
        state, metrics = program.step(state, batch, program.frozen)
    """

    config: Config
    parallel: DataFsdpParallel
    generator: nn.Module
    discriminator: nn.Module
    step: Callable[..., tuple[GANState, Metrics]]  # compiled (state, batch, frozen); state donated
    frozen: Any = dataclasses.field(default_factory=dict)  # placed for the step, never donated

    def _init(self, sentence_dim: int, word_dim: int | None) -> Callable[[Any], GANState]:
        # The frozen params are an argument of the jitted init, not constants embedded in it.
        return lambda frozen: init_state(self.config, self.generator, self.discriminator, sentence_dim, word_dim,
                                         frozen)

    def fresh_state(self, sentence_dim: int, word_dim: int | None = None) -> GANState:
        """A new single-copy state from ``config.train.seed`` (not yet placed on the devices)."""
        return jax.jit(self._init(sentence_dim, word_dim))(frozen_params(self.generator, self.discriminator))

    def init_placed_state(self, sentence_dim: int, word_dim: int | None = None) -> GANState:
        """The same fresh state, initialised directly in the step's layout (sharded under FSDP)."""
        return self.parallel.init_state(self._init(sentence_dim, word_dim),
                                        frozen_params(self.generator, self.discriminator))

    def abstract_state(self, sentence_dim: int, word_dim: int | None = None) -> GANState:
        """The state's shapes and dtypes: the target a checkpoint restores into."""
        return abstract_state(self.config, self.generator, self.discriminator, sentence_dim, word_dim)


def check_mirroring(config: Config) -> None:
    """Raises ``ConfigError`` when ``train.augment`` flips images that its data may not mirror:
    the source's ``mirror_safe`` capability, or the user's ``data.mirror``, must allow it.

    Example:
        check_mirroring(get_config("default", ["train.augment=flip"]))  # ConfigError: shapes
    """
    if "flip" not in parse_policy(config.train.augment) or config.data.mirror:
        return
    if not source_type(config.data.dataset).mirror_safe:
        raise ConfigError(f"train.augment has flip, but dataset {config.data.dataset} does not declare mirrored "
                          "images true to their captions; set data.mirror=true if they are")


def build_train_program(config: Config, **pieces: Any) -> TrainProgram:
    """Models with the BatchNorm layout of the parallel mode, and the step compiled for it.

    ``pieces`` (``loss``, ``penalty``, ``augment``, ...) replace the config's choices: see
    ``make_train_step``. The architecture's own pieces (``jaxgan.models.step_pieces``: GALIP's
    CLIP features for D and CLIP term in G's loss) are passed unless ``pieces`` names them.

    Example:
        program = build_train_program(get_config("default"))
        state = program.init_placed_state(sentence_dim=128)
        state, metrics = program.step(state, program.parallel.put_batch(batch), program.frozen)
    """
    check_mirroring(config)
    parallel = data_fsdp_parallel(config)
    generator, discriminator = build_models(config.model, *parallel.batchnorm_layout(config.model.bn_sync))
    pieces = {**step_pieces(config.model, generator, discriminator), **pieces}
    step = parallel.compile(make_train_step(config, generator, discriminator, parallel.axis_name, **pieces))
    frozen = parallel.put_frozen(frozen_params(generator, discriminator))
    return TrainProgram(config, parallel, generator, discriminator, step, frozen)
