"""Resume rules: how each config field is compared with a checkpoint's, and new-run workdirs."""

import dataclasses
import re
from pathlib import Path

import pytest

from jaxgan.checkpoint import APPLY, NOTE, REFUSE, RESUME_RULES, compare_configs, resume_rule
from jaxgan.config import flat_fields, to_dict
from jaxgan.models import ARCHITECTURES
from jaxgan.presets import get_config
from jaxgan.train import train_and_evaluate
from jaxgan.workdir import WorkdirError, check_new_workdir, resolve_config


def test_every_config_field_has_a_resume_rule():
    # A field added later must be decided on (refused by default), not fall through silently.
    keys = set()
    for arch in ARCHITECTURES:
        keys |= set(flat_fields(get_config("tiny", [f"model.arch={arch}"])))
    undecided = sorted(k for k in keys if k not in RESUME_RULES and k.partition(".")[0] + "." not in RESUME_RULES)
    assert not undecided, f"add these to checkpoint.RESUME_RULES: {undecided}"
    assert set(RESUME_RULES.values()) == {REFUSE, APPLY, NOTE}


@pytest.mark.parametrize("override, rule", [
    ("model.width=16", REFUSE), ("text.max_length=8", REFUSE), ("data.seed=1", REFUSE),
    ("train.batch_size=8", REFUSE), ("train.loss=hinge", REFUSE), ("train.beta2=0.99", REFUSE),
    ("train.g_lr=1e-4", APPLY), ("train.penalty_weight=3", APPLY), ("train.kl_weight=0.5", APPLY),
    ("train.steps=99", NOTE), ("train.num_devices=2", NOTE), ("data.embedding_cache=/x", NOTE),
    ("eval.num_samples=64", NOTE),
])
def test_a_changed_field_lands_in_its_class(override, rule):
    saved = to_dict(get_config("tiny"))
    changes = compare_configs(saved, get_config("tiny", [override]))
    key, _, value = override.partition("=")
    by_rule = {REFUSE: changes.refused, APPLY: changes.applied, NOTE: changes.noted}
    assert [c[0] for c in by_rule[rule]] == [key] and resume_rule(key) == rule
    assert sum(map(len, dataclasses.astuple(changes))) == 1
    assert compare_configs(saved, get_config("tiny")) == type(changes)()  # unchanged: nothing at all


def test_an_old_checkpoint_config_missing_newer_fields_compares_as_their_defaults():
    saved = to_dict(get_config("tiny"))
    del saved["train"]["optimizer"], saved["model"]["d_width"]
    assert compare_configs(saved, get_config("tiny")).refused == ()


def test_an_empty_or_missing_folder_or_a_workdir_may_start_a_run(tmp_path):
    check_new_workdir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    check_new_workdir(tmp_path / "empty")
    (tmp_path / "empty" / ".lock").write_text("{}")  # what a run that died at start leaves
    assert resolve_config(tmp_path / "empty", "tiny").model.width == 8
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "notes.txt").write_text("mine")
    check_new_workdir(tmp_path / "run")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "img.png").write_bytes(b"")
    with pytest.raises(WorkdirError, match="is not empty .* not a jaxgan workdir"):
        check_new_workdir(tmp_path / "data")


def test_the_documented_table_is_the_code_table():
    text = (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    documented = {}
    for rule in (REFUSE, APPLY, NOTE):
        row = re.search(rf"^\| {rule}d? \| (.*?) \|", text.replace("refused", "refuse").replace("applied", "apply")
                        .replace("noted", "note"), re.M)
        assert row, rule
        documented |= {key.removesuffix("*"): rule for key in re.findall(r"`([^`]+)`", row.group(1))}
    assert documented == RESUME_RULES


def test_the_library_refuses_a_folder_that_is_not_a_workdir(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"")
    with pytest.raises(WorkdirError, match="not a jaxgan workdir"):
        train_and_evaluate(get_config("tiny"), tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["photo.jpg"]
