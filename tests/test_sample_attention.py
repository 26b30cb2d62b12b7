"""sample.py --attention: word-attention maps of a DF-GAN with word attention, as images."""

import numpy as np
import pytest
from PIL import Image

from jaxgan import cli

pytestmark = pytest.mark.usefixtures("quick_compiles")

# No gradient penalty: its double backward would double the compile; the maps are what is tested.
TINY_DFGAN = ["model.arch=dfgan", "model.width=4", "model.text_dim=8", "model.word_attention=16",
              "model.conv_impl=conv", "train.num_devices=1", "train.loss=hinge"]


def _train(workdir, overrides):
    args = ["--workdir", str(workdir), "--preset", "tiny", "--steps", "2", "--no-progress"]
    assert cli.train_main(args + [f"--set={o}" for o in overrides]) == 0


def test_attention_overlays_are_written_per_sample(tmp_path):
    from jaxgan.presets import get_config
    from jaxgan.workdir import TrainedGenerator

    workdir, out = tmp_path / "run", tmp_path / "samples"
    _train(workdir, TINY_DFGAN)
    prompt = "a small red circle in the top left"
    assert cli.sample_main(["--workdir", str(workdir), "--prompt", prompt, "--num-per-prompt", "2",
                            "--attention", "--out", str(out)]) == 0
    files = sorted(p.name for p in out.glob("attention_*.png"))
    assert files == ["attention_000_000.png", "attention_000_001.png"]
    # One row (one attention block, 16x16) of the image plus one tile per real token.
    generator = TrainedGenerator(get_config("tiny", TINY_DFGAN), workdir)
    images, maps, tokens = generator.attention([prompt], [0])
    assert list(maps) == [16] and maps[16].shape[:2] == (1, 16 * 16)
    assert len(tokens[0]) >= len(prompt.split())  # every word, plus any special tokens
    row = maps[16][0]
    np.testing.assert_allclose(row[:, :len(tokens[0])].sum(-1), 1.0, rtol=1e-5)  # padding gets nothing
    width, height = Image.open(out / files[0]).size
    side = 32 * 3  # 32 px images drawn 3x
    assert width == (1 + len(tokens[0])) * (side + 4) and height == side + 14
    # The first sample's image equals the plain sample written beside it.
    np.testing.assert_array_equal(np.asarray(Image.open(out / "000_000.png")), images[0])
