"""Reading Hugging Face model directories: what every ported text model shares.

A directory holds config.json, model.safetensors or pytorch_model.bin (or an index of
shards) and tokenizer files, as written by ``save_pretrained``. This module finds the directory (local, or a hub id),
reads config.json and the tensors, loads the tokenizer, and turns named PyTorch tensors into
a Flax param tree. Its layout helpers (``to_flax_layout``, ``to_torch_layout``, ``torch_shape``)
are the one place PyTorch layouts become Flax's, for the vision towers too.
How one model's tensor names map onto its Flax port lives beside that
port (``clip_hf.py``, ``bert.py``, ``t5.py``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from jaxgan.text.errors import TextEncoderError, TextEncoderNotFoundError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
TORCH_WEIGHTS_FILE = "pytorch_model.bin"
TORCH_WEIGHTS_INDEX_FILE = "pytorch_model.bin.index.json"
# What a hub download needs: configs (sentence-transformers keeps some in sub-folders such as
# 1_Pooling/), weights, and the files of any tokenizer kind.
_HUB_PATTERNS = ["*.json", "*/*.json", "*.safetensors", "*.txt", "*.model"]
# Hub ids are "name" or "owner/name"; anything else that does not exist is a missing path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
# Flax leaf names -> the PyTorch parameter names they come from.
LEAF_NAMES = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}


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


def read_json(path: Path) -> Any:
    """The parsed JSON file, or a one-line ``TextEncoderError`` (``...NotFoundError`` if absent)."""
    if not path.is_file():
        raise TextEncoderNotFoundError(f"{path.parent} has no {path.name}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TextEncoderError(f"{path} is not valid JSON ({e})") from None


def read_config_json(directory: Path) -> dict[str, Any]:
    """``directory/config.json`` as a dict."""
    raw = read_json(directory / CONFIG_FILE)
    if not isinstance(raw, dict):
        raise TextEncoderError(f"{directory / CONFIG_FILE} is not a JSON object")
    return raw


def config_fields(raw: dict[str, Any], config_class: type, defaults: dict[str, Any], path: Path,
                  **extra: Any) -> Any:
    """``config_class`` built from the keys of a config.json it names (missing keys: ``defaults``).

    ``defaults`` are those of the transformers config class, since config.json leaves out
    keys that equal them; ``extra`` fields come from elsewhere (the weights). A field value
    the config class rejects is a ``TextEncoderError``.
    """
    fields = {f.name: raw.get(f.name, defaults.get(f.name, f.default))
              for f in dataclasses.fields(config_class) if f.name not in extra}
    try:
        return config_class(**fields, **extra)
    except (TypeError, ValueError) as e:
        raise TextEncoderError(f"{path}: {e}") from None


def weight_files(directory: Path) -> list[Path]:
    """``directory``'s weight files, each checked to exist.

    The first that exists of: model.safetensors, its shard index, pytorch_model.bin (what
    ``save_pretrained(safe_serialization=False)`` and older uploads hold), its shard index.
    Shards come in name order.
    """
    for single, index in ((directory / WEIGHTS_FILE, directory / WEIGHTS_INDEX_FILE),
                          (directory / TORCH_WEIGHTS_FILE, directory / TORCH_WEIGHTS_INDEX_FILE)):
        if single.is_file():
            return [single]
        if index.is_file():
            shards = read_json(index).get("weight_map", {}).values()
            files = [directory / name for name in sorted(set(shards))]
            for file in files:
                if not file.is_file():
                    raise TextEncoderNotFoundError(f"weight shard {file} is missing")
            return files
    raise TextEncoderNotFoundError(f"{directory} has no {WEIGHTS_FILE} (nor {TORCH_WEIGHTS_FILE})")


def _read_torch_file(file: Path, keep: Callable[[str], bool]) -> dict[str, np.ndarray]:
    # torch is a heavy optional dependency, needed only for the pickled .bin format.
    import torch

    state = torch.load(str(file), map_location="cpu", weights_only=True)
    return {key: value.float().numpy() for key, value in state.items() if keep(key)}


def read_weights(directory: Path, keep: Callable[[str], bool] = lambda name: True) -> dict[str, np.ndarray]:
    """The tensors of ``directory``'s weight file(s) whose name ``keep`` accepts, as float32.

    ``keep`` lets a loader skip what its port does not use (a vision tower, a decoder) without
    reading it. A file that cannot be read is a one-line ``TextEncoderError``.
    """
    from safetensors import safe_open

    weights = {}
    for file in weight_files(directory):
        try:
            if file.suffix == ".bin":
                weights.update(_read_torch_file(file, keep))
                continue
            # The flax framework reads bfloat16 too, which plain numpy cannot.
            with safe_open(str(file), framework="flax") as f:
                for key in f.keys():
                    if keep(key):
                        weights[key] = np.asarray(f.get_tensor(key), np.float32)
        except Exception as e:  # safetensors and torch raise their own error types for corrupt files
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise TextEncoderError(f"cannot read {file}: {type(e).__name__}: {first}") from None
    return weights


def flax_to_torch_name(path: tuple[str, ...]) -> str:
    """The PyTorch name of a flattened Flax param path whose modules are named as in PyTorch.

    A Flax module list element ``layer_3`` (or ``block_3``, ``layers_3``) is PyTorch's
    ``layer.3``; the leaf becomes ``weight`` or ``bias``.
    """
    parts = [re.sub(r"^(layers?|block)_(\d+)$", r"\1.\2", p) for p in path[:-1]]
    return ".".join(parts + [LEAF_NAMES[path[-1]]])


# A Conv2d weight is [out, in, kh, kw]; nn.Conv's kernel is [kh, kw, in, out].
_CONV_TO_FLAX = (2, 3, 1, 0)
_CONV_TO_TORCH = (3, 2, 0, 1)


def to_flax_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    """A PyTorch tensor in the layout of the Flax param named ``leaf`` it becomes.

    Kernels change layout: a Linear weight [out, in] becomes a Dense kernel [in, out] and a
    Conv2d weight [out, in, kh, kw] a Conv kernel [kh, kw, in, out]. Every other leaf (bias,
    norm scale and statistics, embedding table) keeps PyTorch's layout.
    """
    if leaf != "kernel":
        return value
    return value.transpose(_CONV_TO_FLAX) if value.ndim == 4 else value.T


def to_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    """A Flax param named ``leaf`` in PyTorch's layout: the inverse of ``to_flax_layout``."""
    if leaf != "kernel":
        return value
    return value.transpose(_CONV_TO_TORCH) if value.ndim == 4 else value.T


def torch_shape(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape of a Flax param named ``leaf`` of ``shape`` (as ``to_torch_layout``)."""
    shape = tuple(shape)
    if leaf != "kernel":
        return shape
    return tuple(shape[i] for i in _CONV_TO_TORCH) if len(shape) == 4 else shape[::-1]


def params_from_tensors(abstract: Any, weights: dict[str, np.ndarray], name_of: Callable[[tuple[str, ...]], str],
                        source: str = "weights", error: type[Exception] = ValueError) -> dict:
    """Flax params shaped like ``abstract`` from named PyTorch tensors (any ported model).

    Tensors are brought to Flax's layout by ``to_flax_layout``.

    Args:
      abstract: the param tree's shapes (``jax.eval_shape`` of the init).
      weights: tensor name -> array, as read from the files.
      name_of: flattened Flax path -> tensor name.
      source: what the tensors were read from, for the message.
      error: the exception raised, with one line naming the first missing or mis-shaped tensor.
    """
    params, missing = {}, []
    for path, leaf in traverse_util.flatten_dict(abstract).items():
        name = name_of(path)
        if name not in weights:
            missing.append(name)
            continue
        value = to_flax_layout(path[-1], np.asarray(weights[name], np.float32))
        if value.shape != leaf.shape:
            raise error(f"{source}: {name} has shape {tuple(weights[name].shape)}, "
                        f"but config.json implies {torch_shape(path[-1], leaf.shape)}")
        params[path] = np.ascontiguousarray(value)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise error(f"{source} lacks {', '.join(missing[:3])}{more}")
    return traverse_util.unflatten_dict(params)


def weights_source(directory: Path) -> str:
    """What a loader names in its messages: the weights file, or the shard index."""
    files = weight_files(directory)
    if len(files) == 1:
        return str(files[0])
    index = WEIGHTS_INDEX_FILE if files[0].name.endswith(".safetensors") else TORCH_WEIGHTS_INDEX_FILE
    return str(directory / index)


def load_tokenizer(directory: Path) -> Any:
    """The Hugging Face tokenizer saved in ``directory`` (never touches the network).

    A tokenizer without a pad token pads with its EOS token: any id works, padding is masked.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as e:  # transformers raises many kinds (OSError, ValueError, KeyError)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise TextEncoderError(f"cannot load the tokenizer of {directory}: {first}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
