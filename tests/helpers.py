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
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (batch_size, resolution, resolution, 3), dtype=np.uint8),
            "sentence": rng.normal(size=(batch_size, sentence_dim)).astype(np.float32),
            "wrong_sentence": rng.normal(size=(batch_size, sentence_dim)).astype(np.float32)}
