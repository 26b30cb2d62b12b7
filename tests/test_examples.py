"""The examples run, in a tiny configuration, and do what they say."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgan
from jaxgan.bench import synthetic_batch
from jaxgan.step import example_noise

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


@pytest.mark.usefixtures("quick_compiles")
def test_relativistic_loss_example_trains_with_its_own_loss(tmp_path):
    example = _load("relativistic_loss")
    metrics = example.main(["--steps", "2", "--out", str(tmp_path / "grid.png")])
    assert metrics and all(np.isfinite(v) for v in metrics.values())
    assert (tmp_path / "grid.png").exists()
    # The step optimises the example's loss: step 0's D loss and accuracy, recomputed from the
    # initial models' logits on the same batch.
    config = jaxgan.get_config("tiny", ["train.num_devices=1"])
    generator, discriminator = jaxgan.build_models(config.model)
    state = jax.jit(lambda: jaxgan.init_state(config, generator, discriminator, sentence_dim=16))()
    batch = synthetic_batch(config, 16)
    _, m = jax.jit(jaxgan.make_train_step(config, generator, discriminator, loss=example.RP_HINGE))(state, batch)

    @jax.jit
    def logits(state, batch):
        z = example_noise(jax.random.fold_in(jax.random.wrap_key_data(state.key), 0), 16, config.model.z_dim, None)
        fake, _ = generator.apply({"params": state.g_params, "batch_stats": state.g_stats}, z, batch["sentence"],
                                  train=True, mutable=["batch_stats"])
        dv = {"params": state.d_params, "batch_stats": state.d_stats}
        real = batch["image"].astype(jnp.float32) / 127.5 - 1
        (r, w), _ = discriminator.apply(dv, real, batch["sentence"], batch["wrong_sentence"], mutable=["batch_stats"])
        f, _ = discriminator.apply(dv, fake, batch["sentence"], mutable=["batch_stats"])
        return r, f, w

    r, f, w = (np.asarray(x, np.float64) for x in logits(state, batch))
    hinge = lambda t: np.maximum(0.0, 1.0 + t)  # noqa: E731
    expected = 0.5 * (np.mean(hinge(f - r)) + np.mean(hinge(w - r)))
    assert float(m["d_loss"]) == pytest.approx(expected, rel=1e-5)
    assert float(m["d_acc_real"]) == float(m["d_acc_fake"]) == pytest.approx(np.mean(r > f))
    assert float(m["d_acc_wrong"]) == pytest.approx(np.mean(r > w))
