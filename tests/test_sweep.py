"""Many GANs in one compiled step: a vmapped sweep equals its members trained one by one."""

import dataclasses

import jax
import jax.numpy as jnp
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


def sweep_and_alone(config, members, start=lambda i, state: state, steps=3):
    """``members`` trained ``steps`` steps as one vmapped sweep, and each alone by one
    compiled single step, both from member i's fresh state passed through ``start(i, state)``:
    (stacked states, the sweep's last metrics, [(fresh, alone, alone's last metrics)] per member)."""
    generator, discriminator = build_models(config.model)
    batches = [synthetic_batch(config, 16, seed=i) for i in range(steps)]
    states = sweep.init_members(config, generator, discriminator, 16, members)
    states = sweep.stack([start(i, sweep.member(states, i)) for i in range(len(members))])
    step = sweep.make_sweep_step(config, generator, discriminator)
    for batch in batches:
        states, metrics = step(states, batch)
    # One compiled step serves every member alone too: their differences are data in the state.
    single = jax.jit(make_train_step(config, generator, discriminator))
    base = init_state(config, generator, discriminator, 16)
    runs = []
    for i, member_config in enumerate(sweep.member_configs(config, members)):
        # The optimizer objects are static (part of the jit cache key): share the base ones,
        # whose hyperparameters the member's optimizer states override.
        fresh = init_state(member_config, generator, discriminator, 16)
        alone = start(i, dataclasses.replace(fresh, g_tx=base.g_tx, d_tx=base.d_tx))
        for batch in batches:
            alone, alone_metrics = single(alone, batch)
        runs.append((fresh, alone, alone_metrics))
    return states, metrics, runs


@pytest.mark.usefixtures("quick_compiles")
def test_a_vmapped_sweep_equals_its_members_trained_separately():
    # Plain SGD at 10x the default learning rate: vmap reorders the convolutions' sums, which
    # SGD keeps at rounding size and Adam would not (docs/design.md, "Tests that compare layouts").
    config = get_config("tiny", ["train.num_devices=1", "train.penalty=r1", "train.optimizer=sgd", "train.g_lr=2e-3"])
    states, metrics, runs = sweep_and_alone(config, MEMBERS)
    assert metrics["d_loss"].shape == (3,)
    for i, (fresh, alone, _) in enumerate(runs):
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


# The numbers of schedules and the EMA half-life, the diversity term's weight and ADA's p
# differ; the schedules' kinds and ADA's constants are the swept config's. ADA moves p by
# 16 / (0.32 * 1000) = 0.05 after every step (interval 1).
ADA_AND_DIVERSITY = ["train.augment=color", "train.ada_target=0.6", "train.ada_interval=1",
                     "train.ada_kimg=0.32", "train.diversity_weight=0.5"]
SCHEDULE_MEMBERS = [{},  # SCHEDULED_RUN + ADA_AND_DIVERSITY itself
                    {"train.g_lr_schedule": "linear:4e-3@48", "train.penalty_weight": 4.0,
                     "train.penalty_weight_schedule": "cosine:8@16", "train.ema_kimg_schedule": "linear:0.032@32",
                     "train.ema_rampup": 0.5, "train.diversity_weight": 2.0}]
ADA_P = [0.5, 0.25]  # each member's p at the start (p is adapted, not configured: set in the state)


@pytest.mark.usefixtures("quick_compiles")
def test_a_sweep_over_schedules_ada_and_diversity_equals_its_members_trained_separately():
    config = get_config("tiny", SCHEDULED_RUN + ADA_AND_DIVERSITY)

    def with_p(i, state):
        return state.replace(hparams={**state.hparams, "ada_p": jnp.float32(ADA_P[i])})

    states, metrics, runs = sweep_and_alone(config, SCHEDULE_MEMBERS, start=with_p)
    for i, (_, alone, alone_metrics) in enumerate(runs):
        got = sweep.member(states, i)
        assert tree_max_abs_diff((got.g_params, got.d_params, got.ema_params), (alone.g_params, alone.d_params,
                                                                                alone.ema_params)) < 1e-4, i
        # Schedules' leaves, the diversity weight, ADA's p and r_t accumulator: the same to the bit.
        assert tree_max_abs_diff(got.hparams, alone.hparams) == 0.0
        # The last step's ADA p and r_t, and the diversity term, are the member's own.
        for key in ("ada_p", "ada_rt"):
            assert float(metrics[key][i]) == float(alone_metrics[key]), (key, i)
        assert float(metrics["g_diversity"][i]) == pytest.approx(float(alone_metrics["g_diversity"]), rel=1e-4)
    # Each member adapted its own p: +-0.05 a step from its own start, an odd number of steps net.
    moved = (np.asarray(states.hparams["ada_p"]) - ADA_P) / 0.05
    np.testing.assert_allclose(moved, np.round(moved), atol=1e-4)
    assert all(round(m) % 2 == 1 for m in moved), moved
    assert np.asarray(states.hparams["diversity_weight"]).tolist() == [0.5, 2.0]
    # The last step (32 images seen) ran with each member's own values: by hand,
    # lr 2e-3 -> 1e-3 over 32 images (end) and 2e-3 -> 4e-3 over 48 (2/3 of the way);
    # the penalty weight 10 -> 2 over 32 (end) and 4 -> 8 over 16 (held at the end);
    # the EMA half-life 16 -> 64 images (end), and 16 -> 32 capped at 0.5 x 32 = 16 by the ramp-up.
    np.testing.assert_allclose(np.asarray(states.g_opt_state.hyperparams["learning_rate"]), [1e-3, 2e-3 + 2e-3 * 2 / 3],
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(states.hparams["penalty_weight"]), [2.0, 8.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(states.hparams["ema_decay"]), [0.5 ** (16 / 64), 0.5], rtol=1e-6)
    # Same seed: the members differ only through these values, by far more than the bound
    # that holds between a member and its separate run.
    assert tree_max_abs_diff(sweep.member(states, 0).g_params, sweep.member(states, 1).g_params) > 1e-4


def test_the_diversity_term_cannot_be_switched_on_or_off_between_members():
    on = get_config("tiny", ["train.diversity_weight=1"])
    with pytest.raises(ConfigError, match="train.diversity_weight: a member's False form differs"):
        sweep.member_configs(on, [{"train.diversity_weight": 0.0}])
    with pytest.raises(ConfigError, match="train.diversity_weight: a member's True form differs"):
        sweep.member_configs(get_config("tiny"), [{"train.diversity_weight": 1.0}])


def test_a_schedules_kind_cannot_differ_between_members():
    config = get_config("tiny", ["train.g_lr_schedule=linear:1e-4@1M"])
    for other in ("cosine:1e-4@1M", ""):
        with pytest.raises(ConfigError, match="train.g_lr_schedule: a member's .* form differs"):
            sweep.member_configs(config, [{"train.g_lr_schedule": other}])
    with pytest.raises(ConfigError, match="train.ema_kimg: a member's True form differs"):
        sweep.member_configs(config, [{"train.ema_kimg": 10.0}])
