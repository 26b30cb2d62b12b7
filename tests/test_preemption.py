"""Preemption-safe stops: SIGTERM mid-run checkpoints the current step; a re-run resumes bitwise."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest
from helpers import trees_bitwise_equal

from jaxgan import cli
from jaxgan.preemption import StopSignals
from jaxgan.presets import get_config
from jaxgan.train import train_and_evaluate

ROOT = Path(__file__).resolve().parents[1]
STEPS = 120
OVERRIDES = ["train.num_devices=1", f"train.steps={STEPS}", "train.log_every=10", "train.checkpoint_every=1000",
             "train.sample_every=1000"]


def test_a_signal_sets_the_flag_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        assert not stop.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == "SIGTERM" and stop.should_stop(2)
    assert signal.getsignal(signal.SIGTERM) is before


def _train_args(workdir: Path) -> list[str]:
    sets = [a for o in OVERRIDES for a in ("--set", o)]
    return ["--workdir", str(workdir), "--preset", "tiny", "--no-progress", *sets]


def _logged_steps(workdir: Path) -> list[int]:
    path = workdir / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def test_sigterm_checkpoints_the_current_step_and_the_rerun_ends_bitwise_equal(tmp_path):
    workdir = tmp_path / "preempted"
    # The test process's XLA flags (8 host devices): XLA's CPU code, hence the bits, depends on them.
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, "train.py", *_train_args(workdir)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not _logged_steps(workdir) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be signalled"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    stopped = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(stopped) == 1 and 10 <= stopped[0] < STEPS  # the step in flight, not the end
    assert f"stopped by SIGTERM after step {stopped[0]} of {STEPS}" in out + err

    # The re-run reads only what the signalled process left on disk, so it runs in this process:
    # a second interpreter would add its start-up and compile, not coverage.
    assert cli.train_main(_train_args(workdir)) == 0
    straight = train_and_evaluate(get_config("tiny", OVERRIDES), tmp_path / "straight", progress=False)
    from test_train import _everything

    resumed = _restore(workdir, get_config("tiny", OVERRIDES))
    assert int(resumed.step) == STEPS
    assert trees_bitwise_equal(_everything(jax.device_get(straight)), _everything(resumed))
    # The logs read as if the run had never stopped.
    assert _logged_steps(workdir) == _logged_steps(tmp_path / "straight") == list(range(10, STEPS + 1, 10))


def _restore(workdir, config):
    from jaxgan.checkpoint import Checkpointer
    from jaxgan.program import build_train_program
    from jaxgan.text import load_text_encoder

    encoder = load_text_encoder(config.text.encoder)
    abstract = build_train_program(config).abstract_state(encoder.sentence_dim, encoder.word_dim)
    checkpoints = Checkpointer(workdir / "checkpoints", asynchronous=False)
    try:
        state, _ = checkpoints.restore(abstract, config)
    finally:
        checkpoints.close()
    return jax.device_get(state)


@pytest.mark.parametrize("received, expected", [(None, False), ("SIGTERM", True)])
def test_a_single_process_checks_every_step(received, expected):
    stop = StopSignals(process_count=1, check_every=10)
    stop.received = received
    assert stop.should_stop(3) is expected
