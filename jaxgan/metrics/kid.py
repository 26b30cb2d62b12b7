"""Kernel Inception Distance: an unbiased MMD^2 between two sets of features.

Unlike FID, the estimate is unbiased, so it can be compared across sample sizes and its
expected value is 0 when both sets come from one distribution (it can come out negative).
"""

from __future__ import annotations

import numpy as np

from jaxgan.metrics.fid import as_features as _as_features


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3 for all pairs of rows, [M, N] (Binkowski et al., 2018, sec. 4)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased estimate of MMD^2 with the cubic polynomial kernel.

        MMD^2 = 1/(m(m-1)) sum_{i!=j} k(x_i, x_j) + 1/(n(n-1)) sum_{i!=j} k(y_i, y_j)
                - 2/(mn) sum_{i,j} k(x_i, y_j)

    (Gretton et al., 2012, "A Kernel Two-Sample Test", eq. 3). Leaving out the diagonals is what
    removes the bias.

    Args:
      x: features [M, D], M >= 2.
      y: features [N, D], N >= 2.
    """
    m, n = x.shape[0], y.shape[0]
    k_xx = polynomial_kernel(x, x)
    k_yy = polynomial_kernel(y, y)
    k_xy = polynomial_kernel(x, y)
    term_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    term_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(term_xx + term_yy - 2.0 * k_xy.mean())


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID: the unbiased MMD^2 with k(x, y) = (x . y / d + 1)^3, averaged over random subsets.

    Binkowski et al., 2018, "Demystifying MMD GANs", arXiv:1801.01401. As in the paper's code
    (and torch-fidelity and clean-fid), each of ``num_subsets`` rounds draws
    ``min(subset_size, len(real), len(fake))`` rows of each set without replacement, and the
    rounds are independent of each other. Averaging over subsets keeps the cost at
    ``num_subsets`` kernel matrices of at most ``subset_size``^2 entries.

    Args:
      real: features of real images, [N1, D].
      fake: features of generated images, [N2, D].
      num_subsets: how many subsets to average over.
      subset_size: rows per subset, capped at the smaller set.
      seed: seed of the ``np.random.Generator`` that draws the subsets; equal seeds give equal results.

    Returns:
      (mean, std) of the per-subset MMD^2 values (std with ddof=0). Often reported x 1000.

    Raises:
      ValueError: on bad shapes, NaN/inf, or fewer than 2 rows to draw.
    """
    real = _as_features(real, "real")
    fake = _as_features(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake have different feature dims: {real.shape[1]} and {fake.shape[1]}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be at least 1, got {num_subsets}")
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size < 2:
        raise ValueError(f"KID needs subsets of at least 2 rows, got {size} "
                         f"(subset_size={subset_size}, {real.shape[0]} real, {fake.shape[0]} fake)")
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        real_subset = real[rng.choice(real.shape[0], size, replace=False)]
        fake_subset = fake[rng.choice(fake.shape[0], size, replace=False)]
        values[i] = mmd2_unbiased(real_subset, fake_subset)
    return float(values.mean()), float(values.std())
