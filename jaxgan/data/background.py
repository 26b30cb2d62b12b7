"""Running a producer ahead of its consumer on a background thread (both input pipelines)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def in_background(items: Iterable[T], count: int, ahead: int = 2) -> Iterator[T]:
    """The first ``count`` items of ``items``, produced up to ``ahead`` items in advance on a
    daemon thread. An exception in the producer is raised here, in the consumer; closing
    the returned generator stops the producer and closes ``items``."""
    buffer: queue.Queue = queue.Queue(maxsize=ahead)
    done = threading.Event()

    def produce() -> None:
        source = iter(items)
        try:
            for _ in range(count):
                item = next(source)
                while not done.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if done.is_set():
                    return
        except BaseException as e:  # surfaced in the consumer, not lost in the thread
            buffer.put(e)
        finally:
            close = getattr(source, "close", None)
            if close is not None:  # a generator's clean-up (Grain's workers) runs now, on this thread
                close()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        for _ in range(count):
            item = buffer.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        done.set()
        thread.join(timeout=5)
