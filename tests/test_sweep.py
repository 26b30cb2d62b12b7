"""Many GANs in one compiled step: a vmapped sweep equals its members trained one by one."""

import dataclasses

import jax
import numpy as np
import pytest
from helpers import SCHEDULED_RUN, tree_max_abs_diff

from jaxgan import sweep
from jaxgan.bench import synthetic_batch
from jaxgan.config import ConfigError
from jaxgan.models import build_models
from jaxgan.presets import get_config
from jaxgan.state import init_state
from jaxgan.step import make_train_step

MEMBERS = [{"train.seed": 0, "train.d_lr": 2e-3},
           {"train.seed": 1, "train.d_lr": 4e-3, "train.g_lr": 1e-3},
           {"train.seed": 2, "train.d_lr": 1e-3, "train.ema_decay": 0.99, "train.penalty_weight": 5.0}]


@pytest.mark.usefixtures("quick_compiles")
def test_a_vmapped_sweep_equals_its_members_trained_separately():
    # Plain SGD at 10x the default learning rate: vmap reorders the convolutions' sums, which
    # SGD keeps at rounding size and Adam would not (docs/design.md, "Tests that compare layouts").
    config = get_config("tiny", ["train.num_devices=1", "train.penalty=r1", "train.optimizer=sgd", "train.g_lr=2e-3"])
    generator, discriminator = build_models(config.model)
    batches = [synthetic_batch(config, 16, seed=i) for i in range(3)]
    states = sweep.init_members(config, generator, discriminator, 16, MEMBERS)
    step = sweep.make_sweep_step(config, generator, discriminator)
    for batch in batches:
        states, metrics = step(states, batch)
    assert metrics["d_loss"].shape == (3,)
    # One compiled step serves every member alone too: their differences are data in the state.
    single = jax.jit(make_train_step(config, generator, discriminator))
    base = init_state(config, generator, discriminator, 16)
    for i, member_config in enumerate(sweep.member_configs(config, MEMBERS)):
        # The optimizer objects are static (part of the jit cache key): share the base ones,
        # whose hyperparameters the member's optimizer states override.
        fresh = init_state(member_config, generator, discriminator, 16)
        alone = dataclasses.replace(fresh, g_tx=base.g_tx, d_tx=base.d_tx)
        for batch in batches:
            alone, _ = single(alone, batch)
        got = sweep.member(states, i)
        # fp32 rounding only: vmap batches the convolutions, which reorders their sums.
        assert tree_max_abs_diff((got.g_params, got.d_params, got.ema_params, got.g_stats, got.d_stats),
                                 (alone.g_params, alone.d_params, alone.ema_params, alone.g_stats,
                                  alone.d_stats)) < 1e-4, i
        assert tree_max_abs_diff((got.g_opt_state, got.d_opt_state), (alone.g_opt_state, alone.d_opt_state)) < 1e-3
        # ... while training moved the params far beyond that bound.
        assert tree_max_abs_diff((got.g_params, got.d_params), (fresh.g_params, fresh.d_params)) > 1e-3, i
    # The members really differ: their own seeds and hyperparameters took effect.
    d_lr = np.asarray(states.d_opt_state.hyperparams["learning_rate"])
    np.testing.assert_allclose(d_lr, [2e-3, 4e-3, 1e-3], rtol=1e-6)
    assert np.asarray(states.hparams["penalty_weight"]).tolist() == [10.0, 10.0, 5.0]
    assert tree_max_abs_diff(sweep.member(states, 0).g_params, sweep.member(states, 1).g_params) > 1e-3


def test_keys_that_change_the_program_cannot_be_swept():
    with pytest.raises(ConfigError, match="model.width cannot differ between sweep members"):
        sweep.member_configs(get_config("tiny"), [{"model.width": 16}])


# The numbers of schedules and the EMA half-life differ; their kinds are the swept config's.
SCHEDULE_MEMBERS = [{},  # SCHEDULED_RUN itself
                    {"train.g_lr_schedule": "linear:4e-3@48", "train.penalty_weight": 4.0,
                     "train.penalty_weight_schedule": "cosine:8@16", "train.ema_kimg_schedule": "linear:0.032@32",
                     "train.ema_rampup": 0.5}]


@pytest.mark.usefixtures("quick_compiles")
def test_a_sweep_over_schedules_equals_its_members_trained_separately():
    config = get_config("tiny", SCHEDULED_RUN)
    generator, discriminator = build_models(config.model)
    batches = [synthetic_batch(config, 16, seed=i) for i in range(3)]
    states = sweep.init_members(config, generator, discriminator, 16, SCHEDULE_MEMBERS)
    step = sweep.make_sweep_step(config, generator, discriminator)
    for batch in batches:
        states, _ = step(states, batch)
    single = jax.jit(make_train_step(config, generator, discriminator))
    base = init_state(config, generator, discriminator, 16)
    for i, member_config in enumerate(sweep.member_configs(config, SCHEDULE_MEMBERS)):
        alone = dataclasses.replace(init_state(member_config, generator, discriminator, 16), g_tx=base.g_tx,
                                    d_tx=base.d_tx)
        for batch in batches:
            alone, _ = single(alone, batch)
        got = sweep.member(states, i)
        assert tree_max_abs_diff((got.g_params, got.d_params, got.ema_params), (alone.g_params, alone.d_params,
                                                                                alone.ema_params)) < 1e-4, i
        assert tree_max_abs_diff(got.hparams, alone.hparams) == 0.0
    # The last step (32 images seen) ran with each member's own values: by hand,
    # lr 2e-3 -> 1e-3 over 32 images (end) and 2e-3 -> 4e-3 over 48 (2/3 of the way);
    # the penalty weight 10 -> 2 over 32 (end) and 4 -> 8 over 16 (held at the end);
    # the EMA half-life 16 -> 64 images (end), and 16 -> 32 capped at 0.5 x 32 = 16 by the ramp-up.
    np.testing.assert_allclose(np.asarray(states.g_opt_state.hyperparams["learning_rate"]), [1e-3, 2e-3 + 2e-3 * 2 / 3],
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(states.hparams["penalty_weight"]), [2.0, 8.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(states.hparams["ema_decay"]), [0.5 ** (16 / 64), 0.5], rtol=1e-6)
    # Same seed: the members differ only through their schedules (by 8e-4 measured), 8x the
    # bound that holds between a member and its separate run.
    assert tree_max_abs_diff(sweep.member(states, 0).g_params, sweep.member(states, 1).g_params) > 1e-4


def test_a_schedules_kind_cannot_differ_between_members():
    config = get_config("tiny", ["train.g_lr_schedule=linear:1e-4@1M"])
    for other in ("cosine:1e-4@1M", ""):
        with pytest.raises(ConfigError, match="train.g_lr_schedule: a member's .* form differs"):
            sweep.member_configs(config, [{"train.g_lr_schedule": other}])
    with pytest.raises(ConfigError, match="train.ema_kimg: a member's True form differs"):
        sweep.member_configs(config, [{"train.ema_kimg": 10.0}])
