"""The cache root: $JAXGAN_CACHE, else $XDG_CACHE_HOME/jaxgan, else ~/.cache/jaxgan, shared by
every cache (reference statistics, caption embeddings) under the names they had before."""

import pytest

from jaxgan import paths
from jaxgan.data import embeddings
from jaxgan.metrics import protocol


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXGAN_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_jaxgan_cache_wins_over_xdg(home, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("JAXGAN_CACHE", str(tmp_path / "mine"))
    assert paths.cache_root() == tmp_path / "mine"


def test_xdg_cache_home_gets_a_jaxgan_folder(home, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_root() == tmp_path / "xdg" / "jaxgan"


def test_without_either_the_root_is_in_the_home_directory(home, monkeypatch):
    assert paths.cache_root() == home / ".cache" / "jaxgan"
    # An empty variable counts as unset.
    monkeypatch.setenv("JAXGAN_CACHE", "")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert paths.cache_root() == home / ".cache" / "jaxgan"


def test_both_caches_live_under_the_root_with_their_old_names(home, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXGAN_CACHE", str(tmp_path / "mine"))
    assert protocol.default_cache_dir() == tmp_path / "mine" / "reference_stats"
    assert embeddings.default_cache_dir() == tmp_path / "mine" / "embeddings"
    monkeypatch.delenv("JAXGAN_CACHE")
    assert embeddings.default_cache_dir() == home / ".cache" / "jaxgan" / "embeddings"
