"""Schedules as data: their values, their place in the state and the step, resume, and the
default's arithmetic left exactly as it was."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SCHEDULED_RUN, tree_max_abs_diff, trees_bitwise_equal

from jaxgan import schedules
from jaxgan.bench import synthetic_batch
from jaxgan.checkpoint import Checkpointer, compare_configs
from jaxgan.config import ConfigError, parse_schedule, to_dict
from jaxgan.models import build_models
from jaxgan.presets import get_config
from jaxgan.program import build_train_program
from jaxgan.state import (
    GANState,
    abstract_state,
    init_state,
    initial_hparams,
    make_optimizers,
    scheduled_metrics,
    with_hyperparams,
    with_scheduled_values,
)
from jaxgan.step import make_train_step


def r3gan_cosine(n, base, final, total):
    """R3GAN's ``cosine_decay_with_warmup`` (training/training_loop.py) without warm-up or
    hold, rewritten from its formula in float64: the reference for ``cosine``."""
    decay = 0.5 * (1 + math.cos(math.pi * n / total))
    return final if n > total else base + (1 - decay) * (final - base)


@pytest.mark.parametrize("kind, start, end, expected", [
    # (images 0, 250, 500, 1000, 3000) of a schedule over 1000 images, by hand
    ("constant", 3.0, 9.0, [3.0, 3.0, 3.0, 3.0, 3.0]),
    ("linear", 2e-4, 1e-4, [2e-4, 1.75e-4, 1.5e-4, 1e-4, 1e-4]),
    ("linear", 0.9, 0.99, [0.9, 0.9225, 0.945, 0.99, 0.99]),
    # (1 - cos(pi/4)) / 2 = 0.1464466
    ("cosine", 2e-4, 5e-5, [2e-4, 2e-4 - 1.5e-4 * 0.1464466, 1.25e-4, 5e-5, 5e-5]),
    ("cosine", 0.0, 500.0, [0.0, 73.2233, 250.0, 500.0, 500.0]),
])
def test_each_kind_at_its_end_points_and_midpoint(kind, start, end, expected):
    got = [float(schedules.Schedule(kind, start, end, 1000.0)(n)) for n in (0, 250, 500, 1000, 3000)]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_cosine_is_r3gans_ramp():
    lr = schedules.Schedule("cosine", 2e-4, 5e-5, 2e7)
    for n in (0, 1e6, 7.3e6, 1e7, 1.9e7, 2e7, 5e7):
        np.testing.assert_allclose(float(lr(n)), r3gan_cosine(n, 2e-4, 5e-5, 2e7), rtol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("start, end", [(2e-4, 5e-5), (0.9, 0.99)])
def test_linear_and_cosine_are_monotone_and_hold_their_end(kind, start, end):
    images = jnp.linspace(0, 2e6, 401)
    values = np.asarray(jax.vmap(schedules.Schedule(kind, start, end, 1e6))(images), np.float64)
    steps = np.diff(values) * np.sign(end - start)
    assert (steps >= 0).all() and (steps[:199] > 0).all()  # strictly moving until 1e6, then flat
    assert values[0] == np.float32(start) and (values[200:] == np.float32(end)).all()


def test_schedule_numbers_are_traceable_data():
    # start/end/length as traced arrays: what a vmapped sweep over the state's leaves does.
    f = jax.jit(jax.vmap(lambda s, e, n: schedules.evaluate("linear", s, e, n, 500.0)))
    got = f(jnp.array([1.0, 2.0]), jnp.array([3.0, 0.0]), jnp.array([1000.0, 500.0]))
    np.testing.assert_allclose(got, [2.0, 0.0])


def test_ema_half_life_is_stylegans_formula():
    # ema_beta = 0.5 ** (batch_size / (ema_kimg * 1000)) (StyleGAN2-ADA training_loop.py)
    np.testing.assert_allclose(float(schedules.ema_decay_from_half_life(10.0, 1e9, 32)), 0.5 ** (32 / 10_000),
                               rtol=1e-7)
    np.testing.assert_allclose(float(schedules.ema_decay_from_half_life(500.0, 0.0, 256)), 0.5 ** (256 / 500_000),
                               rtol=1e-7)
    # Ramp-up: the half-life is at most rampup * images seen (here 0.05 * 2000 = 100 images).
    np.testing.assert_allclose(float(schedules.ema_decay_from_half_life(10.0, 2000.0, 32, 0.05)), 0.5 ** (32 / 100),
                               rtol=1e-6)
    assert float(schedules.ema_decay_from_half_life(10.0, 1e6, 32, 0.05)) == np.float32(0.5 ** (32 / 10_000))
    # No images seen (or a zero half-life): the EMA is the generator itself.
    assert float(schedules.ema_decay_from_half_life(10.0, 0.0, 32, 0.05)) == 0.0


def test_schedules_in_config_parse_and_refuse_with_one_line():
    spec = parse_schedule("train.g_lr_schedule", "cosine:5e-5@20M")
    assert (spec.kind, spec.end, spec.over_images) == ("cosine", 5e-5, 2e7)
    assert parse_schedule("k", "linear:0.99@500k").over_images == 5e5
    assert parse_schedule("k", "") is None and parse_schedule("k", "constant") is None
    bad = {"train.g_lr_schedule=cosin:5e-5@20M": "kind 'cosin' must be one of constant, linear, cosine",
           "train.g_lr_schedule=cosine:5e-5": "is not KIND:END@IMAGES",
           "train.d_lr_schedule=linear:-1@10": "END must not be negative",
           "train.beta2_schedule=linear:1@10": r"END must be in \[0, 1\)",
           "train.g_lr_schedule=linear:1e-4@0": "IMAGES >= 1",
           "train.penalty_weight_schedule=linear:1@10": "needs a gradient penalty"}
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=message) as e:
            get_config("tiny", [override])
        assert "\n" not in str(e.value) and override.split("=")[0] in str(e.value)
    with pytest.raises(ConfigError, match="needs train.optimizer=adam"):
        get_config("tiny", ["train.optimizer=sgd", "train.beta2_schedule=linear:0.99@10"])


def test_the_default_state_has_no_new_leaves():
    # Old checkpoints restore into the default state: nothing added unless configured.
    config = get_config("tiny")
    g, d = build_models(config.model)
    state = abstract_state(config, g, d, 16)
    assert set(state.hparams) == {"penalty_weight", "kl_weight", "ema_decay"}
    assert set(state.g_opt_state.hyperparams) == {"learning_rate"}
    scheduled = abstract_state(get_config("tiny", ["train.beta2_schedule=linear:0.99@1k", "train.ema_kimg=10"]),
                               g, d, 16)
    assert set(scheduled.g_opt_state.hyperparams) == {"learning_rate", "b2"}
    assert set(scheduled.hparams) == {"penalty_weight", "kl_weight", "ema_decay", "ema_kimg", "ema_rampup",
                                      "beta2_start", "beta2_end", "beta2_over_images"}


@pytest.mark.parametrize("before, after, applied", [
    ("train.g_lr_schedule=cosine:5e-5@20M", "train.g_lr_schedule=cosine:1e-5@10M", True),
    ("train.ema_kimg=10", "train.ema_kimg=20", True),
    ("train.g_lr_schedule=cosine:5e-5@20M", "train.g_lr_schedule=linear:5e-5@20M", False),  # kind
    ("train.seed=0", "train.d_lr_schedule=linear:1e-4@1M", False),  # a schedule switched on
    ("train.seed=0", "train.ema_kimg=10", False),  # half-life instead of ema_decay
])
def test_a_resume_applies_a_schedules_numbers_and_refuses_its_form(before, after, applied):
    changes = compare_configs(to_dict(get_config("tiny", [before])), get_config("tiny", [after]))
    key = after.partition("=")[0]
    assert [c[0] for c in (changes.applied if applied else changes.refused)] == [key]


@pytest.mark.usefixtures("quick_compiles")
def test_a_default_step_is_what_it_was():
    # Without schedules the step's arithmetic is the old one: scheduling returns the very state
    # it was given (no leaf is rewritten), and the state has no new leaves (test above). A
    # digest of the trained state would pin one CPU model's rounding, not the arithmetic.
    config = get_config("tiny", ["train.num_devices=1"])
    program = build_train_program(config)
    state = program.init_placed_state(16)
    assert with_scheduled_values(state, config) is state
    for i in range(2):
        state, metrics = program.step(state, program.parallel.put_batch(synthetic_batch(config, 16, seed=i)))
    # The values in effect are logged as metrics: today's constants.
    assert float(metrics["lr/generator"]) == np.float32(2e-4) and float(metrics["beta2"]) == np.float32(0.999)
    assert float(metrics["ema_decay"]) == np.float32(2 / 11)  # the warm-up's min(0.998, (1 + 1) / (10 + 1))


def test_beta2_is_scheduled_into_both_adam_states():
    config = get_config("tiny", ["train.beta2_schedule=linear:0.99@32", "train.g_lr_schedule=cosine:1e-4@32"])
    # No networks needed: a one-leaf model behind the config's optimizers and hparams.
    g_tx, d_tx = make_optimizers(config)
    params = {"w": jnp.zeros(3)}
    state = GANState(step=jnp.int32(1), g_params=params, d_params=params, g_stats={}, d_stats={},  # 16 images
                     g_opt_state=g_tx.init(params), d_opt_state=d_tx.init(params), ema_params=params, ema_stats={},
                     key=jnp.zeros(2, jnp.uint32), skipped=jnp.int32(0), streak=jnp.int32(0),
                     hparams=initial_hparams(config), g_tx=g_tx, d_tx=d_tx)
    state = with_scheduled_values(state, config)
    for opt_state in (state.g_opt_state, state.d_opt_state):
        np.testing.assert_allclose(float(opt_state.hyperparams["b2"]), 0.9945, rtol=1e-6)
    np.testing.assert_allclose(float(state.g_opt_state.hyperparams["learning_rate"]), 1.5e-4, rtol=1e-6)
    assert float(state.d_opt_state.hyperparams["learning_rate"]) == np.float32(2e-4)  # not scheduled
    logged = scheduled_metrics(state, config, state.hparams["ema_decay"])
    assert float(logged["beta2"]) == float(state.g_opt_state.hyperparams["b2"])


@pytest.mark.usefixtures("quick_compiles")
def test_a_scheduled_run_has_the_expected_values_in_state_and_resumes_them(tmp_path):
    config = get_config("tiny", SCHEDULED_RUN)
    g, d = build_models(config.model)
    step = jax.jit(make_train_step(config, g, d))
    batches = [synthetic_batch(config, 16, seed=i) for i in range(3)]
    # by hand at 0, 16 and 32 images; the EMA half-lives 16, 40, 64 images at batch 16
    expected = {"lr/generator": [2e-3, 1.5e-3, 1e-3], "lr/discriminator": [2e-3, 1.5e-3, 1e-3],
                "penalty_weight": [10.0, 6.0, 2.0], "ema_decay": [0.5, 0.5 ** (16 / 40), 0.5 ** (16 / 64)]}
    # Committed to a device, as a restored checkpoint is: one compiled program serves both.
    states = [jax.device_put(init_state(config, g, d, 16), jax.devices()[0])]
    for i, batch in enumerate(batches):
        state, metrics = step(states[-1], batch)
        states.append(state)
        in_state = {"lr/generator": state.g_opt_state.hyperparams["learning_rate"],
                    "lr/discriminator": state.d_opt_state.hyperparams["learning_rate"],
                    "penalty_weight": state.hparams["penalty_weight"], "ema_decay": state.hparams["ema_decay"]}
        for name, values in expected.items():
            np.testing.assert_allclose(float(in_state[name]), values[i], rtol=1e-6, err_msg=f"{name} step {i}")
            assert float(metrics[name]) == float(in_state[name]), name
        # The EMA moved by exactly the logged decay, without the per-step warm-up.
        decay = float(metrics["ema_decay"])
        ema = jax.tree.map(lambda e, p, k=decay: k * e + (1 - k) * p, states[-2].ema_params, state.g_params)
        assert tree_max_abs_diff(ema, state.ema_params) < 1e-6
    # Resume from a checkpoint at step 1: the schedules continue from the restored step.
    checkpoints = Checkpointer(tmp_path / "checkpoints", asynchronous=False)
    try:
        checkpoints.save(1, states[1], {"position": 1}, config)
        checkpoints.wait()
        resumed = checkpoints.restore_for_resume(abstract_state(config, g, d, 16), config)
    finally:
        checkpoints.close()
    state, changed = with_hyperparams(resumed.state, config)
    assert changed == {} and int(state.step) == 1
    for batch in batches[1:]:
        state, _ = step(state, batch)
    assert trees_bitwise_equal(state, states[3])
    # A resume under a new end value applies it from the restored step on.
    later = get_config("tiny", [*SCHEDULED_RUN, "train.g_lr_schedule=linear:5e-4@32"])
    state, changed = with_hyperparams(resumed.state, later)
    assert set(changed) == {"g_lr_schedule"} and float(state.hparams["g_lr_end"]) == np.float32(5e-4)
    state, _ = step(state, batches[1])
    np.testing.assert_allclose(float(state.g_opt_state.hyperparams["learning_rate"]), 1.25e-3, rtol=1e-6)
