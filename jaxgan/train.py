"""The training loop: data -> compiled step -> logs, sample grids, checkpoints.

``train_and_evaluate(config, workdir)`` is what ``python train.py`` runs. Re-running it on
the same workdir resumes from the latest checkpoint, exactly: the state, the optimizer
moments, the PRNG key and the data position all come back.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from etils import epath
from tqdm.auto import tqdm

from jaxgan import plots
from jaxgan.checkpoint import Checkpointer, CheckpointError
from jaxgan.config import Config, ConfigError, to_json
from jaxgan.data import make_source
from jaxgan.data.embeddings import EmbeddingTable, embedding_table, unknown_token_share
from jaxgan.data.pipeline import Pipeline
from jaxgan.data.source import DataError
from jaxgan.distributed import check_same_config, is_primary, stops_when_a_process_is_lost
from jaxgan.errors import JaxganError
from jaxgan.evaluator import Evaluator, evaluates
from jaxgan.models import build_models, sentence_width
from jaxgan.paths import appending, workdir_path
from jaxgan.preemption import StopSignals
from jaxgan.program import build_train_program
from jaxgan.sampling import make_generate_fn, sample_noise, save_captioned_grid
from jaxgan.state import GANState, with_hyperparams
from jaxgan.tensorboard import TensorBoardLog
from jaxgan.text import load_text_encoder
from jaxgan.workdir import WorkdirLock, check_new_workdir, write_atomically


class TrainingLogError(JaxganError, ValueError):
    """A workdir's metrics.jsonl or eval.jsonl cannot be read back; one-line message."""


class NonFiniteLossError(JaxganError, RuntimeError):
    """Too many steps in a row had NaN/inf losses or gradients; the last good checkpoint is kept."""


class EvaluationError(JaxganError, RuntimeError):
    """A periodic evaluation failed; that step's checkpoint is on disk. One-line message."""


class _Run:
    """What the loop needs about one run: models, step, pipeline, files."""

    def __init__(self, config: Config, workdir: epath.Path, pieces: dict[str, Any] | None = None):
        self.config, self.workdir = config, workdir
        self.encoder = load_text_encoder(config.text.encoder, config.text.max_length or None)
        self.program = build_train_program(config, **(pieces or {}))
        needed = sentence_width(self.program.generator)
        if needed is not None and needed != self.encoder.sentence_dim:
            raise ConfigError(f"model.arch={config.model.arch} needs sentence embeddings of width {needed} (its "
                              f"CLIP's), but text.encoder={config.text.encoder!r} gives "
                              f"{self.encoder.sentence_dim}: set text.encoder to the CLIP of model.clip")
        self.parallel = self.program.parallel
        # Sampling runs on one copy of the params, so its BatchNorm needs no device layout.
        self.sample_generator, _ = build_models(config.model)
        with_words = config.model.uses_word_attention
        rows = self.parallel.local_rows(config.train.batch_size)  # each process builds only its own rows
        source = make_source(config)
        if source.index_issues and is_primary():
            tqdm.write(f"data: {source.name}'s caption index had problems, skipped: {dict(source.index_issues)}")
        if source.embed_on_demand:
            self.table = EmbeddingTable.on_demand(self.encoder, with_words=with_words)
        else:
            # Every caption is encoded once (or read from an earlier run's cache): the loop
            # never runs the encoder.
            captions = source.all_captions()
            unknown = unknown_token_share(self.encoder, captions)
            if unknown > 0.1 and is_primary():
                tqdm.write(f"warning: {100 * unknown:.0f}% of {source.name}'s captions have words text encoder "
                           f"{config.text.encoder!r} does not know; choose one trained on such text "
                           "(e.g. --set text.encoder=minilm)")
            self.table = embedding_table(self.encoder, captions, config.data.embedding_cache or None,
                                         with_words=with_words)
            if self.table.truncated and is_primary():
                tqdm.write(f"warning: {self.table.truncated} of {len(self.table)} captions are longer than the "
                           f"encoder's {self.encoder.max_length} tokens and were truncated")
        self.pipeline = Pipeline(config, source, self.table, rows, jax.process_index(), jax.process_count())
        self.prompts = source.preview_captions()
        self.step_fn = self.program.step
        # Previews read the step's copy of the frozen towers (GALIP's CLIP: 350 MB at ViT-B/32)
        # rather than a second one; under pmap, the first local device's share of it.
        stacked = self.parallel.mode == "pmap"
        frozen = (jax.tree.map(lambda x: x.addressable_data(0), self.program.frozen) if stacked
                  else self.program.frozen)
        self.generate = make_generate_fn(self.sample_generator, frozen, stacked=stacked)
        self.checkpoints = Checkpointer(workdir / "checkpoints", keep=config.train.keep_checkpoints)
        # Built before the first step, so that bad evaluation settings stop the run at once.
        self.evaluator = (Evaluator(config, self.encoder, mesh=self.parallel.flat_mesh, table=self.table)
                          if evaluates(config) else None)

    def restore_or_init(self, from_step: int | None = None) -> tuple[GANState, int]:
        """(state in the step's layout, data position): the latest readable checkpoint's (or
        ``from_step``'s), or a fresh state at position 0. A checkpoint restores onto this
        run's devices and processes, whatever the layout it was saved from.

        The config is compared with the checkpoint's field by field (``RESUME_RULES``):
        refused fields raise before anything on disk changes; learning rates and loss
        weights are written into the restored state; the rest is noted. Checkpoints skipped
        as unreadable, or newer than ``from_step``, are then set aside (kept). What changed
        is in ``self.resume_notes``, for the run's logs.
        """
        self.resume_notes: list[str] = []
        if self.checkpoints.latest_step() is None:
            if from_step is not None:
                raise CheckpointError(f"no checkpoint at step {from_step}: {self.checkpoints.directory} has none")
            return self.program.init_placed_state(self.encoder.sentence_dim, self.encoder.word_dim), 0
        abstract = self.parallel.abstract_with_shardings(
            self.program.abstract_state(self.encoder.sentence_dim, self.encoder.word_dim))
        resumed = self.checkpoints.restore_for_resume(abstract, self.config, from_step)
        try:
            next_step = self.pipeline.resume(resumed.position)
        except DataError as e:
            raise CheckpointError(str(e)) from None
        # The resume is accepted: only now does anything on disk change.
        notes = []
        for step, why in resumed.unreadable.items():
            where, = self.checkpoints.set_aside([step], "unreadable")
            notes.append(f"skipped checkpoint {step}, which cannot be read ({why}); moved to {where}")
        if resumed.newer:
            moved = self.checkpoints.set_aside(resumed.newer, f"newer-than-{resumed.step}")
            notes.append(f"resuming from step {resumed.step}: the newer checkpoints "
                         f"{', '.join(map(str, resumed.newer))} were moved to {moved[0].parent} (kept)")
        state, changed = with_hyperparams(resumed.state, self.config)
        lines = []
        for key, old, new in resumed.changes.applied:
            name = key.removeprefix("train.")
            effect = ("applied to the restored state" if changed.pop(name, None) else
                      "no effect: this config does not use it")  # penalty none, no CA
            lines.append(f"{key}: {old!r} -> {new!r} ({effect})")
        # A state value that differs although the saved config agrees: said, never silent.
        lines += [f"state's {name}: {old:.6g} -> {new:.6g} (set from the config)"
                  for name, (old, new) in changed.items()]
        lines += [f"{key}: {old!r} -> {new!r}" for key, old, new in resumed.changes.noted]
        notes += [f"config change on resume at step {resumed.step}: {line}" for line in lines]
        self.resume_notes = notes
        return self.parallel.to_step_layout(state), next_step

    def evaluate(self, state: GANState) -> dict[str, Any]:
        """Every metric of ``state``'s generator under the run's protocol, on the training mesh.

        Raises:
          EvaluationError: the evaluation failed with an expected error (an unreadable image of
            the evaluation split, a file gone); the step's checkpoint, saved before, is waited for.
        """
        step = int(state.step)
        try:
            result = self.evaluator.evaluate_state(state)
        except (JaxganError, OSError) as e:
            self.checkpoints.wait()  # the message promises the checkpoint: make it true first
            cause = " ".join(str(e).split()) or type(e).__name__
            raise EvaluationError(
                f"evaluation at step {step} failed: {cause}; checkpoint {step} is saved: fix the cause and run "
                f"again to resume, then repeat this evaluation with jaxgan eval --workdir {self.workdir} "
                f"--step {step}") from None
        return {"step": step, "protocol_hash": result.protocol.hash, **result.metrics,
                "eval_seconds": round(result.seconds, 2)}

    def preview(self, state: GANState, name: str, per_prompt: int = 8) -> epath.Path:
        prompts = self.prompts
        seeds = np.tile(np.arange(per_prompt), len(prompts))
        z = sample_noise(seeds, self.config.model.z_dim)
        text = self.table.text([p for p in prompts for _ in range(per_prompt)])
        images = np.asarray(self.generate(state.ema_params, state.ema_stats, z, text))
        path = self.workdir / "samples" / f"{name}.png"
        save_captioned_grid(images, prompts, per_prompt, path)
        listing = self.workdir / "samples" / "prompts.json"
        if not listing.exists():  # the grids' prompts, for the report
            listing.write_text(json.dumps(prompts, indent=1) + "\n")
        return path


def _stop_after_skips(streak: Any, step: int, max_skips: int, last_checkpoint: int | None,
                      host: Any = np.asarray) -> None:
    """Raises ``NonFiniteLossError`` once ``max_skips`` steps in a row were skipped."""
    if streak is None:
        return
    streak = host(streak)
    if int(streak) < max_skips:
        return
    where = f"step {last_checkpoint}" if last_checkpoint is not None else "none"
    raise NonFiniteLossError(
        f"{int(streak)} consecutive steps up to step {step} had a non-finite loss or gradient and were "
        f"skipped (train.max_skips={max_skips}); training stopped, the last good checkpoint is {where}")


def _on_device_ahead(batches: Any, put: Any, ahead: int = 1) -> Any:
    """Device batches, the next ``ahead`` already transferred while the current step runs."""
    pending: collections.deque = collections.deque()
    for batch in batches:
        pending.append(put(batch))
        if len(pending) > ahead:
            yield pending.popleft()
    while pending:
        yield pending.popleft()


class _Timed:
    """An iterator that adds up the time its consumer spends blocked in ``next``."""

    def __init__(self, iterable: Any):
        self._iterator, self.waited = iter(iterable), 0.0

    def __iter__(self) -> _Timed:
        return self

    def __next__(self) -> Any:
        start = time.perf_counter()
        try:
            return next(self._iterator)
        finally:
            self.waited += time.perf_counter() - start


def _truncate_metrics(path: epath.Path, step: int) -> None:
    """Drops rows past ``step`` (a run that died after its last checkpoint logged them) and a
    partial last line (one killed while writing a row), with a notice for the latter."""
    try:
        rows, partial = plots.read_jsonl(path)
    except ValueError as e:
        raise TrainingLogError(f"{e}; fix or move the file to resume") from None
    if partial:
        tqdm.write(f"note: dropped a partial last line of {path} (a run killed while writing it): {partial[:80]!r}")
    if partial or any(r["step"] > step for r in rows):
        write_atomically(path, "".join(json.dumps(r) + "\n" for r in rows if r["step"] <= step))


def _append_row(path: epath.Path, row: dict[str, Any]) -> None:
    """Appends one JSON line to a log (``metrics.jsonl``, ``eval.jsonl``), local or in a bucket."""
    with appending(path) as f:
        f.write(json.dumps(row) + "\n")


@stops_when_a_process_is_lost  # bounded exit on errors and lost processes (docs/multihost.md)
def train_and_evaluate(config: Config, workdir: str | Path, progress: bool = True, break_lock: bool = False,
                       from_step: int | None = None, **pieces: Any) -> GANState:
    """Trains ``config`` in ``workdir`` (resuming if it has checkpoints); returns the final state.

    Writes ``config.json``, ``metrics.jsonl``, ``losses.png``, ``samples/step_N.png``,
    TensorBoard event files under ``tensorboard/``, orbax
    checkpoints under ``checkpoints/`` and, every ``eval.every`` steps, ``eval.jsonl`` and
    ``eval.png`` (FID, KID, IS, precision/recall, text alignment against the step). Everything
    the evaluation needs (feature network, CLIP model, reference statistics) is built before
    the first step; an evaluation step is checkpointed before it evaluates, so an evaluation
    that fails (``EvaluationError``) loses no training. A step
    with a NaN/inf loss or gradient is skipped (its update is not applied); after
    ``train.max_skips`` skips in a row ``NonFiniteLossError`` is raised, and no checkpoint is
    written from that point on. SIGTERM or SIGINT (a scheduler's preemption, Ctrl-C) ends
    the run after the current step with a checkpoint at that step; calling again resumes.
    ``pieces`` (``loss``, ``penalty``, ``augment``: pure functions of one's own) replace the
    config's choices in the step, as in ``make_train_step``; the config does not record them.
    The run holds ``workdir``'s lock (``jaxgan.workdir.WorkdirLock``) throughout; ``break_lock``
    takes it from a holder that cannot be checked (another host). A resume starts from the
    newest checkpoint that can be read, or from ``from_step``; how it treats a changed config
    is ``jaxgan.checkpoint.RESUME_RULES`` (docs/training.md, "Resuming"). A ``workdir`` with
    files in it that is not a jaxgan workdir is refused (``WorkdirError``).

    Example:
        state = train_and_evaluate(get_config("tiny"), "runs/tiny")   # again: resumes
        state = train_and_evaluate(config, "runs/smooth", loss=my_loss)
    """
    workdir = workdir_path(workdir)
    primary = is_primary()  # in a multi-process run, process 0 alone writes files
    if not primary:
        return _train(config, workdir, progress, pieces, from_step)
    check_new_workdir(workdir)  # never fill a home or data folder given by mistake
    workdir.mkdir(parents=True, exist_ok=True)
    with WorkdirLock(workdir, break_lock=break_lock, notice=tqdm.write):
        return _train(config, workdir, progress, pieces, from_step)


def _train(config: Config, workdir: epath.Path, progress: bool, pieces: dict[str, Any],
           from_step: int | None = None) -> GANState:
    check_same_config(config)  # before any collective whose path depends on the config
    primary = is_primary()
    run = _Run(config, workdir, pieces)
    state, start = run.restore_or_init(from_step)
    if run.evaluator is not None:
        # The reference statistics too, before the first step rather than at step eval.every;
        # after the restore, whose refusal is cheaper to learn first.
        run.evaluator.prepare()
    if primary:
        # Only after the restore accepted this config: a refused resume must leave the
        # workdir's config.json (which sampling and evaluation read) as it was.
        write_atomically(workdir / "config.json", to_json(config) + "\n")
        if run.resume_notes:
            # Printed, and kept in the workdir where a later reader of the run finds them.
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with appending(workdir / "resume.log") as f:
                f.writelines(f"{stamp} {note}\n" for note in run.resume_notes)
            for note in run.resume_notes:
                tqdm.write(f"note: {note}")
    total = config.train.steps
    host = run.parallel.to_host  # collective under FSDP: every process calls it
    metrics_path, eval_path = workdir / "metrics.jsonl", workdir / "eval.jsonl"
    if primary:
        _truncate_metrics(metrics_path, start)
        _truncate_metrics(eval_path, start)

    # None when the feature network cannot judge the dataset (``evaluator.evaluates``).
    evaluating = run.evaluator is not None
    if config.eval.every and not evaluating and primary:
        tqdm.write(f"note: no periodic evaluation: on {config.data.dataset} it needs "
                   "--set eval.features=inception:FILE (see docs/evaluation.md, 'Evaluating on a dataset')")
    board = TensorBoardLog(workdir / "tensorboard", enabled=primary and config.train.tensorboard, resume_step=start)
    if start == 0:
        board.text("config", "```\n" + to_json(config) + "\n```", 0)
        board.text("sample prompts", "\n\n".join(run.prompts), 0)
    elif run.resume_notes:
        board.text("resume", "\n\n".join(run.resume_notes), start)
    bar = tqdm(total=total, initial=start, disable=not (progress and primary), dynamic_ncols=True, unit="step")
    last_log, last_time = start, time.perf_counter()
    previous = None  # the last step's skip streak, read one step late so dispatch stays ahead
    batches = _Timed(run.pipeline.iterate(start, total))
    last_wait, step, stopping = 0.0, start, False
    stop = StopSignals(jax.process_count()).install()
    try:
        for step, batch in enumerate(_on_device_ahead(batches, run.parallel.put_batch), start=start + 1):
            state, metrics = run.step_fn(state, batch, run.program.frozen)
            bar.update(1)
            t = config.train
            _stop_after_skips(previous, step - 1, t.max_skips, run.checkpoints.latest_step(), host)
            previous = metrics["nonfinite_streak"]
            at_log = step % t.log_every == 0 or step == total
            at_sample = step % t.sample_every == 0 or step == total
            at_eval = evaluating and (step % config.eval.every == 0 or step == total)
            # An evaluation step is checkpointed too, before the evaluation: one that fails
            # loses no training.
            at_ckpt = step % t.checkpoint_every == 0 or step == total or at_eval
            # SIGTERM/SIGINT: this step is the last; it is checkpointed, not logged, so that
            # the resumed run's logs are those of an uninterrupted run.
            stopping = step < total and stop.should_stop(step)
            if at_log or at_ckpt or stopping:
                _stop_after_skips(previous, step, t.max_skips, run.checkpoints.latest_step(), host)
            if at_log or at_ckpt:
                values = {k: float(v) for k, v in host(metrics).items()}  # global: averaged over all devices
                now = time.perf_counter()
                values["steps_per_sec"] = (step - last_log) / max(now - last_time, 1e-9)
                # The share of the wall time the loop sat waiting for input: 0 when the
                # pipeline keeps ahead of the device.
                values["input_wait_fraction"] = (batches.waited - last_wait) / max(now - last_time, 1e-9)
                values.update(run.pipeline.stats_at(step))
                last_log, last_time, last_wait = step, now, batches.waited
                if primary:
                    _append_row(metrics_path, {"step": step, **values})
                board.scalars(step, values)  # with the values in effect: lr/*, beta2, ema_decay, ...
                bar.set_postfix(d=f"{values['d_loss']:.3f}", g=f"{values['g_loss']:.3f}")
            if at_ckpt or stopping:
                # Every process writes its shards; orbax coordinates the commit.
                run.checkpoints.save(step, run.parallel.canonical(state), run.pipeline.position(step), config)
            if at_sample or at_eval:
                single = host(state)
                if at_sample and primary:
                    board.image("samples", run.preview(single, f"step_{step:06d}"), step)
                if at_eval:
                    row = run.evaluate(single)  # every process computes its share
                    if primary:
                        _append_row(eval_path, row)
                        board.scalars(step, {k: v for k, v in row.items() if k != "step"}, prefix="eval/")
                        alignment = (f", alignment {100 * row['alignment_all']:.2f}%"
                                     if "alignment_all" in row else "")
                        tqdm.write(f"step {step}: FID {row['fid']:.4f}, KID {row['kid']:.6f}, IS {row['is']:.3f}"
                                   f"{alignment} (protocol {row['protocol_hash']})")
            if stopping:
                break
        run.checkpoints.wait()
        if stopping and primary:
            why = stop.received or "a signal to another process"
            tqdm.write(f"stopped by {why} after step {step} of {total}; checkpoint saved in "
                       f"{workdir / 'checkpoints'}; run the same command to resume")
        counts = {k.removeprefix("data/"): v for k, v in run.pipeline.stats_at(step).items() if v}
        if counts and primary:
            tqdm.write("data: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if primary:
            plots.plot_losses(metrics_path, workdir / "losses.png")
            plots.plot_eval(eval_path, workdir / "eval.png")
    finally:
        stop.restore()
        board.close()
        bar.close()
        run.checkpoints.close()
    return host(state)
