"""Checkpoints: the whole GANState, the data position and the config, saved together.

Orbax ``CheckpointManager`` with asynchronous saves and keep-last-N. Each checkpoint holds
three items: ``state`` (the GANState pytree), ``data`` (where the input pipeline resumes)
and ``config`` (to refuse resuming a different model). Every failure to read one becomes a
``CheckpointError`` with a one-line message naming the checkpoint.
"""

from __future__ import annotations

import errno
import logging
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxgan.config import Config, ConfigError, to_dict
from jaxgan.errors import JaxganError
from jaxgan.presets import from_dict


class CheckpointError(JaxganError, RuntimeError):
    """A checkpoint is missing, corrupt or does not fit the model; one-line message."""


def _shape_mismatch(abstract: Any, restored: Any) -> str | None:
    paths_a = jax.tree_util.tree_flatten_with_path(abstract)[0]
    paths_r = jax.tree_util.tree_flatten_with_path(restored)[0]
    if len(paths_a) != len(paths_r):
        return f"{len(paths_r)} arrays where the model has {len(paths_a)}"
    for (path, a), (_, r) in zip(paths_a, paths_r):
        if tuple(a.shape) != tuple(np.shape(r)):
            return f"{jax.tree_util.keystr(path)} has shape {tuple(np.shape(r))}, the model needs {tuple(a.shape)}"
    return None


class _NoOrbaxTracebacks(logging.Filter):
    """Keeps the message of an error orbax logs from its save threads, without the traceback.

    A failed save (a full disk, a lost mount) is reported once, as a ``CheckpointError``
    from ``Checkpointer.save`` or ``wait``; orbax also logs the same exception from each of
    its threads, with a traceback, which would bury that one line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and "orbax" in record.pathname:
            record.exc_info, record.exc_text = None, None
        return True


_ORBAX_LOG_FILTER = _NoOrbaxTracebacks()


def _closed_loop_quiet(hook: Any) -> Any:
    """``hook`` (a ``sys.unraisablehook``), minus one harmless report: when a save fails,
    orbax's event loop ends while tensorstore's other writes are in flight, and each of
    their completion callbacks then finds the loop closed, which Python prints as an
    unraisable RuntimeError with its traceback, once per array."""

    def quiet(unraisable: Any) -> None:
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
            hook(unraisable)

    quiet.closed_loop_quiet = True
    return quiet


def _quiet_failed_saves() -> None:
    """Installs the filters above, once: a failed save then prints its one-line error only."""
    logging.getLogger("absl").addFilter(_ORBAX_LOG_FILTER)  # added only if absent
    if not getattr(sys.unraisablehook, "closed_loop_quiet", False):
        sys.unraisablehook = _closed_loop_quiet(sys.unraisablehook)


class Checkpointer:
    """Saves and restores training checkpoints under ``directory``."""

    def __init__(self, directory: str | Path, keep: int = 3, asynchronous: bool = True):
        self.directory = Path(directory).absolute()
        _quiet_failed_saves()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=asynchronous)
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=("state", "data", "config"))
        self._pending: int | None = None  # the step of the save that may still be in flight
        self._failed = False  # a save failed and was reported

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_position: dict[str, Any], config: Config) -> None:
        """Starts an (asynchronous) save of ``state``; returns before the write finishes.

        Raises:
          CheckpointError: this save, or the previous one still being written, failed (a full
            disk, a lost mount); the checkpoints already complete are left as they were.
        """
        try:
            self._manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_position),
                config=ocp.args.JsonSave(to_dict(config))))
        except Exception as e:  # orbax first waits for the previous save: its error surfaces here
            failed = self._pending if self._pending not in (None, self.latest_step()) else step
            raise self._save_error(failed, e) from None
        self._pending = step

    def restore(self, abstract_state: Any, config: Config, step: int | None = None,
                ) -> tuple[Any, dict[str, Any]]:
        """Restores (state, data position) into the structure of ``abstract_state``.

        Leaves of ``abstract_state`` that carry a sharding are restored with it (any mesh,
        any number of processes); the others onto this process's first device.
        Raises ``CheckpointError`` when there is none, when its model config differs from
        ``config``'s, or when its arrays cannot be read or do not fit.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint found in {self.directory}")
        where = f"checkpoint {self.directory / str(step)}"
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(
                data=ocp.args.JsonRestore(), config=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many types for unreadable files
            raise CheckpointError(f"{where} is corrupt: cannot read its metadata ({_short(e)})") from None
        saved_model = meta.config.get("model") if isinstance(meta.config, dict) else None
        if isinstance(saved_model, dict):
            # Read the saved model config as config.json is read: a model field added after
            # this checkpoint was written is missing from it, and new fields default to what
            # the code did before they existed, so it compares as its default; a checkpoint
            # from before each architecture had its own config also holds the other
            # architectures' fields, at their defaults, which are dropped.
            try:
                saved_model = to_dict(from_dict({"model": saved_model}))["model"]
            except ConfigError:
                pass  # compared as written: the diff below names what differs
        wanted = to_dict(config)["model"]
        if saved_model != wanted:
            keys = list(wanted) + [k for k in (saved_model or {}) if k not in wanted]
            diff = sorted(k for k in keys if (saved_model or {}).get(k) != wanted.get(k))
            detail = ", ".join(f"model.{k}: checkpoint {(saved_model or {}).get(k)!r} vs config {wanted.get(k)!r}"
                               for k in diff)
            raise CheckpointError(f"{where} is incompatible with the config ({detail})")
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_placed(abstract_state))))
        except Exception as e:
            raise CheckpointError(f"{where} is corrupt or incompatible ({_short(e)})") from None
        mismatch = _shape_mismatch(abstract_state, restored.state)
        if mismatch:
            raise CheckpointError(f"{where} is incompatible: {mismatch}")
        return restored.state, dict(meta.data)

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk.

        Raises:
          CheckpointError: the save in flight failed; the complete checkpoints are kept.
        """
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            raise self._save_error(self._pending, e) from None
        self._pending = None

    def close(self) -> None:
        """Waits for the save in flight (raising ``CheckpointError`` if it failed, unless a
        failure was already reported) and releases orbax's threads."""
        if self._failed:
            try:
                self._manager.close()
            except Exception:  # noqa: BLE001 - the same failed save again, already reported
                pass
            return
        self.wait()
        self._manager.close()

    def _save_error(self, step: int | None, error: Exception) -> CheckpointError:
        self._failed, self._pending = True, None
        cause = "the disk is full" if isinstance(error, OSError) and error.errno == errno.ENOSPC else _short(error)
        latest = self.latest_step()
        kept = f"the newest complete checkpoint is step {latest}" if latest is not None else "no checkpoint is complete"
        which = f"checkpoint {step}" if step is not None else "a checkpoint"
        return CheckpointError(f"{which} could not be written to {self.directory} ({cause}); {kept}, "
                               "and the run can resume from it once the cause is fixed")


def _placed(abstract_state: Any) -> Any:
    """Leaves without a sharding restore onto this process's first device: a checkpoint
    written by any number of processes and devices then loads into one (orbax refuses to
    guess a layout for a checkpoint saved on another topology)."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def place(a: Any) -> Any:
        if getattr(a, "sharding", None) is not None:
            return a
        return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device)

    return jax.tree.map(place, abstract_state)


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]



__all__ = ["Checkpointer", "CheckpointError"]
