"""Fault suite, config: every field given a wrong type, NaN or an out-of-range value, through
``--set`` and through a workdir's config.json, is a one-line ``ConfigError`` naming the key.

The bulk drives the library (``get_config``, ``resolve_config``): validation runs before any
model is built, so each input costs well under a millisecond. A few cases go through the whole
``jaxgan train`` command to show the same line reaches the user and config.json is untouched.
"""

import dataclasses
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from faults import assert_nothing_lost, count_input, count_traceback, run_cli, snapshot

from jaxgan.config import INT_LIMIT, ConfigError, flat_fields, to_dict
from jaxgan.models import ARCHITECTURES
from jaxgan.presets import config_help, get_config
from jaxgan.workdir import resolve_config

BASES = {f"{preset}-{arch}": (preset, arch) for preset in ("default", "tiny") for arch in ARCHITECTURES}

# Free-text fields whose text is checked when the config is: a value each refuses. The others
# (paths, encoder and dataset names) are checked when what they name is opened, and here only
# for control characters.
BAD_TEXT = {"data.dataset": " ", "train.augment": "sparkle", "model.word_attention": "16,x", "model.arch": "gan",
            "model.d_layers": "2,x", "model.prompt_layers": "1,1",
            **{f"train.{name}_schedule": "cosine:1e-4" for name in ("g_lr", "d_lr", "beta2", "penalty_weight",
                                                                    "ema_kimg")}}


def _base(name: str):
    preset, arch = BASES[name]
    return get_config(preset, [f"model.arch={arch}"])


def _field(config, key: str) -> dataclasses.Field:
    *path, name = key.split(".")
    for part in path:
        config = getattr(config, part)
    return {f.name: f for f in dataclasses.fields(config)}[name]


def _out_of_range(config, key: str, kind: type) -> list:
    """Values just outside the field's declared choices or range."""
    f = _field(config, key)
    choices, bounds = f.metadata.get("choices"), f.metadata.get("bounds")
    if choices:
        return [48] if kind is int else ["not-a-choice"]
    if kind is str:  # no text field may hold control characters; some check their text too
        return ["bad\x00name", "two\nlines"] + ([BAD_TEXT[key]] if key in BAD_TEXT else [])
    if kind is bool:
        return []  # nothing is out of range
    step = 1 if kind is int else 0.5
    values = [kind(INT_LIMIT + 1)] if kind is int else []
    if bounds.at_least is not None:
        values.append(kind(bounds.at_least - step))
    if bounds.above is not None:
        values.append(kind(bounds.above))
    if bounds.below is not None:
        values.append(kind(bounds.below))
    if bounds.at_most is not None:
        values.append(kind(bounds.at_most + step))
    return values


def _set_inputs(config, key: str, kind: type) -> list[str]:
    """Texts for ``--set KEY=TEXT`` that the field must refuse."""
    wrong = {int: ["ten", "1.5"], float: ["fast"], bool: ["maybe"], str: []}[kind]
    nan = ["nan", "inf", "-inf"] if kind is float else []
    return wrong + nan + [str(v) for v in _out_of_range(config, key, kind)]


def _json_inputs(config, key: str, kind: type) -> list:
    """Values for ``config.json`` that the field must refuse: wrong JSON types, NaN, out of range."""
    wrong = [[1], {"value": 1}, None] + {int: ["ten", 1.5, True], float: ["0.1", False], bool: ["yes", 1],
                                         str: [7]}[kind]
    nan = [math.nan, math.inf] if kind is float else []
    return wrong + nan + _out_of_range(config, key, kind)


def _refused(key: str, what: str, call: Callable[..., object], *args: object) -> str:
    """Runs ``call(*args)``, counted as one input; it must raise a one-line ConfigError naming ``key``."""
    count_input()
    try:
        call(*args)
    except ConfigError as e:
        message = str(e)
    except Exception:  # noqa: BLE001 - what the suite counts
        count_traceback(what)
    else:
        raise AssertionError(f"{what} was accepted")
    assert "\n" not in message, (what, message)
    assert key in message, (what, message)
    return message


CASES = [(name, key) for name in BASES for key in flat_fields(_base(name))]


@pytest.fixture(scope="module")
def json_workdir(tmp_path_factory) -> Path:
    # One folder for every case (they run one after another in a process): a tmp_path each
    # would cost more than the case.
    return tmp_path_factory.mktemp("config_json")


@pytest.mark.parametrize("base, key", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_every_field_refuses_bad_values_with_one_line_naming_it(base, key, json_workdir):
    preset, arch = BASES[base]
    config = _base(base)
    kind = flat_fields(config)[key][1]
    for text in _set_inputs(config, key, kind):
        _refused(key, f"--preset {preset} --set model.arch={arch} --set {key}={text}",
                 get_config, preset, [f"model.arch={arch}", f"{key}={text}"])
    saved = json_workdir / "config.json"
    for bad in _json_inputs(config, key, kind):
        data = to_dict(config)
        section, name = key.split(".")
        data[section][name] = bad
        saved.write_text(json.dumps(data))
        _refused(key, f"config.json with {key}={bad!r}", resolve_config, json_workdir)


def test_every_numeric_field_declares_its_range():
    # A new numeric field without choices or a range would pass validate unchecked.
    for name in BASES:
        config = _base(name)
        for key, (_, kind) in flat_fields(config).items():
            f = _field(config, key)
            if kind in (int, float):
                assert f.metadata.get("choices") or f.metadata.get("bounds"), key


def test_help_config_shows_the_ranges():
    rows = {line.split()[0]: line for line in config_help().splitlines() if line.startswith("  ")}
    assert "(range: [0, 1))" in rows["train.beta1"] and "(range: >= 16)" in rows["eval.num_samples"]
    assert "(range: > 0)" in rows["train.penalty_power"] and "(range: >= 0)" in rows["train.g_lr"]


@pytest.mark.parametrize("text, message", [
    ("{not json", "is not a valid jaxgan config"),
    ("[1, 2]", "a config is a JSON object of sections"),
    ('"steps"', "a config is a JSON object of sections"),
    ("", "is not a valid jaxgan config"),
    ('{"train": [1]}', "config section train must be an object of keys, got a list"),
    ('{"train": {"stpes": 10}}', "unknown config key 'train.stpes'"),
    ('{"optimizer": {}}', "unknown config section 'optimizer'"),
    ('{"train": {"steps": "ten"}}', "config key train.steps: 'ten' (a string) is not a valid int"),
    ('{"train": {"g_lr": NaN}}', "train.g_lr must be a finite number, got nan"),
    ('{"model": {"bn_sync": "yes"}}', "config key model.bn_sync: 'yes' (a string) is not a valid bool"),
    ('{"data": {"dataset": 5}}', "config key data.dataset: 5 (a number) is not a valid str"),
    ("[" * 100_000 + "]" * 100_000, "is not a valid jaxgan config"),
    (b"\xff\xfe{\x00}\x00", "is not a valid jaxgan config"),
], ids=["not-json", "list", "string", "empty", "section-list", "unknown-key", "unknown-section", "steps-ten",
        "lr-nan", "bool-yes", "dataset-number", "nested-100k-deep", "utf16"])
def test_a_broken_config_json_is_one_line_and_left_as_it_was(text, message, tmp_path):
    # Through the whole command: train resolves the workdir's config before touching anything.
    saved = tmp_path / "config.json"
    saved.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = snapshot(tmp_path)
    outcome = run_cli(["train", "--workdir", str(tmp_path), "--no-progress"])
    assert outcome.code == 2
    assert message in outcome.one_line_error()
    assert_nothing_lost(before, snapshot(tmp_path))
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["config.json"]


@pytest.mark.parametrize("override", ["train.g_lr=nan", "train.beta1=1", "eval.truncation=-inf",
                                      "train.penalty_weight=nan", "train.d_lr=-1e-4", "train.beta2=-0.1"])
def test_a_bad_set_is_one_line_before_anything_is_written(override, tmp_path):
    workdir = tmp_path / "run"
    outcome = run_cli(["train", "--preset", "tiny", "--workdir", str(workdir), "--set", override])
    assert outcome.code == 2
    assert override.split("=")[0] in outcome.one_line_error()
    assert not workdir.exists()


@pytest.mark.parametrize("flags, message", [
    (["--truncation", "nan"], "truncation must be 0 (off) or a positive finite number, got nan"),
    (["--truncation", "inf"], "truncation must be 0 (off) or a positive finite number, got inf"),
    (["--seed", "-1"], "seed must be in [0, 2**31), got -1"),
], ids=["truncation-nan", "truncation-inf", "seed-negative"])
def test_bad_eval_flags_are_one_line_before_any_evaluation(flags, message, tmp_path):
    # jaxgan eval's flags fill the evaluation protocol, not the config: the same checks apply.
    # Before: NaN or inf truncation evaluated noise of NaNs and wrote an eval file; --seed -1
    # was a numpy ValueError traceback.
    workdir = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "fixtures" / "workdir_dcgan", workdir)
    before = snapshot(workdir)
    outcome = run_cli(["eval", "--workdir", str(workdir), "--no-progress", "--num-samples", "16", *flags])
    assert outcome.code == 2 and message in outcome.one_line_error()
    assert_nothing_lost(before, snapshot(workdir))
    assert not (workdir / "eval").exists()
