"""Precision, recall, density and coverage of generated features, from k-nearest-neighbour balls.

Each set of features is approximated by the union of balls around its points, each ball
reaching to the point's k-th nearest neighbour in the same set. Precision asks how many
generated points fall in the real balls (fidelity), recall how many real points fall in the
generated balls (diversity). Density and coverage (Naeem et al.) reuse the same real balls.

The pairwise distances are computed in blocks of rows by a jitted JAX function, in float32,
so 10k x 10k distances are never held at once and the same code runs on an accelerator.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxgan.metrics.fid import as_features as _as_features

DEFAULT_BATCH_SIZE = 1024


def _squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    """||a_i - b_j||^2 = ||a_i||^2 - 2 a_i . b_j + ||b_j||^2, [M, N], clipped at 0 against rounding."""
    # On GPUs and TPUs the default float32 matmul rounds its inputs to TF32 or bfloat16, which
    # would move points across ball boundaries.
    dots = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
    squared = jnp.sum(a * a, axis=1)[:, None] - 2.0 * dots + jnp.sum(b * b, axis=1)[None, :]
    return jnp.maximum(squared, 0.0)


@functools.partial(jax.jit, static_argnames="k")
def _kth_neighbour_block(rows: jax.Array, points: jax.Array, k: int) -> jax.Array:
    """Squared distance from each of ``rows`` (a slice of ``points``) to its k-th nearest other point."""
    smallest = -jax.lax.top_k(-_squared_distances(rows, points), k + 1)[0]
    # A row's distance to itself (0) is the smallest of the k + 1, so the last is the k-th
    # other point; a duplicate of the row counts as a neighbour at distance 0, as in the papers' code.
    return smallest[:, k]


@jax.jit
def _cross_block(fake_rows: jax.Array, real: jax.Array, real_radii: jax.Array,
                 fake_row_radii: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Ball memberships between a block of fake points and all real points (radii squared)."""
    squared = _squared_distances(fake_rows, real)
    in_real_ball = squared <= real_radii[None, :]
    return (jnp.any(in_real_ball, axis=1),  # fake point inside the real manifold: precision
            jnp.sum(in_real_ball, axis=1),  # how many real balls hold it: density
            jnp.any(squared <= fake_row_radii[:, None], axis=0),  # real point in a fake ball: recall
            jnp.any(in_real_ball, axis=0))  # real ball holds a fake point: coverage


def _kth_neighbour_radii(points: jax.Array, k: int, batch_size: int) -> jax.Array:
    return jnp.concatenate([_kth_neighbour_block(points[start:start + batch_size], points, k)
                            for start in range(0, points.shape[0], batch_size)])


def precision_recall_density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 3,
                                      batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, float]:
    """Improved precision and recall, plus density and coverage, from shared k-NN balls.

    With B(x, X) the ball around x reaching its k-th nearest neighbour in X (x itself
    excluded), real features X (N of them) and generated features Y (M):

        precision = (1/M) sum_j 1[Y_j in U_i B(X_i, X)]
        recall    = (1/N) sum_i 1[X_i in U_j B(Y_j, Y)]
        density   = (1/(kM)) sum_j sum_i 1[Y_j in B(X_i, X)]
        coverage  = (1/N) sum_i 1[exists j: Y_j in B(X_i, X)]

    Precision and recall: Kynkäänniemi et al., 2019, "Improved Precision and Recall Metric for
    Assessing Generative Models", arXiv:1904.06991 (k = 3). Density and coverage: Naeem et
    al., 2020, "Reliable Fidelity and Diversity Metrics for Generative Models",
    arXiv:2002.09797 (they suggest k = 5). A point on a ball's boundary counts as inside.

    Distances are computed in float32 after centring both sets on the real mean, which keeps
    ||a||^2 - 2 a.b + ||b||^2 from cancelling digits when features sit far from the origin.

    Args:
      real: real features [N, D], N > k.
      fake: generated features [M, D], M > k.
      k: which nearest neighbour sets a ball's radius.
      batch_size: rows per block; a block holds batch_size x max(N, M) float32 distances.

    Returns:
      A dict with ``precision``, ``recall``, ``density`` and ``coverage`` (density can exceed 1).

    Raises:
      ValueError: on bad shapes, NaN/inf, k out of range, or batch_size < 1.
    """
    real = _as_features(real, "real")
    fake = _as_features(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake have different feature dims: {real.shape[1]} and {fake.shape[1]}")
    if k < 1 or k >= min(real.shape[0], fake.shape[0]):
        raise ValueError(f"need 1 <= k < number of samples in each set, got k={k} with "
                         f"{real.shape[0]} real and {fake.shape[0]} fake")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    centre = real.mean(axis=0)
    real_points = jnp.asarray(real - centre, dtype=jnp.float32)
    fake_points = jnp.asarray(fake - centre, dtype=jnp.float32)
    real_radii = _kth_neighbour_radii(real_points, k, batch_size)
    fake_radii = _kth_neighbour_radii(fake_points, k, batch_size)

    in_real_manifold, balls_per_fake = [], []
    recalled = jnp.zeros(real.shape[0], dtype=bool)
    covered = jnp.zeros(real.shape[0], dtype=bool)
    for start in range(0, fake.shape[0], batch_size):
        stop = start + batch_size
        inside, count, recall_block, cover_block = _cross_block(
            fake_points[start:stop], real_points, real_radii, fake_radii[start:stop])
        in_real_manifold.append(inside)
        balls_per_fake.append(count)
        recalled = recalled | recall_block
        covered = covered | cover_block
    return {
        "precision": float(np.mean(np.concatenate(jax.device_get(in_real_manifold)))),
        "recall": float(np.mean(jax.device_get(recalled))),
        "density": float(np.sum(np.concatenate(jax.device_get(balls_per_fake)), dtype=np.int64))
                   / (k * fake.shape[0]),
        "coverage": float(np.mean(jax.device_get(covered))),
    }


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3,
                     batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[float, float]:
    """(precision, recall) of Kynkäänniemi et al., 2019 (arXiv:1904.06991).

    See ``precision_recall_density_coverage`` for the definitions and arguments; density and
    coverage come almost for free from the same distances and are dropped here.
    """
    result = precision_recall_density_coverage(real, fake, k=k, batch_size=batch_size)
    return result["precision"], result["recall"]
