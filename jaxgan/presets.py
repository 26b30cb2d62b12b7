"""Configs as code: the named presets, and resolving ``key=value`` overrides against them.

``get_config(preset, overrides)`` returns a preset with overrides applied;
``apply_overrides(config, ["train.steps=100", ...])`` changes fields by dotted name with the
field's own type; ``from_dict`` reads a saved ``config.json`` (also one written before each
architecture had its own config). The schema itself is ``jaxgan.config``; this module sits
above it because ``model.*`` keys resolve against the architecture registry
(``jaxgan.models.ARCHITECTURES``): ``model.arch`` picks the config class, and a key of another
architecture is an error unless it is at that architecture's default. Every mistake raises
``ConfigError`` with one line that names it.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from typing import Any

from jaxgan.augment import parse_policy
from jaxgan.config import (
    Config,
    ConfigError,
    ModelConfig,
    check_type,
    flat_fields,
    help_lines,
    json_type,
    parse_value,
    replace_field,
    split_override,
    validate,
)
from jaxgan.models import ARCHITECTURES, DCGANConfig

# The default run is a DCGAN with every field at its default.
DEFAULT = Config(model=DCGANConfig())
# The sections of a config (and of config.json): model, train, data, text, eval.
SECTIONS = tuple(f.name for f in dataclasses.fields(Config))

_DFGAN: dict[str, Any] = {
    "model.arch": "dfgan", "model.width": 32, "train.loss": "hinge", "train.penalty": "magp",
    "train.g_lr": 1e-4, "train.d_lr": 4e-4, "train.beta1": 0.0, "train.beta2": 0.9,
}

# DF-GAN tuned for a 15-minute CPU budget on the shapes data (docs/experiments, "Closing the
# gap"): nf=8 at batch 16 for cheap steps, a conditional BatchNorm and a bilinear shortcut in G,
# TTUR 4e-4 / 8e-4, MA-GP every 4 steps, a 200-step EMA.
_DFGAN64_CPU: dict[str, Any] = _DFGAN | {
    "model.resolution": 64, "model.width": 8, "model.g_norm": "batch", "model.g_shortcut": "bilinear",
    "train.g_lr": 4e-4, "train.d_lr": 8e-4, "train.batch_size": 16, "train.penalty_every": 4,
    "train.ema_decay": 0.995,
}

# The official DF-GAN (tobran/DF-GAN, cfg/bird.yml and cfg/coco.yml): 256 px, nf=32, z 100, batch
# 32; its DAMSM sentence (cond_dim 256) is the text encoder's width, so text.encoder must name a
# 256-wide encoder (`jaxgan import dfgan --text-encoder DIR`). DF-GAN keeps no average of G: with
# ema_decay 0 the EMA generator is G. docs/importing.md ("DF-GAN") compares the layers.
_DFGAN_OFFICIAL: dict[str, Any] = _DFGAN | {
    "model.resolution": 256, "model.width": 32, "model.z_dim": 100, "train.batch_size": 32,
    "model.init": "torch", "train.ema_decay": 0.0,
    # DF-GAN evaluates on truncnorm(-2, 2) * 0.88 noise (cfg/*.yml: truncation True, trunc_rate 0.88).
    "eval.truncation": 2.0, "eval.truncation_scale": 0.88,
}

# R3GAN (Huang et al. 2024): its modernised residual pair, Adam (0, 0.9) at 2e-4 for both
# networks, R3GAN's noise size 64. Widths per size in docs/training.md ("Presets").
# Its recipe: the relativistic pairing loss and gamma / 2 * (R1 + R2) (gamma 0.05 on CIFAR-10,
# 1 on ImageNet-64, 2 on FFHQ-64). Its lr / beta2 / gamma ramps are train.*_schedule settings
# (docs/training.md, "Schedules"), left to the run: they span millions of images.
_R3GAN: dict[str, Any] = {
    "model.arch": "r3gan", "model.z_dim": 64, "train.loss": "rpgan", "train.penalty": "r1r2",
    "train.g_lr": 2e-4, "train.d_lr": 2e-4, "train.beta1": 0.0, "train.beta2": 0.9,
}

# GALIP (Tao et al. 2023) on a CLIP directory (model.clip; text.encoder should name the same
# CLIP): nf=64, hinge + mismatched text, MA-GP (k=2, p=6) on the CLIP features, the CLIP
# similarity at weight 4 in G's loss, Adam (0, 0.9) with lr 1e-4 for G and 4e-4 for D, as in
# tobran/GALIP's cfg/coco.yml and train.py; ViT-B/32's hidden states 2, 5, 9 feed D.
_GALIP: dict[str, Any] = {
    "model.arch": "galip", "model.width": 64, "train.loss": "hinge", "train.penalty": "magp",
    "train.g_lr": 1e-4, "train.d_lr": 4e-4, "train.beta1": 0.0, "train.beta2": 0.9,
}

# GALIP as tobran/GALIP's code computes it (models/GALIP.py, cfg/birds.yml and cfg/coco.yml): G
# ends at the CLIP input size, 224 (its last block resizes 64 -> 224); F.interpolate's default
# nearest (source pixel floor(i * in / out)) for G's 7 -> 8 resize and for the CLIP input, and
# transf_to_CLIP_input's double shift; z 100; 8 processes x batch 64 (scripts/train.sh). GALIP
# keeps no average of G: with ema_decay 0 the EMA generator is G. model.clip and text.encoder
# name a CLIP ViT-B/32 directory. docs/importing.md ("GALIP") compares the layers.
_GALIP_OFFICIAL: dict[str, Any] = _GALIP | {
    "model.resolution": 224, "model.z_dim": 100, "model.nearest": "floor", "model.clip_pixels": "galip",
    "train.batch_size": 512, "train.ema_decay": 0.0,
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
    "dfgan_official_cub": _DFGAN_OFFICIAL | {"data.dataset": "caltech_birds2011"},
    "dfgan_official_coco": _DFGAN_OFFICIAL | {"data.dataset": "coco_captions"},
    # The same with AttnGAN word attention in G's 16x16 block: in the 30-minute runs of
    # docs/experiments it lifted shape alignment above DCGAN's at the same wall clock.
    "dfgan64_cpu_attn": _DFGAN64_CPU | {"model.word_attention": "16"},
    # The default's DCGAN with R3GAN's recipe (RpGAN + gamma/2 (R1 + R2), gamma 0.05, the penalty
    # lazily every 4 steps) and ADA on integer translations, at the default's compute (its mean
    # step costs 1.28x: 4700 steps). Against the default, over two seeds, it lifts recall 1.8x,
    # diversity and alignment, and gives back a little precision and shape fidelity
    # (docs/experiments/2026-12-06-lazy-penalty-gamma-seeds.md).
    "rpgan32": {"train.loss": "rpgan", "train.penalty": "r1r2", "train.penalty_weight": 0.05,
                "train.penalty_every": 4, "train.augment": "translation", "train.ada_target": 0.6,
                "train.steps": 4700},
    # The thinnest sensible R3GAN at 32 px; its batch-32 step still costs 3-4x the default's on
    # 2 CPU cores (docs/training.md, "The step, measured").
    "r3gan32": _R3GAN | {"model.resolution": 32, "model.width": 8, "model.width_cap": 2, "model.blocks": 1,
                         "train.penalty_weight": 0.05},
    "r3gan64": _R3GAN | {"model.resolution": 64, "model.width": 32, "train.penalty_weight": 1.0},
    "r3gan128": _R3GAN | {"model.resolution": 128, "model.width": 32, "train.penalty_weight": 1.0},
    **{f"galip{r}": _GALIP | {"model.resolution": r} for r in (64, 128, 256)},
    # GALIP on the CLIP pair shipped for the shapes data (jaxgan/assets/shapes_clip: a 4-layer
    # ViT of width 64 on an 8x8 grid of 32 px images), thin enough for a CPU budget. D reads
    # hidden states 1, 2, 3 and G prompts before layers 1-3: GALIP's 2, 5, 9 and 1-8 of 12
    # layers scaled to 4.
    "galip64_shapes": _GALIP | {
        "model.resolution": 64, "model.clip": "shapes_clip", "text.encoder": "shapes_clip", "model.width": 16,
        "model.d_layers": "1,2,3", "model.prompt_layers": "1,2,3", "model.bridge_width": 32,
        "model.bridge_blocks": 2, "train.batch_size": 16},
    "galip_official_cub": _GALIP_OFFICIAL | {"data.dataset": "caltech_birds2011"},
    "galip_official_coco": _GALIP_OFFICIAL | {"data.dataset": "coco_captions"},
    "tiny": {
        "model.width": 8, "model.z_dim": 16, "model.text_dim": 16, "train.batch_size": 16,
        "train.steps": 20, "train.log_every": 5, "train.sample_every": 10,
        "train.checkpoint_every": 10, "eval.every": 0, "eval.num_samples": 512,
    },
}


def get_config(preset: str = "default", overrides: Sequence[str] = ()) -> Config:
    """A named preset with overrides applied; raises ``ConfigError`` for unknown names.

    Example:
        config = get_config("dfgan64", ["train.batch_size=64", "model.dtype=bfloat16"])
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    config = apply_overrides(DEFAULT, PRESETS[preset])
    return apply_overrides(config, overrides)


def apply_overrides(config: Config, overrides: Sequence[str] | dict[str, Any]) -> Config:
    """Returns ``config`` with ``key=value`` overrides applied and validated.

    ``model.*`` keys resolve against the architecture the result names: ``model.arch``
    (wherever it stands among the overrides) picks the config class, the other model fields
    carry over, and a key of another architecture must be at its default. A string value of
    a non-string field is parsed as ``--set`` parses it; other values must have the field's type.

    Example:
        config = apply_overrides(get_config(), {"model.width": 64, "train.loss": "hinge"})
    """
    items = list(overrides.items()) if isinstance(overrides, dict) else [split_override(o) for o in overrides]
    return _apply(config, items, parse=True)


def _apply(config: Config, items: list[tuple[str, Any]], parse: bool) -> Config:
    """``apply_overrides`` of (key, value) pairs; ``parse``: strings of non-string fields are parsed."""
    arches = [value for key, value in items if key == "model.arch"]
    arch = arches[-1] if arches else config.model.arch
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise ConfigError(f"model.arch must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
    target = ARCHITECTURES[arch].config
    known = flat_fields(dataclasses.replace(config, model=target()))
    # The model fields set away from their class's defaults: what a switch of model.arch keeps.
    model = {f.name: getattr(config.model, f.name) for f in dataclasses.fields(config.model)
             if f.name != "arch" and getattr(config.model, f.name) != f.default}
    for key, value in items:
        if key == "model.arch":
            continue
        kind = known[key][1] if key in known else _foreign_type(key)
        if kind is None:
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(known))}")
        if parse and isinstance(value, str) and kind is not str:
            value = parse_value(key, value, kind)
        # Checked here too, before the value meets any code: a foreign key's value is compared
        # with its default, and an int of a float field is stored as a float.
        check_type(key, value, kind)
        value = float(value) if kind is float else value
        if key.startswith("model."):
            model[key.removeprefix("model.")] = value
        else:
            config = replace_field(config, key, value)
    config = dataclasses.replace(config, model=_model_config(arch, model))
    _validate(config)
    return config


def from_dict(data: Any) -> Config:
    """Inverse of ``to_dict``: a config from the sections of a parsed ``config.json``.

    Unknown sections or keys, a section that is not an object, and a value of the wrong JSON
    type (``"steps": "ten"``, ``"bn_sync": "yes"``) raise a one-line ``ConfigError`` naming the
    key. Also reads a config written before each architecture had its own class, whose model
    section holds every architecture's fields: those of other architectures are dropped when
    at their defaults (as they always were: the old validation refused anything else).

    Example:
        config = from_dict(json.loads(Path("workdir/config.json").read_text()))
    """
    if not isinstance(data, dict):
        raise ConfigError(f"a config is a JSON object of sections ({', '.join(SECTIONS)}), got {json_type(data)}")
    items = []
    for name, section in data.items():
        if name not in SECTIONS:
            raise ConfigError(f"unknown config section {name!r}; valid sections: {', '.join(SECTIONS)}")
        if not isinstance(section, dict):
            raise ConfigError(f"config section {name} must be an object of keys, got {json_type(section)}")
        items += [(f"{name}.{key}", value) for key, value in section.items()]
    return _apply(DEFAULT, items, parse=False)


def config_help() -> str:
    """Every config key with its type, default and meaning: what ``train --help-config`` prints.

    Example:
        print(config_help())
    """
    lines = ["Config keys: set with --set KEY=VALUE. Columns: key, type, default (the default preset), "
             "meaning.", "",
             f"model (every architecture; model.arch is one of {', '.join(ARCHITECTURES)}):"]
    shared = [f.name for f in dataclasses.fields(ModelConfig)]
    lines += help_lines(ModelConfig, "model.", shared, DEFAULT.model)
    for name, arch in ARCHITECTURES.items():
        lines += ["", f"model, {name} only (model.arch={name}):"]
        lines += help_lines(arch.config, "model.", [f.name for f in arch.config.own_fields()])
    for section in ("train", "data", "text", "eval"):
        lines += ["", f"{section}:"]
        lines += help_lines(type(getattr(DEFAULT, section)), f"{section}.", defaults=getattr(DEFAULT, section))
    return "\n".join(lines)


def _owners(name: str) -> list[str]:
    """The architectures with ``name`` among their own model fields."""
    return [arch for arch, a in ARCHITECTURES.items() if name in {f.name for f in a.config.own_fields()}]


def _foreign_type(key: str) -> type | None:
    """The type of ``key`` if it is another architecture's model key, else None."""
    name = key.removeprefix("model.")
    owners = _owners(name) if key.startswith("model.") else []
    return typing.get_type_hints(ARCHITECTURES[owners[0]].config)[name] if owners else None


def _model_config(arch: str, values: dict[str, Any]) -> ModelConfig:
    """``arch``'s config with ``values`` set; a value for another architecture's field must be
    that field's default (and is then dropped), else ``ConfigError``."""
    cls = ARCHITECTURES[arch].config
    own = {f.name for f in dataclasses.fields(cls)}
    for name, value in values.items():
        if name in own:
            continue
        owner = _owners(name)[0]
        owner_fields = {f.name: f for f in ARCHITECTURES[owner].config.own_fields()}
        if value != owner_fields[name].default:
            keys = [f"model.{n}" for n in owner_fields]
            listing = f"{', '.join(keys[:-1])} and {keys[-1]} need" if len(keys) > 1 else f"{keys[0]} needs"
            raise ConfigError(f"model.{name}={value!r} is not a {arch} option: {listing} model.arch={owner}")
    return cls(**{name: value for name, value in values.items() if name in own})


__all__ = ["PRESETS", "DEFAULT", "get_config", "apply_overrides", "from_dict", "config_help"]


def _validate(config: Config) -> None:
    """``jaxgan.config.validate`` plus the DiffAugment policy, which only ``jaxgan.augment``
    can parse (the schema stays free of JAX, so light modules can import it)."""
    validate(config)
    try:
        parse_policy(config.train.augment)
    except ValueError as e:
        raise ConfigError(f"train.augment: {e}") from None
