"""A training workdir as the other tools see it: the config it ran with and the generator it trained.

``train_and_evaluate`` writes a workdir (``config.json``, ``checkpoints/``, logs, samples);
sampling, ``jaxgan eval`` and ``jaxgan alignment`` read one back through this module.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from etils import epath

from jaxgan.checkpoint import Checkpointer
from jaxgan.config import Config, ConfigError
from jaxgan.data.embeddings import EmbeddingTable
from jaxgan.errors import JaxganError
from jaxgan.models import build_models
from jaxgan.paths import is_remote, workdir_path
from jaxgan.pixels import to_uint8
from jaxgan.presets import apply_overrides, from_dict, get_config
from jaxgan.sampling import (
    apply_generator,
    make_generate_fn,
    sample_noise,
    save_attention_overlays,
    write_samples,
)
from jaxgan.state import GANState, abstract_state
from jaxgan.text import TextEncoder, load_text_encoder


def resolve_config(workdir: str | Path, preset: str | None = None, overrides: Sequence[str] = ()) -> Config:
    """The run's config: the workdir's saved one when resuming without ``preset``, else the preset.

    ``overrides`` (``"section.key=value"``) apply on top of either. A workdir without a
    ``config.json`` (a new run) gets the preset, ``"default"`` when none is named.

    Raises:
      ConfigError: an unknown preset or key, an invalid value or ``config.json``.
      WorkdirError: ``workdir`` is a folder with files in it that is not a jaxgan workdir
        (``check_new_workdir``).

    Example:
        config = resolve_config("runs/demo", None, ["train.steps=8000"])  # resume for longer
    """
    check_new_workdir(workdir)
    saved = workdir_path(workdir) / "config.json"
    if preset is None and saved.exists():
        try:
            base = from_dict(json.loads(saved.read_bytes().decode("utf-8")))
        # ValueError: not UTF-8 or not JSON; RecursionError: JSON nested thousands deep.
        except (ValueError, RecursionError) as e:
            raise ConfigError(f"{saved} is not a valid jaxgan config ({e})") from None
        return apply_overrides(base, list(overrides))
    return get_config(preset or "default", list(overrides))


class WorkdirError(JaxganError, ValueError):
    """A workdir path that a run must not write into; one-line message."""


# What a run leaves in a workdir before its config.json exists (a run that died at start).
_STARTUP_FILES = (".lock", ".config.json.tmp-")


def check_new_workdir(workdir: str | Path) -> None:
    """Refuses a folder that has files in it but is not a jaxgan workdir (no ``config.json``,
    no ``checkpoints/``): a home or data folder given as ``--workdir`` by mistake, which a
    new run would fill with its logs. A missing or empty folder, or a workdir, passes.

    Example:
        check_new_workdir(Path.home())  # WorkdirError: ... is not empty and not a jaxgan workdir
    """
    workdir = workdir_path(workdir)
    if not workdir.is_dir() or (workdir / "config.json").exists() or (workdir / "checkpoints").is_dir():
        return
    try:
        # A generator, so a huge folder is not listed in full.
        foreign = next((p.name for p in workdir.iterdir() if not p.name.startswith(_STARTUP_FILES)), None)
    except OSError as e:
        raise WorkdirError(f"cannot list workdir {workdir}: {e.strerror or e}") from None
    if foreign is not None:
        raise WorkdirError(f"{workdir} is not empty (it holds {foreign!r}, ...) and is not a jaxgan workdir "
                           "(no config.json or checkpoints/); give a new or empty folder as --workdir")


class WorkdirLockedError(JaxganError, RuntimeError):
    """Another run holds the workdir; one-line message naming it."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class WorkdirLock:
    """An exclusive lock on a workdir for one training run: ``WORKDIR/.lock``, holding the
    holder's host, pid and start time.

    Two runs on one workdir would interleave metrics.jsonl and race on the checkpoints. A lock
    left by a run on this host whose process is gone (killed) is taken over with a notice; one
    from another host cannot be checked from here, so it is refused unless ``break_lock``.

    Example:
        with WorkdirLock(Path("runs/demo")):
            ...  # train
    """

    def __init__(self, workdir: Path, break_lock: bool = False, notice: Callable[[str], Any] = print):
        self.path = workdir_path(workdir) / ".lock"
        self.break_lock, self.notice = break_lock, notice
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}

    def __enter__(self) -> WorkdirLock:
        for _ in range(2):  # a second try after removing a stale lock; losing that race refuses
            try:
                with _create_new(self.path) as f:
                    json.dump(self.me, f)
                return self
            except FileExistsError:
                self._take_over_or_refuse()
        raise WorkdirLockedError(f"{self.path.parent} was locked again while a stale lock was removed; retry")

    def _take_over_or_refuse(self) -> None:
        try:
            holder = json.loads(self.path.read_text())
            host, pid, since = str(holder["host"]), int(holder["pid"]), float(holder["since"])
        except (OSError, ValueError, KeyError, TypeError):
            host, pid, since = "?", -1, time.time()  # unreadable: treated as another host's
        age = f"{(time.time() - since) / 60:.0f} min"
        if host == self.me["host"] and not _alive(pid):
            self.notice(f"note: took over {self.path.parent}'s lock from pid {pid} on {host}, which has ended")
        elif self.break_lock:
            self.notice(f"note: broke {self.path.parent}'s lock held by pid {pid} on {host} for {age}")
        else:
            hint = "" if host == self.me["host"] else "; if that run is gone, pass --break-lock"
            raise WorkdirLockedError(f"{self.path.parent} is in use by pid {pid} on {host} (for {age}){hint}")
        self.path.unlink(missing_ok=True)

    def __exit__(self, *exc: Any) -> None:
        try:
            if json.loads(self.path.read_text()).get("pid") == self.me["pid"]:
                self.path.unlink()
        except (OSError, ValueError):
            pass  # already gone, or broken by another run: not ours to remove


def _create_new(path: epath.Path) -> IO[str]:
    """``path`` created and open for writing; FileExistsError if it exists.

    Locally the creation is exclusive (``O_EXCL``). A bucket has no exclusive create through
    epath, so there the check and the write are two requests: two runs that start within the
    same moment may both pass it (docs/training.md, "Workdirs in a bucket").
    """
    if not is_remote(path):
        return open(path, "x")
    if path.exists():
        raise FileExistsError(str(path))
    return path.open("w")


def write_atomically(path: str | Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and ``os.replace``, so that a reader,
    or a process killed mid-write, sees the old file or the new one, never half of one. In a
    bucket, where one object write is already atomic (and a rename is a copy), it writes directly."""
    path = workdir_path(path)
    if is_remote(path):
        path.write_text(text)
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def saved_config(workdir: str | Path) -> Config:
    """The config a finished or running training wrote to ``workdir``.

    Raises:
      ConfigError: ``workdir`` has no ``config.json`` (it is not a training workdir), or an
        invalid one.
    """
    workdir = workdir_path(workdir)
    if not (workdir / "config.json").exists():
        raise ConfigError(f"{workdir} is not a training workdir (no config.json)")
    return resolve_config(workdir)


def restore_state(config: Config, workdir: str | Path, encoder: TextEncoder, step: int | None = None) -> GANState:
    """The training state of ``workdir``'s checkpoint at ``step`` (default: the latest), on one device.

    ``encoder`` is the run's text encoder: its widths shape the generator's text inputs.

    Raises:
      CheckpointError: no checkpoint, a corrupt one, or one of another model than ``config``'s.
    """
    generator, discriminator = build_models(config.model)
    abstract = abstract_state(config, generator, discriminator, encoder.sentence_dim, encoder.word_dim)
    checkpoints = Checkpointer(workdir_path(workdir) / "checkpoints", keep=config.train.keep_checkpoints)
    try:
        state, _ = checkpoints.restore(abstract, config, step=step)
    finally:
        checkpoints.close()
    return state


class TrainedGenerator:
    """The EMA generator of a workdir's checkpoint with its text encoder: prompts -> images.

    Example:
        generator = TrainedGenerator(config, "runs/demo")
        images = generator(["a red circle", "a blue square"], seeds=[0, 1])  # uint8 [2, R, R, 3]
    """

    def __init__(self, config: Config, workdir: str | Path, step: int | None = None):
        self.config = config
        self.encoder = load_text_encoder(config.text.encoder, config.text.max_length or None)
        self.embed = EmbeddingTable.on_demand(self.encoder, with_words=config.model.uses_word_attention)
        self.generator, _ = build_models(config.model)
        state = restore_state(config, workdir, self.encoder, step)
        self.step = int(state.step)
        self._params, self._stats = state.ema_params, state.ema_stats
        self._generate = make_generate_fn(self.generator)

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        """uint8 [N, R, R, 3]: prompt i with noise from seed i."""
        z = sample_noise(seeds, self.config.model.z_dim)
        return np.asarray(self._generate(self._params, self._stats, z, self.embed.text(list(prompts))))

    def attention(self, prompts: Sequence[str], seeds: Sequence[int]) -> tuple[np.ndarray, dict, list[list[str]]]:
        """(images uint8 [N, R, R, 3], {size: attention [N, size*size, L]}, tokens of each prompt).

        The maps are those of the generator's word-attention blocks (``model.word_attention``);
        each token list has the prompt's real tokens (padding dropped), in map order.
        """
        if not self.config.model.uses_word_attention:
            raise ConfigError("--attention needs a model with word attention (train with "
                              "--set model.arch=dfgan --set model.word_attention=16)")
        text = self.embed.text(list(prompts))
        z = sample_noise(seeds, self.config.model.z_dim)
        images, sown = apply_generator(self.generator, {"params": self._params, "batch_stats": self._stats},
                                       z, text, mutable=["intermediates"])
        maps = {int(name.split("_")[1]): np.asarray(v["attention"])
                for name, v in sown["intermediates"].items() if name.startswith("attn_")}
        ids = self.encoder.tokenize(list(prompts))
        tokens = [[self.encoder.tokenizer.convert_ids_to_tokens(int(i)) for i, m in zip(row, mask) if m]
                  for row, mask in zip(ids["input_ids"], ids["attention_mask"])]
        return np.asarray(to_uint8(images)), maps, tokens


def generate_from_checkpoint(config: Config, workdir: str | Path, prompts: Sequence[str], per_prompt: int,
                             seed: int, out_dir: str | Path, step: int | None = None,
                             attention: bool = False, notice: Callable[[str], Any] = print) -> epath.Path:
    """Writes samples of ``workdir``'s EMA generator for ``prompts``; returns the manifest path.

    Sample j of every prompt uses seed ``seed + j``. With ``attention``, also writes
    ``attention_P_J.png`` per sample: its word-attention maps over the image, one per token.
    A prompt longer than the text encoder's ``max_length`` tokens is cut to that length, as
    training captions are, and ``notice`` is told which.

    Example:
        generate_from_checkpoint(config, "runs/demo", ["a red circle"], 4, seed=0, out_dir="samples")
    """
    generate = TrainedGenerator(config, workdir, step)
    for i in np.flatnonzero(generate.encoder.overflows(list(prompts))):
        notice(f"note: prompt {i + 1} is longer than the text encoder's {generate.encoder.max_length} tokens; "
               "the generator sees its beginning only")
    all_prompts = [p for p in prompts for _ in range(per_prompt)]
    seeds = [seed + j for _ in prompts for j in range(per_prompt)]
    if attention:
        # Written first, so a model without word attention fails before any sample is written.
        images, maps, tokens = generate.attention(all_prompts, seeds)
        for i in range(len(all_prompts)):
            save_attention_overlays(images[i], {k: v[i] for k, v in maps.items()}, tokens[i],
                                    workdir_path(out_dir) / f"attention_{i // per_prompt:03d}_{i % per_prompt:03d}.png")
    return write_samples(generate(all_prompts, seeds), all_prompts, seeds, out_dir, per_prompt)
