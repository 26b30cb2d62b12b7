"""The input pipeline: training batches of any example source with their caption embeddings.

One class, ``Pipeline``, reads every source through an embedding table
(``jaxgan.data.embeddings.EmbeddingTable``), in one of two ways the source decides:

A source that is read (an image folder, a TFDS dataset) is streamed with Grain, with exact
resume and bad data counted. Each process reads its own shard of the records (every P-th
record from its index: disjoint across processes, together the whole dataset), shuffled from
the data seed and reshuffled every epoch by Grain. Workers (``data.workers`` processes) decode images and pick captions
(``jaxgan.data.prepare``); the main process skips and counts bad examples, gathers caption
embeddings from the frozen-embedding cache and assembles its rows of each global batch on a
background thread, ahead of the device.

The data position is the number of examples of this process's stream consumed so far. Since
the stream is a pure function of (seed, position) - Grain's random access ``MapDataset`` -
resuming from the checkpointed position sees exactly the batches of an uninterrupted run,
whatever the number of workers.

A ``drawn`` source (shapes) makes the batch at step t a pure function of (data seed, t):
each process draws its own rows of every global batch, and the data position of a run is its
step. A background thread prepares the next batches while the device trains, either way.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from jaxgan.config import Config
from jaxgan.data.background import in_background
from jaxgan.data.prepare import PrepareExample
from jaxgan.data.source import DataError, ExampleSource

log = logging.getLogger(__name__)

# Consecutive bad examples after which a run stops: a dataset where (nearly) everything
# fails would otherwise spin forever. Capped by the shard size so small datasets fail fast.
_MAX_CONSECUTIVE_BAD = 2000
_NAMED_PER_REASON = 3
_GROUP = 16  # examples a worker prepares and hands over at once


def worker_count(setting: int) -> int:
    """``data.workers``: -1 picks half the CPU cores, or none on a machine of 2 cores or fewer
    (0: decode in the main process, on two threads)."""
    if setting >= 0:
        return setting
    # On 2 cores one worker process gave 863 images/s at 64 px against 1242 in the main
    # process (jaxgan.data.throughput): a worker only pays off with cores to spare.
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else cores // 2


class DataStats:
    """Counts of skipped examples (by reason) and of repairs (by issue), with example keys."""

    def __init__(self, skipped: dict[str, int] | None = None, repaired: dict[str, int] | None = None):
        self.skipped = collections.Counter(skipped or {})
        self.repaired = collections.Counter(repaired or {})
        self.examples: dict[str, list[str]] = collections.defaultdict(list)

    def copy(self) -> DataStats:
        return DataStats(self.skipped, self.repaired)

    def note(self, item: dict[str, Any]) -> bool:
        """Counts one prepared example; True when it is usable."""
        for issue in item["issues"]:
            self.repaired[issue] += 1
        reason = item.get("skip")
        if reason is None:
            return True
        self.skipped[reason] += 1
        if len(self.examples[reason]) < _NAMED_PER_REASON:
            self.examples[reason].append(item["key"])
        return False

    def describe(self) -> str:
        """"corrupt: a.jpg, b.jpg; no_caption: c.jpg" for the reasons seen."""
        return "; ".join(f"{reason} ({self.skipped[reason]}): {', '.join(keys)}"
                         for reason, keys in self.examples.items())

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {"skipped": dict(self.skipped), "repaired": dict(self.repaired)}


class Pipeline:
    """Training batches of an example source with embeddings from a table.

    Args:
      config: the run's config (resolution, batch size, data seed, fit, workers).
      source: the examples (``jaxgan.data.make_source``).
      table: the caption -> embedding table (``jaxgan.data.embeddings``): a cache entry holding
        every caption of ``source``, or an on-demand table for sources that ``embed_on_demand``.
      rows: this process's rows ``(lo, hi)`` of every global batch (``DataFsdpParallel.local_rows``).
      process_index, process_count: this process's shard of the records of a read source (a
        drawn source needs only ``rows``: an example is a pure function of its global index).

    Example:
        source = make_source(config)
        table = embedding_table(encoder, source.all_captions())
        for batch in Pipeline(config, source, table).iterate(0, 1000):  # batch["image"], batch["sentence"], ...
            ...
    """

    def __init__(self, config: Config, source: ExampleSource, table: Any, rows: tuple[int, int] | None = None,
                 process_index: int = 0, process_count: int = 1):
        self.config, self.source, self.table = config, source, table
        self.batch_size = config.train.batch_size
        self.seed = config.data.seed
        self.rows = rows or (0, self.batch_size)
        lo, hi = self.rows
        if not 0 <= lo < hi <= self.batch_size:
            raise ValueError(f"rows {self.rows} are not a slice of a batch of {self.batch_size}")
        self.local = hi - lo
        self.process_index, self.process_count = process_index, process_count
        self.consumed, self.stats = 0, DataStats()
        self._after: dict[int, tuple[int, DataStats]] = {}  # step -> (consumed, stats) after its batch
        if source.drawn:
            return
        self.workers = worker_count(config.data.workers)
        self.shard_size = len(range(process_index, len(source), process_count))
        if self.shard_size == 0:
            raise DataError(f"dataset {source.name} has {len(source)} examples, fewer than the "
                            f"{process_count} processes reading it")
        self.prepare = PrepareExample(source, config.model.resolution, config.data.fit)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's rows of the global batch of ``step``, of a drawn source: image uint8,
        sentence / wrong_sentence float32, and words / word_mask when the table keeps words."""
        lo, hi = self.rows
        raw = self.source.draw(step * self.batch_size + lo, hi - lo)
        return self._assemble(raw["image"], raw["caption"], raw["wrong_caption"])

    def _assemble(self, images: np.ndarray, captions: list[str], wrong: list[str]) -> dict[str, np.ndarray]:
        # The captions before the mismatched ones: an on-demand table encodes them in this order.
        return {"image": images, **self.table.text(captions), "wrong_sentence": self.table(wrong)}

    # --- the example stream ------------------------------------------------------------------

    def stream(self, start: int = 0) -> Iterator[dict[str, Any]]:
        """This process's prepared examples from position ``start`` on, forever."""
        import grain  # heavy, and only a source that is read needs it: imported on first use

        dataset = (grain.MapDataset.source(self.source)[self.process_index::self.process_count]
                   .seed(self.config.data.seed).shuffle().repeat(None)
                   .random_map(self.prepare))[start:]
        if self.workers == 0:
            # A couple of threads overlap file reads and PIL's decoding, which release the GIL.
            return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)))
        _allow_grain_workers()
        # Measured on 2 cores at 64 px (BENCHMARKS.md): Grain's default of 16 reading threads
        # inside each worker cost 17% of a worker's throughput (GIL contention with PIL), and
        # handing examples over one at a time another 16%. So each worker prepares groups of
        # examples on its own thread. Grouping after the slice keeps ``start`` exact.
        groups = (dataset.batch(_GROUP, batch_fn=list)
                  .to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
                  .mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers)))
        return _Flatten(iter(groups))

    def _batches(self, start_step: int, stop_step: int) -> Iterator[tuple[int, dict[str, np.ndarray], int, DataStats]]:
        if self.source.drawn:
            for step in range(start_step, stop_step):
                yield step, self.batch(step), self.consumed, self.stats
            return
        limit = min(self.shard_size, _MAX_CONSECUTIVE_BAD)
        consumed, stats = self.consumed, self.stats.copy()
        examples = self.stream(consumed)
        try:
            for step in range(start_step, stop_step):
                good, bad_run = [], 0
                while len(good) < self.local:
                    item = next(examples)
                    consumed += 1
                    if stats.note(item):
                        good.append(item)
                        bad_run = 0
                    else:
                        bad_run += 1
                        if bad_run >= limit:
                            raise DataError(f"dataset {self.source.name}: the last {bad_run} examples read were all "
                                            f"unusable ({stats.describe()})")
                yield step, self._assemble(np.stack([it["image"] for it in good]), [it["caption"] for it in good],
                                           [it["wrong_caption"] for it in good]), consumed, stats.copy()
        finally:
            close = getattr(examples, "close", None)
            if close is not None:  # stops Grain's worker processes now rather than at exit
                close()

    def iterate(self, start: int, stop: int, prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
        """Batches for steps [start, stop), assembled ``prefetch`` ahead on a background thread.

        ``position(step)`` afterwards describes the data right after step ``step``'s batch.
        """
        for step, batch, consumed, stats in in_background(self._batches(start, stop), stop - start, prefetch):
            # Steps are numbered from 1: the batch of loop index ``step`` completes step + 1.
            self._after[step + 1] = (consumed, stats)
            self._after.pop(step + 1 - 4 * max(prefetch, 1), None)
            yield batch

    # --- position and counts -----------------------------------------------------------------

    def _at(self, step: int) -> tuple[int, DataStats]:
        return self._after.get(step, (self.consumed, self.stats))

    def stats_at(self, step: int) -> dict[str, int]:
        """Counts over all processes after ``step``: ``data/skipped_<reason>``, ``data/repaired_<issue>``
        and ``data/skipped`` (collective in a multi-process run: every process calls it)."""
        if self.source.drawn:
            return {}  # every drawn example is valid by construction
        _, stats = self._at(step)
        merged = _sum_over_processes(stats.as_dict(), self.process_count)
        out = {f"data/skipped_{k}": v for k, v in merged["skipped"].items()}
        out.update({f"data/repaired_{k}": v for k, v in merged["repaired"].items()})
        out["data/skipped"] = sum(merged["skipped"].values())
        # Problems of the dataset's caption index (malformed lines...): the same on every process.
        out.update({f"data/index_{k}": v for k, v in self.source.index_issues.items()})
        out["data/captions_truncated"] = self.table.truncated
        return out

    def position(self, step: int) -> dict[str, Any]:
        """What a checkpoint stores to resume the data after ``step`` (collective, like ``stats_at``)."""
        if self.source.drawn:
            return {"dataset": self.source.name, "next_step": step, "seed": self.seed, "batch_size": self.batch_size}
        consumed, stats = self._at(step)
        return {"dataset": self.source.name, "next_step": step, "seed": self.seed,
                "batch_size": self.batch_size, "process_count": self.process_count,
                "consumed": _gather_ints(consumed, self.process_count),
                "stats": _sum_over_processes(stats.as_dict(), self.process_count)}

    def resume(self, position: dict[str, Any]) -> int:
        """Moves to a checkpointed position; returns the next step. Raises ``DataError`` when the
        position belongs to another dataset, seed or batch size."""
        if self.source.drawn:
            expected = self.position(int(position.get("next_step", -1)))
            if position != expected:
                raise DataError(f"checkpoint at step {position.get('next_step')} was saved with data position "
                                f"{position}, but this config resumes at {expected}; resuming would not replay "
                                "the same data (change data.dataset/data.seed/train.batch_size back)")
            return int(position["next_step"])
        mine = {"dataset": self.source.name, "seed": self.seed, "batch_size": self.batch_size}
        theirs = {k: position.get(k) for k in mine}
        if theirs != mine:
            raise DataError(f"checkpoint was saved reading {theirs}, but this config reads {mine}; resuming "
                            "would not replay the same data (change data.dataset/data.seed/train.batch_size back)")
        consumed = list(position["consumed"])
        if position["process_count"] == self.process_count:
            self.consumed = int(consumed[self.process_index])
        else:
            # Another process layout reads other shards: continue at the same fraction of an
            # epoch. The batches then differ from an uninterrupted run, which is said.
            self.consumed = sum(consumed) // self.process_count
            log.warning("resuming a %d-process data position on %d processes: the shards differ, so the "
                        "batches are not those of the original layout", position["process_count"],
                        self.process_count)
        self.stats = DataStats(**_share(position["stats"], self.process_index))
        return int(position["next_step"])


class _Flatten:
    """The examples of an iterator of groups, one at a time; ``close`` reaches the groups' iterator."""

    def __init__(self, groups: Any):
        self.groups, self.current = groups, iter(())

    def __iter__(self) -> _Flatten:
        return self

    def __next__(self) -> dict[str, Any]:
        while True:
            try:
                return next(self.current)
            except StopIteration:
                self.current = iter(next(self.groups))

    def close(self) -> None:
        close = getattr(self.groups, "close", None)
        if close is not None:
            close()


def _share(stats: dict[str, dict[str, int]], index: int) -> dict[str, dict[str, int]]:
    """Global counts restored on process 0 only, so that summing over processes gives them back."""
    return stats if index == 0 else {k: {} for k in stats}


def _gather_ints(value: int, process_count: int) -> list[int]:
    if process_count == 1:
        return [int(value)]
    from jax.experimental import multihost_utils

    return [int(v) for v in np.asarray(multihost_utils.process_allgather(np.int64(value))).ravel()]


def _sum_over_processes(stats: dict[str, dict[str, int]], process_count: int) -> dict[str, dict[str, int]]:
    if process_count == 1:
        return stats
    import json

    from jax.experimental import multihost_utils

    # Names differ between processes, so gather them as fixed-size JSON bytes.
    text = json.dumps(stats).encode()
    size = int(np.max(multihost_utils.process_allgather(np.int64(len(text)))))
    padded = np.frombuffer(text.ljust(size, b" "), np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(padded)).reshape(process_count, size)
    total: dict[str, collections.Counter] = {"skipped": collections.Counter(), "repaired": collections.Counter()}
    for row in rows:
        for kind, counts in json.loads(bytes(row.astype(np.uint8)).decode()).items():
            total[kind].update(counts)
    return {k: dict(v) for k, v in total.items()}


def _allow_grain_workers() -> None:
    """Grain's worker pool reads absl flags; a program that never parsed them (ours) must say so."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
