"""Inception Score from a classifier's outputs, and the joint distribution of independent heads.

IS rewards samples whose class is confidently predicted (low entropy of p(y|x)) while the
classes over all samples are varied (high entropy of p(y)). It is computed here from logits or
probabilities only, so any classifier works: Inception on natural images, or the shapes
attribute classifier, whose four heads become one joint distribution over 432 classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    """log sum exp(x) along ``axis`` (kept), shifted by the max so nothing overflows."""
    peak = np.max(x, axis=axis, keepdims=True)
    # A class no sample can have (all log p = -inf) would give -inf - -inf = NaN.
    peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        return peak + np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True))


def _log_probabilities(outputs: np.ndarray, from_logits: bool) -> np.ndarray:
    """log p(y|x) in float64, [N, C]."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim != 2:
        raise ValueError(f"logits_or_probs must be 2-D [num_samples, num_classes], got shape {outputs.shape}")
    if not np.all(np.isfinite(outputs)):
        raise ValueError("logits_or_probs contains NaN or inf")
    if from_logits:
        # log-softmax: exp of large logits would overflow, and log of a softmax underflows to -inf.
        return outputs - _logsumexp(outputs, axis=1)
    if np.any(outputs < 0):
        raise ValueError("probabilities must be non-negative (pass from_logits=True for logits)")
    sums = outputs.sum(axis=1, keepdims=True)
    if np.any(np.abs(sums - 1.0) > 1e-3):
        raise ValueError("probability rows must sum to 1 (pass from_logits=True for logits)")
    # float32 softmax rows sum to 1 only within rounding; renormalised, every KL term is >= 0.
    with np.errstate(divide="ignore"):
        return np.log(outputs / sums)


def inception_score(logits_or_probs: np.ndarray, splits: int = 10,
                    from_logits: bool = True) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))), mean and std over ``splits`` chunks.

    Salimans et al., 2016, "Improved Techniques for Training GANs", arXiv:1606.03498. As in
    their TF code, the samples are cut into ``splits`` consecutive chunks (rows
    ``i*N//splits`` to ``(i+1)*N//splits``), p(y) is the mean of p(y|x) within each chunk, and
    the score is computed per chunk. The score lies in [1, C]: 1 when every sample has the same
    p(y|x), C when each is one-hot and the classes are used uniformly.

    Args:
      logits_or_probs: classifier outputs [N, C], N >= splits.
      splits: number of chunks (10 in the paper, over 50k samples).
      from_logits: whether the outputs are logits (else probabilities, rows summing to 1).

    Returns:
      (mean, std) of the per-chunk scores (std with ddof=0, like the TF code).

    Raises:
      ValueError: on bad shapes, NaN/inf, invalid probabilities, or fewer samples than splits.
    """
    log_p = _log_probabilities(logits_or_probs, from_logits)
    n = log_p.shape[0]
    if splits < 1 or n < splits:
        raise ValueError(f"need 1 <= splits <= num_samples, got splits={splits} with {n} samples")
    scores = np.empty(splits)
    for i in range(splits):
        chunk = log_p[i * n // splits:(i + 1) * n // splits]
        log_marginal = _logsumexp(chunk, axis=0) - np.log(chunk.shape[0])
        p = np.exp(chunk)
        # 0 * log 0 = 0: classes with p(y|x) = 0 add nothing (and would give 0 * -inf = NaN).
        with np.errstate(invalid="ignore"):
            kl = np.where(p > 0, p * (chunk - log_marginal), 0.0).sum(axis=1)
        scores[i] = np.exp(kl.mean())
    return float(scores.mean()), float(scores.std())


def joint_probabilities(head_probs: Sequence[np.ndarray]) -> np.ndarray:
    """The joint distribution of independent heads: p(y1, y2, ...|x) = prod_k p(y_k|x).

    Flattened in row-major order, so class (c1, c2, ..., cK) sits at column
    ``((c1 * C2 + c2) * C3 + c3) ...``. The shapes attribute classifier has four heads
    (8 colours, 3 shapes, 2 sizes, 9 positions), giving 432 joint classes.

    Args:
      head_probs: probabilities [N, C_k] of each head, rows summing to 1.

    Returns:
      float64 [N, C_1 * C_2 * ... * C_K], rows summing to 1.
    """
    if len(head_probs) == 0:
        raise ValueError("joint_probabilities needs at least one head")
    heads = [np.asarray(h, dtype=np.float64) for h in head_probs]
    for k, head in enumerate(heads):
        if head.ndim != 2:
            raise ValueError(f"head {k} must be 2-D [num_samples, num_classes], got shape {head.shape}")
        if head.shape[0] != heads[0].shape[0]:
            raise ValueError(f"head {k} has {head.shape[0]} samples, head 0 has {heads[0].shape[0]}")
        if not np.all(np.isfinite(head)):
            raise ValueError(f"head {k} contains NaN or inf")
    joint = heads[0]
    for head in heads[1:]:
        joint = (joint[:, :, None] * head[:, None, :]).reshape(joint.shape[0], -1)
    return joint
