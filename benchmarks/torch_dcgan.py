"""A PyTorch reference of jaxgan's text-conditional DCGAN pair (``jaxgan.models.dcgan``).

Layer for layer the same networks as the Flax modules, in NCHW, so that weights loaded from
a jaxgan state give the same outputs (checked in ``tests/test_torch_reference.py``). Used
only by the benchmarks and the parity tests: nothing under ``jaxgan/`` imports torch.

Mapping notes (Flax -> torch):

- Conv kernels are HWIO in Flax and OIHW in torch; Dense kernels are (in, out), Linear
  weights (out, in); BatchNorm ``scale``/``bias`` are ``weight``/``bias``.
- The generator's first Dense is reshaped to (B, 4, 4, C) in NHWC by Flax; here it is
  viewed as (B, C, 4, 4), so its output units are permuted at load time.
- ``flax.linen.ConvTranspose`` (``transpose_kernel=False``, padding "SAME", kernel 4,
  stride 2) correlates the stride-dilated input with the kernel as stored; torch's
  ``ConvTranspose2d(4, 2, padding=1)`` is the gradient of a conv, i.e. a correlation with
  the spatially flipped kernel, so the kernel is flipped and stored as (I, O, H, W).
- BatchNorm normalises with the biased batch variance in both; the running variance is
  updated with the biased variance in jaxgan and the unbiased one in torch (n / (n - 1)
  larger), a difference that touches only the running statistics.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jaxgan.models.dcgan import DCGANConfig, discriminator_channels, generator_channels


class BatchNorm(nn.Module):
    """BatchNorm2d whose running-statistics update can be switched off per call.

    jaxgan's G update runs D in train mode (batch statistics) but throws D's updated running
    statistics away; ``update_stats=False`` does the same without a save/restore.
    Flax momentum 0.9 (weight of the old value) is torch momentum 0.1 (weight of the new).
    """

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor, update_stats: bool = True) -> torch.Tensor:
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        mean, var = (self.running_mean, self.running_var) if update_stats else (None, None)
        return F.batch_norm(x, mean, var, self.weight, self.bias, True, self.momentum, self.eps)


def _fold_taps(w: torch.Tensor, dim: int) -> torch.Tensor:
    """3 taps along ``dim`` -> [2 phases, ..., 2 taps, ...]: after nearest 2x upsampling, even
    outputs read input (i-1, i) with taps (k0, k1 + k2), odd ones (i, i+1) with (k0 + k1, k2)."""
    k0, k1, k2 = w.unbind(dim)
    return torch.stack([torch.stack([k0, k1 + k2], dim), torch.stack([k0 + k1, k2], dim)])


def resize_conv_subpixel(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """conv3x3(nearest_upsample_2x(x)) without building the upsampled image.

    Each of the four output phases (a, b) is a 2x2 conv of the padded input with folded taps,
    16 instead of 36 multiply-adds per output; the same trick as jaxgan's ``ResizeConv``.
    """
    b, _, h, w = x.shape
    out_c = weight.shape[0]
    k = _fold_taps(_fold_taps(weight, 2), 4)  # [2 (b), 2 (a), O, I, 2, 2]
    k = k.transpose(0, 1).reshape(4 * out_c, weight.shape[1], 2, 2)  # rows ordered (a, b, o)
    y = F.conv2d(F.pad(x, (1, 1, 1, 1)), k)  # taps summed in float32; autocast casts after
    y = y.view(b, 2, 2, out_c, h + 1, w + 1)
    # Phase (a, c) of output pixel (2i + a, 2j + c) sits at padded position (i + a, j + c).
    rows = [torch.stack([y[:, a, c, :, a:a + h, c:c + w] for c in (0, 1)], -1) for a in (0, 1)]
    out = torch.stack(rows, 3).reshape(b, out_c, 2 * h, 2 * w)
    return out if bias is None else out + bias.view(1, -1, 1, 1).to(out.dtype)


class Generator(nn.Module):
    """(z [B, Z], sentence [B, S]) -> image [B, 3, R, R] in [-1, 1], float32.

    ``subpixel=True`` computes the resize + 3x3 conv blocks with ``resize_conv_subpixel``
    (same params, same function, fewer FLOPs).
    """

    def __init__(self, cfg: DCGANConfig, sentence_dim: int = 128, subpixel: bool = False):
        super().__init__()
        self.channels = generator_channels(cfg.resolution, cfg.width)
        self.upsample = cfg.upsample
        if self.upsample not in ("resize_conv", "conv_transpose"):
            raise ValueError(f"unknown upsample mode {self.upsample!r}")
        self.subpixel = subpixel and self.upsample == "resize_conv"
        self.text = nn.Linear(sentence_dim, cfg.text_dim)
        # No bias before BatchNorm, as in the Flax module.
        self.fc = nn.Linear(cfg.z_dim + cfg.text_dim, 16 * self.channels[0], bias=False)
        self.norms = nn.ModuleList(BatchNorm(c) for c in self.channels)
        outs = self.channels[1:] + [3]
        self.ups = nn.ModuleList(
            self._up_layer(cin, cout, bias=(i == len(outs) - 1))  # only the RGB layer has a bias
            for i, (cin, cout) in enumerate(zip(self.channels, outs)))

    def _up_layer(self, cin: int, cout: int, bias: bool) -> nn.Module:
        if self.upsample == "resize_conv":
            return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)
        return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=bias)

    def _up(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        if self.subpixel:
            return resize_conv_subpixel(h, layer.weight, layer.bias)
        if self.upsample == "resize_conv":
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        return layer(h)

    def forward(self, z: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        t = F.leaky_relu(self.text(sentence), 0.2)
        h = self.fc(torch.cat([z, t.to(z.dtype)], 1)).view(z.shape[0], self.channels[0], 4, 4)
        h = F.relu(self.norms[0](h))
        for layer, norm in zip(self.ups[:-1], self.norms[1:]):
            h = F.relu(norm(self._up(layer, h)))
        return torch.tanh(self._up(self.ups[-1], h).float())


class Discriminator(nn.Module):
    """Scores (image [B, 3, R, R], sentence [B, S]) pairs; float32 logits [B].

    With ``wrong_sentence`` it returns ``(logits, wrong_logits)``: the image trunk runs once
    and the text head twice, as in the Flax module.
    """

    def __init__(self, cfg: DCGANConfig, sentence_dim: int = 128):
        super().__init__()
        chans = discriminator_channels(cfg.resolution, cfg.discriminator_width)
        ins = [3] + chans[:-1]
        self.convs = nn.ModuleList(nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=(i == 0))
                                   for i, (cin, cout) in enumerate(zip(ins, chans)))
        self.norms = nn.ModuleList(BatchNorm(c) for c in chans[1:])
        self.project = nn.Linear(sentence_dim, cfg.text_dim)
        self.joint = nn.Conv2d(chans[-1] + cfg.text_dim, chans[-1], 1, bias=False)
        self.joint_norm = BatchNorm(chans[-1])
        self.to_logit = nn.Conv2d(chans[-1], 1, 4)

    def forward(self, image: torch.Tensor, sentence: torch.Tensor,
                wrong_sentence: torch.Tensor | None = None, update_stats: bool = True):
        h = image
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i > 0:
                h = self.norms[i - 1](h, update_stats)
            h = F.leaky_relu(h, 0.2)

        def score(text: torch.Tensor) -> torch.Tensor:
            t = F.leaky_relu(self.project(text), 0.2).to(h.dtype)
            t = t[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
            # Text channels after the image channels, as the Flax concat on the last axis.
            x = F.leaky_relu(self.joint_norm(self.joint(torch.cat([h, t], 1)), update_stats), 0.2)
            return self.to_logit(x).reshape(-1).float()

        if wrong_sentence is None:
            return score(sentence)
        return score(sentence), score(wrong_sentence)


def build_torch_models(cfg: DCGANConfig, sentence_dim: int = 128,
                       subpixel: bool = False) -> tuple[Generator, Discriminator]:
    """The torch (generator, discriminator) pair of a jaxgan model config."""
    if not isinstance(cfg, DCGANConfig):
        raise ValueError(f"no torch reference for model.arch={cfg.arch!r}")
    return Generator(cfg, sentence_dim, subpixel), Discriminator(cfg, sentence_dim)


# --- Flax <-> torch parameter mapping -------------------------------------------------------

# Each entry: (path in the Flax params tree, torch parameter, layout kind).
_Entry = tuple[tuple[str, ...], torch.Tensor, str]


def _bn_entries(prefix: str, bn: BatchNorm) -> list[_Entry]:
    return [((prefix, "scale"), bn.weight, "vector"), ((prefix, "bias"), bn.bias, "vector")]


def _layer_entries(path: tuple[str, ...], layer: nn.Module, kind: str) -> list[_Entry]:
    out = [((*path, "kernel"), layer.weight, kind)]
    if layer.bias is not None:
        out.append(((*path, "bias"), layer.bias, "vector"))
    return out


def _param_entries(module: nn.Module) -> list[_Entry]:
    """Every torch parameter of ``module`` with its Flax path, in Flax's naming order."""
    if isinstance(module, Generator):
        up = "Conv_0" if module.upsample == "resize_conv" else "ConvTranspose_0"
        kind = "conv" if module.upsample == "resize_conv" else "conv_transpose"
        entries = _layer_entries(("Dense_0",), module.text, "dense")
        entries += _layer_entries(("Dense_1",), module.fc, "dense_to_4x4")
        for i, bn in enumerate(module.norms):
            entries += _bn_entries(f"BatchNorm_{i}", bn)
        for i, layer in enumerate(module.ups):
            entries += _layer_entries((f"Upsample_{i}", up), layer, kind)
        return entries
    if isinstance(module, Discriminator):
        n = len(module.convs)
        entries = []
        for i, conv in enumerate(module.convs):
            entries += _layer_entries((f"Conv_{i}",), conv, "conv")
        for i, bn in enumerate(module.norms):
            entries += _bn_entries(f"BatchNorm_{i}", bn)
        entries += _layer_entries(("Dense_0",), module.project, "dense")
        entries += _layer_entries((f"Conv_{n}",), module.joint, "conv")
        entries += _bn_entries(f"BatchNorm_{n - 1}", module.joint_norm)
        entries += _layer_entries((f"Conv_{n + 1}",), module.to_logit, "conv")
        return entries
    raise TypeError(f"not a torch reference model: {type(module).__name__}")


def _flax_to_torch(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "vector":
        return x
    if kind == "dense":
        return x.T
    if kind == "dense_to_4x4":  # output units (h, w, c) -> (c, h, w)
        n_in, n_out = x.shape
        c = n_out // 16
        return x.reshape(n_in, 4, 4, c).transpose(0, 3, 1, 2).reshape(n_in, n_out).T
    if kind == "conv":  # HWIO -> OIHW
        return x.transpose(3, 2, 0, 1)
    if kind == "conv_transpose":  # HWIO, unflipped -> (I, O, H, W), flipped
        return x[::-1, ::-1].transpose(2, 3, 0, 1)
    raise ValueError(kind)


def _torch_to_flax(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "vector":
        return x
    if kind == "dense":
        return x.T
    if kind == "dense_to_4x4":
        n_out, n_in = x.shape
        c = n_out // 16
        return x.T.reshape(n_in, c, 4, 4).transpose(0, 2, 3, 1).reshape(n_in, n_out)
    if kind == "conv":
        return x.transpose(2, 3, 1, 0)
    if kind == "conv_transpose":
        return x.transpose(2, 3, 0, 1)[::-1, ::-1]
    raise ValueError(kind)


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _bn_modules(module: nn.Module) -> Iterator[tuple[str, BatchNorm]]:
    """(Flax BatchNorm name, torch BatchNorm) pairs of ``module``."""
    norms = list(module.norms) + ([module.joint_norm] if isinstance(module, Discriminator) else [])
    return ((f"BatchNorm_{i}", bn) for i, bn in enumerate(norms))


def _count_leaves(tree: Any) -> int:
    return sum(_count_leaves(v) for v in tree.values()) if isinstance(tree, Mapping) else 1


@torch.no_grad()
def load_flax_params(module: nn.Module, flax_params: Mapping[str, Any],
                     batch_stats: Mapping[str, Any] | None = None) -> None:
    """Copies jaxgan Flax params (and optionally BatchNorm ``batch_stats``) into ``module``.

    ``flax_params`` is e.g. ``init_state(...).g_params`` for a ``Generator``; every Flax
    leaf must be used exactly once, so a mismatched architecture fails loudly.
    """
    entries = _param_entries(module)
    if len(entries) != _count_leaves(flax_params):
        raise ValueError(f"{type(module).__name__}: {len(entries)} torch tensors but "
                         f"{_count_leaves(flax_params)} Flax params")
    for path, param, kind in entries:
        # np.array copies: arrays from jax are read-only, which torch.from_numpy warns about.
        value = np.array(_flax_to_torch(np.asarray(_get(flax_params, path), np.float32), kind))
        if value.shape != tuple(param.shape):
            raise ValueError(f"{'/'.join(path)}: Flax gives {value.shape}, torch has {tuple(param.shape)}")
        param.copy_(torch.from_numpy(value))
    if batch_stats is not None:
        for name, bn in _bn_modules(module):
            bn.running_mean.copy_(torch.from_numpy(np.array(batch_stats[name]["mean"], np.float32)))
            bn.running_var.copy_(torch.from_numpy(np.array(batch_stats[name]["var"], np.float32)))


@torch.no_grad()
def to_flax_params(module: nn.Module) -> dict[str, Any]:
    """The inverse of ``load_flax_params``: ``module``'s params as a Flax-layout numpy tree."""
    tree: dict[str, Any] = {}
    for path, param, kind in _param_entries(module):
        _set(tree, path, np.ascontiguousarray(_torch_to_flax(param.detach().float().cpu().numpy(), kind)))
    return tree


@torch.no_grad()
def to_flax_batch_stats(module: nn.Module) -> dict[str, Any]:
    """``module``'s BatchNorm running statistics as a Flax ``batch_stats`` numpy tree."""
    return {name: {"mean": bn.running_mean.cpu().numpy().copy(), "var": bn.running_var.cpu().numpy().copy()}
            for name, bn in _bn_modules(module)}
