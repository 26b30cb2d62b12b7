"""FID, KID, IS and precision/recall against direct NumPy/SciPy references."""

import itertools
import warnings

import numpy as np
import pytest
import scipy.linalg

from jaxgan.metrics import fid, inception_score, kid, precision_recall


def _features(rng, n, d, latent=None, shift=0.0, scale=1.0):
    """Correlated Gaussian features; rank ``latent`` when latent < d."""
    latent = latent or d
    mixing = rng.normal(size=(latent, d)) / np.sqrt(latent)
    return (rng.normal(size=(n, latent)) * scale) @ mixing + shift


def _fid_sqrtm(mu1, sigma1, mu2, sigma2):
    """The pytorch-fid way: the real part of scipy's sqrtm(S1 S2)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = scipy.linalg.sqrtm(sigma1 @ sigma2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root).real)


def _fid_eigvals(mu1, sigma1, mu2, sigma2):
    """tr((S1 S2)^{1/2}) as the sum of sqrt of the (real, >= 0) eigenvalues of S1 S2."""
    eigenvalues = np.clip(np.linalg.eigvals(sigma1 @ sigma2).real, 0, None)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(eigenvalues).sum())


# FID -------------------------------------------------------------------------------------------


def test_fid_matches_sqrtm_reference():
    rng = np.random.default_rng(0)
    a = _features(rng, 3000, 64)
    b = _features(rng, 2500, 64, shift=0.3, scale=1.4)
    mu1, sigma1 = fid.stats_from_features(a)
    mu2, sigma2 = fid.stats_from_features(b)
    expected = _fid_sqrtm(mu1, sigma1, mu2, sigma2)
    got = fid.frechet_distance(mu1, sigma1, mu2, sigma2)
    assert expected > 1.0
    assert got == pytest.approx(expected, rel=1e-9)
    assert fid.fid_from_features(a, b) == pytest.approx(got, rel=1e-12)
    # Symmetric in its two arguments, though the computation is not.
    assert fid.frechet_distance(mu2, sigma2, mu1, sigma1) == pytest.approx(got, rel=1e-9)


def test_fid_closed_form_for_diagonal_covariances():
    # For diagonal S1, S2: tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}) = sum (sqrt(s1) - sqrt(s2))^2.
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1.0 + 4.0 + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert fid.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-12)


def test_fid_rank_deficient_covariances_stay_finite():
    rng = np.random.default_rng(1)
    a = _features(rng, 2000, 100, latent=20)
    b = _features(rng, 2000, 100, latent=20, shift=0.1, scale=1.2)
    mu1, sigma1 = fid.stats_from_features(a)
    mu2, sigma2 = fid.stats_from_features(b)
    assert np.linalg.matrix_rank(sigma1) == 20
    got = fid.frechet_distance(mu1, sigma1, mu2, sigma2)
    assert np.isfinite(got) and got > 0
    assert got == pytest.approx(_fid_sqrtm(mu1, sigma1, mu2, sigma2), rel=1e-6)
    assert got == pytest.approx(_fid_eigvals(mu1, sigma1, mu2, sigma2), rel=1e-6)
    # Fewer samples than dims: sigma has rank 9 of 64.
    few1, few2 = rng.normal(size=(10, 64)), rng.normal(size=(10, 64)) + 0.5
    mu1, sigma1 = fid.stats_from_features(few1)
    mu2, sigma2 = fid.stats_from_features(few2)
    got = fid.frechet_distance(mu1, sigma1, mu2, sigma2)
    assert np.isfinite(got) and got >= 0
    assert got == pytest.approx(_fid_eigvals(mu1, sigma1, mu2, sigma2), rel=1e-6)
    assert fid.frechet_distance(mu1, sigma1, mu1, sigma1) < 1e-9 * np.trace(sigma1)


def test_fid_of_identical_stats_is_zero():
    rng = np.random.default_rng(2)
    mu, sigma = fid.stats_from_features(_features(rng, 1000, 32, shift=3.0))
    value = fid.frechet_distance(mu, sigma, mu, sigma)
    assert 0.0 <= value < 1e-6 * np.trace(sigma)
    zero = np.zeros((4, 4))
    assert fid.frechet_distance(np.ones(4), zero, np.zeros(4), zero) == pytest.approx(4.0)


def test_feature_stats_streaming_matches_numpy():
    rng = np.random.default_rng(3)
    features = _features(rng, 1000, 16, shift=50.0).astype(np.float32)
    reference = features.astype(np.float64)
    stats = fid.FeatureStats()
    for start, stop in itertools.pairwise([0, 1, 8, 8, 300, 301, 777, 1000]):
        stats.update(features[start:stop])
    assert stats.count == 1000 and stats.dim == 16
    np.testing.assert_allclose(stats.mean, reference.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(stats.covariance, np.cov(reference, rowvar=False), rtol=1e-10)
    # Another order and split: the same up to float64 rounding.
    shuffled = fid.FeatureStats()
    for chunk in np.array_split(features[::-1], 7):
        shuffled.update(chunk)
    np.testing.assert_allclose(shuffled.covariance, stats.covariance, rtol=1e-10)


def test_feature_stats_merge_and_save_load(tmp_path):
    rng = np.random.default_rng(4)
    features = _features(rng, 500, 8)
    first, second = fid.FeatureStats(), fid.FeatureStats()
    first.update(features[:123])
    second.update(features[123:])
    first.merge(second)
    first.merge(fid.FeatureStats())  # merging nothing changes nothing
    assert first.count == 500
    np.testing.assert_allclose(first.mean, features.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(first.covariance, np.cov(features, rowvar=False), rtol=1e-10)

    path = tmp_path / "stats.npz"
    first.save(path)
    with np.load(path) as data:
        assert sorted(data.files) == ["count", "mu", "sigma"]
    loaded = fid.FeatureStats.load(path)
    assert loaded.count == 500
    np.testing.assert_array_equal(loaded.mean, first.mean)
    np.testing.assert_allclose(loaded.covariance, first.covariance, rtol=1e-14)
    # A loaded accumulator keeps accumulating like the original.
    extra = _features(rng, 50, 8)
    loaded.update(extra)
    np.testing.assert_allclose(loaded.covariance, np.cov(np.concatenate([features, extra]), rowvar=False),
                               rtol=1e-10)


def test_feature_stats_errors(tmp_path):
    stats = fid.FeatureStats()
    with pytest.raises(ValueError, match="seen no features"):
        _ = stats.mean
    stats.update(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        _ = stats.covariance
    with pytest.raises(ValueError, match="does not match"):
        stats.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="2-D"):
        stats.update(np.zeros(3))
    with pytest.raises(ValueError, match="NaN or inf"):
        stats.update(np.array([[0.0, np.nan, 1.0]]))
    np.savez(tmp_path / "bare.npz", mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(ValueError, match="count"):
        fid.FeatureStats.load(tmp_path / "bare.npz")


def test_frechet_distance_bad_input():
    mu, sigma = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="mu1 must be 1-D"):
        fid.frechet_distance(np.zeros((3, 1)), sigma, mu, sigma)
    with pytest.raises(ValueError, match="sigma2 must be"):
        fid.frechet_distance(mu, sigma, mu, np.eye(4))
    with pytest.raises(ValueError, match="different feature dims"):
        fid.frechet_distance(mu, sigma, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="NaN or inf"):
        fid.frechet_distance(mu, sigma, mu, np.diag([1.0, np.inf, 1.0]))
    with pytest.raises(ValueError, match="2-D"):
        fid.fid_from_features(np.zeros(5), np.zeros((5, 1)))


# KID -------------------------------------------------------------------------------------------


def _mmd2_double_loop(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_single_full_subset_matches_double_loop():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(30, 6))
    fake = rng.normal(size=(30, 6)) * 1.5 + 0.3
    expected = _mmd2_double_loop(real, fake)
    mean, std = kid.kernel_inception_distance(real, fake, num_subsets=1, subset_size=1000)
    assert mean == pytest.approx(expected, rel=1e-10)
    assert std == 0.0
    # Unequal sizes in the estimator itself.
    assert kid.mmd2_unbiased(real[:20], fake) == pytest.approx(_mmd2_double_loop(real[:20], fake), rel=1e-10)


def test_kid_same_distribution_near_zero_shifted_positive():
    rng = np.random.default_rng(6)
    real, same = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    mean, std = kid.kernel_inception_distance(real, same, num_subsets=20, subset_size=200)
    assert std > 0 and abs(mean) < 3 * std
    shifted_mean, shifted_std = kid.kernel_inception_distance(real, same + 0.5, num_subsets=20, subset_size=200)
    assert shifted_mean > 10 * shifted_std and shifted_mean > 10 * abs(mean)


def test_kid_is_deterministic_from_seed():
    rng = np.random.default_rng(7)
    real, fake = rng.normal(size=(100, 4)), rng.normal(size=(80, 4))
    first = kid.kernel_inception_distance(real, fake, num_subsets=5, subset_size=50, seed=3)
    assert kid.kernel_inception_distance(real, fake, num_subsets=5, subset_size=50, seed=3) == first
    assert kid.kernel_inception_distance(real, fake, num_subsets=5, subset_size=50, seed=4) != first


def test_kid_bad_input():
    good = np.zeros((10, 3))
    with pytest.raises(ValueError, match="different feature dims"):
        kid.kernel_inception_distance(good, np.zeros((10, 4)))
    with pytest.raises(ValueError, match="2-D"):
        kid.kernel_inception_distance(np.zeros(10), good)
    with pytest.raises(ValueError, match="NaN"):
        kid.kernel_inception_distance(good, np.full((10, 3), np.nan))
    with pytest.raises(ValueError, match="at least 2 rows"):
        kid.kernel_inception_distance(good, np.zeros((1, 3)))


# Inception Score -------------------------------------------------------------------------------


def test_inception_score_extremes():
    classes = 7
    one_hot = np.tile(np.eye(classes), (10, 1))  # 70 samples, every class 10 times
    mean, std = inception_score.inception_score(one_hot, splits=1, from_logits=False)
    assert mean == pytest.approx(classes, abs=1e-6) and std == 0.0
    # The same as logits: large margins make the softmax one-hot to float64 precision.
    mean, _ = inception_score.inception_score(one_hot * 100.0, splits=10)
    assert mean == pytest.approx(classes, abs=1e-6)
    identical = np.tile(np.random.default_rng(8).normal(size=(1, classes)), (50, 1))
    mean, std = inception_score.inception_score(identical, splits=5)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_matches_direct_formula():
    rng = np.random.default_rng(9)
    logits = rng.normal(size=(103, 12)) * 3
    splits = 4
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    scores = []
    for i in range(splits):
        part = probs[i * 103 // splits:(i + 1) * 103 // splits]
        marginal = part.mean(axis=0)
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(marginal)), axis=1))))
    mean, std = inception_score.inception_score(logits, splits=splits)
    assert mean == pytest.approx(np.mean(scores), rel=1e-12)
    assert std == pytest.approx(np.std(scores), rel=1e-9)
    from_probs = inception_score.inception_score(probs.astype(np.float32), splits=splits, from_logits=False)
    assert from_probs[0] == pytest.approx(mean, rel=1e-5)


def test_joint_probabilities_is_the_outer_product():
    rng = np.random.default_rng(10)
    sizes = (8, 3, 2, 9)
    heads = [rng.dirichlet(np.ones(c), size=5) for c in sizes]
    joint = inception_score.joint_probabilities(heads)
    assert joint.shape == (5, 432)
    np.testing.assert_allclose(joint.sum(axis=1), 1.0, rtol=1e-12)
    for n in range(5):
        outer = np.einsum("a,b,c,d->abcd", *(h[n] for h in heads))
        np.testing.assert_allclose(joint[n], outer.reshape(-1), rtol=1e-12)
    # Row-major: class (c1, c2, c3, c4) at ((c1 * 3 + c2) * 2 + c3) * 9 + c4.
    assert joint[0, ((5 * 3 + 2) * 2 + 1) * 9 + 4] == pytest.approx(
        heads[0][0, 5] * heads[1][0, 2] * heads[2][0, 1] * heads[3][0, 4], rel=1e-12)


def test_inception_score_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        inception_score.inception_score(np.zeros(10))
    with pytest.raises(ValueError, match="NaN"):
        inception_score.inception_score(np.array([[0.0, np.nan]] * 10))
    with pytest.raises(ValueError, match="splits"):
        inception_score.inception_score(np.zeros((5, 3)), splits=10)
    with pytest.raises(ValueError, match="sum to 1"):
        inception_score.inception_score(np.full((10, 3), 0.5), splits=1, from_logits=False)
    with pytest.raises(ValueError, match="non-negative"):
        inception_score.inception_score(np.array([[1.5, -0.5]] * 10), splits=1, from_logits=False)
    with pytest.raises(ValueError, match="head 1 has 4 samples"):
        inception_score.joint_probabilities([np.ones((5, 2)) / 2, np.ones((4, 2)) / 2])


# Precision / recall ----------------------------------------------------------------------------


def _prdc_brute_force(real, fake, k):
    def radii(x):
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    real_radii, fake_radii = radii(real), radii(fake)
    cross = np.sqrt(((fake[:, None] - real[None]) ** 2).sum(-1))  # [fake, real]
    in_real_ball = cross <= real_radii[None, :]
    return {
        "precision": in_real_ball.any(axis=1).mean(),
        "recall": (cross <= fake_radii[:, None]).any(axis=0).mean(),
        "density": in_real_ball.sum() / (k * len(fake)),
        "coverage": in_real_ball.any(axis=0).mean(),
    }


@pytest.mark.parametrize("k,batch_size", [(3, 64), (5, 1000)])
def test_precision_recall_matches_brute_force(k, batch_size):
    rng = np.random.default_rng(11)
    real = _features(rng, 200, 16, shift=5.0)
    fake = _features(rng, 170, 16, shift=5.3, scale=0.8)
    expected = _prdc_brute_force(real, fake, k)
    got = precision_recall.precision_recall_density_coverage(real, fake, k=k, batch_size=batch_size)
    assert got == expected
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1
    assert precision_recall.precision_recall(real, fake, k=k, batch_size=batch_size) == (
        expected["precision"], expected["recall"])


def test_precision_recall_extremes():
    rng = np.random.default_rng(12)
    points = rng.normal(size=(100, 8))
    assert precision_recall.precision_recall(points, points.copy(), batch_size=32) == (1.0, 1.0)
    far = points + 1000.0
    result = precision_recall.precision_recall_density_coverage(points, far)
    assert result == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_precision_recall_bad_input():
    good = np.zeros((10, 3))
    with pytest.raises(ValueError, match="different feature dims"):
        precision_recall.precision_recall(good, np.zeros((10, 4)))
    with pytest.raises(ValueError, match="2-D"):
        precision_recall.precision_recall(good[None], good)
    with pytest.raises(ValueError, match="NaN"):
        precision_recall.precision_recall(good, np.full((10, 3), np.nan))
    with pytest.raises(ValueError, match="k=3"):
        precision_recall.precision_recall(good, np.zeros((3, 3)))
