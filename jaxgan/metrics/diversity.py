"""Within-caption diversity: do samples of one caption differ as much as real images of it do?

A conditional GAN that ignores its noise draws one image per caption; FID and recall see it
only as a blur over the whole set. This measure looks inside each caption: for K samples of
each of N captions, in the protocol's feature space,

* ``spread``: the mean Euclidean distance of a group's features to the group's centroid,
  averaged over the groups;
* ``pairwise``: the mean Euclidean distance between two different members of a group,
  averaged over the groups.

The same numbers on real images that share a caption or a class (shapes: the same attribute
combination, whose images differ only by their position jitter; a folder or TFDS dataset: the
same caption text) are the reference; generated / real is the ratio the targets use. Identical
samples give 0.
"""

from __future__ import annotations

import numpy as np


def within_group_diversity(features: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """``spread`` and ``pairwise`` (see the module docstring) of ``features`` [M, D] in ``groups`` [M].

    Groups with fewer than two members are left out; with none left, both are NaN.

    Example:
        within_group_diversity(np.array([[0.0], [2.0], [5.0], [5.0]]), np.array([0, 0, 1, 1]))
        # {"spread": 0.5, "pairwise": 1.0, "groups": 2.0}
    """
    features = np.asarray(features, np.float64)
    groups = np.asarray(groups)
    spreads, pairs = [], []
    for g in dict.fromkeys(groups.tolist()):
        x = features[groups == g]
        if len(x) < 2:
            continue
        spreads.append(np.linalg.norm(x - x.mean(axis=0), axis=-1).mean())
        # Over unordered pairs: the zero diagonal is left out of the mean.
        distances = np.linalg.norm(x[:, None] - x[None, :], axis=-1)
        pairs.append(distances.sum() / (len(x) * (len(x) - 1)))
    if not spreads:
        return {"spread": float("nan"), "pairwise": float("nan"), "groups": 0.0}
    return {"spread": float(np.mean(spreads)), "pairwise": float(np.mean(pairs)), "groups": float(len(spreads))}
