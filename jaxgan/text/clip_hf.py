"""CLIP text tower <-> Hugging Face directories: the tensor names, a reader and a writer.

Reads what ``save_pretrained`` of ``CLIPTextModel``, ``CLIPTextModelWithProjection`` or a full
``CLIPModel`` writes (of a full model, the text tower and ``text_projection``; the vision tower
is skipped), and writes directories that both jaxgan and transformers load. Flax param names
mirror Hugging Face's module names, so the mapping is a rename plus transposed Linear weights.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from jaxgan.text import hf
from jaxgan.text.clip import ClipTextConfig, ClipTextModel, init_params
from jaxgan.text.errors import TextEncoderError

MODEL_TYPES = ("clip", "clip_text_model")
TEXT_PREFIX = "text_model."
PROJECTION_WEIGHT = "text_projection.weight"
_VISION_PREFIXES = ("vision_model.", "visual_projection.", "logit_scale")


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


def hf_from_params(params: Any) -> dict[str, np.ndarray]:
    """Hugging Face tensors (``CLIPTextModelWithProjection`` names) of Flax params."""
    out = {}
    for path, leaf in traverse_util.flatten_dict(jax.device_get(params)).items():
        value = np.asarray(leaf, np.float32)
        out[hf_name(path)] = np.ascontiguousarray(hf.to_torch_layout(path[-1], value))
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
    params = params_from_hf(weights, config, source=str(directory / hf.WEIGHTS_FILE))
    return ClipTextModel(config), params, directory


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
