"""Where jaxgan keeps what it can compute again: the cache root and its subdirectories.

One root for every cache, so that one variable moves them all (a shared disk on a cluster,
a temporary directory in tests): ``$JAXGAN_CACHE``, else ``$XDG_CACHE_HOME/jaxgan`` (the
XDG base directory convention), else ``~/.cache/jaxgan``.
"""

from __future__ import annotations

import os
from pathlib import Path

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
