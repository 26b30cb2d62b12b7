"""The training input pipeline: shapes batches with their caption embeddings.

The batch at step t is a pure function of (data seed, t), so the data position of a run
is its step and resuming replays exactly. Captions are embedded by the frozen text encoder
outside the compiled step; since a dataset repeats its captions, embeddings are cached by
caption. A background thread prepares the next batches while the device trains.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from jaxgan.config import Config
from jaxgan.data import shapes
from jaxgan.data.background import in_background
from jaxgan.data.source import DataError


class CaptionEmbeddingCache:
    """Embeddings of captions, encoded once each by a frozen text encoder.

    Sentence embeddings always; word embeddings and their padding mask too when
    ``with_words`` (for generators with word attention), at the cost of L x W floats a caption.

    Example:
        embed = CaptionEmbeddingCache(load_text_encoder(), with_words=False)
        embed(["a small red circle in the top left"]).shape  # (1, 128)
    """

    def __init__(self, encoder, with_words: bool = False):
        self.encoder = encoder
        self.with_words = with_words
        self._cache: dict[str, tuple[np.ndarray, ...]] = {}

    def _fill(self, captions: list[str]) -> None:
        missing = list(dict.fromkeys(c for c in captions if c not in self._cache))
        if missing:
            out = self.encoder(missing)
            sentences = np.asarray(out.sentence, np.float32)
            if self.with_words:
                words, mask = np.asarray(out.words, np.float32), np.asarray(out.mask, bool)
                self._cache.update((c, (s, w, m)) for c, s, w, m in zip(missing, sentences, words, mask))
            else:
                self._cache.update((c, (s,)) for c, s in zip(missing, sentences))

    def __call__(self, captions: list[str]) -> np.ndarray:
        """float32 [len(captions), sentence_dim]."""
        self._fill(captions)
        return np.stack([self._cache[c][0] for c in captions])

    def text(self, captions: list[str]) -> dict[str, np.ndarray]:
        """``sentence`` [B, S], and with ``with_words`` also ``words`` [B, L, W], ``word_mask`` [B, L]."""
        self._fill(captions)
        out = {"sentence": np.stack([self._cache[c][0] for c in captions])}
        if self.with_words:
            out["words"] = np.stack([self._cache[c][1] for c in captions])
            out["word_mask"] = np.stack([self._cache[c][2] for c in captions])
        return out


class ShapesPipeline:
    """Training batches from the shapes dataset, indexed by step.

    ``rows=(lo, hi)`` makes it build only those rows of every global batch: in a run over
    several processes each process builds its own rows (``DataParallel.local_rows``), and
    since an example is a pure function of its global index, the processes' rows together
    are exactly the single-process batch.

    Example:
        pipeline = ShapesPipeline(config, CaptionEmbeddingCache(encoder))
        for batch in pipeline.iterate(0, 100):  # batch["image"], batch["sentence"], ...
            ...
    """

    def __init__(self, config: Config, embed: CaptionEmbeddingCache, rows: tuple[int, int] | None = None):
        self.batch_size = config.train.batch_size
        self.resolution = config.model.resolution
        self.seed = config.data.seed
        self.embed = embed
        self.rows = rows or (0, self.batch_size)
        lo, hi = self.rows
        if not 0 <= lo < hi <= self.batch_size:
            raise ValueError(f"rows {self.rows} are not a slice of a batch of {self.batch_size}")

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This pipeline's rows of the global batch for ``step``: image uint8, sentence /
        wrong_sentence float32, and the caption's words / word_mask when the embedding cache
        keeps words."""
        lo, hi = self.rows
        raw = shapes.batch(step * self.batch_size + lo, hi - lo, self.resolution, self.seed)
        text = self.embed.text(raw["caption"])
        return {"image": raw["image"], **text, "wrong_sentence": self.embed(raw["wrong_caption"])}

    def position(self, step: int) -> dict[str, int]:
        """What a checkpoint stores to resume the data at ``step``."""
        return {"dataset": "shapes", "next_step": step, "seed": self.seed,
                "batch_size": self.batch_size}

    def resume(self, position: dict[str, int]) -> int:
        """The next step of a checkpointed position; raises ``DataError`` for another seed or batch size."""
        expected = self.position(int(position.get("next_step", -1)))
        if position != expected:
            raise DataError(f"checkpoint at step {position.get('next_step')} was saved with data position "
                            f"{position}, but this config resumes at {expected}; resuming would not replay "
                            "the same data (change data.dataset/data.seed/train.batch_size back)")
        return int(position["next_step"])

    def stats_at(self, step: int) -> dict[str, int]:
        """No counts: every shapes example is valid by construction."""
        return {}

    def iterate(self, start: int, stop: int, prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
        """Batches for steps [start, stop), made ``prefetch`` ahead on a background thread."""
        return in_background((self.batch(step) for step in range(start, stop)), stop - start, prefetch)
