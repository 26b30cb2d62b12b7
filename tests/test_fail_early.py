"""Fail early: what a run's evaluation needs is built and checked before the first step, and an
evaluation step is checkpointed before it evaluates (issue 23, item 4).

Every case runs ``jaxgan train`` through the fault suite's counters (``tests/faults.py``).
"""

import json

import pytest
from faults import run_cli

from jaxgan.data.source import DataError
from jaxgan.evaluator import Evaluator, protocol_for
from jaxgan.metrics.features import load_feature_network
from jaxgan.metrics.protocol import default_cache_dir, reference_path
from jaxgan.presets import get_config
from jaxgan.text import load_text_encoder
from jaxgan.workdir import restore_state

EVALUATING = ["train.num_devices=1", "train.steps=2", "train.log_every=1", "eval.every=1", "eval.num_samples=64"]


def _train(workdir, overrides):
    return run_cli(["train", "--workdir", str(workdir), "--preset", "tiny", "--no-progress",
                    *[a for o in overrides for a in ("--set", o)]])


def _garbage_features_file(tmp_path, monkeypatch):
    bad = tmp_path / "inception.safetensors"
    bad.write_bytes(b"not a weights file")
    return [f"eval.features=inception:{bad}"], "inception.safetensors is not a readable safetensors file"


def _two_reference_images(tmp_path, monkeypatch):
    return ["eval.num_reference=2"], "pr_k=3 needs more than 3 samples and reference images"


def _missing_clip_model(tmp_path, monkeypatch):
    # Before: the CLIP model was first loaded at the first evaluation, after eval.every steps.
    return [f"eval.clip={tmp_path / 'no-clip'}"], "no-clip does not exist"


def _corrupt_reference_statistics(tmp_path, monkeypatch):
    # Before: read at the first evaluation, and a broken file was a ValueError traceback there.
    monkeypatch.setenv("JAXGAN_CACHE", str(tmp_path / "cache"))
    protocol = protocol_for(get_config("tiny", EVALUATING))
    spec = protocol.reference_spec(load_feature_network(protocol.features).identity)
    path = reference_path(default_cache_dir(), spec)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 half of a zip file")
    return [], f"reference statistics {path} are unreadable"


@pytest.mark.parametrize("setup", [_garbage_features_file, _two_reference_images, _missing_clip_model,
                                   _corrupt_reference_statistics])
def test_bad_evaluation_input_stops_the_run_before_its_first_step(setup, tmp_path, monkeypatch):
    overrides, message = setup(tmp_path, monkeypatch)
    workdir = tmp_path / "run"
    outcome = _train(workdir, EVALUATING + overrides)
    assert outcome.code == 2 and message in outcome.one_line_error()
    # Nothing was trained, so nothing is lost, and a fixed command starts from step 0.
    assert not (workdir / "metrics.jsonl").exists()
    assert not (workdir / "checkpoints").exists() or not any((workdir / "checkpoints").iterdir())


def test_an_evaluation_that_fails_keeps_the_checkpoint_of_its_step(tmp_path, monkeypatch):
    def fails(self, state):
        raise DataError("image 7 of the evaluation split is truncated")

    # The evaluation fails before it needs reference statistics: none are computed.
    monkeypatch.setattr(Evaluator, "prepare", lambda self: None)
    monkeypatch.setattr(Evaluator, "evaluate_state", fails)
    # Step 2 evaluates but is no multiple of checkpoint_every: it is checkpointed for the evaluation.
    overrides = ["train.num_devices=1", "train.steps=4", "train.checkpoint_every=3", "train.log_every=1",
                 "eval.every=2", "eval.num_samples=64"]
    workdir = tmp_path / "run"
    outcome = _train(workdir, overrides)
    line = outcome.one_line_error()
    assert outcome.code == 2
    assert "evaluation at step 2 failed: image 7 of the evaluation split is truncated" in line
    assert "checkpoint 2 is saved" in line and f"jaxgan eval --workdir {workdir} --step 2" in line
    config = get_config("tiny", overrides)
    state = restore_state(config, workdir, load_text_encoder(config.text.encoder, config.text.max_length or None))
    assert int(state.step) == 2
    assert [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()] == [1, 2]
