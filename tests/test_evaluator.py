"""The one Evaluator: built before training starts, and asking the source, not its name."""

import pytest

from jaxgan.data.folder import ImageFolderSource
from jaxgan.data.shapes import ShapesSource
from jaxgan.evaluator import Evaluator, evaluates, protocol_for
from jaxgan.presets import get_config
from jaxgan.text import load_text_encoder
from jaxgan.train import train_and_evaluate


def test_the_protocol_takes_a_fixed_fit_from_the_source_and_the_config_fit_otherwise():
    assert protocol_for(get_config("tiny", ["data.fit=pad"])).fit == ""  # shapes: drawn square, hash unchanged
    folder = get_config("tiny", ["data.dataset=./birds", "data.fit=pad", "eval.features=inception:x"])
    assert protocol_for(folder).fit == "pad"
    assert ShapesSource.attributes and not ImageFolderSource.attributes


def test_periodic_evaluation_needs_a_feature_network_that_can_judge_the_dataset():
    assert evaluates(get_config("tiny", ["eval.every=5"]))
    assert not evaluates(get_config("tiny", ["eval.every=5", "data.dataset=./birds"]))
    assert evaluates(get_config("tiny", ["eval.every=5", "data.dataset=./birds", "eval.features=inception:x"]))
    assert not evaluates(get_config("tiny", ["eval.every=0"]))


def test_the_feature_network_is_loaded_when_the_evaluator_is_built():
    with pytest.raises(ValueError, match="needs its weights file"):
        Evaluator(get_config("tiny", ["eval.features=inception"]), load_text_encoder())


def test_bad_evaluation_settings_stop_training_before_the_first_step(tmp_path):
    config = get_config("tiny", ["train.num_devices=1", "train.steps=2", "train.log_every=1", "eval.every=1",
                                 f"eval.features=inception:{tmp_path / 'missing.npz'}"])
    with pytest.raises(ValueError):
        train_and_evaluate(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())
