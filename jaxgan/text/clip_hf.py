"""CLIP towers <-> Hugging Face directories: the tensor names, readers and a writer.

``load_clip_text`` reads the text tower of what ``save_pretrained`` of ``CLIPTextModel``,
``CLIPTextModelWithProjection`` or a full ``CLIPModel`` writes (the vision tower is skipped);
``save_clip_text`` writes directories that both jaxgan and transformers load. ``load_clip``
reads both towers of a full ``CLIPModel`` directory (e.g. a local copy of
openai/clip-vit-base-patch32) as frozen components; ``save_clip`` writes one:

    clip = load_clip("path/to/clip-vit-base-patch32")
    out = clip.vision.apply(clip.vision.params, pixels, hidden_layers=(2, 5, 9))
    text = clip.text.apply(clip.text.params, input_ids, attention_mask)

Flax param names mirror Hugging Face's module names, so the mapping is a rename plus
transposed Linear and Conv weights.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from jaxgan.text import clip_vision, hf
from jaxgan.text.clip import ClipTextConfig, ClipTextModel, init_params
from jaxgan.text.clip_vision import ClipVisionConfig, ClipVisionModel
from jaxgan.text.errors import TextEncoderError, TextEncoderNotFoundError

MODEL_TYPES = ("clip", "clip_text_model")
TEXT_PREFIX = "text_model."
PROJECTION_WEIGHT = "text_projection.weight"
VISION_PREFIX = "vision_model."
VISUAL_PROJECTION_WEIGHT = "visual_projection.weight"
LOGIT_SCALE = "logit_scale"
_VISION_PREFIXES = (VISION_PREFIX, "visual_projection.", LOGIT_SCALE)
# Hugging Face's CLIPConfig default for the shared projection width.
DEFAULT_PROJECTION_DIM = 512
# The CLIP pair shipped for the shapes data (``jaxgan pretrain-text``), addressable by name.
SHAPES_CLIP = "shapes_clip"
SHAPES_CLIP_DIR = Path(__file__).resolve().parent.parent / "assets" / "shapes_clip"


def shipped_directory(name_or_path: str | Path) -> Path | None:
    """The directory of the shipped pair when ``name_or_path`` is its name, else None."""
    if str(name_or_path) != SHAPES_CLIP:
        return None
    if not (SHAPES_CLIP_DIR / hf.CONFIG_FILE).is_file():
        raise TextEncoderNotFoundError(f"the shipped shapes CLIP pair is missing from {SHAPES_CLIP_DIR}; "
                                       "recreate it with jaxgan pretrain-text --out DIR")
    return SHAPES_CLIP_DIR


def read_config(directory: Path, projection_dim: int | None = None) -> ClipTextConfig:
    """The ``ClipTextConfig`` of ``directory/config.json`` (a CLIP text model or a full CLIP model)."""
    path = directory / hf.CONFIG_FILE
    raw = hf.read_config_json(directory)
    model_type = raw.get("model_type")
    if model_type == "clip":
        raw = raw.get("text_config") or {}
    elif model_type != "clip_text_model":
        raise TextEncoderError(f"{path}: model_type {model_type!r} is not a CLIP text model "
                               "(expected 'clip_text_model' or 'clip')")
    # Keys a config.json may leave out take Hugging Face's CLIPTextConfig defaults.
    return hf.config_fields(raw, ClipTextConfig, {"vocab_size": 49408}, path, projection_dim=projection_dim)


def hf_name(path: tuple[str, ...], prefix: str = TEXT_PREFIX) -> str:
    """The Hugging Face tensor name of a flattened Flax param path."""
    name = hf.flax_to_torch_name(path)
    return name if path[0] == "text_projection" else prefix + name


def params_from_hf(weights: dict[str, np.ndarray], config: ClipTextConfig, source: str = "weights") -> dict:
    """Flax params of ``ClipTextModel(config)`` from Hugging Face tensors.

    Raises:
      TextEncoderError: a tensor is missing or its shape does not match ``config``.
    """
    # CLIPTextModel of transformers 5 saves without the "text_model." prefix; older ones with it.
    prefix = TEXT_PREFIX if any(k.startswith(TEXT_PREFIX) for k in weights) else ""
    abstract = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    return hf.params_from_tensors(abstract, weights, lambda path: hf_name(path, prefix), source=source,
                                  error=TextEncoderError)


def hf_from_params(params: Any, name: Callable[[tuple[str, ...]], str] = hf_name) -> dict[str, np.ndarray]:
    """Hugging Face tensors of Flax params, each named by ``name`` (default: the
    ``CLIPTextModelWithProjection`` names; ``vision_hf_name`` for the vision tower)."""
    out = {}
    for path, leaf in traverse_util.flatten_dict(jax.device_get(params)).items():
        value = np.asarray(leaf, np.float32)
        out[name(path)] = np.ascontiguousarray(hf.to_torch_layout(path[-1], value))
    return out


def load_clip_text(name_or_path: str | Path) -> tuple[ClipTextModel, dict, Path]:
    """Loads a Hugging Face CLIP text model directory or hub id.

    Returns:
      (module, params, directory): params are float32 numpy arrays; the model has a
      projection exactly when the weights hold ``text_projection.weight``.
    """
    directory = hf.resolve_directory(name_or_path)
    read_config(directory)  # a bad config is reported before the (larger) weights are read
    weights = hf.read_weights(directory, keep=lambda name: not name.startswith(_VISION_PREFIXES))
    projection = weights.get(PROJECTION_WEIGHT)
    config = read_config(directory, None if projection is None else int(projection.shape[0]))
    params = params_from_hf(weights, config, source=hf.weights_source(directory))
    return ClipTextModel(config), params, directory


def vision_hf_name(path: tuple[str, ...]) -> str:
    """The Hugging Face (``CLIPModel``) tensor name of a flattened ``ClipVisionModel`` param path."""
    if path[0] == "visual_projection":
        return VISUAL_PROJECTION_WEIGHT
    if path[-1] == "class_embedding":
        return VISION_PREFIX + ".".join(path)
    return VISION_PREFIX + hf.flax_to_torch_name(path)


def vision_params_from_hf(weights: dict[str, np.ndarray], config: ClipVisionConfig,
                          source: str = "weights") -> dict:
    """Flax params of ``ClipVisionModel(config)`` from the tensors of a Hugging Face ``CLIPModel``.

    ``weights`` may hold other tensors (the text tower); they are ignored. Tensors of a
    ``CLIPVisionModelWithProjection`` (same names) work too.

    Raises:
      TextEncoderError: one line naming a missing tensor or one whose shape does not match ``config``.
    """
    abstract = jax.eval_shape(lambda: clip_vision.init_params(config, jax.random.key(0)))
    return hf.params_from_tensors(abstract, weights, vision_hf_name, source=source, error=TextEncoderError)


def read_vision_config(directory: Path) -> ClipVisionConfig:
    """The ``ClipVisionConfig`` of a full ``CLIPModel`` directory's config.json.

    The projection width is the top-level ``projection_dim``. Hugging Face allows
    ``[n, n]`` image and patch sizes; only square ones are ported.
    """
    path = directory / hf.CONFIG_FILE
    raw = hf.read_config_json(directory)
    vision = raw.get("vision_config")
    if not isinstance(vision, dict):
        raise TextEncoderError(f"{path} has no vision_config (model_type {raw.get('model_type')!r}): "
                               "a full CLIPModel directory is needed, with both towers")
    vision = dict(vision)
    for key in ("image_size", "patch_size"):
        value = vision.get(key)
        if isinstance(value, (list, tuple)):
            if len(set(value)) != 1:
                raise TextEncoderError(f"{path}: vision_config.{key} {value} is not square")
            vision[key] = value[0]
    projection_dim = raw.get("projection_dim", DEFAULT_PROJECTION_DIM)
    # Keys a config.json leaves out take Hugging Face's CLIPVisionConfig defaults (the dataclass's).
    return hf.config_fields(vision, ClipVisionConfig, {}, path, projection_dim=projection_dim)


def _read_only(params: Any) -> Any:
    """Params as read-only float32 numpy arrays: an in-place update of a frozen tower fails loudly."""
    def freeze(leaf: Any) -> np.ndarray:
        leaf = np.array(leaf, np.float32)
        leaf.setflags(write=False)
        return leaf
    return jax.tree.map(freeze, params)


@dataclasses.dataclass(frozen=True, eq=False)  # compared by identity: its params are arrays
class FrozenTower:
    """One frozen CLIP tower: its module, config and params (read-only float32 numpy arrays).

    The params are meant as a separate argument of compiled functions, beside (never inside)
    the trained state: ``apply`` wraps them in ``stop_gradient``, so differentiating through
    the tower gives gradients for its inputs only. This class is not a pytree, so a tower cannot
    slip into a state or an optimizer by accident; pass ``tower.params``.
    """

    module: nn.Module
    config: Any
    params: Any

    def apply(self, params: Any, *args: Any, method: str | None = None, **kwargs: Any) -> Any:
        """``module.apply`` with the params under ``stop_gradient`` (pure; jit it or call it in a step).

        ``method`` names a ``ClipVisionModel`` method for the tower's pieces ("embed_pixels",
        "embed_patches", "run_layers", "pool").
        """
        return self.module.apply({"params": jax.lax.stop_gradient(params)}, *args,
                                 method=method, **kwargs)


@dataclasses.dataclass(frozen=True, eq=False)  # compared by identity: its params are arrays
class ClipTowers:
    """Both towers of a Hugging Face ``CLIPModel`` directory, frozen.

    Attributes:
      directory: the resolved local directory; weight_files: the files the tensors came from.
      text: the ``ClipTextModel`` tower (with ``text_projection``); vision: the ``ClipVisionModel``.
      logit_scale: the learned log temperature (``exp(logit_scale)`` is 100 in trained CLIPs).
    """

    directory: Path
    weight_files: tuple[Path, ...]
    text: FrozenTower
    vision: FrozenTower
    logit_scale: float


def load_clip(name_or_path: str | Path) -> ClipTowers:
    """Loads both towers of a full Hugging Face ``CLIPModel`` directory (or hub id, or "shapes_clip":
    the pair shipped in ``jaxgan/assets/shapes_clip``).

    Weights come from model.safetensors or pytorch_model.bin (or their shards). The tokenizer
    is not loaded (``hf.load_tokenizer``; jaxgan's text encoders embed captions outside the step).

    Raises:
      TextEncoderError: one line naming the problem (``TextEncoderNotFoundError`` for a missing
        directory, config.json or weights file; a config without ``vision_config``, a missing
        tensor or one of the wrong shape).
    """
    directory = shipped_directory(name_or_path) or hf.resolve_directory(name_or_path)
    # Both configs are checked before the (larger) weights are read.
    vision_config = read_vision_config(directory)
    text_config = read_config(directory, projection_dim=vision_config.projection_dim)
    files = hf.weight_files(directory)
    weights = hf.read_weights(directory)
    source = hf.weights_source(directory)
    text_params = params_from_hf(weights, text_config, source=source)
    vision_params = vision_params_from_hf(weights, vision_config, source=source)
    if LOGIT_SCALE not in weights:
        raise TextEncoderError(f"{source} lacks {LOGIT_SCALE}")
    logit_scale = float(np.asarray(weights[LOGIT_SCALE]).reshape(-1)[0])
    return ClipTowers(directory=directory, weight_files=tuple(files), logit_scale=logit_scale,
                      text=FrozenTower(ClipTextModel(text_config), text_config, _read_only(text_params)),
                      vision=FrozenTower(ClipVisionModel(vision_config), vision_config, _read_only(vision_params)))


def config_json(config: ClipTextConfig) -> dict[str, Any]:
    """config.json contents that transformers reads as a ``CLIPTextConfig``."""
    fields = {k: v for k, v in dataclasses.asdict(config).items() if v is not None}
    architecture = "CLIPTextModelWithProjection" if config.projection_dim else "CLIPTextModel"
    return {"architectures": [architecture], "model_type": "clip_text_model", **fields,
            "attention_dropout": 0.0, "initializer_factor": 1.0, "initializer_range": 0.02,
            "dtype": "float32"}


def save_clip_text(directory: str | Path, config: ClipTextConfig, params: Any) -> Path:
    """Writes config.json and model.safetensors that jaxgan and transformers both load.

    Tensor names are those of ``CLIPTextModelWithProjection`` (``text_model.`` prefix), which
    transformers' ``CLIPTextModel`` loads as well. Tokenizer files are written separately.
    """
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(hf_from_params(params), str(directory / hf.WEIGHTS_FILE), metadata={"format": "pt"})
    (directory / hf.CONFIG_FILE).write_text(json.dumps(config_json(config), indent=2) + "\n")
    return directory


def clip_config_json(text_config: ClipTextConfig, vision_config: ClipVisionConfig) -> dict[str, Any]:
    """config.json contents that transformers reads as a ``CLIPConfig`` (both towers)."""
    if text_config.projection_dim != vision_config.projection_dim:
        raise ValueError(f"the towers project to different widths: text {text_config.projection_dim}, "
                         f"vision {vision_config.projection_dim}")
    text = {k: v for k, v in config_json(text_config).items() if k not in ("architectures", "dtype")}
    vision = {**dataclasses.asdict(vision_config), "model_type": "clip_vision_model", "attention_dropout": 0.0,
              "initializer_factor": 1.0, "initializer_range": 0.02}
    return {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": vision_config.projection_dim,
            "logit_scale_init_value": 2.6592, "initializer_factor": 1.0, "dtype": "float32",
            "text_config": text, "vision_config": vision}


def save_clip(directory: str | Path, text_config: ClipTextConfig, text_params: Any,
              vision_config: ClipVisionConfig, vision_params: Any, logit_scale: float) -> Path:
    """Writes a Hugging Face ``CLIPModel`` directory (config.json, model.safetensors) of both towers.

    ``load_clip``, ``load_text_encoder`` (the text tower) and transformers' ``CLIPModel`` load it.
    Tokenizer files are written separately (``jaxgan.text.tokenizer.save_tokenizer``).

    Args:
      text_config, text_params: a ``ClipTextModel`` with a projection.
      vision_config, vision_params: a ``ClipVisionModel`` projecting to the same width.
      logit_scale: the log inverse temperature (``CLIPModel.logit_scale``).
    """
    from safetensors.numpy import save_file

    config = clip_config_json(text_config, vision_config)
    tensors = {**hf_from_params(text_params), **hf_from_params(vision_params, vision_hf_name),
               LOGIT_SCALE: np.asarray(logit_scale, np.float32)}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / hf.WEIGHTS_FILE), metadata={"format": "pt"})
    (directory / hf.CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return directory
