"""The on-paper communication model of jaxgan.scaling against hand-computed values."""

import jax
import numpy as np
import pytest
from helpers import save_galip_tiny_clip

from jaxgan.models import build_models
from jaxgan.presets import get_config
from jaxgan.scaling import (
    SENTENCE_DIM,
    build_parser,
    expected_step,
    fsdp_bytes,
    parameter_bytes,
    ring_allreduce_bytes,
    run,
    sentence_dim_of,
)
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


def test_set_overrides_every_preset(capsys):
    args = build_parser().parse_args(["--preset", "tiny", "--set", "model.width=4", "--chips", "4"])
    run(args)
    config = get_config("tiny", ["model.width=4"])
    g_mib = parameter_bytes(config)["g"] / 2**20
    assert g_mib != parameter_bytes(get_config("tiny"))["g"] / 2**20
    assert f"tiny: G {g_mib:.1f} MiB" in capsys.readouterr().out


def test_galip_params_are_counted_at_the_clip_sentence_width(tmp_path):
    """GALIP's G and D take the CLIP's projection (24 here), not SENTENCE_DIM: the bytes
    scaling all-reduces are those of the params initialised at that width."""
    save_galip_tiny_clip(tmp_path)
    config = get_config("galip64", [f"model.clip={tmp_path}", "model.width=4", "model.z_dim=8",
                                    "model.resolution=32", "model.d_layers=1,2", "model.prompt_layers=1",
                                    "model.bridge_width=4", "model.bridge_blocks=1"])
    assert sentence_dim_of(config) == 24 and sentence_dim_of(get_config("tiny")) == SENTENCE_DIM
    g, d = build_models(config.model)
    state = jax.eval_shape(lambda: init_state(config, g, d, 24))
    count = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))  # noqa: E731
    assert parameter_bytes(config, sentence_dim_of(config)) == {"g": 4 * count(state.g_params),
                                                                "d": 4 * count(state.d_params)}
