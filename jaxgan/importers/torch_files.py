"""Reading official PyTorch release files without running code from them.

A ``.pth`` checkpoint is a pickle: loading one with plain ``torch.load`` can execute anything
its author put in it. Checkpoints are read with ``torch.load(weights_only=True)``, which
unpickles only tensors and builtin containers. AttnGAN's DAMSM vocabulary
(``captions*.pickle``) is a plain pickle; it is read with a restricted unpickler that resolves
no global except a few builtin container types, so a pickle that would call a function is
refused before anything runs. torch is an optional extra (``pip install 'jaxgan[torch]'``),
needed only here.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxgan.errors import JaxganError

TORCH_PIP = "pip install 'jaxgan[torch]'"
# How many differences a key or shape mismatch error names before "and N more".
SHOWN_DIFFERENCES = 5
# The only globals a vocabulary pickle may name: builtin containers (protocol 2 writes sets as
# a call of builtins.set; Python 2 pickles spell the module __builtin__).
_SAFE_GLOBALS = frozenset(
    (module, name) for module in ("builtins", "__builtin__")
    for name in ("set", "frozenset", "dict", "list", "tuple", "str", "int", "bytes", "unicode", "long"))


class ImportFileError(JaxganError):
    """An official release file that is missing, unreadable, unsafe or of another layout."""


def require_torch() -> Any:
    """The ``torch`` module, or an ``ImportFileError`` saying how to install it."""
    try:
        import torch
    except ImportError:
        raise ImportFileError(f"importing PyTorch checkpoints needs torch: {TORCH_PIP}") from None
    return torch


def _to_numpy(obj: Any) -> Any:
    """Nested containers of tensors -> the same containers of float32/int numpy arrays."""
    torch = require_torch()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, Mapping):
        return {k: _to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_numpy(v) for v in obj)
    return obj


def load_torch_file(path: str | Path) -> Any:
    """The contents of a ``torch.save`` file, tensors as numpy arrays, read with
    ``weights_only=True`` (no code runs).

    Raises:
      ImportFileError: torch is missing, or the file is missing, not a torch file, or holds
        objects other than tensors and builtin containers.
    """
    path = Path(path)
    torch = require_torch()
    if not path.is_file():
        raise ImportFileError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused a global: name it, in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe object"
        raise ImportFileError(f"{path}: refused by torch.load(weights_only=True): {first}") from None
    except Exception as e:  # truncated zip, not a torch file at all, ...
        raise ImportFileError(f"{path}: not a readable PyTorch file ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else 'no detail'})") from None
    return _to_numpy(obj)


def state_dict_from(obj: Any, path: str | Path, *keys: str) -> dict[str, np.ndarray]:
    """``obj[keys[0]][keys[1]]...`` as a flat ``{name: array}``, stripping DataParallel's
    ``module.`` prefix, or an ``ImportFileError`` naming the file and the missing key.

    Example:
        netG = state_dict_from(load_torch_file(p), p, "model", "netG")
    """
    node = obj
    for depth, key in enumerate(keys):
        if not isinstance(node, Mapping) or key not in node:
            have = ", ".join(map(str, list(node)[:8])) if isinstance(node, Mapping) else type(node).__name__
            where = "/".join(keys[:depth]) or "top level"
            raise ImportFileError(f"{path}: no {key!r} at {where} (found: {have})")
        node = node[key]
    if not isinstance(node, Mapping):
        raise ImportFileError(f"{path}: {'/'.join(keys)} is a {type(node).__name__}, not a state dict")
    return {(k[len("module."):] if k.startswith("module.") else k): np.asarray(v) for k, v in node.items()}


def check_state_dict(expected: Mapping[str, tuple[int, ...]], got: Mapping[str, np.ndarray],
                     what: str) -> None:
    """Raises ``ImportFileError`` in one line listing the first missing, unexpected and
    mis-shaped keys of ``got`` against ``expected`` (name -> shape); returns if they agree.
    """
    diffs = [f"missing {k}" for k in expected if k not in got]
    diffs += [f"unexpected {k}" for k in got if k not in expected]
    diffs += [f"{k} has shape {tuple(got[k].shape)}, expected {tuple(expected[k])}"
              for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k])]
    if diffs:
        more = f" and {len(diffs) - SHOWN_DIFFERENCES} more" if len(diffs) > SHOWN_DIFFERENCES else ""
        raise ImportFileError(f"{what}: {len(diffs)} differences from the expected layout: "
                              f"{'; '.join(diffs[:SHOWN_DIFFERENCES])}{more}")


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only builtin container types; any other global (a function to call) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return {"unicode": str, "long": int}.get(name) or getattr(__import__("builtins"), name)
        raise pickle.UnpicklingError(f"refuses global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refuses persistent ids")


def load_plain_pickle(path: str | Path) -> Any:
    """A pickle of builtin containers, strings and numbers (AttnGAN's ``captions.pickle``),
    read without resolving any other global, so a pickle that would run code is refused.

    Python 2 byte strings decode as latin-1, as AttnGAN's own Python 3 loaders do.

    Raises:
      ImportFileError: the file is missing, is not a pickle, or names a global outside the
        builtin containers; one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImportFileError(f"{path}: no such file")
    try:
        return _RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise ImportFileError(f"{path}: unsafe or invalid pickle: {e}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise ImportFileError(f"{path}: not a readable pickle ({type(e).__name__})") from None
