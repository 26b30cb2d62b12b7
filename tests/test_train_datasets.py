"""train.py on datasets other than shapes: an image folder with bad files, and TFDS (mocked)."""

import json

import numpy as np
import pytest
from helpers import trees_bitwise_equal
from PIL import Image

from jaxgan import cli
from jaxgan.presets import get_config
from jaxgan.train import train_and_evaluate

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """24 captioned PNGs in nested folders, one corrupt file and one image without a caption."""
    root = tmp_path_factory.mktemp("folder")
    for i in range(24):
        name = list(COLOURS)[i % 4]
        sub = root / name
        sub.mkdir(exist_ok=True)
        Image.new("RGB", (40 + i, 36), COLOURS[name]).save(sub / f"{i:02d}.png")
        (sub / f"{i:02d}.txt").write_text(f"a {name} picture\na picture that is {name}\n")
    (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    (root / "red" / "broken.txt").write_text("a red picture\n")
    Image.new("RGB", (40, 40), COLOURS["blue"]).save(root / "blue" / "uncaptioned.png")
    return root


def _config(folder, cache, steps, **extra):
    overrides = {"data.dataset": str(folder), "data.workers": 0, "data.embedding_cache": str(cache),
                 "train.num_devices": 1, "train.steps": steps, "train.log_every": 1,
                 "train.checkpoint_every": 2, "train.sample_every": 2, **extra}
    return get_config("tiny", [f"{k}={v}" for k, v in overrides.items()])


def test_an_image_folder_trains_counts_its_bad_files_and_resumes_exactly(folder, tmp_path):
    straight = train_and_evaluate(_config(folder, tmp_path / "cache", 4), tmp_path / "a", progress=False)
    train_and_evaluate(_config(folder, tmp_path / "cache", 2), tmp_path / "b", progress=False)
    resumed = train_and_evaluate(_config(folder, tmp_path / "cache", 4), tmp_path / "b", progress=False)
    assert trees_bitwise_equal((straight.g_params, straight.d_params, straight.ema_params, straight.key),
                               (resumed.g_params, resumed.d_params, resumed.ema_params, resumed.key))
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    # 4 steps x 16 rows read 64 draws of 26 files: the two bad ones were met at least once each.
    assert last["data/skipped_corrupt"] >= 1 and last["data/skipped_no_caption"] >= 1
    assert last["data/skipped"] == last["data/skipped_corrupt"] + last["data/skipped_no_caption"]
    assert 0.0 <= last["input_wait_fraction"] <= 1.0
    # The resumed run's counts continue from the checkpoint: the same as the straight run's.
    resumed_rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert resumed_rows[-1]["data/skipped"] == last["data/skipped"]
    # The sample grid is captioned with the dataset's own captions.
    assert (tmp_path / "a" / "samples" / "step_000004.png").exists()
    # Both runs share one embedding cache entry: the captions were encoded once.
    assert len(list((tmp_path / "cache").glob("*/*"))) == 1


def test_the_command_line_names_a_missing_folder_in_one_line(tmp_path, capsys):
    args = ["--workdir", str(tmp_path / "w"), "--preset", "tiny", "--dataset", str(tmp_path / "nowhere"),
            "--no-progress"]
    assert cli.train_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0]


def test_an_unknown_dataset_name_lists_the_choices(tmp_path, capsys):
    args = ["--workdir", str(tmp_path / "w"), "--preset", "tiny", "--dataset", "imagenet", "--no-progress"]
    assert cli.train_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "imagenet" in err and "caltech_birds2011" in err and "\n" not in err


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_tfds_datasets_train_under_mock_data(name, tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=48):
        state = train_and_evaluate(_config(name, tmp_path / "cache", 2), tmp_path / "run", progress=False)
    assert int(state.step) == 2
    assert all(np.isfinite(np.asarray(x)).all() for x in (state.g_params["Dense_0"]["kernel"],))
