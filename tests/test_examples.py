"""The examples run, in a tiny configuration, and do what they say."""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxgan
from jaxgan.bench import synthetic_batch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("quick_compiles")
def test_custom_loss_example_trains_with_its_own_loss(tmp_path):
    example = _load("custom_loss")
    metrics = example.main(["--steps", "3", "--out", str(tmp_path / "grid.png")])
    assert metrics and all(np.isfinite(v) for v in metrics.values())
    assert (tmp_path / "grid.png").exists()

    # The step really uses the example's loss. Label smoothing at 0.9 adds
    # 0.1 (softplus(x) - softplus(-x)) = 0.1 x to the real term: from the same state and batch,
    # the D loss differs from the non-saturating one by 0.1 x the mean real logit.
    config = jaxgan.get_config("tiny", ["train.num_devices=1"])
    runs = []
    for loss in (example.SMOOTHED, jaxgan.LOSSES["nonsaturating"]):
        program = jaxgan.build_train_program(config, loss=loss)
        state = program.init_placed_state(16)
        _, m = program.step(state, program.parallel.put_batch(synthetic_batch(config, 16)))
        runs.append(jax.device_get(m))
    smoothed, plain = runs
    assert smoothed["d_real_logit"] == plain["d_real_logit"]  # same D, same batch
    assert float(smoothed["d_loss"] - plain["d_loss"]) == pytest.approx(0.1 * float(plain["d_real_logit"]),
                                                                       rel=1e-4, abs=1e-6)
