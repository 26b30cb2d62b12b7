"""Checkpoints: the whole GANState, the data position and the config, saved together.

Orbax ``CheckpointManager`` with asynchronous saves and keep-last-N. Each checkpoint holds
three items: ``state`` (the GANState pytree), ``data`` (where the input pipeline resumes)
and ``config`` (what a resume compares field by field, ``RESUME_RULES``). Every failure to
read one becomes a ``CheckpointError`` with a one-line message naming the checkpoint.

A resume (``Checkpointer.restore_for_resume``) falls back past checkpoints that cannot be
read to the newest one that can; ``Checkpointer.set_aside`` then moves the skipped ones out of
orbax's sight into ``WORKDIR/checkpoints_set_aside`` (kept, never deleted), so that a later
save at the same step, or keep-last-N, cannot collide with or remove them.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from jaxgan.config import Config, ConfigError, flat_fields, to_dict
from jaxgan.distributed import is_primary
from jaxgan.errors import JaxganError
from jaxgan.paths import workdir_path
from jaxgan.presets import from_dict
from jaxgan.schedules import forms


class CheckpointError(JaxganError, RuntimeError):
    """A checkpoint is missing, corrupt or does not fit the model; one-line message."""


class UnreadableCheckpointError(CheckpointError):
    """A checkpoint's files cannot be read (truncated, corrupt): a resume may fall back past it."""


REFUSE, APPLY, NOTE = "refuse", "apply", "note"

# What a resume does with a config field whose value differs from the checkpoint's saved
# config. A key ending in "." covers its whole section; a field named nowhere is refused, and
# tests/test_resume.py checks that every field of every architecture has a rule.
#   refuse: the field is compiled into the step, shapes the state or changes the data stream,
#     so the checkpoint cannot continue under it (one-line diff, nothing written);
#   apply: the value lives in the state (GANState's optimizer hyperparams and ``hparams``) and
#     is written into the restored state from the restored step on (notice: old -> new); a
#     schedule's numbers are applied, a change of its kind (or switching train.ema_kimg between
#     0 and a half-life, or train.diversity_weight from or to 0) is refused: it changes the
#     step and the state's leaves
#     (``jaxgan.schedules.forms``);
#   note: a setting of the run around the step (length, logging, layout, evaluation), taken
#     as given and listed in a notice.
RESUME_RULES: dict[str, str] = {
    "model.": REFUSE,  # the networks
    "text.": REFUSE,  # the frozen encoder whose embeddings the networks were trained on
    "data.dataset": REFUSE, "data.seed": REFUSE, "data.split": REFUSE,
    "data.captions_dir": REFUSE, "data.fit": REFUSE,  # which examples, in which order, how cropped
    "data.mirror": NOTE,  # a permission: train.augment, refused, says whether images are flipped
    # Where the same data is read from and how fast: a moved dataset or cache still resumes.
    "data.data_dir": NOTE, "data.embedding_cache": NOTE, "data.workers": NOTE,
    "train.batch_size": REFUSE, "train.seed": REFUSE, "train.optimizer": REFUSE,
    "train.beta1": REFUSE, "train.beta2": REFUSE,  # Adam's betas are constants of the step
    "train.loss": REFUSE, "train.penalty": REFUSE, "train.penalty_power": REFUSE,
    "train.penalty_every": REFUSE, "train.augment": REFUSE,
    # ADA's constants are compiled in; its p is a state leaf that a resume carries on.
    "train.ada_target": REFUSE, "train.ada_interval": REFUSE, "train.ada_kimg": REFUSE, "train.ada_max_p": REFUSE,
    "train.diversity_tau": REFUSE,
    "train.diversity_weight": APPLY,  # state.hparams while on; turning it on or off is refused (by form)
    "train.g_lr": APPLY, "train.d_lr": APPLY,  # opt_state.hyperparams["learning_rate"]
    "train.penalty_weight": APPLY, "train.kl_weight": APPLY, "train.ema_decay": APPLY,  # state.hparams
    "train.ema_kimg": APPLY, "train.ema_rampup": APPLY,
    # start/end/length as hparams leaves; the kind is checked by form
    "train.g_lr_schedule": APPLY, "train.d_lr_schedule": APPLY, "train.beta2_schedule": APPLY,
    "train.penalty_weight_schedule": APPLY, "train.ema_kimg_schedule": APPLY,
    "train.steps": NOTE, "train.max_skips": NOTE, "train.log_every": NOTE, "train.sample_every": NOTE,
    "train.checkpoint_every": NOTE, "train.keep_checkpoints": NOTE, "train.tensorboard": NOTE,
    # A checkpoint restores onto any mesh, device count or process count.
    "train.parallel": NOTE, "train.num_devices": NOTE, "train.fsdp": NOTE,
    "eval.": NOTE,  # every eval.jsonl row carries its protocol hash
}


def resume_rule(key: str) -> str:
    """``RESUME_RULES``' rule for the dotted config ``key``: its own entry, else its section's,
    else ``REFUSE``."""
    if key in RESUME_RULES:
        return RESUME_RULES[key]
    return RESUME_RULES.get(key.partition(".")[0] + ".", REFUSE)


@dataclasses.dataclass(frozen=True)
class ConfigChanges:
    """The fields where a requested config differs from a checkpoint's, by ``RESUME_RULES`` class.

    Each entry is ``(dotted key, checkpoint's value, requested value)``.
    """

    refused: tuple[tuple[str, Any, Any], ...] = ()
    applied: tuple[tuple[str, Any, Any], ...] = ()
    noted: tuple[tuple[str, Any, Any], ...] = ()


def _flat_saved(saved: Any) -> dict[str, Any]:
    """A checkpoint's saved config as flat ``{dotted key: value}``, read as config.json is read."""
    if not isinstance(saved, dict):
        return {}
    try:
        # A field added after this checkpoint was written is missing from it and compares as
        # its default (new fields default to what the code did before they existed); a
        # checkpoint from before each architecture had its own config also holds the other
        # architectures' fields, at their defaults, which are dropped.
        return {k: v for k, (v, _) in flat_fields(from_dict(saved)).items()}
    except ConfigError:
        pass  # compared as written: the diff names what differs
    flat: dict[str, Any] = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(saved, "")
    return flat


def _changed_forms(old: dict[str, Any], config: Config) -> set[str]:
    """The keys whose compiled form (``jaxgan.schedules.forms``) differs between the saved flat
    config ``old`` and ``config``; every one of them when the saved train section cannot be read."""
    now = forms(config.train)
    fields = {f.name for f in dataclasses.fields(config.train)}
    saved = {k.removeprefix("train."): v for k, v in old.items() if k.startswith("train.") and k[6:] in fields}
    try:
        before = forms(dataclasses.replace(type(config.train)(), **saved))
    except (ConfigError, TypeError, ValueError, AttributeError):
        return set(now)
    return {k for k in now if before[k] != now[k]}


def compare_configs(saved: Any, config: Config) -> ConfigChanges:
    """Every field where ``config`` differs from a checkpoint's saved config dict, classified
    by ``RESUME_RULES``.

    Example:
        changes = compare_configs(saved, get_config("tiny", ["train.g_lr=1e-4"]))
        changes.applied  # (("train.g_lr", 0.0002, 0.0001),)
    """
    old = _flat_saved(saved)
    new = {k: v for k, (v, _) in flat_fields(config).items()}
    reformed = _changed_forms(old, config)
    missing = object()
    by_rule: dict[str, list] = {REFUSE: [], APPLY: [], NOTE: []}
    for key in list(new) + sorted(k for k in old if k not in new):
        before, after = old.get(key, missing), new.get(key, missing)
        if before != after:
            rule = REFUSE if key in reformed else resume_rule(key)
            by_rule[rule].append((key, None if before is missing else before, None if after is missing else after))
    return ConfigChanges(tuple(by_rule[REFUSE]), tuple(by_rule[APPLY]), tuple(by_rule[NOTE]))


@dataclasses.dataclass
class Resumed:
    """What ``Checkpointer.restore_for_resume`` found; nothing on disk has changed yet.

    Attributes:
      state: the restored state, in the structure and shardings of the abstract state.
      position: the data position saved with it.
      step: the restored checkpoint's step.
      unreadable: newer checkpoints skipped because they cannot be read, step -> why.
      newer: checkpoints newer than ``step`` that a chosen ``from_step`` leaves behind.
      changes: how the requested config differs from the checkpoint's (none refused).
    """

    state: Any
    position: dict[str, Any]
    step: int
    unreadable: dict[int, str]
    newer: list[int]
    changes: ConfigChanges


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
        self.directory = workdir_path(directory, absolute=True)  # gs:// stays a URI
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

    def all_steps(self) -> list[int]:
        """Every complete checkpoint's step, oldest first."""
        return sorted(self._manager.all_steps())

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
        any number of processes); the others onto this process's first device. Only the
        fields that shape what the generator computes (``model.*``, ``text.*``) are compared:
        what sampling and evaluation need; a training resume uses ``restore_for_resume``.
        Raises ``CheckpointError`` when there is none, when its model or text config differs
        from ``config``'s, or when its arrays cannot be read or do not fit.
        """
        latest = step is None
        step = self.latest_step() if latest else step
        if step is None:
            raise CheckpointError(f"no checkpoint found in {self.directory}")
        try:
            meta = self._read_meta(step)
            changes = compare_configs(meta.config, config)
            self._refuse(step, [c for c in changes.refused if c[0].startswith(("model.", "text."))])
            return self._read_state(step, abstract_state), dict(meta.data)
        except UnreadableCheckpointError as e:
            others = [s for s in self.all_steps() if s != step]
            if not (latest and others):
                raise
            # Reading leaves the workdir alone (a training resume falls back and sets it aside).
            raise UnreadableCheckpointError(f"{e}; other checkpoints: {', '.join(map(str, others))} "
                                            "(choose one with --step)") from None

    def restore_for_resume(self, abstract_state: Any, config: Config, from_step: int | None = None) -> Resumed:
        """The checkpoint a training run resumes from, compared field by field with ``config``.

        Without ``from_step``, the newest checkpoint that can be read: newer ones whose files
        cannot be read are skipped and reported in ``Resumed.unreadable``. With it, exactly
        that checkpoint; newer ones are reported in ``Resumed.newer``. Nothing is moved here
        (``set_aside`` does that once the caller has accepted the resume).

        Raises:
          CheckpointError: no checkpoint; ``from_step`` is not one (the message lists those
            there are); a field ``RESUME_RULES`` refuses differs (one-line diff); no
            checkpoint can be read (nothing is moved or deleted).
        """
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"no checkpoint found in {self.directory}")
        if from_step is not None and from_step not in steps:
            raise CheckpointError(f"no checkpoint at step {from_step} in {self.directory}; "
                                  f"available steps: {', '.join(map(str, steps))}")
        candidates = [from_step] if from_step is not None else steps[::-1]
        unreadable: dict[int, str] = {}
        for step in candidates:
            try:
                meta = self._read_meta(step)
                changes = compare_configs(meta.config, config)
                self._refuse(step, changes.refused)  # a plain CheckpointError: no fallback
                state, error = self._read_state(step, abstract_state), None
            except UnreadableCheckpointError as e:
                error = e
            # Each process reads its own shards: all of them fall back together, or none does.
            if not _everywhere(error is None):
                error = error or UnreadableCheckpointError(f"{self._where(step)} cannot be read by another process")
            if error is not None:
                if from_step is not None:
                    raise error
                unreadable[step] = str(error)
                continue
            return Resumed(state, dict(meta.data), step, unreadable,
                           [s for s in steps if s > step] if from_step is not None else [], changes)
        detail = "; ".join(unreadable.values())
        raise CheckpointError(f"no checkpoint in {self.directory} can be read, nothing was moved or deleted: "
                              f"{detail}")

    def set_aside(self, steps: list[int], reason: str) -> list[epath.Path]:
        """Moves checkpoints ``steps`` to ``DIRECTORY/../checkpoints_set_aside/STEP-REASON``
        (a numbered suffix if that exists); returns the new paths.

        They leave orbax's view, so a later save at the same step, or keep-last-N, can
        neither collide with nor delete them; their files are kept as they were. Process 0
        moves; every process then re-reads the directory.
        """
        aside = self.directory.parent / "checkpoints_set_aside"
        moved = []
        for step in steps:
            target = aside / f"{step}-{reason}"
            k = 1
            while target.exists():
                k += 1
                target = aside / f"{step}-{reason}-{k}"
            if is_primary():
                aside.mkdir(exist_ok=True)
                (self.directory / str(step)).rename(target)  # same workdir: a rename, local or gs://
            moved.append(target)
        if steps:
            if jax.process_count() > 1:
                multihost_utils.sync_global_devices("jaxgan checkpoints set aside")
            self._manager.reload()
        return moved

    def _read_meta(self, step: int) -> Any:
        """The checkpoint's config and data position; ``UnreadableCheckpointError`` if they cannot be read."""
        try:
            return self._manager.restore(step, args=ocp.args.Composite(
                data=ocp.args.JsonRestore(), config=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many types for unreadable files
            raise UnreadableCheckpointError(
                f"{self._where(step)} is corrupt: cannot read its metadata ({_short(e)})") from None

    def _refuse(self, step: int, refused: Any) -> None:
        if refused:
            detail = ", ".join(f"{k}: checkpoint {old!r} vs config {new!r}" for k, old, new in refused)
            raise CheckpointError(f"{self._where(step)} is incompatible with the config ({detail})")

    def _read_state(self, step: int, abstract_state: Any) -> Any:
        where = self._where(step)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_placed(abstract_state))))
        except Exception as e:
            # The config has been compared already, so a state that does not read is damaged.
            raise UnreadableCheckpointError(f"{where} is corrupt or incompatible ({_short(e)})") from None
        mismatch = _shape_mismatch(abstract_state, restored.state)
        if mismatch:
            raise CheckpointError(f"{where} is incompatible: {mismatch}")
        return restored.state

    def _where(self, step: int) -> str:
        return f"checkpoint {self.directory / str(step)}"

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


def _everywhere(flag: bool) -> bool:
    """Whether ``flag`` holds on every process (a collective when there are several)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.all(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()
    # TensorStore appends a repr of a bound method where its details would be.
    line = (text[0] if text else type(error).__name__).split(" See full TensorStore details")[0]
    return line[:200]



__all__ = ["APPLY", "NOTE", "REFUSE", "RESUME_RULES", "Checkpointer", "CheckpointError", "ConfigChanges",
           "Resumed", "UnreadableCheckpointError", "compare_configs", "resume_rule"]
