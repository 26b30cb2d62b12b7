"""Fréchet Inception Distance from feature statistics, on the host in float64.

FID compares two sets of image features (Inception pool features, or any other embedding)
through the Gaussians that match their first two moments. This module holds only the
arithmetic: ``FeatureStats`` accumulates the mean and covariance of features streamed in
batches, and ``frechet_distance`` turns two pairs (mean, covariance) into the distance.
Extracting the features is someone else's job.
"""

from __future__ import annotations

import os

import numpy as np


def as_features(features: np.ndarray, name: str = "features") -> np.ndarray:
    """``features`` as a finite float64 [N, D] array, or a ValueError naming the problem."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"{name} must be 2-D [num_samples, feature_dim], got shape {features.shape}")
    if not np.all(np.isfinite(features)):
        raise ValueError(f"{name} contains NaN or inf")
    return features


class FeatureStats:
    """Streaming mean and covariance of feature vectors, in float64 on the host.

    The state is the count n, the mean mu and M2 = sum_i (x_i - mu)(x_i - mu)^T, the sum of
    outer products of deviations from the mean. Each batch is reduced on its own and combined
    with the pairwise update of Chan, Golub & LeVeque (1979, "Updating formulae and a pairwise
    algorithm for computing sample variances"):

        delta = mu_b - mu_a,  n = n_a + n_b,
        mu = mu_a + delta * n_b / n,
        M2 = M2_a + M2_b + delta delta^T * n_a n_b / n.

    Summing raw outer products x x^T instead would cancel catastrophically in
    sum x x^T - n mu mu^T when the mean is large next to the spread; deviations keep every
    digit. The result does not depend on how the features are split into batches or in which
    order they come, up to float64 rounding.

    Example:
        >>> stats = FeatureStats()
        >>> for batch in np.split(np.arange(12.0).reshape(6, 2), [1, 4]):
        ...     stats.update(batch)
        >>> stats.count, stats.mean
        (6, array([5., 6.]))
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None

    @property
    def dim(self) -> int | None:
        """The feature dimension, or None before the first update."""
        return None if self._mean is None else self._mean.shape[0]

    def _combine(self, count: int, mean: np.ndarray, m2: np.ndarray) -> None:
        if count == 0:
            return
        if self._mean is None:
            self.count, self._mean, self._m2 = count, mean.copy(), m2.copy()
            return
        if mean.shape[0] != self._mean.shape[0]:
            raise ValueError(f"feature dim {mean.shape[0]} does not match the accumulated dim {self._mean.shape[0]}")
        total = self.count + count
        delta = mean - self._mean
        self._mean = self._mean + delta * (count / total)
        self._m2 = self._m2 + m2 + np.outer(delta, delta) * (self.count * count / total)
        self.count = total

    def update(self, features: np.ndarray) -> None:
        """Adds a batch of features [N, D] (any float dtype; accumulated in float64)."""
        features = as_features(features)
        if features.shape[0] == 0:
            return
        mean = features.mean(axis=0)
        centred = features - mean
        self._combine(features.shape[0], mean, centred.T @ centred)

    def merge(self, other: FeatureStats) -> None:
        """Adds everything ``other`` has seen, as if its batches had been passed to ``update``."""
        if other._mean is not None:
            self._combine(other.count, other._mean, other._m2)

    @property
    def mean(self) -> np.ndarray:
        """mu = (1/n) sum_i x_i, float64 [D]."""
        if self._mean is None:
            raise ValueError("FeatureStats has seen no features")
        return self._mean.copy()

    @property
    def covariance(self) -> np.ndarray:
        """The unbiased covariance M2 / (n - 1), float64 [D, D] (what ``np.cov`` returns)."""
        if self.count < 2:
            raise ValueError(f"covariance needs at least 2 samples, got {self.count}")
        return self._m2 / (self.count - 1)

    def save(self, path: str | os.PathLike) -> None:
        """Writes ``mu``, ``sigma`` and ``count`` to an ``.npz`` file (the pytorch-fid keys, plus the count)."""
        np.savez(path, mu=self.mean, sigma=self.covariance, count=np.int64(self.count))

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStats:
        """Reads a file written by ``save``; the count makes the result mergeable again."""
        with np.load(path) as data:
            missing = {"mu", "sigma", "count"} - set(data.files)
            if missing:
                raise ValueError(f"{os.fspath(path)} lacks {sorted(missing)}; expected mu, sigma and count")
            mu, sigma, count = data["mu"], data["sigma"], int(data["count"])
        mu, sigma = _check_stats(mu, sigma, "loaded")
        if count < 2:
            raise ValueError(f"{os.fspath(path)} has count {count}; need at least 2")
        stats = cls()
        stats._combine(count, mu, sigma * (count - 1))
        return stats


def stats_from_features(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], unbiased covariance [D, D]) of features [N, D], in float64."""
    stats = FeatureStats()
    stats.update(features)
    return stats.mean, stats.covariance


def _check_stats(mu: np.ndarray, sigma: np.ndarray, which: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1:
        raise ValueError(f"mu{which} must be 1-D [D], got shape {mu.shape}")
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"sigma{which} must be [D, D] = {(mu.shape[0],) * 2} to match mu{which}, got {sigma.shape}")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise ValueError(f"mu{which} or sigma{which} contains NaN or inf")
    # eigh reads one triangle only, so an asymmetry from rounding would be read inconsistently.
    return mu, (sigma + sigma.T) / 2


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric PSD matrix; negative rounding noise counts as 0."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

        d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})

    (Heusel et al., 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local
    Nash Equilibrium", arXiv:1706.08500; the closed form is Dowson & Landau, 1982).

    The trace term needs no general matrix square root. S1 S2 has the same eigenvalues as the
    symmetric PSD matrix S1^{1/2} S2 S1^{1/2}, so tr((S1 S2)^{1/2}) is the sum of the square
    roots of that matrix's eigenvalues, which ``eigh`` finds in float64 without complex
    arithmetic. ``scipy.linalg.sqrtm(S1 @ S2)`` (pytorch-fid) gives the same value where it is
    well defined, but returns complex or infinite results for the rank-deficient covariances
    of few samples in many dimensions; here those stay finite and non-negative.

    Args:
      mu1: mean of the first set of features, [D].
      sigma1: covariance of the first set, [D, D], symmetric PSD.
      mu2: mean of the second set, [D].
      sigma2: covariance of the second set, [D, D].

    Returns:
      The squared Fréchet distance (what is reported as FID), a non-negative float.

    Raises:
      ValueError: on shapes that do not fit together, or NaN/inf entries.
    """
    mu1, sigma1 = _check_stats(mu1, sigma1, "1")
    mu2, sigma2 = _check_stats(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"the two statistics have different feature dims: {mu1.shape[0]} and {mu2.shape[0]}")
    root1 = _psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt
    # For (nearly) identical statistics the terms cancel to a rounding error of either sign.
    return float(max(distance, 0.0))


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """``frechet_distance`` between the statistics of two feature arrays [N1, D] and [N2, D]."""
    mu1, sigma1 = stats_from_features(as_features(features1, "features1"))
    mu2, sigma2 = stats_from_features(as_features(features2, "features2"))
    return frechet_distance(mu1, sigma1, mu2, sigma2)
