"""The device layout without extra processes: the FSDP axis on 8 fake devices, per-process
batch rows, and the layout's refusals."""

import jax
import numpy as np
import pytest
from helpers import adam_reach, tree_max_abs_diff
from test_multihost import LAYOUT_OPTIMIZER, OVERRIDES, _assert_same_training

from jaxgan.config import ConfigError
from jaxgan.data import make_source
from jaxgan.data.embeddings import EmbeddingTable
from jaxgan.data.pipeline import Pipeline
from jaxgan.parallel import data_fsdp_parallel, fsdp_spec, make_mesh
from jaxgan.presets import get_config
from jaxgan.program import build_train_program
from jaxgan.text import load_text_encoder

STEPS = 3


def test_fsdp_rule_splits_the_largest_divisible_dimension_of_large_leaves():
    assert fsdp_spec((3, 3, 64, 128), 4) == jax.sharding.PartitionSpec(None, None, None, "fsdp")
    assert fsdp_spec((256, 64, 3), 4) == jax.sharding.PartitionSpec("fsdp")
    assert fsdp_spec((4096, 3), 4) == jax.sharding.PartitionSpec("fsdp")
    assert fsdp_spec((128,), 4) == jax.sharding.PartitionSpec()  # small: replicated
    assert fsdp_spec((4099, 3), 4) == jax.sharding.PartitionSpec()  # nothing divisible
    assert fsdp_spec((3, 3, 64, 128), 1) == jax.sharding.PartitionSpec()


def test_the_mesh_keeps_the_device_order_with_auto_axes():
    # One process: jax.make_mesh keeps the CPU devices in order, so the batch rows go to the
    # devices they went to before; Auto axes let XLA propagate shardings as on a plain Mesh.
    mesh = make_mesh(8, 4)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4}
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,) * 2
    assert list(mesh.devices.flat) == jax.devices()
    assert list(make_mesh(3).devices.flat) == jax.devices()[:3]


def _train_fsdp(fsdp: int, overrides: list[str]):
    """``STEPS`` steps of the default on 8 devices with an FSDP axis of ``fsdp``: the final state
    on the host, the fraction of the params one device holds, the program and the fresh state."""
    encoder = load_text_encoder()
    program = build_train_program(get_config("default", [*overrides, f"train.fsdp={fsdp}"]))
    state = program.init_placed_state(encoder.sentence_dim)
    fresh = program.parallel.to_host(state)
    params = (state.g_params, state.d_params)
    per_device = sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(params))
    total = sum(x.nbytes for x in jax.tree.leaves(params))
    pipeline = Pipeline(program.config, make_source(program.config), EmbeddingTable.on_demand(encoder))
    for batch in pipeline.iterate(0, STEPS):
        state, _ = program.step(state, program.parallel.put_batch(batch))
    return program.parallel.to_host(state), per_device / total, program, fresh


def test_fsdp_axis_trains_like_data_parallel_with_a_quarter_of_the_params_per_device():
    sharded, fraction, program, fresh = _train_fsdp(4, OVERRIDES)  # SGD: see test_multihost
    dense, dense_fraction, _, _ = _train_fsdp(1, OVERRIDES)
    assert dict(program.parallel.mesh.shape) == {"data": 2, "fsdp": 4}
    assert dense_fraction == 1.0
    assert 0.25 <= fraction < 0.27, fraction  # the small leaves (biases, norms) stay whole
    _assert_same_training(sharded, dense, fresh)


def test_fsdp_axis_under_adam_stays_within_what_adams_update_rule_can_reach():
    # The loose check of the same claim with the optimizer every preset uses. Adam can turn the
    # rounding noise of a near-zero gradient into a step of about the learning rate, either way
    # (measured: params within 1.3e-4 on an AMD EPYC, 3e-5 on an Intel Xeon), so the principled
    # bound is twice the furthest its update rule moves a parameter in STEPS steps.
    adam = [o for o in OVERRIDES if o not in LAYOUT_OPTIMIZER]
    sharded, _, program, fresh = _train_fsdp(4, adam)
    dense, _, _, _ = _train_fsdp(1, adam)
    t = program.config.train
    assert t.optimizer == "adam"
    for name, lr in (("g_params", t.g_lr), ("d_params", t.d_lr), ("ema_params", t.g_lr)):
        bound = 2 * adam_reach(lr, t.beta1, t.beta2, STEPS)
        assert tree_max_abs_diff(getattr(sharded, name), getattr(dense, name)) <= bound, name
        # Not vacuous: training moved some parameter further than the two layouts differ by.
        assert tree_max_abs_diff(getattr(sharded, name), getattr(fresh, name)) > bound / 10, name


def test_each_process_builds_its_own_rows_and_together_they_are_the_batch():
    embed = EmbeddingTable.on_demand(load_text_encoder())
    config = get_config("default", ["train.batch_size=12"])
    whole = Pipeline(config, make_source(config), embed).batch(5)
    parts = [Pipeline(config, make_source(config), embed, rows).batch(5) for rows in [(0, 4), (4, 8), (8, 12)]]
    for key, value in whole.items():
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), value)


def test_a_batch_the_devices_do_not_divide_is_refused_with_the_numbers():
    with pytest.raises(ConfigError, match=r"train.batch_size=30 is not divisible by the 8 devices"):
        data_fsdp_parallel(get_config("default", ["train.batch_size=30"]))
    with pytest.raises(ConfigError, match=r"train.fsdp=3 must .* divide the 8 devices"):
        data_fsdp_parallel(get_config("default", ["train.fsdp=3"]))
    with pytest.raises(ConfigError, match="needs train.parallel=jit"):
        data_fsdp_parallel(get_config("default", ["train.fsdp=2", "train.parallel=pmap"]))
