"""Workdirs written before each architecture had its own config still load, resume and sample.

tests/fixtures/workdir_dcgan and workdir_dfgan were written by the code at d7b879d (see
tests/fixtures/README.txt): their config.json and checkpoints hold every architecture's model
fields in one flat section.
"""

import json
import shutil
from pathlib import Path

import pytest

from jaxgan import cli
from jaxgan.config import ConfigError, to_dict
from jaxgan.models import DCGANConfig, DFGANConfig
from jaxgan.presets import from_dict

pytestmark = pytest.mark.usefixtures("quick_compiles")

FIXTURES = Path(__file__).parent / "fixtures"


def _saved(name: str) -> dict:
    return json.loads((FIXTURES / name / "config.json").read_text())


def test_old_configs_load_as_their_architectures_config():
    dcgan = from_dict(_saved("workdir_dcgan"))
    assert type(dcgan.model) is DCGANConfig
    assert (dcgan.model.width, dcgan.model.z_dim, dcgan.model.upsample, dcgan.train.steps) == (8, 16, "resize_conv", 2)
    dfgan = from_dict(_saved("workdir_dfgan"))
    assert type(dfgan.model) is DFGANConfig
    m = dfgan.model
    assert (m.width, m.g_norm, m.g_shortcut, m.word_attention, m.d_projection, m.d_head_width) == (
        4, "batch", "bilinear", "16", True, 8)
    assert m.uses_word_attention
    # Every saved field is kept: nothing of the old config is lost but the other architecture's defaults.
    for config, name in ((dcgan, "workdir_dcgan"), (dfgan, "workdir_dfgan")):
        saved, now = _saved(name), to_dict(config)
        for section in saved:
            for key, value in saved[section].items():
                if key in now[section]:
                    assert now[section][key] == value, (name, section, key)


def test_an_old_dfgan_field_away_from_its_default_on_a_dcgan_config_is_refused():
    saved = _saved("workdir_dcgan")
    saved["model"]["g_norm"] = "batch"
    with pytest.raises(ConfigError, match="model.g_norm='batch' is not a dcgan option: .* need model.arch=dfgan"):
        from_dict(saved)


def _copy(name: str, tmp_path: Path) -> Path:
    workdir = tmp_path / name
    shutil.copytree(FIXTURES / name, workdir)
    return workdir


@pytest.mark.parametrize("name", ["workdir_dcgan", "workdir_dfgan"])
def test_fixture_samples_and_resumes(name, tmp_path, capsys):
    workdir = _copy(name, tmp_path)
    out = tmp_path / "samples"
    sample = ["--workdir", str(workdir), "--prompt", "a small red circle", "--num-per-prompt", "2", "--out", str(out)]
    if name == "workdir_dfgan":
        sample.append("--attention")
    assert cli.sample_main(sample) == 0
    assert (out / "grid.png").exists() and len((out / "manifest.jsonl").read_text().splitlines()) == 2
    if name == "workdir_dfgan":
        assert (out / "attention_000_001.png").exists()

    # A changed model field is still refused by the old checkpoint, with the one-line diff.
    changed = "model.upsample=conv_transpose" if name == "workdir_dcgan" else "model.g_shortcut=nearest"
    other = _copy(name, tmp_path / "changed")
    assert cli.train_main(["--workdir", str(other), "--steps", "4", "--no-progress", "--set", changed]) == 2
    err = capsys.readouterr().err.strip()
    assert "checkpoints/2 is incompatible" in err and "\n" not in err
    assert ("model.upsample: checkpoint 'resize_conv' vs config 'conv_transpose'" in err
            or "model.g_shortcut: checkpoint 'bilinear' vs config 'nearest'" in err), err

    rows_before = (workdir / "metrics.jsonl").read_text().splitlines()
    assert cli.train_main(["--workdir", str(workdir), "--steps", "4", "--no-progress",
                           "--set", "train.num_devices=1"]) == 0
    rows = (workdir / "metrics.jsonl").read_text().splitlines()
    # Resumed at step 2: the old rows stay as they were and steps 3 and 4 follow.
    assert rows[:2] == rows_before and [json.loads(r)["step"] for r in rows] == [1, 2, 3, 4]
    assert (workdir / "checkpoints" / "4").exists()
    assert type(from_dict(json.loads((workdir / "config.json").read_text())).model) is type(
        from_dict(_saved(name)).model)
