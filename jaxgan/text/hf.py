"""Hugging Face directories <-> (ClipTextModel, params).

A directory holds config.json, model.safetensors (or an index of shards) and tokenizer files,
as written by ``save_pretrained`` of ``CLIPTextModel``, ``CLIPTextModelWithProjection`` or a
full ``CLIPModel`` (its text tower and ``text_projection`` are read, the vision tower is
skipped). PyTorch ``nn.Linear`` stores its weight as [out, in] while ``nn.Dense`` stores
[in, out], so Linear weights are transposed both ways; everything else is a rename.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from flax import traverse_util

from jaxgan.text.clip import ClipTextConfig, ClipTextModel, init_params
from jaxgan.text.errors import TextEncoderError, TextEncoderNotFoundError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
TEXT_PREFIX = "text_model."
PROJECTION_WEIGHT = "text_projection.weight"
# What a hub download needs: configs, weights, and the files of any tokenizer kind.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]
# Hub ids are "name" or "owner/name"; anything else that does not exist is a missing path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_LEAF_NAMES = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}


def resolve_directory(name_or_path: str | Path) -> Path:
    """A local directory as is, or a hub id downloaded (or found in the cache) by huggingface_hub.

    A string that names an existing path, or looks like a path (absolute, ``./``, ``~``, more
    than one ``/``), never touches the network.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise TextEncoderNotFoundError(f"text encoder path {path} is a file, not a directory")
    if not _HUB_ID.match(text) or text.startswith((".", "~")):
        raise TextEncoderNotFoundError(f"text encoder directory {path} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, allow_patterns=_HUB_PATTERNS))
    except Exception as e:  # offline, unknown repo, no permission: all mean "not available"
        raise TextEncoderNotFoundError(
            f"text encoder {text!r} is neither a local directory nor available from the Hugging Face "
            f"hub ({type(e).__name__})") from None


def read_config(directory: Path, projection_dim: int | None = None) -> ClipTextConfig:
    """The ``ClipTextConfig`` of ``directory/config.json`` (a CLIP text model or a full CLIP model)."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise TextEncoderNotFoundError(f"{directory} has no {CONFIG_FILE}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TextEncoderError(f"{path} is not valid JSON ({e})") from None
    model_type = raw.get("model_type")
    if model_type == "clip":
        raw = raw.get("text_config") or {}
    elif model_type != "clip_text_model":
        raise TextEncoderError(f"{path}: model_type {model_type!r} is not a CLIP text model "
                               "(expected 'clip_text_model' or 'clip')")
    # Keys a config.json may leave out take Hugging Face's CLIPTextConfig defaults.
    defaults = {"vocab_size": 49408}
    fields = {f.name: raw.get(f.name, defaults.get(f.name, f.default))
              for f in dataclasses.fields(ClipTextConfig) if f.name != "projection_dim"}
    try:
        return ClipTextConfig(**fields, projection_dim=projection_dim)
    except (TypeError, ValueError) as e:
        raise TextEncoderError(f"{path}: {e}") from None


def weight_files(directory: Path) -> list[Path]:
    """``directory``'s safetensors file, or its shards in name order; each one checked to exist."""
    single, index = directory / WEIGHTS_FILE, directory / WEIGHTS_INDEX_FILE
    if single.is_file():
        return [single]
    if not index.is_file():
        hint = " (only pytorch_model.bin: re-save it with safetensors)" if (directory / "pytorch_model.bin").exists() else ""
        raise TextEncoderNotFoundError(f"{directory} has no {WEIGHTS_FILE}{hint}")
    shards = json.loads(index.read_text()).get("weight_map", {}).values()
    files = [directory / name for name in sorted(set(shards))]
    for file in files:
        if not file.is_file():
            raise TextEncoderNotFoundError(f"weight shard {file} is missing")
    return files


def read_weights(directory: Path) -> dict[str, np.ndarray]:
    """The text-tower tensors of ``directory``'s safetensors file(s), as float32 numpy arrays."""
    from safetensors import safe_open

    weights = {}
    for file in weight_files(directory):
        # The flax framework reads bfloat16 too, which plain numpy cannot.
        with safe_open(str(file), framework="flax") as f:
            for key in f.keys():
                if not key.startswith(("vision_model.", "visual_projection.", "logit_scale")):
                    weights[key] = np.asarray(f.get_tensor(key), np.float32)
    return weights


def hf_name(path: tuple[str, ...], prefix: str = TEXT_PREFIX) -> str:
    """The Hugging Face tensor name of a flattened Flax param path."""
    parts = ["layers." + p.removeprefix("layers_") if p.startswith("layers_") else p for p in path[:-1]]
    name = ".".join(parts + [_LEAF_NAMES[path[-1]]])
    return name if path[0] == "text_projection" else prefix + name


def params_from_hf(weights: dict[str, np.ndarray], config: ClipTextConfig, source: str = "weights") -> dict:
    """Flax params of ``ClipTextModel(config)`` from Hugging Face tensors.

    Raises:
      TextEncoderError: a tensor is missing or its shape does not match ``config``.
    """
    # CLIPTextModel of transformers 5 saves without the "text_model." prefix; older ones with it.
    prefix = TEXT_PREFIX if any(k.startswith(TEXT_PREFIX) for k in weights) else ""
    abstract = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    return params_from_tensors(
        abstract, weights, lambda path: hf_name(path, prefix),
        to_flax=lambda leaf, value: value.T if leaf == "kernel" else value,
        hf_shape=lambda leaf, shape: shape[::-1] if leaf == "kernel" else shape,
        source=source, error=TextEncoderError)


def params_from_tensors(abstract: Any, weights: dict[str, np.ndarray], name_of: Callable[[tuple[str, ...]], str],
                        to_flax: Callable[[str, np.ndarray], np.ndarray],
                        hf_shape: Callable[[str, tuple[int, ...]], tuple[int, ...]], source: str,
                        error: type[Exception] = ValueError) -> dict:
    """Flax params shaped like ``abstract`` from named PyTorch tensors (any ported model).

    Args:
      abstract: the param tree's shapes (``jax.eval_shape`` of the init).
      weights: tensor name -> array, as read from the files.
      name_of: flattened Flax path -> tensor name.
      to_flax: (leaf name, tensor) -> the Flax layout (e.g. a transposed Linear weight).
      hf_shape: (leaf name, Flax shape) -> the tensor shape it comes from, for the message.
      source: what the tensors were read from, for the message.
      error: the exception raised, with one line naming the first missing or mis-shaped tensor.
    """
    params, missing = {}, []
    for path, leaf in traverse_util.flatten_dict(abstract).items():
        name = name_of(path)
        if name not in weights:
            missing.append(name)
            continue
        value = to_flax(path[-1], np.asarray(weights[name], np.float32))
        if value.shape != leaf.shape:
            raise error(f"{source}: {name} has shape {tuple(weights[name].shape)}, "
                        f"but config.json implies {tuple(hf_shape(path[-1], tuple(leaf.shape)))}")
        params[path] = np.ascontiguousarray(value)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise error(f"{source} lacks {', '.join(missing[:3])}{more}")
    return traverse_util.unflatten_dict(params)


def hf_from_params(params: Any) -> dict[str, np.ndarray]:
    """Hugging Face tensors (``CLIPTextModelWithProjection`` names) of Flax params."""
    out = {}
    for path, leaf in traverse_util.flatten_dict(jax.device_get(params)).items():
        value = np.asarray(leaf, np.float32)
        out[hf_name(path)] = np.ascontiguousarray(value.T if path[-1] == "kernel" else value)
    return out


def load_clip_text(name_or_path: str | Path) -> tuple[ClipTextModel, dict, Path]:
    """Loads a Hugging Face CLIP text model directory or hub id.

    Returns:
      (module, params, directory): params are float32 numpy arrays; the model has a
      projection exactly when the weights hold ``text_projection.weight``.
    """
    directory = resolve_directory(name_or_path)
    read_config(directory)  # a bad config is reported before the (larger) weights are read
    weights = read_weights(directory)
    projection = weights.get(PROJECTION_WEIGHT)
    config = read_config(directory, None if projection is None else int(projection.shape[0]))
    params = params_from_hf(weights, config, source=str(directory / WEIGHTS_FILE))
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
    save_file(hf_from_params(params), str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    (directory / CONFIG_FILE).write_text(json.dumps(config_json(config), indent=2) + "\n")
    return directory
