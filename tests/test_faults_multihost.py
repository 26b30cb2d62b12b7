"""Fault suite, multi-host agreement: processes of one run that disagree, or lose one of them,
stop together with one line each, never a hang or a traceback (docs/multihost.md).

Each multi-process case starts two ``train.py`` processes x 1 CPU device on 127.0.0.1 once;
the in-process cases play the other process through the exchange functions.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from faults import TALLY, Outcome, assert_nothing_lost, count_input, run_cli, snapshot
from PIL import Image
from test_multihost import ROOT, _env, _free_port

from jaxgan.data import make_source
from jaxgan.data.embeddings import EmbeddingCacheError, EmbeddingTable, embedding_table
from jaxgan.distributed import DisagreementError, check_same_config, flat_config
from jaxgan.presets import get_config
from jaxgan.text import load_text_encoder

TINY = ["--preset", "tiny", "--no-progress", "--set", "train.sample_every=1000"]
# A Python traceback, or the C++ check failure JAX's client aborts with when a peer is gone.
ABORT_MARKERS = ("Traceback (most recent call last)", "Check failure", "Terminating process")


def _start(workdir: Path, per_process: list[list[str]], envs: list[dict] | None = None) -> list[subprocess.Popen]:
    """``train.py`` as len(per_process) processes of one run, process i with extra flags per_process[i]."""
    port, n = _free_port(), len(per_process)
    count_input()
    return [subprocess.Popen([sys.executable, "train.py", "--workdir", str(workdir), *TINY, *flags,
                              "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n), "--process-id", str(i),
                              "--coordinator-timeout", "120"],
                             cwd=ROOT, env=_env(1) | {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1"} | (envs or [{}] * n)[i],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i, flags in enumerate(per_process)]


def _outcome(proc: subprocess.Popen, timeout: float) -> Outcome:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    if any(m in out + err for m in ABORT_MARKERS):
        TALLY.tracebacks += 1
        raise AssertionError(f"process printed a traceback or aborted:\n{err[-4000:]}")
    return Outcome(proc.returncode, out, err)


def _all_stop(procs: list[subprocess.Popen], timeout: float = 240) -> list[str]:
    """Every process exits with status 2 and one ``error:`` line; returns the lines."""
    outcomes = [_outcome(p, timeout) for p in procs]
    assert [o.code for o in outcomes] == [2] * len(procs), [o.err[-2000:] for o in outcomes]
    return [o.one_line_error() for o in outcomes]


def test_processes_with_different_configs_stop_naming_the_keys(tmp_path):
    lines = _all_stop(_start(tmp_path / "w", [[], ["--set", "train.g_lr=0.001", "--set", "model.width=16"]]))
    assert lines[0] == lines[1]
    assert "model.width (8 on process 0, 16 on process 1)" in lines[0]
    assert "train.g_lr (0.0002 on process 0, 0.001 on process 1)" in lines[0]
    assert not (tmp_path / "w" / "checkpoints").exists() and not (tmp_path / "w" / "config.json").exists()


def _folder(root: Path) -> Path:
    folder = root / "images"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16), (60 * i, 40, 90)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"picture {i}\n")
    return folder


def test_a_process_without_process_0s_cached_embeddings_stops_every_process(tmp_path):
    """Process 0's cache has the entry, process 1's (another $JAXGAN_CACHE) does not: before
    the agreement, process 0 read the cache while process 1 entered the encoding collectives."""
    overrides = [f"data.dataset={_folder(tmp_path)}", "data.workers=0", "train.batch_size=2"]
    config = get_config("tiny", overrides)
    encoder = load_text_encoder(config.text.encoder, config.text.max_length or None)
    embedding_table(encoder, make_source(config).all_captions(), tmp_path / "cache0" / "embeddings",
                    with_words=config.model.uses_word_attention)
    flags = [a for o in overrides for a in ("--set", o)]
    envs = [{"JAXGAN_CACHE": str(tmp_path / f"cache{i}")} for i in range(2)]
    lines = _all_stop(_start(tmp_path / "w", [flags, flags], envs))
    assert all("process 0 reads the caption embeddings from its cache but process(es) 1 do not have the entry"
               in line and "must be one directory every process shares" in line for line in lines), lines
    assert not list((tmp_path / "cache1").rglob("meta.json"))  # process 1 made no entry of its own


def test_when_a_process_is_killed_the_other_stops_within_a_bound(tmp_path):
    workdir = tmp_path / "w"
    procs = _start(workdir, [["--set", "train.steps=100000", "--set", "train.log_every=1",
                              "--set", "train.checkpoint_every=100000", "--heartbeat-timeout", "20"]] * 2)
    metrics, deadline = workdir / "metrics.jsonl", time.monotonic() + 400
    while not (metrics.is_file() and metrics.stat().st_size):  # process 0 logged a step: both are training
        assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].communicate()[1][-3000:]
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    procs[1].wait()
    outcome = _outcome(procs[0], timeout=90)
    waited = time.monotonic() - killed
    assert outcome.code == 2, outcome.err[-3000:]
    line = outcome.one_line_error()
    # Gloo's own first line says what it saw (on Linux: "Connection reset by peer").
    assert "process 0 lost contact with another process of the run" in line and "Gloo" in line, line
    # Gloo reports the closed connection at once; the bound is what a user waits for.
    assert waited < 60, waited


def test_an_error_on_process_0_alone_stops_both_within_a_bound(tmp_path):
    """Process 0 finds the workdir locked by a live run while process 1 waits for it in the
    first collective: before, both hung for 5 minutes at JAX's shutdown barrier and aborted."""
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}))
    before = snapshot(workdir, skip=())
    start = time.monotonic()
    first, second = _start(workdir, [[], []])
    outcome = _outcome(first, timeout=120)
    assert outcome.code == 2 and f"pid {os.getpid()}" in outcome.one_line_error()
    # Process 1 loses the coordination service with process 0: JAX's client may add its own
    # C++ lines to process 1's one line (docs/multihost.md), but no Python traceback.
    _, err = second.communicate(timeout=60)
    assert second.returncode != 0 and "error: process 1 lost contact with another process" in err, err[-3000:]
    assert "Traceback (most recent call last)" not in err
    assert time.monotonic() - start < 120
    assert_nothing_lost(before, snapshot(workdir, skip=()))


# In-process cases: this process plays process 1, the exchange returns what process 0 sent.

def _as_process_1(reference: dict, mine_config) -> None:
    check_same_config(mine_config, exchange=(lambda mine: reference, lambda diff: [{}, diff]))


@pytest.mark.parametrize("overrides, named", [
    (["train.d_lr=1e-3"], "train.d_lr (0.0002 on process 0, 0.001 on process 1)"),
    (["model.arch=dfgan"], "model.arch (\"dcgan\" on process 0, \"dfgan\" on process 1)"),
    (["data.dataset=/data/birds"], "data.dataset (\"shapes\" on process 0, \"/data/birds\" on process 1)"),
])
def test_config_disagreement_names_each_key_with_both_values(overrides, named):
    count_input()
    reference = flat_config(get_config("default"))
    with pytest.raises(DisagreementError) as e:
        _as_process_1(reference, get_config("default", overrides))
    message = str(e.value)
    assert "\n" not in message and named in message, message
    _as_process_1(reference, get_config("default"))  # the same config passes


@pytest.fixture(scope="module")
def encoder():
    return load_text_encoder("shapes")


CAPTIONS = [f"a red circle number {i}" for i in range(5)]


def test_assembly_refuses_a_missing_process_part_and_leaves_no_entry(tmp_path, encoder):
    """Process 1 wrote its share where process 0 cannot see it (caches not shared)."""
    count_input()
    with pytest.raises(EmbeddingCacheError, match=r"process 1 left no part in .*expected 3 of the 5 captions' rows"):
        embedding_table(encoder, CAPTIONS, tmp_path, process_index=0, process_count=2)
    assert not list(tmp_path.rglob("*.npy")) and not list(tmp_path.rglob("meta.json"))


def test_an_entry_whose_rows_do_not_match_its_captions_is_refused(tmp_path, encoder):
    count_input()
    table = embedding_table(encoder, CAPTIONS, tmp_path)
    np.save(table.directory / "sentence.npy", np.asarray(table.sentence)[:-1])
    with pytest.raises(EmbeddingCacheError, match=r"has \[4\] rows for 5 captions; delete the entry"):
        EmbeddingTable(table.directory)


def test_a_heartbeat_timeout_below_one_second_is_one_line(tmp_path):
    outcome = run_cli(["train", "--workdir", str(tmp_path / "w"), "--heartbeat-timeout", "0"])
    assert outcome.code == 2
    assert "--heartbeat-timeout must be at least 1 second, got 0" in outcome.one_line_error()
    assert not (tmp_path / "w").exists()
