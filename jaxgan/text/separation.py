"""How well sentence embeddings separate captions by their attributes.

A generator that conditions on a sentence embedding can only draw what the embedding tells
apart, so an encoder is judged by: (1) captions of the same attribute combination written
with different templates should be closer than captions that differ in exactly one
attribute, for each attribute; (2) a caption's nearest neighbour in a gallery of one caption
per combination should be the caption of its own combination. Pure numpy on given arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64)."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def attribute_similarities(embeddings: np.ndarray, attrs: np.ndarray, templates: np.ndarray,
                           queries: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Mean cosine similarity of query captions to captions written with another template.

    Args:
      embeddings: [N, D] sentence embeddings of N captions.
      attrs: [N, A] int attribute indices of each caption.
      templates: [N] int template index of each caption.
      queries: [Q] int indices of the captions that are compared with all others.
      names: the A attribute names.

    Returns:
      ``same``: mean cosine over pairs with equal attributes; for each name, the mean over
      pairs that differ in exactly that attribute. Only pairs with different templates count,
      so wording shared by a template cannot make two captions look alike.
    """
    emb = normalize(embeddings)
    cos = emb[queries] @ emb.T  # [Q, N]
    other_template = templates[queries][:, None] != templates[None, :]
    differs = attrs[queries][:, None, :] != attrs[None, :, :]  # [Q, N, A]
    count = differs.sum(-1)
    out = {"same": float(cos[(count == 0) & other_template].mean())}
    for a, name in enumerate(names):
        pairs = (count == 1) & differs[..., a] & other_template
        out[name] = float(cos[pairs].mean())
    return out


def retrieval_accuracy(query_embeddings: np.ndarray, query_attrs: np.ndarray,
                       gallery_embeddings: np.ndarray, gallery_attrs: np.ndarray) -> float:
    """Fraction of queries whose most cosine-similar gallery caption has the same attributes."""
    nearest = np.argmax(normalize(query_embeddings) @ normalize(gallery_embeddings).T, axis=1)
    return float(np.mean(np.all(gallery_attrs[nearest] == query_attrs, axis=-1)))
