"""Layers shared by the models: BatchNorm that knows about devices, upsampling and convs,
spectral normalisation, conditioning augmentation, word and self-attention."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# model.dtype -> the compute dtype.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def torch_uniform(fan_in: int) -> Any:
    """PyTorch's default init of a Linear or Conv2d weight or bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (``kaiming_uniform_(a=sqrt(5))`` for weights, which reduces to that bound)."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def resolve_conv_impl(conv_impl: str) -> str:
    """"auto" -> "matmul" on CPU (XLA's CPU conv gradients are slow), "conv" elsewhere."""
    if conv_impl == "auto":
        return "matmul" if jax.default_backend() == "cpu" else "conv"
    return conv_impl


class BatchNorm(nn.Module):
    """BatchNorm over the global batch, over each device's share, or across a pmap axis.

    Under ``jax.jit`` the batch is one global array, so plain statistics are synchronised
    across devices; ``groups=n`` splits the batch into n equal groups (one per device) with
    their own statistics. Under ``jax.pmap`` the batch is per device; ``axis_name`` averages
    the statistics over that axis (synchronised BN). Whether BN should be synchronised is a
    modelling choice (BigGAN found synced BN hurt; StyleGAN-T keeps it per device).

    Statistics are computed in float32 whatever the compute dtype; running averages use the
    biased variance.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    groups: int = 1
    axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
        xf = x.astype(jnp.float32)
        if train:
            grouped = xf.reshape(self.groups, -1, *x.shape[1:])
            axes = tuple(range(1, grouped.ndim - 1))
            mean = grouped.mean(axes, keepdims=True)
            if self.axis_name is not None:
                mean = jax.lax.pmean(mean, self.axis_name)
            # Two passes (mean, then squared deviations) stay accurate where E[x^2] - E[x]^2
            # cancels, and both passes average exactly across devices.
            var = jnp.square(grouped - mean).mean(axes, keepdims=True)
            if self.axis_name is not None:
                var = jax.lax.pmean(var, self.axis_name)
            y = ((grouped - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
            if not self.is_initializing():
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1 - m) * mean.reshape(-1, channels).mean(0)
                ra_var.value = m * ra_var.value + (1 - m) * var.reshape(-1, channels).mean(0)
        else:
            y = (xf - ra_mean.value) * jax.lax.rsqrt(ra_var.value + self.epsilon)
        return (y * scale + bias).astype(self.dtype)


def upsample_nearest(x: jax.Array, factor: int = 2) -> jax.Array:
    """Nearest-neighbour upsampling of NHWC by broadcasting (no gather, fuses well)."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, factor, w, factor, c))
    return x.reshape(b, h * factor, w * factor, c)


def torch_nearest_index(size_in: int, size_out: int) -> np.ndarray:
    """The source index of each output index in PyTorch's default ``F.interpolate`` (mode
    "nearest"): ``min(floor(i * (in / out)), in - 1)`` in float32, as its kernels compute it
    (exact 2x upsampling takes ``i >> 1``). jax.image.resize's nearest reads the pixel under
    the output pixel's centre instead, ``floor((i + 0.5) * in / out)``: 7 -> 8 differs."""
    if size_out == size_in:
        return np.arange(size_out)
    if size_out == 2 * size_in:
        return np.arange(size_out) >> 1
    scale = np.float32(size_in) / np.float32(size_out)
    return np.minimum(np.floor(np.arange(size_out, dtype=np.float32) * scale).astype(np.int64), size_in - 1)


def resize_nearest(x: jax.Array, size: int, rule: str = "centre") -> jax.Array:
    """Nearest-neighbour resize of NHWC to ``size`` x ``size``: ``rule="centre"`` is
    ``jax.image.resize(..., "nearest")``, ``"floor"`` PyTorch's default nearest
    (``torch_nearest_index``), a gather with static indices."""
    b, h, w, c = x.shape
    if (h, w) == (size, size):
        return x
    if rule == "centre":
        return jax.image.resize(x, (b, size, size, c), "nearest")
    if rule != "floor":
        raise ValueError(f"unknown nearest rule {rule!r}; valid: centre, floor")
    return jnp.take(jnp.take(x, torch_nearest_index(h, size), axis=1), torch_nearest_index(w, size), axis=2)


def upsample_bilinear(x: jax.Array) -> jax.Array:
    """Bilinear 2x upsampling of NHWC with half-pixel centres and clamped edges.

    The same function as ``jax.image.resize(x, (B, 2H, 2W, C), "bilinear")``, written as
    the two fixed phases of the 2x filter (output 2i reads 0.25 x[i-1] + 0.75 x[i], output
    2i+1 reads 0.75 x[i] + 0.25 x[i+1]): a few elementwise ops that XLA fuses, where
    ``jax.image.resize`` builds dense interpolation matrices.
    """

    def along(x: jax.Array, axis: int) -> jax.Array:
        n = x.shape[axis]
        pad = [(0, 0)] * x.ndim
        pad[axis] = (1, 1)
        padded = jnp.pad(x, pad, mode="edge")
        prev = jax.lax.slice_in_dim(padded, 0, n, axis=axis)
        nxt = jax.lax.slice_in_dim(padded, 2, n + 2, axis=axis)
        quarter, three_quarters = jnp.asarray(0.25, x.dtype), jnp.asarray(0.75, x.dtype)
        even = quarter * prev + three_quarters * x
        odd = three_quarters * x + quarter * nxt
        out = jnp.stack([even, odd], axis=axis + 1)
        return out.reshape(*x.shape[:axis], 2 * n, *x.shape[axis + 1:])

    return along(along(x, 1), 2)


def downsample_bilinear(x: jax.Array) -> jax.Array:
    """Antialiased bilinear 2x downsampling of NHWC: the [1, 3, 3, 1] / 8 filter at stride 2.

    The same function as ``jax.image.resize(x, (B, H/2, W/2, C), "bilinear", antialias=True)``
    (and torch's ``interpolate(..., antialias=True)``): output i reads input 2i-1 .. 2i+2 with
    weights 1, 3, 3, 1, and at the borders the weights that fall outside are dropped and the
    rest renormalised (3, 3, 1 over 7). Written as shifted slices that XLA fuses.
    """

    def along(x: jax.Array, axis: int) -> jax.Array:
        n = x.shape[axis]
        pad = [(0, 0)] * x.ndim
        pad[axis] = (1, 1)
        padded = jnp.pad(x, pad)
        taps = [jax.lax.slice_in_dim(padded, k, k + n - 1, stride=2, axis=axis) for k in range(4)]
        total = (taps[0] + taps[3]) + 3 * (taps[1] + taps[2])
        weight = np.full(n // 2, 8.0, np.float32)
        weight[0] -= 1.0
        weight[-1] -= 1.0  # n == 2: both ends lose a tap, 6 remain
        shape = [1] * x.ndim
        shape[axis] = n // 2
        return total * jnp.asarray(1.0 / weight, x.dtype).reshape(shape)

    return along(along(x, 1), 2)


def _fold_taps(kernel: jax.Array, axis: int) -> jax.Array:
    """The 2-tap kernels along ``axis`` that a 3-tap kernel becomes after nearest 2x upsampling.

    Output row 2i (phase 0) reads upsampled rows 2i-1, 2i, 2i+1 = input rows i-1, i, i: taps
    [k0, k1 + k2] at input rows (i-1, i). Output row 2i+1 (phase 1) reads input rows i, i, i+1:
    taps [k0 + k1, k2] at rows (i, i+1). Returns both, stacked on a new axis after ``axis``.
    """
    k0, k1, k2 = (jnp.take(kernel, i, axis=axis) for i in range(3))
    phase0 = jnp.stack([k0, k1 + k2], axis=axis)
    phase1 = jnp.stack([k0 + k1, k2], axis=axis)
    return jnp.stack([phase0, phase1], axis=axis + 1)


def subpixel_kernel(kernel: jax.Array) -> jax.Array:
    """[3, 3, C_in, C_out] -> [2, 2, C_in, 4 * C_out]: one 2x2 kernel per output phase (a, b)."""
    k = _fold_taps(_fold_taps(kernel, 0), 2)  # [2 (ty), 2 (a), 2 (tx), 2 (b), C_in, C_out]
    k = k.transpose(0, 2, 4, 1, 3, 5)  # [ty, tx, C_in, a, b, C_out]
    return k.reshape(2, 2, kernel.shape[2], 4 * kernel.shape[3])


def conv2x2_valid(x: jax.Array, kernel: jax.Array, impl: str) -> jax.Array:
    """A stride-1 2x2 VALID convolution, as XLA's convolution or as one matmul over patches.

    On CPU the matmul form is several times faster to differentiate: XLA's CPU backend is
    slow at the weight-gradient convolutions (measured here: 461 -> 94 ms for the forward
    and backward of a 16x16x128 upsampling layer at batch 64), while the four shifted views
    of ``x`` cost only 4x the input's memory and their gradient is a sum of pads.
    """
    if impl == "conv":
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    b, h, w, c = x.shape
    patches = jnp.concatenate([x[:, i:h - 1 + i, j:w - 1 + j] for i in (0, 1) for j in (0, 1)], axis=-1)
    return (patches.reshape(-1, 4 * c) @ kernel.reshape(4 * c, -1)).reshape(b, h - 1, w - 1, -1)


class ResizeConv(nn.Module):
    """Nearest 2x upsampling then a 3x3 SAME conv, computed on the low-resolution input.

    The same function (and the same params, ``kernel`` [3, 3, C_in, C_out] and ``bias``) as
    resizing and convolving, but the upsampled image is never built: each of the four output
    phases is a 2x2 conv of the input whose taps are sums of the 3x3 taps (``subpixel_kernel``),
    and the phases interleave by depth-to-space. That is 16 instead of 36 multiply-adds per
    output pixel and channel pair (2.25x fewer FLOPs), plus a one-pixel border.
    """

    features: int
    use_bias: bool = True
    dtype: Any = jnp.float32
    impl: str = "conv"  # "conv" or "matmul" (see conv2x2_valid)
    torch_init: bool = False  # PyTorch's default init of kernel and bias (torch_uniform)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        kernel_init = torch_uniform(9 * c) if self.torch_init else nn.initializers.lecun_normal()
        kernel = self.param("kernel", kernel_init, (3, 3, c, self.features), jnp.float32)
        # Taps are summed in float32, then cast: the fold must not round in bf16.
        k = subpixel_kernel(kernel).astype(self.dtype)
        padded = jnp.pad(x.astype(self.dtype), ((0, 0), (1, 1), (1, 1), (0, 0)))
        y = conv2x2_valid(padded, k, self.impl).reshape(b, h + 1, w + 1, 2, 2, self.features)
        # Phase (a, b) at output pixel (2i+a, 2j+b) sits at padded position (i+a, j+b).
        rows = [jnp.stack([y[:, a:a + h, p:p + w, a, p] for p in (0, 1)], axis=3) for a in (0, 1)]
        out = jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, self.features)
        if self.use_bias:
            bias_init = torch_uniform(9 * c) if self.torch_init else nn.initializers.zeros
            out = out + self.param("bias", bias_init, (self.features,), jnp.float32).astype(self.dtype)
        return out

    def macs(self, x: Any, y: Any) -> int:
        """Multiply-accumulates of the 2x2 conv over the padded input (for ``jaxgan.flops``)."""
        b, h, w, c = x.shape
        return b * (h + 1) * (w + 1) * 4 * c * 4 * self.features


def taps_inside(size_in: int, size_out: int, kernel: int, stride: int = 1, pad_lo: int = 0) -> int:
    """(output position, kernel tap) pairs along one axis of a conv that read the image, not
    its zero padding: what XLA's conv multiplies, and so what a layer's ``macs`` counts."""
    return sum(0 <= o * stride - pad_lo + k < size_in for o in range(size_out) for k in range(kernel))


def space_to_depth(x: jax.Array) -> jax.Array:
    """[B, 2H, 2W, C] -> [B, H, W, 4C], channels ordered (row parity, column parity, C)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // 2, w // 2, 4 * c)


class DownConv(nn.Module):
    """A 4x4, stride-2, padding-1 conv (the DCGAN discriminator's downsampling layer).

    ``impl="conv"`` is XLA's strided convolution. ``impl="matmul"`` computes the same
    function as space-to-depth of the padded input followed by a stride-1 2x2 conv over
    4*C_in channels (tap (2dy+p, 2dx+q) of the 4x4 kernel is tap (dy, dx) of channel block
    (p, q)), run as one matmul over patches: no strided or dilated convolution appears in
    the forward or the backward pass, which XLA's CPU backend runs slowly. Params are those
    of ``nn.Conv``.
    """

    features: int
    use_bias: bool = True
    dtype: Any = jnp.float32
    impl: str = "conv"
    torch_init: bool = False  # PyTorch's default init of kernel and bias (torch_uniform)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        kernel_init = torch_uniform(16 * c) if self.torch_init else nn.initializers.lecun_normal()
        kernel = self.param("kernel", kernel_init, (4, 4, c, self.features), jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if self.impl == "conv":
            y = jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)),
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        else:
            k = kernel.reshape(2, 2, 2, 2, c, self.features).transpose(0, 2, 1, 3, 4, 5)
            padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
            y = conv2x2_valid(space_to_depth(padded), k.reshape(2, 2, 4 * c, self.features), "matmul")
        if self.use_bias:
            bias_init = torch_uniform(16 * c) if self.torch_init else nn.initializers.zeros
            y = y + self.param("bias", bias_init, (self.features,), jnp.float32).astype(self.dtype)
        return y

    def macs(self, x: Any, y: Any) -> int:
        """Multiply-accumulates as computed (see ``jaxgan.flops``): XLA's conv skips the taps
        that fall on the zero padding; the matmul form multiplies them too."""
        b, h, w, c = x.shape
        if self.impl == "conv":
            taps = taps_inside(h, h // 2, 4, stride=2, pad_lo=1) * taps_inside(w, w // 2, 4, stride=2, pad_lo=1)
            return b * taps * c * self.features
        return b * (h // 2) * (w // 2) * 16 * c * self.features


class Upsample(nn.Module):
    """Doubles the resolution: nearest resize + 3x3 conv (default) or a 4x4 transposed conv.

    Resize + conv is the default because XLA lowers ``ConvTranspose`` with lhs dilation,
    which is slow to compile and run (jax issues 23783, 31662, 17464; 2.4x slower DCGAN-64
    step measured on CPU); it also avoids checkerboard artefacts. It runs as ``ResizeConv``
    (sub-pixel form, same params as ``nn.Conv`` under the same name).
    """

    features: int
    mode: str = "resize_conv"
    use_bias: bool = True
    dtype: Any = jnp.float32
    conv_impl: str = "conv"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.mode == "resize_conv":
            return ResizeConv(self.features, self.use_bias, self.dtype, self.conv_impl, name="Conv_0")(x)
        if self.mode == "conv_transpose":
            return nn.ConvTranspose(self.features, (4, 4), strides=(2, 2), padding="SAME",
                                    use_bias=self.use_bias, dtype=self.dtype)(x)
        raise ValueError(f"unknown upsample mode {self.mode!r}; valid: resize_conv, conv_transpose")


class Conv(nn.Module):
    """A stride-1 k x k convolution, SAME (odd k) or VALID, as XLA's conv or one matmul.

    ``impl="matmul"`` concatenates the k*k shifted views of the padded input and multiplies
    by the reshaped kernel: the same function, without the weight-gradient convolutions that
    XLA's CPU backend runs slowly (see ``conv2x2_valid``), at k*k times the input's memory.
    1x1 convs always run as a matmul. Params are those of ``nn.Conv`` (``kernel`` [k, k,
    C_in / groups, C_out], ``bias``), so ``nn.SpectralNorm`` can wrap it.

    ``groups`` > 1 is a grouped convolution (``nn.Conv``'s ``feature_group_count``, torch's
    ``groups``): output channel o reads only the input channels of group o // (C_out / groups).
    Its matmul form is one batched matmul over the groups.
    """

    features: int
    kernel_size: int = 3
    padding: str = "SAME"  # or "VALID"
    use_bias: bool = True
    dtype: Any = jnp.float32
    impl: str = "conv"
    groups: int = 1
    kernel_init: Any = nn.initializers.lecun_normal()
    torch_init: bool = False  # PyTorch's default init of kernel and bias (torch_uniform); overrides kernel_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, c, g = self.kernel_size, x.shape[-1], self.groups
        if c % g or self.features % g:
            raise ValueError(f"groups={g} must divide the input ({c}) and output ({self.features}) channels")
        fan_in = k * k * (c // g)
        kernel_init = torch_uniform(fan_in) if self.torch_init else self.kernel_init
        kernel = self.param("kernel", kernel_init, (k, k, c // g, self.features), jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if self.padding == "SAME":
            if k % 2 == 0:
                raise ValueError(f"SAME padding needs an odd kernel size, got {k}")
            x = jnp.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
        elif self.padding != "VALID":
            raise ValueError(f"unknown padding {self.padding!r}; valid: SAME, VALID")
        b, h, w, _ = x.shape
        ho, wo = h - k + 1, w - k + 1
        if self.impl == "conv" and (k > 1 or g > 1):
            y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", feature_group_count=g,
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        elif g == 1:
            views = [x[:, i:i + ho, j:j + wo] for i in range(k) for j in range(k)]
            patches = views[0] if k == 1 else jnp.concatenate(views, axis=-1)
            y = (patches.reshape(-1, k * k * c) @ kernel.reshape(k * k * c, self.features)).reshape(b, ho, wo, -1)
        else:
            # Groups lead, so the matmul is batched over its outermost axis: measured here on
            # CPU, about 2x faster to differentiate than with the group axis in the middle.
            xg = x.reshape(b, h, w, g, c // g).transpose(3, 0, 1, 2, 4)
            views = [xg[:, :, i:i + ho, j:j + wo] for i in range(k) for j in range(k)]
            patches = jnp.concatenate(views, axis=-1).reshape(g, -1, k * k * (c // g))
            # [k, k, C_in/g, (group, C_out/g)] -> [group, (tap, C_in/g), C_out/g], the patches' order
            w = kernel.reshape(k * k, c // g, g, -1).transpose(2, 0, 1, 3).reshape(g, k * k * (c // g), -1)
            y = jnp.einsum("gnk,gko->gno", patches, w)
            y = y.reshape(g, b, ho, wo, -1).transpose(1, 2, 3, 0, 4).reshape(b, ho, wo, self.features)
        if self.use_bias:
            bias_init = torch_uniform(fan_in) if self.torch_init else nn.initializers.zeros
            y = y + self.param("bias", bias_init, (self.features,), jnp.float32).astype(self.dtype)
        return y

    def macs(self, x: Any, y: Any) -> int:
        """Multiply-accumulates as computed (see ``jaxgan.flops``): XLA's conv skips the taps
        that fall on the zero padding; the matmul form multiplies them too."""
        b, h, w, c = x.shape
        k = self.kernel_size
        if self.impl == "conv" or k == 1:
            lo = k // 2 if self.padding == "SAME" else 0
            taps = taps_inside(h, y.shape[1], k, pad_lo=lo) * taps_inside(w, y.shape[2], k, pad_lo=lo)
        else:
            taps = y.shape[1] * y.shape[2] * k * k
        return b * taps * (c // self.groups) * self.features


def maybe_spectral_norm(layer: nn.Module, enabled: bool, train: bool):
    """``layer`` itself, or ``layer`` under ``nn.SpectralNorm`` (Miyato et al. 2018,
    arXiv:1802.05957) as a one-argument callable.

    The wrapper is built once, so calling the result twice (one head, two captions) shares
    one power-iteration vector. ``nn.SpectralNorm`` keeps it in ``batch_stats`` and advances
    it one step per call when ``train`` (apply with ``mutable=["batch_stats"]``). The kernel
    is normalised in float32 and the layer casts it to its compute dtype.
    """
    if not enabled:
        return layer
    wrapped = nn.SpectralNorm(layer)
    return lambda x: wrapped(x, update_stats=train)


# Sown side outputs hold the latest value itself (not Flax's default tuple of all values), so
# a collection returned by ``init`` and passed back to ``apply`` is replaced, never appended to.
_OVERWRITE = dict(init_fn=lambda: None, reduce_fn=lambda _, new: new)


class ConditioningAugmentation(nn.Module):
    """StackGAN's conditioning augmentation (Zhang et al. 2017, arXiv:1612.03242).

    ``GLU(Dense(4 * features)(sentence))`` -> (mu, log_sigma), each [B, features], as in
    StackGAN++/AttnGAN (StackGAN-v1 used a ReLU, which forces log sigma >= 0). Returns
    ``mu + exp(log_sigma) * eps`` with eps ~ N(0, I) from the ``"ca"`` rng stream when
    ``train``, and ``mu`` otherwise (deterministic). mu and log_sigma are sown, in float32,
    into the ``"losses"`` collection for the KL term (``jaxgan.losses.conditioning_kl``).
    """

    features: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, sentence: jax.Array, train: bool) -> jax.Array:
        x = nn.glu(nn.Dense(4 * self.features, dtype=self.dtype)(sentence).astype(jnp.float32))
        mu, log_sigma = x[:, :self.features], x[:, self.features:]
        self.sow("losses", "mu", mu, **_OVERWRITE)
        self.sow("losses", "log_sigma", log_sigma, **_OVERWRITE)
        if not train:
            return mu.astype(self.dtype)
        eps = jax.random.normal(self.make_rng("ca"), mu.shape, jnp.float32)
        return (mu + jnp.exp(log_sigma) * eps).astype(self.dtype)


_MASKED = float(jnp.finfo(jnp.float32).min)  # not -inf: a caption of padding alone must not give NaN


class WordAttention(nn.Module):
    """Image regions attend over word embeddings (AttnGAN, Xu et al. 2018, arXiv:1711.10485).

    queries = 1x1 conv of the features [B, H, W, C] to ``key_dim``; keys = Dense(words),
    values = Dense(words) to C; softmax over the words with padding (``mask`` False) given
    zero weight; ``h + scale * context`` with ``scale`` a learnable scalar that starts at 0,
    so the block starts as the identity. The attention map [B, H*W, L] (float32) is sown
    into ``"intermediates"`` as ``attention``.
    """

    key_dim: int = 0  # 0: the channel count
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, words: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        b, height, width, c = h.shape
        d = self.key_dim or c
        query = nn.Dense(d, use_bias=False, dtype=self.dtype, name="query")(h).reshape(b, height * width, d)
        key = nn.Dense(d, use_bias=False, dtype=self.dtype, name="key")(words)
        value = nn.Dense(c, dtype=self.dtype, name="value")(words)
        logits = jnp.einsum("bqd,bld->bql", query, key).astype(jnp.float32) / jnp.sqrt(float(d))
        if mask is not None:
            logits = jnp.where(mask[:, None, :], logits, _MASKED)
        probs = jax.nn.softmax(logits, axis=-1)
        if mask is not None:
            # Exactly zero on padding, also when a caption is all padding (then it attends nowhere).
            probs = jnp.where(mask[:, None, :], probs, 0.0)
        self.sow("intermediates", "attention", probs, **_OVERWRITE)
        context = jnp.einsum("bql,blc->bqc", probs.astype(self.dtype), value.astype(self.dtype))
        scale = self.param("scale", nn.initializers.zeros, (), jnp.float32).astype(self.dtype)
        return h.astype(self.dtype) + scale * context.reshape(b, height, width, c)

    def attention_macs(self, args: tuple, out: Any) -> int:
        """Multiply-accumulates of the two attention matmuls (for ``jaxgan.flops``; the
        projections are Dense layers, counted on their own)."""
        b, height, width, c = args[0].shape
        words = args[1].shape[1]
        d = self.key_dim or c
        return b * height * width * words * (d + c)


class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019, arXiv:1805.08318).

    f, g, h: 1x1 convs to C/8; beta = softmax over positions of g(x_j) . f(x_i);
    o = v(sum_i beta_ji h(x_i)) with v a 1x1 conv back to C; returns ``x + gamma * o`` with
    ``gamma`` a learnable scalar that starts at 0 (identity at init). ``spectral_norm`` wraps
    the four convs, as SAGAN does in both networks.
    """

    dtype: Any = jnp.float32
    spectral_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        b, height, width, c = x.shape
        d = max(c // 8, 1)

        def proj(features: int, name: str):
            return maybe_spectral_norm(nn.Dense(features, use_bias=False, dtype=self.dtype, name=name),
                                       self.spectral_norm, train)

        x = x.astype(self.dtype)
        flat = x.reshape(b, height * width, c)
        f, g, h = proj(d, "f")(flat), proj(d, "g")(flat), proj(d, "h")(flat)
        beta = jax.nn.softmax(jnp.einsum("bjd,bid->bji", g, f).astype(jnp.float32), axis=-1)
        o = proj(c, "v")(jnp.einsum("bji,bid->bjd", beta.astype(self.dtype), h))
        gamma = self.param("gamma", nn.initializers.zeros, (), jnp.float32).astype(self.dtype)
        return x + gamma * o.reshape(b, height, width, c)

    def attention_macs(self, args: tuple, out: Any) -> int:
        """Multiply-accumulates of the two attention matmuls over the H*W positions (for
        ``jaxgan.flops``; the four projections are Dense layers, counted on their own)."""
        b, height, width, c = args[0].shape
        n = height * width
        return 2 * b * n * n * max(c // 8, 1)
