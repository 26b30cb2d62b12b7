"""Multi-process training on JAX's distributed runtime, proven on localhost.

``train.py`` runs as 2 processes x 2 fake CPU devices (gloo collectives, 127.0.0.1 only),
the same code path a TPU pod or a GPU cluster takes; its checkpoints are compared with
single-process runs of the same config. The test process itself has 8 fake devices.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import tree_max_abs_diff

from jaxgan.checkpoint import Checkpointer
from jaxgan.presets import get_config
from jaxgan.program import build_train_program
from jaxgan.text import load_text_encoder
from jaxgan.train import train_and_evaluate

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4
# The shapes default, a few steps, no periodic evaluation or samples; a checkpoint every 2 steps.
# Plain SGD: two layouts differ only in the order of their sums, and SGD's update is linear in
# the gradient, so that difference stays at rounding size; Adam would turn a near-zero gradient's
# rounding noise into a step of about the learning rate (docs/design.md, "Tests that compare
# layouts"). A learning rate 10x the default makes the params move far beyond the bound.
LAYOUT_OPTIMIZER = ["train.optimizer=sgd", "train.g_lr=2e-3", "train.d_lr=2e-3"]
OVERRIDES = [f"train.steps={STEPS}", "train.checkpoint_every=2", "train.log_every=1",
             "train.sample_every=1000", "eval.every=0", *LAYOUT_OPTIMIZER]
# Every param, EMA param and BatchNorm statistic of two layouts of one SGD run agrees to this
# (measured on an AMD EPYC: params within 6e-8, statistics within 1.2e-7, one float32 ulp at 1),
# while training moves the params by more than MOVED.
SAME = 1e-5
MOVED = 20 * SAME


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices_per_process: int) -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}"}


def _launch(workdir: Path, overrides: list[str], processes: int = 2, timeout: float = 300,
            devices: int = 2) -> list[str]:
    """Runs train.py as ``processes`` processes x ``devices`` devices on 127.0.0.1; returns their stdouts."""
    port = _free_port()
    sets = [a for o in overrides for a in ("--set", o)]
    procs = [subprocess.Popen([sys.executable, "train.py", "--workdir", str(workdir), "--no-progress", *sets,
                               "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes),
                               "--process-id", str(i), "--coordinator-timeout", "60"],
                              cwd=ROOT, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(processes)]
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outputs]


def _checkpoint(workdir: Path, config, step: int | None = None):
    """The single-copy state of a workdir's checkpoint, on the host."""
    encoder = load_text_encoder(config.text.encoder)
    program = build_train_program(get_config("default", [*OVERRIDES, "train.num_devices=1"]))
    abstract = program.abstract_state(encoder.sentence_dim, encoder.word_dim)
    ckpt = Checkpointer(workdir / "checkpoints", asynchronous=False)
    try:
        state, _ = ckpt.restore(abstract, config, step)
    finally:
        ckpt.close()
    return jax.device_get(state)


def _trees(state):
    return (state.g_params, state.d_params, state.ema_params, state.g_stats, state.d_stats)


def _fresh(config):
    """The state a run of ``config`` starts from (init is deterministic in the seed)."""
    encoder = load_text_encoder(config.text.encoder)
    return jax.device_get(build_train_program(config).fresh_state(encoder.sentence_dim, encoder.word_dim))


def _assert_same_training(a, b, fresh) -> None:
    """Two layouts of one SGD run: params, EMA and BatchNorm statistics agree to float32
    rounding, and training moved the params far beyond that, so the agreement is not the
    trivial kind. (The optimizer states hold only the learning rates under SGD.)"""
    assert tree_max_abs_diff(_trees(a), _trees(b)) < SAME
    assert tree_max_abs_diff((a.g_opt_state, a.d_opt_state), (b.g_opt_state, b.d_opt_state)) < SAME
    assert tree_max_abs_diff((a.g_params, a.d_params), (fresh.g_params, fresh.d_params)) > MOVED


EVALUATION = [f"eval.every={STEPS}", "eval.num_samples=64"]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """The reference: the same config on one device in this process, with its logs."""
    workdir = tmp_path_factory.mktemp("one")
    config = get_config("default", [*OVERRIDES, *EVALUATION, "train.num_devices=1"])
    return jax.device_get(train_and_evaluate(config, workdir, progress=False)), workdir


@pytest.mark.parametrize("parallel", ["jit", "pmap"])
def test_two_processes_train_what_one_process_trains(tmp_path, parallel, one_device):
    one, one_dir = one_device
    overrides = [*OVERRIDES, f"train.parallel={parallel}"]
    if parallel == "jit":  # and the periodic evaluation, sharded over both processes
        overrides += EVALUATION
    stdouts = _launch(tmp_path / "multi", overrides)
    # Only process 0 reports and writes the logs.
    assert [f"trained to step {STEPS}" in out for out in stdouts] == [True, False]
    rows = (tmp_path / "multi" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == STEPS

    config = get_config("default", overrides)
    multi = _checkpoint(tmp_path / "multi", config)
    assert int(multi.step) == int(one.step) == STEPS
    # Same global batch, same noise, averaged gradients: the params agree to float32 rounding.
    _assert_same_training(multi, one, _fresh(config))
    # And the logged (global) losses are those of the single-device run.
    logged = [json.loads(r)["d_loss"] for r in rows]
    single = [json.loads(r)["d_loss"] for r in (one_dir / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(logged, single, rtol=1e-4)
    if parallel == "jit":
        (multi_eval,), (one_eval,) = [[json.loads(r) for r in (d / "eval.jsonl").read_text().splitlines()]
                                      for d in (tmp_path / "multi", one_dir)]
        assert multi_eval["protocol_hash"] == one_eval["protocol_hash"]
        for key in ("fid", "kid", "alignment_all", "precision", "recall"):
            assert multi_eval[key] == pytest.approx(one_eval[key], rel=1e-3, abs=1e-6), key

    if parallel == "jit":
        # Resume the 2-process run's step-2 checkpoint in this one process on one device:
        # it continues to the same result as the uninterrupted run.
        resumed_dir = tmp_path / "resumed"
        shutil.copytree(tmp_path / "multi", resumed_dir)
        shutil.rmtree(resumed_dir / "checkpoints" / str(STEPS))
        # Without the evaluation (eval.* may change on a resume): the resumed state is what is compared.
        resumed_config = get_config("default", [*OVERRIDES, f"train.parallel={parallel}", "train.num_devices=1"])
        resumed = jax.device_get(train_and_evaluate(resumed_config, resumed_dir, progress=False))
        assert int(resumed.step) == STEPS
        _assert_same_training(resumed, multi, _fresh(config))


def test_an_unreachable_coordinator_fails_in_bounded_time_naming_the_address(tmp_path):
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "train.py", "--workdir", str(tmp_path / "w"), "--coordinator", address,
                           "--num-processes", "2", "--process-id", "1", "--coordinator-timeout", "3"],
                          cwd=ROOT, env=_env(1), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: cannot reach the coordinator at {address} within 3 s (Connection refused); is process 0 "
        "running and is the address reachable from this host?"]
    assert time.monotonic() - start < 60
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("flags, message", [
    (["--coordinator", "127.0.0.1:1234"], "--coordinator, --num-processes and --process-id go together"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"],
     r"--process-id 2 must be in \[0, 2\) for --num-processes 2"),
    (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"],
     "--coordinator 'localhost' is not HOST:PORT"),
])
def test_inconsistent_multi_process_flags_are_one_line_errors(tmp_path, capsys, flags, message):
    from jaxgan import cli

    assert cli.train_main(["--workdir", str(tmp_path / "w"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not (tmp_path / "w").exists()
