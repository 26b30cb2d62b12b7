"""Shared test utilities."""

import jax
import numpy as np


def tree_max_abs_diff(a, b) -> float:
    diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))),
                         a, b)
    return max(jax.tree.leaves(diffs))


def trees_bitwise_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def random_batch(batch_size: int, resolution: int, sentence_dim: int, seed: int) -> dict:
    """``bench.synthetic_batch`` for a batch size and resolution without a whole config."""
    from jaxgan.bench import synthetic_batch
    from jaxgan.config import get_config

    config = get_config("tiny", [f"train.batch_size={batch_size}", f"model.resolution={resolution}"])
    return synthetic_batch(config, sentence_dim, seed)


def train_steps(cfg, sentence_dim: int, steps: int, batch_fn, count_traces=None):
    """Runs ``steps`` compiled steps of ``cfg`` from a fresh state on ``batch_fn(i)`` batches.

    Returns the single-copy final state (on the host) and each step's metrics as floats.
    ``count_traces`` (a list) gets one entry per trace of the step.
    """
    from jaxgan.models import build_models
    from jaxgan.parallel import data_fsdp_parallel
    from jaxgan.state import init_state
    from jaxgan.step import make_train_step

    dp = data_fsdp_parallel(cfg)
    g, d = build_models(cfg.model, *dp.batchnorm_layout(cfg.model.bn_sync))
    step = make_train_step(cfg, g, d, dp.axis_name)
    if count_traces is not None:
        inner = step

        def step(state, batch):
            count_traces.append(1)  # runs only while tracing
            return inner(state, batch)

    compiled = dp.compile(step)
    state = dp.put_state(init_state(cfg, g, d, sentence_dim))
    history = []
    for i in range(steps):
        state, metrics = compiled(state, dp.put_batch(batch_fn(i)))
        history.append({k: float(v) for k, v in dp.to_host(metrics).items()})
    return dp.to_host(state), history
