"""Where jaxgan keeps things: workdir paths (local or in a bucket) and the cache root.

Every read and write of a workdir goes through ``workdir_path``, an ``etils.epath.Path`` (the
path type orbax itself uses), so a workdir may be a local folder or a ``gs://`` URI; see
docs/training.md, "Workdirs in a bucket". Caches and datasets stay local.

One root for every cache, so that one variable moves them all (a shared disk on a cluster,
a temporary directory in tests): ``$JAXGAN_CACHE``, else ``$XDG_CACHE_HOME/jaxgan`` (the
XDG base directory convention), else ``~/.cache/jaxgan``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from etils import epath

from jaxgan.errors import JaxganError

# Subdirectories of the root. Their names are those caches were written under before this
# module existed, so existing caches are still found.
REFERENCE_STATS = "reference_stats"
EMBEDDINGS = "embeddings"


def cache_root() -> Path:
    """``$JAXGAN_CACHE``, else ``$XDG_CACHE_HOME/jaxgan``, else ``~/.cache/jaxgan``.

    Read at every call (not at import), so a caller or a test may change the environment
    first. An empty variable counts as unset, as the XDG specification asks.
    """
    if os.environ.get("JAXGAN_CACHE"):
        return Path(os.environ["JAXGAN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxgan"


def cache_dir(name: str) -> Path:
    """The subdirectory ``name`` of ``cache_root()`` (e.g. ``EMBEDDINGS``); not created here."""
    return cache_root() / name


# The remote schemes a workdir may use, and what each needs installed: for every group, one of
# its modules. epath reaches gs:// through TensorFlow's gfile when TensorFlow is installed, else
# through fsspec's gcsfs; orbax lists a bucket's checkpoints with google-cloud-storage. (orbax
# writes arrays to other schemes as local files, so s3:// and the like are refused.)
REMOTE_REQUIREMENTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "gs": (("gcsfs", "tensorflow"), ("google.cloud.storage",)),
}


class WorkdirPathError(JaxganError, ValueError):
    """A workdir path jaxgan cannot use (an unsupported scheme, a missing client library)."""


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URI (``gs://...``) rather than a local path."""
    return "://" in os.fspath(path)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package (``google.cloud``) is missing
        return False


def workdir_path(path: str | os.PathLike, absolute: bool = False) -> epath.Path:
    """``path`` (a str, a ``pathlib.Path``, an ``epath.Path``) as an ``epath.Path``.

    A ``gs://`` URI stays one: ``pathlib.Path("gs://b").absolute()`` would be a local ``gs:/b``.
    ``absolute`` makes a local path absolute (orbax needs that) and leaves a URI alone.

    Raises:
      WorkdirPathError: a scheme other than ``gs://``, or one whose client libraries are missing.

    Example:
        workdir_path("gs://my-bucket/runs/demo") / "metrics.jsonl"
    """
    if not is_remote(path):
        local = epath.Path(path)
        return local.absolute() if absolute else local
    text = os.fspath(path)
    scheme = text.partition("://")[0]
    if scheme not in REMOTE_REQUIREMENTS:
        raise WorkdirPathError(f"{text}: a workdir is a local path or a gs:// URI, not {scheme}://")
    missing = [" or ".join(group) for group in REMOTE_REQUIREMENTS[scheme]
               if not any(_importable(m) for m in group)]
    if missing:
        raise WorkdirPathError(f"{text}: a {scheme}:// workdir needs {' and '.join(missing)} installed "
                               "(pip install gcsfs google-cloud-storage); see docs/training.md")
    return epath.Path(text)


@contextlib.contextmanager
def appending(path: str | os.PathLike) -> Iterator[IO[str]]:
    """``path`` open for appending text, local or in a bucket.

    A bucket's objects cannot be appended to: there, what is written is added to the old content
    and the object is written again whole, once, on leaving the block (one object write is
    atomic, so a reader sees the old log or the new one).
    """
    path = workdir_path(path)
    if not is_remote(path):
        with path.open("a") as f:
            yield f
        return
    buffer = io.StringIO()
    yield buffer
    old = path.read_text() if path.exists() else ""
    path.write_text(old + buffer.getvalue())
