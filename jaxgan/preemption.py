"""Preemption-safe stops: SIGTERM or SIGINT ends training after the current step, with a checkpoint.

TPU pods and cluster schedulers (SLURM, Kubernetes) send SIGTERM some seconds before they
take a machine away; a user sends SIGINT with Ctrl-C. Either only sets a flag: the loop
finishes the step in flight, writes a checkpoint at that step and returns, so a re-run of
the same command resumes bitwise where it stopped.

In a run over several processes the signal may reach them at different steps, but all of
them must checkpoint at the same one: every ``check_every`` steps the processes agree,
with one tiny all-gather, on whether any of them was signalled.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import numpy as np

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Turns ``STOP_SIGNALS`` into a flag the training loop polls (``install``/``restore``,
    or use it as a context manager).

    Args:
      process_count: processes in the run; with more than one the flag is agreed on.
      check_every: steps between agreements in a multi-process run (one all-gather each);
        a single process checks at every step, for free.
    """

    def __init__(self, process_count: int = 1, check_every: int = 10):
        self.process_count, self.check_every = process_count, max(1, check_every)
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user wants out now
        self.received = signal.Signals(signum).name

    def install(self) -> StopSignals:
        """Replaces the handlers of ``STOP_SIGNALS`` (a no-op off the main thread, where
        Python allows no handlers)."""
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        """Puts the previous handlers back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __enter__(self) -> StopSignals:
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    def should_stop(self, step: int) -> bool:
        """Whether to stop after ``step``: the same answer on every process."""
        if self.process_count == 1:
            return self.received is not None
        if step % self.check_every:
            return False
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.int32(self.received is not None))
        return bool(np.any(np.asarray(flags)))
