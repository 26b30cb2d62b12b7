"""The embedding table of captions, and the frozen-embedding cache that keeps one on disk.

The text encoder is frozen, so a caption's embedding never changes during training. Encoding
every caption of a dataset once (jitted, in large batches split over the devices) and reading
rows from disk afterwards takes the encoder out of the training loop entirely: the step and
the input pipeline only gather rows. A cache entry is keyed by the encoder's
``fingerprint()`` (weights, tokenizer, length, pooling) and a hash of the caption set, and is
written under a temporary name and renamed, so a run killed mid-write never leaves a partial
entry behind. Training, a resumed run and evaluation all reuse the same entry.

    table = embedding_table(encoder, all_captions, cache_dir, with_words=True)
    table.text(["a red bird"])  # {"sentence": [1, Ds], "words": [1, L, D], "word_mask": [1, L]}
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxgan import paths
from jaxgan.distributed import DisagreementError, broadcast_json, gather_json
from jaxgan.errors import JaxganError

log = logging.getLogger(__name__)


class EmbeddingCacheError(JaxganError, ValueError):
    """A cache entry, or the processes' parts of a new one, whose rows do not add up to the
    captions; one-line message."""

_SENTENCE, _WORDS, _MASK = "sentence.npy", "words.npy", "word_mask.npy"
_META = "meta.json"
# Captions per device per encoder call: large enough to keep a device busy, small enough
# that a BERT-base batch of 77 tokens stays well under a gigabyte of activations.
_PER_DEVICE = 256


def default_cache_dir() -> Path:
    """``embeddings`` under the cache root (``jaxgan.paths.cache_root``)."""
    return paths.cache_dir(paths.EMBEDDINGS)


def caption_set_hash(captions: Iterable[str]) -> str:
    """A hex sha256 of the sorted, de-duplicated caption texts."""
    digest = hashlib.sha256()
    for caption in sorted(set(captions)):
        digest.update(caption.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


class EmbeddingTable:
    """Caption -> embedding rows, filled in one of two ways with the same interface.

    * From an on-disk cache entry (``embedding_table``): every caption of a dataset encoded
      once, rows memory-mapped from ``.npy`` files. The training loop never runs the encoder.
    * On demand (``EmbeddingTable.on_demand``): a caption is encoded, with the other new
      captions of the same call, the first time it is asked for, and kept in memory. For
      prompts nobody enumerated (sampling) and for sources that declare ``embed_on_demand``.

    Sentence embeddings always; word embeddings and their padding mask too when
    ``with_words`` (for generators with word attention).

    Example:
        table = EmbeddingTable.on_demand(load_text_encoder(), with_words=False)
        table(["a small red circle in the top left"]).shape  # (1, 128)
    """

    def __init__(self, directory: Path):
        self.directory, self.encoder = directory, None
        self.meta = json.loads((directory / _META).read_text())
        captions = json.loads((directory / "captions.json").read_text())
        self.rows = {c: i for i, c in enumerate(captions)}
        self.sentence = np.load(directory / _SENTENCE, mmap_mode="r")
        self.with_words = (directory / _WORDS).exists()
        arrays = [self.sentence]
        if self.with_words:
            self.words = np.load(directory / _WORDS, mmap_mode="r")
            self.word_mask = np.load(directory / _MASK, mmap_mode="r")
            arrays += [self.words, self.word_mask]
        # A row per caption, or every lookup past the short array would fail (or, worse, in a
        # memory map of the wrong shape, read another caption's row).
        if any(len(a) != len(captions) for a in arrays):
            raise EmbeddingCacheError(f"caption-embedding cache entry {directory} has {[len(a) for a in arrays]} "
                                      f"rows for {len(captions)} captions; delete the entry to encode them again")

    @classmethod
    def on_demand(cls, encoder: Any, with_words: bool = False) -> EmbeddingTable:
        """An empty in-memory table that encodes captions with ``encoder`` on first use."""
        table = cls.__new__(cls)
        table.directory, table.encoder, table.with_words = None, encoder, with_words
        table.meta = {"truncated": 0}
        table.rows = {}
        # Per row: (sentence,) or (sentence, words, mask), as the encoder returned them.
        table._encoded: list[tuple[np.ndarray, ...]] = []
        return table

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def truncated(self) -> int:
        """How many of the table's captions were longer than the encoder's context (counted
        for cache entries only)."""
        return int(self.meta["truncated"])

    def _fill(self, captions: Sequence[str]) -> None:
        missing = list(dict.fromkeys(c for c in captions if c not in self.rows))
        if not missing:
            return
        out = self.encoder(missing)
        sentences = np.asarray(out.sentence, np.float32)
        if self.with_words:
            words, mask = np.asarray(out.words, np.float32), np.asarray(out.mask, bool)
            rows = zip(sentences, words, mask)
        else:
            rows = ((s,) for s in sentences)
        for caption, row in zip(missing, rows):
            self.rows[caption] = len(self._encoded)
            self._encoded.append(tuple(row))

    def _index(self, captions: Sequence[str]) -> np.ndarray:
        if self.encoder is not None:
            self._fill(captions)
        try:
            return np.fromiter((self.rows[c] for c in captions), np.int64, len(captions))
        except KeyError as e:
            raise KeyError(f"caption {e.args[0]!r} is not in the embedding cache {self.directory}") from None

    def _gather(self, index: np.ndarray, part: int) -> np.ndarray:
        if self.encoder is not None:
            return np.stack([self._encoded[i][part] for i in index])
        array = getattr(self, ("sentence", "words", "word_mask")[part])
        return np.asarray(array[index], bool if part == 2 else np.float32)

    def __call__(self, captions: Sequence[str]) -> np.ndarray:
        """float32 [len(captions), sentence_dim]."""
        return self._gather(self._index(captions), 0)

    def text(self, captions: Sequence[str]) -> dict[str, np.ndarray]:
        """``sentence`` [B, S], and with words also ``words`` [B, L, W] and ``word_mask`` [B, L]."""
        index = self._index(captions)
        out = {"sentence": self._gather(index, 0)}
        if self.with_words:
            out["words"] = self._gather(index, 1)
            out["word_mask"] = self._gather(index, 2)
        return out


def encode_all(encoder: Any, captions: Sequence[str], devices: Sequence[jax.Device] | None = None,
               with_words: bool = False) -> dict[str, np.ndarray]:
    """Embeddings of ``captions`` in batches split over ``devices`` (default: this process's).

    Captions are grouped by token count and each group is encoded at the smallest power of two
    (at least 8) that holds its longest caption rather than at the encoder's ``max_length``:
    captions are short (a COCO caption is about a dozen tokens) while MiniLM pads to 256:
    measured here, 2.4 ms a caption instead of 133 (``jaxgan.data.throughput``). Real tokens
    see the same inputs either way (padding is masked); word embeddings are
    returned at ``max_length`` with zeros at the padding. One program is compiled per length.
    """
    devices = list(devices or jax.local_devices())
    mesh = Mesh(np.array(devices), ("data",))
    rows, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    encode = jax.jit(encoder.encode_fn, in_shardings=(replicated, rows, rows), out_shardings=rows)
    params = jax.device_put(encoder.params, replicated)
    chunk = _PER_DEVICE * len(devices)
    tokens = encoder.tokenize(list(captions))
    lengths = tokens["attention_mask"].sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    n = len(captions)

    def bucket(tokens: int) -> int:
        return min(encoder.max_length, max(8, 1 << (max(int(tokens), 1) - 1).bit_length()))

    sentence = None
    widest = bucket(lengths.max())
    words = np.zeros((n, widest, encoder.word_dim), np.float32) if with_words else None
    mask = np.zeros((n, widest), bool) if with_words else None
    for start in range(0, n, chunk):
        index = order[start:start + chunk]
        width = bucket(lengths[index].max())
        pad = np.concatenate([index, np.repeat(index[:1], chunk - len(index))])  # one shape per width
        # Placed explicitly: in a multi-process run jit refuses numpy inputs with a sharding,
        # even one over this process's own devices.
        ids, real = (jax.device_put(tokens[k][pad, :width], rows) for k in ("input_ids", "attention_mask"))
        out = encode(params, ids, real)
        got = np.asarray(out.sentence, np.float32)[:len(index)]
        if sentence is None:
            sentence = np.zeros((n, got.shape[1]), np.float32)
        sentence[index] = got
        if with_words:
            real = tokens["attention_mask"][index, :width] != 0
            words[index, :width] = np.where(real[..., None], np.asarray(out.words, np.float32)[:len(index)], 0.0)
            mask[index, :width] = real
    out = {"sentence": sentence}
    if with_words:
        out.update(words=words, word_mask=mask)
    return out


def unknown_token_share(encoder: Any, captions: Sequence[str], sample: int = 1000) -> float:
    """The share of (up to ``sample``, evenly spread) captions with a token the encoder's
    vocabulary lacks: high for an encoder trained on other text (the shipped shapes encoder
    on real captions), whose embeddings then say little about the caption."""
    unk = getattr(getattr(encoder, "tokenizer", None), "unk_token_id", None)
    if unk is None or not captions:
        return 0.0
    picked = [captions[int(i)] for i in np.linspace(0, len(captions) - 1, min(sample, len(captions)))]
    ids = encoder.tokenize(picked)["input_ids"]
    return float(np.mean(np.any(ids == unk, axis=1)))


def _entry(cache_dir: Path, fingerprint: str, caption_hash: str, with_words: bool) -> Path:
    return cache_dir / fingerprint[:24] / f"{caption_hash[:24]}{'-words' if with_words else ''}"


def embedding_table(encoder: Any, captions: Iterable[str], cache_dir: str | Path | None = None,
                    with_words: bool = False, process_index: int | None = None,
                    process_count: int | None = None) -> EmbeddingTable:
    """The cached table of ``captions`` under ``encoder``, encoding and writing it if absent.

    In a run over several processes every process encodes a contiguous share of the captions
    on its own devices and writes it into the shared temporary entry; process 0 then moves the
    entry into place and every process reads it. ``cache_dir`` must then be on a filesystem
    all processes share (as the workdir is).

    Example:
        table = embedding_table(load_text_encoder("minilm"), ["a red bird", "a blue flower"])
        table.text(["a red bird"])["sentence"].shape  # (1, 384)
    """
    unique = sorted(set(captions))
    if not unique:
        raise ValueError("no captions to embed")
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    fingerprint = encoder.fingerprint()
    final = _entry(cache_dir, fingerprint, caption_set_hash(unique), with_words)
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if _read_from_cache(final, count):
        log.info("caption embeddings: %d reused from %s", len(unique), final)
        return EmbeddingTable(final)
    # The temporary name is shared by the processes of one run (they agree on the key) and
    # unique across runs, so two runs racing on one cache never mix their files.
    tmp = final.with_name(final.name + f".tmp-{_run_token(count)}")
    tmp.mkdir(parents=True, exist_ok=True)
    lo, hi = index * len(unique) // count, (index + 1) * len(unique) // count
    share = unique[lo:hi]
    if share:
        arrays = encode_all(encoder, share, with_words=with_words)
        truncated = int(np.sum(encoder.overflows(share)))
        for name, value in arrays.items():
            np.save(tmp / f"{name}.part{index:05d}.npy", value)
        (tmp / f"truncated.part{index:05d}").write_text(str(truncated))
    _barrier("jaxgan_embeddings_written", count)
    problem = ""
    if index == 0:
        try:
            _assemble(tmp, final, unique, encoder, fingerprint, with_words, count)
        except EmbeddingCacheError as e:
            problem = str(e)
    # Process 0's verdict, in place of a bare barrier: the others must not read an entry
    # that was never moved into place, nor wait for one.
    problem = broadcast_json(problem) if count > 1 else problem
    if problem:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EmbeddingCacheError(problem)
    table = EmbeddingTable(final)
    log.info("caption embeddings: %d encoded into %s (%d longer than the encoder's %d tokens, truncated)",
             len(unique), final, table.truncated, encoder.max_length)
    return table


def _assemble(tmp: Path, final: Path, unique: list[str], encoder: Any, fingerprint: str,
              with_words: bool, count: int) -> None:
    """Joins the processes' parts into one entry and moves it into place atomically.

    Raises ``EmbeddingCacheError`` unless every process's part has exactly the rows of its
    share of the captions: a part that is missing (a process wrote to a cache directory this
    one does not see) or short would shift every later caption onto another's row.
    """
    names = ["sentence"] + (["words", "word_mask"] if with_words else [])
    for name in names:
        parts = []
        for i in range(count):
            expected = (i + 1) * len(unique) // count - i * len(unique) // count
            path = tmp / f"{name}.part{i:05d}.npy"
            rows = len(np.load(path, mmap_mode="r")) if path.is_file() else None
            if expected and rows != expected:
                found = "no part" if rows is None else f"a part of {rows} rows"
                raise EmbeddingCacheError(
                    f"caption embeddings: process {i} left {found} in {tmp}, expected {expected} of the "
                    f"{len(unique)} captions' rows; data.embedding_cache (default $JAXGAN_CACHE/embeddings) must "
                    "be one directory every process shares")
            if expected:
                parts.append(np.load(path))
        np.save(tmp / f"{name}.npy", np.concatenate(parts))
    truncated = sum(int(p.read_text()) for p in tmp.glob("truncated.part*"))
    for part in list(tmp.glob("*.part*")):
        part.unlink()
    (tmp / "captions.json").write_text(json.dumps(unique, ensure_ascii=False))
    meta = {"encoder": encoder.name, "fingerprint": fingerprint, "max_length": encoder.max_length,
            "captions": len(unique), "truncated": truncated, "with_words": with_words}
    (tmp / _META).write_text(json.dumps(meta, indent=2) + "\n")
    try:
        tmp.rename(final)
    except OSError:  # another run finished the same entry first: theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)


def _read_from_cache(final: Path, process_count: int) -> bool:
    """Whether the table is read from the cache entry ``final`` (else every process encodes its
    share): process 0's decision, which every process follows.

    Each process looks at its own disk, and the two paths run different collectives, so a
    process deciding alone would hang the run or mix parts. Processes that lack the entry
    process 0 reads cannot follow it; every process then raises the same error.
    """
    have = (final / _META).is_file()
    if process_count == 1:
        return have
    everyone = gather_json(have)
    if everyone[0] and not all(everyone):
        lacking = ", ".join(str(i) for i, h in enumerate(everyone) if not h)
        raise DisagreementError(
            f"process 0 reads the caption embeddings from its cache but process(es) {lacking} do not have the "
            f"entry (here: {final}); data.embedding_cache (default $JAXGAN_CACHE/embeddings) must be one "
            "directory every process shares")
    return bool(everyone[0])


def _run_token(process_count: int) -> str:
    """A token every process of this run agrees on (process 0's, broadcast) and no other run has."""
    token = uuid.uuid4().hex[:12]
    return broadcast_json(token) if process_count > 1 else token


def _barrier(name: str, process_count: int) -> None:
    if process_count > 1:
        multihost_utils.sync_global_devices(name)
