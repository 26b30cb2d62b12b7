"""Pixel conventions: uint8 [0, 255] on disk and in batches, float32 [-1, 1] in the networks.

Datasets, batches and saved samples hold uint8 images; the generators end in tanh and every
network reads floats in [-1, 1]. These are the only conversions between the two, so a real
image and a generated one are scaled by the same arithmetic wherever they meet.

    x = to_float(batch["image"])     # uint8 -> float32 in [-1, 1]
    png = to_uint8(generator_output)  # [-1, 1] -> uint8, rounded to the nearest level
"""

from __future__ import annotations

from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np

ArrayT = TypeVar("ArrayT", np.ndarray, jax.Array)


def to_float(images: ArrayT) -> ArrayT:
    """uint8 [0, 255] -> float32 [-1, 1]: ``x / 127.5 - 1``.

    A NumPy array stays on the host and a JAX array (or tracer) on its device, so the step
    can convert on device, where the host sends 4x fewer bytes than float32 would take.
    """
    return images.astype(np.float32) / 127.5 - 1.0


def _levels(images: jax.Array) -> jax.Array:
    """float [-1, 1] -> the nearest of the 256 uint8 levels, still as float32."""
    return jnp.clip(jnp.round((images.astype(jnp.float32) + 1.0) * 127.5), 0, 255)


def to_uint8(images: jax.Array) -> jax.Array:
    """float [-1, 1] -> uint8 [0, 255]: ``(x + 1) * 127.5`` rounded half to even, clipped.

    Rounding (not truncation) makes ``to_uint8(to_float(u))`` give ``u`` back exactly.
    """
    return _levels(images).astype(jnp.uint8)


def quantize(images: jax.Array) -> jax.Array:
    """float [-1, 1] -> the float32 image its saved uint8 PNG would hold.

    Real images are uint8 already; rounding generated ones the same way makes the two sets
    differ only in content, as they would if the samples were written to disk and read back.
    """
    # The same values as to_float(to_uint8(x)) when run eagerly, but not inside jit: XLA
    # turns "/ 127.5" into "* (1 / 127.5)" here and not after the uint8 cast, and the
    # reference statistics and reported metrics were computed with this float-only form.
    return _levels(images) / 127.5 - 1.0
