"""Fault suite, resume: changed configs, corrupt checkpoints, --from-step, foreign workdirs.

One tiny run of 4 steps (checkpoints 2 and 4) is shared; every case works on a copy of it and
checks the promise of docs/training.md: a one-line error or a notice, never a traceback, and
no file lost (a checkpoint set aside is moved, byte for byte, never deleted).
"""

import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from faults import assert_nothing_lost, run_cli, snapshot

from jaxgan import cli
from jaxgan.presets import get_config
from jaxgan.train import train_and_evaluate

STEPS = ["--set", "train.num_devices=1", "--set", "train.checkpoint_every=2", "--set", "train.log_every=1",
         "--set", "train.sample_every=2", "--set", "train.tensorboard=false"]
ASIDE = "checkpoints_set_aside"
LOGS = ("metrics.jsonl", "eval.jsonl", "losses.png", "eval.png", "samples/", "resume.log", "config.json")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run of 4 steps with checkpoints at 2 and 4 (compiled without XLA's passes)."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    workdir = tmp_path_factory.mktemp("resume") / "run"
    try:
        assert cli.train_main(["--workdir", str(workdir), "--preset", "tiny", "--steps", "4", "--no-progress",
                               *STEPS]) == 0
        yield workdir
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


def _copy(run: Path, tmp_path: Path) -> Path:
    workdir = tmp_path / "run"
    shutil.copytree(run, workdir)
    return workdir


def _steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _moved(before: dict[str, str], step: int, to: str) -> dict[str, str]:
    """``before`` with checkpoint ``step``'s files at their set-aside paths."""
    prefix = f"checkpoints/{step}/"
    return {(f"{ASIDE}/{to}/" + k.removeprefix(prefix) if k.startswith(prefix) else k): v
            for k, v in before.items()}


def _truncate(checkpoint: Path) -> None:
    """Cuts the largest array file in half: a copy or a disk that gave out mid-file."""
    biggest = max((f for f in (checkpoint / "state").rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])


def _garble(checkpoint: Path) -> None:
    """Every file of the checkpoint overwritten with random bytes of the same length."""
    rng = np.random.default_rng(0)
    for f in checkpoint.rglob("*"):
        if f.is_file():
            f.write_bytes(rng.integers(0, 256, max(1, f.stat().st_size), dtype=np.uint8).tobytes())


@pytest.mark.parametrize("damage", [_truncate, _garble], ids=["truncated", "garbage"])
def test_an_unreadable_latest_checkpoint_falls_back_and_is_kept(run, tmp_path, damage):
    workdir = _copy(run, tmp_path)
    damage(workdir / "checkpoints" / "4")
    before = snapshot(workdir)
    # Sampling only reads: it names the damaged checkpoint and the others, and moves nothing.
    sample = run_cli(["sample", "--workdir", str(workdir), "--prompt", "a red circle"])
    assert sample.code == 2 and "checkpoints/4 is corrupt" in sample.one_line_error()
    assert "other checkpoints: 2 (choose one with --step)" in sample.err
    assert_nothing_lost(before, snapshot(workdir))
    # Trains on past the set-aside step: the new checkpoint 4 must not meet the damaged one.
    outcome = run_cli(["train", "--workdir", str(workdir), "--steps", "4", "--no-progress"])
    assert outcome.code == 0, outcome.err
    aside = workdir / ASIDE / "4-unreadable"
    assert "skipped checkpoint 4, which cannot be read" in outcome.out and str(aside) in outcome.out
    assert _steps(workdir) == [2, 4]
    assert_nothing_lost(_moved(before, 4, "4-unreadable"), snapshot(workdir), may_change=LOGS)
    assert "skipped checkpoint 4" in (workdir / "resume.log").read_text()
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_all_checkpoints_unreadable_is_one_line_and_moves_nothing(run, tmp_path):
    workdir = _copy(run, tmp_path)
    for step in (2, 4):
        _garble(workdir / "checkpoints" / str(step))
    before = snapshot(workdir)
    outcome = run_cli(["train", "--workdir", str(workdir), "--steps", "6", "--no-progress"])
    assert outcome.code == 2
    line = outcome.one_line_error()
    assert "can be read, nothing was moved or deleted" in line and "checkpoints/4" in line and "checkpoints/2" in line
    assert_nothing_lost(before, snapshot(workdir))
    assert not (workdir / ASIDE).exists()


def test_from_step_resumes_an_older_checkpoint_and_keeps_the_newer(run, tmp_path):
    workdir = _copy(run, tmp_path)
    before = snapshot(workdir)
    outcome = run_cli(["train", "--workdir", str(workdir), "--from-step", "2", "--steps", "3", "--no-progress"])
    assert outcome.code == 0, outcome.err
    assert "resuming from step 2: the newer checkpoints 4 were moved to" in outcome.out
    assert _steps(workdir) == [2, 3]
    assert_nothing_lost(_moved(before, 4, "4-newer-than-2"), snapshot(workdir), may_change=LOGS)
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


def test_from_step_to_a_missing_step_lists_the_available_ones(run, tmp_path):
    workdir = _copy(run, tmp_path)
    before = snapshot(workdir)
    outcome = run_cli(["train", "--workdir", str(workdir), "--from-step", "3", "--no-progress"])
    assert outcome.code == 2
    assert "no checkpoint at step 3" in outcome.one_line_error() and "available steps: 2, 4" in outcome.err
    assert_nothing_lost(before, snapshot(workdir))


def test_a_refused_resume_keeps_config_json_and_sampling(run, tmp_path):
    # Another text encoder of the same width (here the shipped one under another name): the
    # networks would read other embeddings, which resumed without a word before.
    workdir = _copy(run, tmp_path)
    encoder = tmp_path / "encoder"
    shutil.copytree(Path(cli.__file__).parent / "assets" / "shapes_text_encoder", encoder)
    before = snapshot(workdir)
    outcome = run_cli(["train", "--workdir", str(workdir), "--steps", "6", "--no-progress",
                       "--set", f"text.encoder={encoder}"])
    assert outcome.code == 2
    assert f"text.encoder: checkpoint 'shapes' vs config '{encoder}'" in outcome.one_line_error()
    assert_nothing_lost(before, snapshot(workdir))
    out = tmp_path / "samples"
    sample = run_cli(["sample", "--workdir", str(workdir), "--prompt", "a red circle", "--num-per-prompt", "1",
                      "--out", str(out)])
    assert sample.code == 0 and (out / "grid.png").exists()


def test_a_changed_learning_rate_reaches_the_state_from_the_restored_step(run, tmp_path):
    workdir = _copy(run, tmp_path)
    overrides = ["train.num_devices=1", "train.checkpoint_every=2", "train.log_every=1", "train.sample_every=2",
                 "train.tensorboard=false", "train.steps=5", "train.g_lr=5e-5", "train.ema_decay=0.9",
                 "train.kl_weight=0.5"]
    state = train_and_evaluate(get_config("tiny", overrides), workdir, progress=False)
    assert int(state.step) == 5
    assert np.float32(state.g_opt_state.hyperparams["learning_rate"]) == np.float32(5e-5)
    assert np.float32(state.d_opt_state.hyperparams["learning_rate"]) == np.float32(2e-4)
    assert np.float32(state.hparams["ema_decay"]) == np.float32(0.9)
    log = (workdir / "resume.log").read_text()
    assert "train.g_lr: 0.0002 -> 5e-05 (applied to the restored state)" in log
    assert "train.ema_decay: 0.998 -> 0.9 (applied" in log and "train.steps: 4 -> 5" in log
    # The tiny model has no conditioning augmentation, so its KL weight is 0 in the state.
    assert "train.kl_weight: 0.015625 -> 0.5 (no effect" in log and float(state.hparams["kl_weight"]) == 0.0


@pytest.mark.parametrize("preset", [["--preset", "tiny"], []], ids=["preset", "no-preset"])
def test_a_new_run_in_a_folder_that_is_not_a_workdir_is_refused(tmp_path, preset):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("\\documentclass{article}\n")
    os.symlink(home / "thesis.tex", home / "link")
    before = snapshot(home)
    outcome = run_cli(["train", "--workdir", str(home), *preset, "--steps", "1", "--no-progress"])
    assert outcome.code == 2
    assert "is not empty" in outcome.one_line_error() and "not a jaxgan workdir" in outcome.err
    assert_nothing_lost(before, snapshot(home))
    assert sorted(p.name for p in home.iterdir()) == ["link", "thesis.tex"]
