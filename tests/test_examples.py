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


@pytest.fixture
def load_example(monkeypatch):
    """Loads ``examples/<name>.py`` as a module, with the examples folder importable (as it is
    when an example runs as a script: relativistic_loss imports custom_loss's loop)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def step_zero(loss):
    """The tiny config, its initial models and state, a synthetic batch, and the metrics of
    one step with ``loss`` from that state."""
    config = jaxgan.get_config("tiny", ["train.num_devices=1"])
    generator, discriminator = jaxgan.build_models(config.model)
    state = jax.jit(lambda: jaxgan.init_state(config, generator, discriminator, sentence_dim=16))()
    batch = synthetic_batch(config, 16)
    _, metrics = jax.jit(jaxgan.make_train_step(config, generator, discriminator, loss=loss))(state, batch)
    return config, generator, discriminator, state, batch, jax.device_get(metrics)


@pytest.mark.usefixtures("quick_compiles")
@pytest.mark.parametrize("name, steps", [("custom_loss", 3), ("relativistic_loss", 2)])
def test_a_loss_example_trains_and_saves_its_grid(load_example, tmp_path, name, steps):
    metrics = load_example(name).main(["--steps", str(steps), "--out", str(tmp_path / "grid.png")])
    assert metrics and all(np.isfinite(v) for v in metrics.values())
    assert (tmp_path / "grid.png").exists()


@pytest.mark.usefixtures("quick_compiles")
def test_the_custom_loss_example_trains_with_its_own_loss(load_example):
    # Label smoothing at 0.9 adds 0.1 (softplus(x) - softplus(-x)) = 0.1 x to the real term:
    # from the same state and batch, the D loss differs from the non-saturating one by 0.1 x
    # the mean real logit.
    smoothed = step_zero(load_example("custom_loss").SMOOTHED)[-1]
    plain = step_zero(jaxgan.LOSSES["nonsaturating"])[-1]
    assert smoothed["d_real_logit"] == plain["d_real_logit"]  # same D, same batch
    assert float(smoothed["d_loss"] - plain["d_loss"]) == pytest.approx(0.1 * float(plain["d_real_logit"]),
                                                                       rel=1e-4, abs=1e-6)


@pytest.mark.usefixtures("quick_compiles")
def test_the_relativistic_loss_example_trains_with_its_own_loss(load_example):
    # The step optimises the example's loss: step 0's D loss and accuracy, recomputed from the
    # initial models' logits on the same batch.
    config, generator, discriminator, state, batch, m = step_zero(load_example("relativistic_loss").RP_HINGE)

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
