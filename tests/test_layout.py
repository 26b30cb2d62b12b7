"""The device layout without extra processes: the FSDP axis on 8 fake devices, per-process
batch rows, and the layout's refusals."""

import jax
import numpy as np
import pytest

from jaxgan.config import ConfigError, get_config
from jaxgan.data.pipeline import CaptionEmbeddingCache, ShapesPipeline
from jaxgan.parallel import data_fsdp_parallel, fsdp_spec, make_mesh
from jaxgan.program import build_train_program
from jaxgan.text import load_text_encoder
from test_multihost import OVERRIDES, _assert_same_training


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


def test_fsdp_axis_trains_like_data_parallel_with_a_quarter_of_the_params_per_device():
    encoder = load_text_encoder()
    embed = CaptionEmbeddingCache(encoder)

    def run(fsdp: int):
        program = build_train_program(get_config("default", [*OVERRIDES, f"train.fsdp={fsdp}"]))
        state = program.init_placed_state(encoder.sentence_dim)
        params = (state.g_params, state.d_params)
        per_device = sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(params))
        total = sum(x.nbytes for x in jax.tree.leaves(params))
        pipeline = ShapesPipeline(program.config, embed)
        for batch in pipeline.iterate(0, 3):
            state, _ = program.step(state, program.parallel.put_batch(batch))
        return program.parallel.to_host(state), per_device / total, program

    sharded, fraction, program = run(4)
    dense, dense_fraction, _ = run(1)
    assert dict(program.parallel.mesh.shape) == {"data": 2, "fsdp": 4}
    assert dense_fraction == 1.0
    assert 0.25 <= fraction < 0.27, fraction  # the small leaves (biases, norms) stay whole
    _assert_same_training(sharded, dense)


def test_each_process_builds_its_own_rows_and_together_they_are_the_batch():
    embed = CaptionEmbeddingCache(load_text_encoder())
    config = get_config("default", ["train.batch_size=12"])
    whole = ShapesPipeline(config, embed).batch(5)
    parts = [ShapesPipeline(config, embed, rows).batch(5) for rows in [(0, 4), (4, 8), (8, 12)]]
    for key, value in whole.items():
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), value)


def test_a_batch_the_devices_do_not_divide_is_refused_with_the_numbers():
    with pytest.raises(ConfigError, match=r"train.batch_size=30 is not divisible by the 8 devices"):
        data_fsdp_parallel(get_config("default", ["train.batch_size=30"]))
    with pytest.raises(ConfigError, match=r"train.fsdp=3 must .* divide the 8 devices"):
        data_fsdp_parallel(get_config("default", ["train.fsdp=3"]))
    with pytest.raises(ConfigError, match="needs train.parallel=jit"):
        data_fsdp_parallel(get_config("default", ["train.fsdp=2", "train.parallel=pmap"]))
