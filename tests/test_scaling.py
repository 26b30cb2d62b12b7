"""The on-paper communication model of jaxgan.scaling against hand-computed values."""

import jax
import numpy as np
import pytest

from jaxgan.models import build_models
from jaxgan.presets import get_config
from jaxgan.scaling import expected_step, fsdp_bytes, parameter_bytes, ring_allreduce_bytes
from jaxgan.state import init_state


def test_ring_and_fsdp_traffic_per_chip():
    assert ring_allreduce_bytes(100.0, 1) == 0.0
    assert ring_allreduce_bytes(100.0, 4) == pytest.approx(150.0)  # 2 * 3/4 * 100
    # fsdp=4 of 8 chips: all-gather x2 + reduce-scatter within the axis (3 * 3/4 * S), then
    # the quarter-size shard all-reduced over 2 replicas (2 * 1/2 * S/4).
    assert fsdp_bytes(400.0, 8, 4) == pytest.approx(900.0 + 100.0)
    assert fsdp_bytes(400.0, 8, 1) == pytest.approx(ring_allreduce_bytes(400.0, 8))


def test_parameter_bytes_are_the_initialised_params():
    config = get_config("tiny")
    g, d = build_models(config.model)
    state = init_state(config, g, d, 128)
    count = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))  # noqa: E731
    assert parameter_bytes(config) == {"g": 4 * count(state.g_params), "d": 4 * count(state.d_params)}


def test_expected_step_adds_bandwidth_latency_and_compute():
    config = get_config("tiny")
    r = expected_step(config, chips=4, link_gbps=8.0, peak_tflops=1.0, mfu=0.5, latency_us=10.0)
    grads = sum(parameter_bytes(config).values())
    bandwidth_ms = 1e3 * 1.5 * grads / 1e9  # 2 * 3/4 of the bytes at 1e9 bytes/s
    latency_ms = 1e3 * 2 * 2 * 3 * 10e-6  # two all-reduces, 2 (n - 1) hops each
    assert r["comm_ms"] == pytest.approx(bandwidth_ms + latency_ms)
    assert r["step_ms"] == pytest.approx(r["comm_ms"] + r["compute_ms"])
