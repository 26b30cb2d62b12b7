"""DiffAugment: differentiable augmentations for every image the discriminator sees.

Real and generated images both pass through the same random family of transforms (drawn
independently per example), and because every transform is differentiable the generator
still gets gradients through it; D cannot memorise the few real images and G is not
taught to produce augmented-looking images (Zhao et al., 2020).

Images are float NHWC in [-1, 1]; the output keeps the input's dtype (colour arithmetic
runs in float32 and is cast back). Translation and cutout fill with 0, the value the
reference code fills with: in [-1, 1] images 0 is mid-grey (pixel 127.5), not black.
Filling both with the same value keeps one "no content" colour for D to learn to ignore.

Low-level ops take their random factors as arguments (so tests can fix them);
``diff_augment`` draws them and applies the policy.

ADA (``train.ada_target > 0``) applies each op of the policy to each image with a probability
p that the step adapts (``ada_adjust``): p = 1 is plain DiffAugment, p = 0 the identity. The
``flip`` op mirrors images left-right; it is allowed only where the data source declares
mirrored images true to their captions (``ExampleSource.mirror_safe`` or ``data.mirror``).

References:
  Zhao, Liu, Lin, Zhu & Han, 2020, "Differentiable Augmentation for Data-Efficient GAN
  Training", arXiv:2006.10738.
  Karras, Aittala, Hellsten, Laine, Lehtinen & Aila, 2020, "Training Generative Adversarial
  Networks with Limited Data", arXiv:2006.06676 (ADA).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

OPS = ("color", "translation", "cutout", "flip")
TRANSLATION_RATIO = 0.125  # max shift, as a fraction of the side (the reference's 1/8)
CUTOUT_RATIO = 0.5  # side of the cut square, as a fraction of the image side
_MASK_STREAM = 0x4ADA  # folded into an example's key for ADA's per-op masks


def _per_example(factor: jax.Array, ndim: int) -> jax.Array:
    """[B] -> [B, 1, 1, 1] float32, for broadcasting against NHWC images."""
    return jnp.asarray(factor, jnp.float32).reshape((-1,) + (1,) * (ndim - 1))


def adjust_brightness(images: jax.Array, factor: jax.Array) -> jax.Array:
    """x + f_b: adds one offset per example (DiffAugment draws f ~ U[-0.5, 0.5]).

    Args:
      images: [B, H, W, C] float.
      factor: [B] offsets.

    Returns:
      Images of the same shape and dtype.
    """
    out = images.astype(jnp.float32) + _per_example(factor, images.ndim)
    return out.astype(images.dtype)


def adjust_saturation(images: jax.Array, factor: jax.Array) -> jax.Array:
    """(x - m) * f_b + m, m the per-pixel mean over channels (DiffAugment: f ~ U[0, 2]).

    Scales each pixel's deviation from its own grey level: f = 0 gives greyscale, f = 1
    the identity.

    Args:
      images: [B, H, W, C] float.
      factor: [B] scales.

    Returns:
      Images of the same shape and dtype.
    """
    x = images.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    return ((x - mean) * _per_example(factor, x.ndim) + mean).astype(images.dtype)


def adjust_contrast(images: jax.Array, factor: jax.Array) -> jax.Array:
    """(x - m) * f_b + m, m the mean of the whole image (DiffAugment: f ~ U[0.5, 1.5]).

    Args:
      images: [B, H, W, C] float.
      factor: [B] scales.

    Returns:
      Images of the same shape and dtype.
    """
    x = images.astype(jnp.float32)
    mean = jnp.mean(x, axis=tuple(range(1, x.ndim)), keepdims=True)
    return ((x - mean) * _per_example(factor, x.ndim) + mean).astype(images.dtype)


def _shift_axis(images: jax.Array, shift: jax.Array, axis: int) -> jax.Array:
    """out[b, ..., i, ...] = images[b, ..., i - shift_b, ...] along ``axis``, 0 outside."""
    n = images.shape[axis]
    source = jnp.arange(n)[None, :] - jnp.asarray(shift, jnp.int32)[:, None]  # [B, n]
    valid = (source >= 0) & (source < n)
    shape = [images.shape[0]] + [1] * (images.ndim - 1)
    shape[axis] = n
    index = jnp.clip(source, 0, n - 1).reshape(shape)
    gathered = jnp.take_along_axis(images, index, axis=axis, mode="clip")
    return jnp.where(valid.reshape(shape), gathered, jnp.zeros((), images.dtype))


def translate(images: jax.Array, shift_x: jax.Array, shift_y: jax.Array) -> jax.Array:
    """Moves each image's content by whole pixels, filling what is uncovered with 0.

    out[b, y, x] = images[b, y - shift_y[b], x - shift_x[b]] where that lies inside the
    image, else 0: the same as ``np.roll`` by (shift_y, shift_x) with the wrapped-around
    pixels zeroed. Two gathers (rows, then columns), no per-example loop.

    Args:
      images: [B, H, W, C] float.
      shift_x: [B] integer shifts along the width (positive: right).
      shift_y: [B] integer shifts along the height (positive: down).

    Returns:
      Images of the same shape and dtype.
    """
    return _shift_axis(_shift_axis(images, shift_y, axis=1), shift_x, axis=2)


def cutout(images: jax.Array, centres: jax.Array, size: int | tuple[int, int]) -> jax.Array:
    """Zeroes one size_h x size_w rectangle per image; the part past the border is dropped.

    Rows centre_y - size_h // 2 ... centre_y - size_h // 2 + size_h - 1 (and likewise for
    columns) are set to 0, as in the reference code; built as a mask, no scatter.

    Args:
      images: [B, H, W, C] float.
      centres: [B, 2] integer (row, column) centres; may lie anywhere.
      size: the side of the square, or (height, width).

    Returns:
      Images of the same shape and dtype.
    """
    size_h, size_w = (size, size) if isinstance(size, int) else size
    centres = jnp.asarray(centres, jnp.int32)
    top = centres[:, 0:1] - size_h // 2  # [B, 1]
    left = centres[:, 1:2] - size_w // 2
    rows = jnp.arange(images.shape[1])[None, :]
    cols = jnp.arange(images.shape[2])[None, :]
    in_rows = (rows >= top) & (rows < top + size_h)  # [B, H]
    in_cols = (cols >= left) & (cols < left + size_w)  # [B, W]
    cut = in_rows[:, :, None, None] & in_cols[:, None, :, None]
    return jnp.where(cut, jnp.zeros((), images.dtype), images)


def _rand_color(key: jax.Array, images: jax.Array) -> jax.Array:
    k_b, k_s, k_c = jax.random.split(key, 3)
    batch = (images.shape[0],)
    images = adjust_brightness(images, jax.random.uniform(k_b, batch, minval=-0.5, maxval=0.5))
    images = adjust_saturation(images, jax.random.uniform(k_s, batch, minval=0.0, maxval=2.0))
    return adjust_contrast(images, jax.random.uniform(k_c, batch, minval=0.5, maxval=1.5))


def _rand_translation(key: jax.Array, images: jax.Array) -> jax.Array:
    k_x, k_y = jax.random.split(key)
    max_y = int(images.shape[1] * TRANSLATION_RATIO + 0.5)
    max_x = int(images.shape[2] * TRANSLATION_RATIO + 0.5)
    batch = (images.shape[0],)
    shift_x = jax.random.randint(k_x, batch, -max_x, max_x + 1)
    shift_y = jax.random.randint(k_y, batch, -max_y, max_y + 1)
    return translate(images, shift_x, shift_y)


def _rand_cutout(key: jax.Array, images: jax.Array) -> jax.Array:
    k_y, k_x = jax.random.split(key)
    height, width = images.shape[1], images.shape[2]
    size_h = int(height * CUTOUT_RATIO + 0.5)
    size_w = int(width * CUTOUT_RATIO + 0.5)
    batch = (images.shape[0],)
    # As in the reference: for even sizes one extra position lets the square reach the
    # last row (its centre is offset by size // 2).
    cy = jax.random.randint(k_y, batch, 0, height + (1 - size_h % 2))
    cx = jax.random.randint(k_x, batch, 0, width + (1 - size_w % 2))
    return cutout(images, jnp.stack([cy, cx], axis=-1), (size_h, size_w))


def flip_horizontal(images: jax.Array, flip: jax.Array) -> jax.Array:
    """out[b] = images[b] mirrored left-right where ``flip[b]``, else images[b].

    Args:
      images: [B, H, W, C].
      flip: [B] bool.
    """
    return jnp.where(flip.reshape((-1,) + (1,) * (images.ndim - 1)), images[:, :, ::-1], images)


def _rand_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    # Half the images, as ADA's xflip (which then runs with probability p on top).
    return flip_horizontal(images, jax.random.bernoulli(key, 0.5, (images.shape[0],)))


_RANDOM_OPS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "color": _rand_color, "translation": _rand_translation, "cutout": _rand_cutout, "flip": _rand_flip,
}


def parse_policy(policy: str) -> tuple[str, ...]:
    """Splits a comma-separated policy: "color, translation" -> ("color", "translation").

    An empty policy gives (), the identity.

    Raises:
      ValueError: on a name that is not one of ``OPS``.
    """
    names = tuple(name.strip() for name in policy.split(",") if name.strip())
    for name in names:
        if name not in _RANDOM_OPS:
            raise ValueError(f"unknown DiffAugment op {name!r} in policy {policy!r}; "
                             f"choose from {', '.join(OPS)}")
    return names


def diff_augment(key: jax.Array, images: jax.Array,
                 policy: str = "color,translation,cutout", p: jax.Array | float | None = None) -> jax.Array:
    """Applies the ops of ``policy`` in order, each with factors drawn per example.

    color: brightness + U[-0.5, 0.5], saturation x U[0, 2], contrast x U[0.5, 1.5];
    translation: integer shifts up to 1/8 of each side, zero fill; cutout: a zeroed square
    of half the side at a uniform position; flip: half the images mirrored left-right. Call
    it on real and fake images alike (with different keys), every time D sees them, in both
    the D and the G update.

    With ``p`` (ADA), each op is applied to each example with probability p: the op runs on
    every example and a Bernoulli(p) mask per example picks its output or its input, so the
    result stays differentiable and its shape static. p = 1 gives exactly the unconditional
    ops on the same key, p = 0 the identity.

    Args:
      key: PRNG key; the same key gives the same augmentation.
      images: [B, H, W, C] float in [-1, 1] (any float dtype, kept).
      policy: comma-separated op names from ``OPS``; "" is the identity. Parsed in Python,
        so it is static under jit.
      p: None (every op always), or the probability in [0, 1] of each op per example; may be
        a traced scalar.

    Returns:
      Augmented images, same shape and dtype.

    References:
      Zhao, Liu, Lin, Zhu & Han, 2020, "Differentiable Augmentation for Data-Efficient GAN
      Training", arXiv:2006.10738, sec. 3 and its reference implementation's policy.

    Example:
        augmented = diff_augment(jax.random.key(0), images, "color,translation,cutout")
    """
    names = parse_policy(policy)
    if not names:
        return images
    # The masks' keys come from a key of their own, so the ops draw the same factors with
    # and without p (p = 1 is then plain DiffAugment on the same key).
    mask_keys = jax.random.split(jax.random.fold_in(key, _MASK_STREAM), len(names))
    for name, op_key, mask_key in zip(names, jax.random.split(key, len(names)), mask_keys):
        out = _RANDOM_OPS[name](op_key, images)
        if p is None:
            images = out
        else:
            apply = jax.random.uniform(mask_key, (images.shape[0],)) < p
            images = jnp.where(apply.reshape((-1,) + (1,) * (images.ndim - 1)), out, images)
    return images


def augment_examples(policy: str) -> Callable[..., jax.Array]:
    """``policy`` as ``augment(key, images, offset, p=None)``, drawn per example from its global index.

    Example i of the local batch is augmented with ``fold_in(key, offset + i)``, so its
    augmentation does not depend on how the global batch is split over devices (the step
    passes the device's offset under pmap). An empty policy returns the images unchanged.
    ``p`` is ADA's probability of each op (``diff_augment``); None applies every op.
    """
    if not parse_policy(policy):
        return lambda key, images, offset, p=None: images

    def augment(key: jax.Array, images: jax.Array, offset: jax.Array | int,
                p: jax.Array | float | None = None) -> jax.Array:
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(offset + jnp.arange(images.shape[0]))
        return jax.vmap(lambda k, x: diff_augment(k, x[None], policy, p)[0])(keys, images)

    return augment


ADA_KEYS = ("ada_p", "ada_rt_sum", "ada_rt_count")


def ada_init() -> dict[str, jax.Array]:
    """ADA's state leaves (float32 scalars): p (starts at 0, no augmentation), and the sum
    and count of the per-step r_t since p last moved."""
    return {name: jnp.zeros((), jnp.float32) for name in ADA_KEYS}


def ada_adjust(ada: dict[str, jax.Array], rt: jax.Array, *, target: float, interval: int,
               batch_size: int, kimg: float, max_p: float) -> dict[str, jax.Array]:
    """One step of ADA's controller: accumulates r_t, and every ``interval`` steps moves p.

    r_t = E[sign(D(x_real))] is averaged over the last ``interval`` steps; then
    p <- clip(p + sign(r_t - target) * batch_size * interval / (kimg * 1000), 0, max_p), so
    that p can cross [0, 1] in ``kimg`` thousand images (the paper: target 0.6, interval 4,
    kimg 500). ``max_p`` keeps p below the leaking threshold (the paper finds augmentations
    do not leak into the generated images while p stays below about 0.8).

    Args:
      ada: a dict holding ``ada_init()``'s leaves (others are ignored).
      rt: this step's E[sign(D(real))] over the global batch, a scalar.
      target, interval, batch_size, kimg, max_p: the controller's constants (``train.ada_*``,
        ``train.batch_size``).

    Returns:
      The updated ``ada_init()`` leaves.

    References:
      Karras et al., 2020, "Training Generative Adversarial Networks with Limited Data",
      arXiv:2006.06676, sec. 3 ("adaptive discriminator augmentation") and sec. 2.3 (leaking).
    """
    total = ada["ada_rt_sum"] + rt.astype(jnp.float32)
    count = ada["ada_rt_count"] + 1.0
    due = count >= interval
    speed = batch_size * interval / (kimg * 1000.0)
    moved = jnp.clip(ada["ada_p"] + jnp.sign(total / count - target) * speed, 0.0, max_p)
    zero = jnp.zeros((), jnp.float32)
    return {"ada_p": jnp.where(due, moved, ada["ada_p"]).astype(jnp.float32),
            "ada_rt_sum": jnp.where(due, zero, total).astype(jnp.float32),
            "ada_rt_count": jnp.where(due, zero, count).astype(jnp.float32)}
