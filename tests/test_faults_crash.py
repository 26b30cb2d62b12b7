"""Fault suite, crashes: SIGKILL inside a checkpoint save or a metrics write, a full disk during
a save, a second run on a locked workdir (issue 23, item 8).

Every case ends in a resume (or a refusal) that loses nothing: an interrupted run, resumed,
ends bitwise equal to ``straight``, the same run never interrupted. The kills are real SIGKILLs
of a ``jaxgan train`` subprocess (no handler, no ``finally`` runs); where in the run they land
is arranged by ``DRIVER``, which runs the command with one orbax or jaxgan write slowed down
or cut short.
"""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest
from faults import TALLY, assert_nothing_lost, count_input, run_cli, snapshot
from helpers import trees_bitwise_equal
from orbax.checkpoint._src.path import async_path

from jaxgan.presets import get_config
from jaxgan.text import load_text_encoder
from jaxgan.train import train_and_evaluate
from jaxgan.workdir import WorkdirLock, restore_state

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ["train.num_devices=1", "train.steps=6", "train.checkpoint_every=2", "train.log_every=1",
             "train.sample_every=1000"]

# Runs ``jaxgan ARGV`` with one write changed, chosen by MODE:
#   save-4: orbax's lowest Python write (``async_path.write_text``: the array metadata, then
#     the commit file) blocks inside step 4's save, after its arrays are written, until the
#     test kills the process; MARKER appears when it blocks.
#   metrics-5: metrics.jsonl's row of step 5 is written half, flushed, and the process sends
#     itself SIGKILL. A row is one write() call, which a kill from outside cannot split.
DRIVER = """
import asyncio, json, os, signal, sys
from pathlib import Path
from orbax.checkpoint._src.path import async_path
from jaxgan import cli, train

mode, marker, argv = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
write_text, append_row = async_path.write_text, train._append_row

async def blocking_write_text(path, text):
    if "4.orbax-checkpoint-tmp" in str(path):
        marker.write_text(str(path))
        await asyncio.sleep(600)
    return await write_text(path, text)

def torn_append_row(path, row):
    if path.name == "metrics.jsonl" and row["step"] == 5:
        line = json.dumps(row) + "\\n"
        with open(path, "a") as f:
            f.write(line[: len(line) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    append_row(path, row)

if mode == "save-4":
    async_path.write_text = blocking_write_text
else:
    train._append_row = torn_append_row
sys.exit(cli.main(argv))
"""


def _train_argv(workdir: Path, overrides=OVERRIDES) -> list[str]:
    return ["train", "--workdir", str(workdir), "--preset", "tiny", "--no-progress",
            *[a for o in overrides for a in ("--set", o)]]


def _start(mode: str, marker: Path, workdir: Path) -> subprocess.Popen:
    """``DRIVER`` in a subprocess, counted as one input tried."""
    count_input()
    # The test process's XLA flags (8 host devices): XLA's CPU code, hence the bits, depends on them.
    return subprocess.Popen([sys.executable, "-c", DRIVER, mode, str(marker), *_train_argv(workdir)], cwd=ROOT,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _killed(proc: subprocess.Popen) -> str:
    """Waits for ``proc`` to die of SIGKILL; returns what it printed (a traceback is counted)."""
    out, err = proc.communicate(timeout=120)
    if "Traceback (most recent call last)" in out + err:
        TALLY.tracebacks += 1
        raise AssertionError(f"the killed run printed a traceback:\n{err[-4000:]}")
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    return out + err


def _steps(directory: Path) -> list[int]:
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _logged_steps(workdir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _final_state(workdir: Path, step: int | None = None):
    config = get_config("tiny", OVERRIDES)
    encoder = load_text_encoder(config.text.encoder, config.text.max_length or None)
    return jax.device_get(restore_state(config, workdir, encoder, step))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run: checkpoints 2, 4, 6 and its final state."""
    workdir = tmp_path_factory.mktemp("straight")
    train_and_evaluate(get_config("tiny", OVERRIDES), workdir, progress=False)
    return workdir, _final_state(workdir)


def test_sigkill_inside_an_async_checkpoint_save_then_resume_is_bitwise_exact(straight, tmp_path):
    workdir, marker = tmp_path / "run", tmp_path / "blocked"
    proc = _start("save-4", marker, workdir)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        # The kill lands inside step 4's save: its temporary directory holds the arrays, no commit.
        assert list((workdir / "checkpoints").glob("4.orbax-checkpoint-tmp*"))
        proc.kill()
        _killed(proc)
    finally:
        proc.kill()
    checkpoints = workdir / "checkpoints"
    assert _steps(checkpoints) == [2]  # the half-written step 4 is no checkpoint
    before = snapshot(checkpoints / "2")

    outcome = run_cli(_train_argv(workdir))
    assert outcome.code == 0, outcome.err
    assert _steps(checkpoints) == [2, 4, 6] and not list(checkpoints.glob("*.orbax-checkpoint-tmp*"))
    assert_nothing_lost(before, snapshot(checkpoints / "2"))
    assert _logged_steps(workdir) == [1, 2, 3, 4, 5, 6]
    assert trees_bitwise_equal(_final_state(workdir), straight[1])


def test_sigkill_inside_a_metrics_write_then_resume_drops_the_partial_line(straight, tmp_path):
    workdir = tmp_path / "run"
    _killed(_start("metrics-5", tmp_path / "unused", workdir))
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines[:-1]] == [1, 2, 3, 4]
    assert lines[-1].startswith('{"step": 5') and not lines[-1].endswith("}")  # the torn row
    # Step 4's asynchronous save may have been in flight at the kill, and is then no checkpoint:
    # its temporary directory is replaced when step 4 is saved again.
    assert _steps(workdir / "checkpoints") in ([2], [2, 4])
    before = {p: d for p, d in snapshot(workdir).items() if ".orbax-checkpoint-tmp" not in p}

    outcome = run_cli(_train_argv(workdir))
    assert outcome.code == 0, outcome.err
    assert f"dropped a partial last line of {workdir / 'metrics.jsonl'}" in outcome.out
    assert _logged_steps(workdir) == [1, 2, 3, 4, 5, 6]
    assert_nothing_lost(before, snapshot(workdir), may_change=("metrics.jsonl", "tensorboard"))
    assert trees_bitwise_equal(_final_state(workdir), straight[1])


# Orbax's save threads log the failure, and tensorstore's callbacks find the aborted save's event
# loop closed: neither may print a traceback (an unraisable exception becomes this warning).
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(straight, tmp_path, monkeypatch,
                                                                                    caplog):
    workdir = tmp_path / "run"
    shutil.copytree(straight[0], workdir)  # a finished run, resumed for 4 more steps
    before = snapshot(workdir)
    write_text = async_path.write_text

    async def full_disk(path, text):
        # Orbax's lowest Python write, in its background save thread: the array metadata of
        # the state item, then the commit file. Step 8's save fails there as on a full disk.
        if "8.orbax-checkpoint-tmp" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return await write_text(path, text)

    monkeypatch.setattr(async_path, "write_text", full_disk)
    outcome = run_cli(["train", "--workdir", str(workdir), "--steps", "10", "--no-progress"])
    line = outcome.one_line_error()
    assert outcome.code == 2
    assert "checkpoint 8 could not be written" in line and "the disk is full" in line
    assert "the newest complete checkpoint is step 6" in line
    assert any("8.orbax-checkpoint-tmp" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.exc_info], "orbax logged a traceback"
    # The resume rewrote config.json (steps=10) and appended rows 7-10: nothing else changed.
    assert_nothing_lost(before, snapshot(workdir), may_change=("metrics.jsonl", "tensorboard", "config.json"))
    assert _steps(workdir / "checkpoints") == [2, 4, 6]
    assert trees_bitwise_equal(_final_state(workdir), straight[1])

    # Space freed: the same command resumes from step 6, past the failed save's leftovers.
    monkeypatch.undo()
    assert run_cli(["train", "--workdir", str(workdir), "--steps", "10", "--no-progress"]).code == 0
    assert _steps(workdir / "checkpoints") == [6, 8, 10]
    assert _logged_steps(workdir) == list(range(1, 11))


def test_a_second_run_on_a_workdir_in_use_is_refused_naming_the_holder(straight):
    workdir = straight[0]
    before = snapshot(workdir)
    with WorkdirLock(workdir):  # what the first run holds while it trains
        outcome = run_cli(["train", "--workdir", str(workdir), "--steps", "8", "--no-progress"])
    assert outcome.code == 2
    assert f"{workdir} is in use by pid {os.getpid()} on {socket.gethostname()}" in outcome.one_line_error()
    assert_nothing_lost(before, snapshot(workdir))


def test_bad_evaluation_settings_on_a_resume_change_nothing(straight, tmp_path):
    # Checked before config.json is rewritten and before any step: the finished run is as it was.
    workdir = straight[0]
    before = snapshot(workdir)
    outcome = run_cli(["train", "--workdir", str(workdir), "--steps", "8", "--no-progress",
                       "--set", "eval.every=1", "--set", "eval.num_samples=64",
                       "--set", f"eval.clip={tmp_path / 'no-clip'}"])
    assert outcome.code == 2 and "no-clip does not exist" in outcome.one_line_error()
    assert_nothing_lost(before, snapshot(workdir))
