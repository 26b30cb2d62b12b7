"""A PyTorch reference of jaxgan's text-conditional R3GAN pair (``jaxgan.models.r3gan``).

The same networks as the Flax modules, written from the description in that module's
docstring with torch's own ops (NCHW, ``nn.Conv2d(groups=...)``, ``F.interpolate``), so that
weights loaded from a jaxgan state give the same outputs (``tests/test_r3gan.py``). Used only
by the parity tests and benchmarks: nothing under ``jaxgan/`` imports torch.

Mapping notes (Flax -> torch), beyond those of ``benchmarks/torch_dcgan.py``:

- A grouped conv's Flax kernel is [k, k, C_in / groups, C_out] with the output channels
  ordered (group, channel): the HWIO -> OIHW transpose gives torch's [C_out, C_in / groups,
  k, k] as is.
- The generator's 4x4 basis is [4, 4, C] in Flax and [C, 4, 4] here.
- Resampling: ``F.interpolate(scale_factor=2, mode="bilinear", align_corners=False)`` is
  jaxgan's ``upsample_bilinear``; ``scale_factor=0.5`` with ``antialias=True`` is its
  ``downsample_bilinear``. Independent implementations of the same functions, so the parity
  test checks those too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.torch_dcgan import _count_leaves, _flax_to_torch, _get
from jaxgan.models.r3gan import R3GANConfig, r3gan_channels


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class ResidualBlock(nn.Module):
    """``x + project(lrelu(grouped(lrelu(expand(x)))))``: 1x1 widen, grouped 3x3, 1x1 narrow."""

    def __init__(self, channels: int, expansion: int, group_width: int):
        super().__init__()
        wide = channels * expansion
        self.expand = nn.Conv2d(channels, wide, 1)
        self.grouped = nn.Conv2d(wide, wide, 3, padding=1, groups=wide // group_width)
        self.project = nn.Conv2d(wide, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(_lrelu(self.grouped(_lrelu(self.expand(x)))))


def _stage(channels: int, cfg: R3GANConfig) -> nn.ModuleList:
    return nn.ModuleList(ResidualBlock(channels, cfg.expansion, cfg.group_width) for _ in range(cfg.blocks))


class Generator(nn.Module):
    """(z [B, Z], sentence [B, S]) -> image [B, 3, R, R], float32."""

    def __init__(self, cfg: R3GANConfig, sentence_dim: int = 128):
        super().__init__()
        if cfg.ca:
            raise ValueError("the torch R3GAN reference has no conditioning augmentation")
        self.channels = r3gan_channels(cfg.resolution, cfg.width, cfg.width_cap)
        self.tanh = cfg.output == "tanh"
        self.embed = nn.Linear(sentence_dim, cfg.text_dim, bias=False)
        self.basis = nn.Parameter(torch.randn(self.channels[0], 4, 4))
        self.basis_scale = nn.Linear(cfg.z_dim + cfg.text_dim, self.channels[0], bias=False)
        self.cond = nn.ModuleList(nn.Linear(cfg.text_dim, c, bias=False) for c in self.channels)
        self.up = nn.ModuleList(nn.Conv2d(a, b, 1, bias=False) if a != b else nn.Identity()
                                for a, b in zip(self.channels, self.channels[1:]))
        self.stages = nn.ModuleList(_stage(c, cfg) for c in self.channels)
        self.to_rgb = nn.Conv2d(self.channels[-1], 3, 1, bias=False)

    def forward(self, z: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        t = self.embed(sentence)
        h = self.basis[None] * self.basis_scale(torch.cat([z, t], 1))[:, :, None, None]
        for i, blocks in enumerate(self.stages):
            if i > 0:
                h = F.interpolate(self.up[i - 1](h), scale_factor=2, mode="bilinear", align_corners=False)
            h = h + self.cond[i](t)[:, :, None, None]
            for block in blocks:
                h = block(h)
        image = self.to_rgb(h).float()
        return torch.tanh(image) if self.tanh else image


class Discriminator(nn.Module):
    """Scores (image [B, 3, R, R], sentence [B, S]) pairs; float32 logits [B], or
    ``(logits, wrong_logits)`` with ``wrong_sentence`` (one trunk pass)."""

    def __init__(self, cfg: R3GANConfig, sentence_dim: int = 128):
        super().__init__()
        self.channels = r3gan_channels(cfg.resolution, cfg.discriminator_width, cfg.width_cap)[::-1]
        c = self.channels[-1]
        self.from_rgb = nn.Conv2d(3, self.channels[0], 1, bias=False)
        self.stages = nn.ModuleList(_stage(ch, cfg) for ch in self.channels)
        self.down = nn.ModuleList(nn.Conv2d(a, b, 1, bias=False) if a != b else nn.Identity()
                                  for a, b in zip(self.channels, self.channels[1:]))
        self.basis = nn.Conv2d(c, c, 4, groups=c, bias=False)
        self.features = nn.Linear(c, cfg.text_dim, bias=False)
        self.psi = nn.Linear(cfg.text_dim, 1)
        self.embed = nn.Linear(sentence_dim, cfg.text_dim, bias=False)

    def forward(self, image: torch.Tensor, sentence: torch.Tensor, wrong_sentence: torch.Tensor | None = None):
        h = self.from_rgb(image)
        for i, blocks in enumerate(self.stages):
            if i > 0:
                h = F.interpolate(h, scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True)
                h = self.down[i - 1](h)
            for block in blocks:
                h = block(h)
        phi = self.features(self.basis(h).flatten(1))
        unconditional = self.psi(phi)[:, 0]

        def score(text: torch.Tensor) -> torch.Tensor:
            return (unconditional + (phi * self.embed(text)).sum(-1)).float()

        if wrong_sentence is None:
            return score(sentence)
        return score(sentence), score(wrong_sentence)


def build_torch_r3gan(cfg: R3GANConfig, sentence_dim: int = 128) -> tuple[Generator, Discriminator]:
    """The torch (generator, discriminator) pair of a jaxgan ``R3GANConfig``."""
    if not isinstance(cfg, R3GANConfig):
        raise ValueError(f"no torch R3GAN reference for model.arch={cfg.arch!r}")
    return Generator(cfg, sentence_dim), Discriminator(cfg, sentence_dim)


# --- Flax -> torch parameter mapping --------------------------------------------------------

_Entry = tuple[tuple[str, ...], torch.Tensor, str]


def _layer(path: tuple[str, ...], layer: nn.Module, kind: str) -> list[_Entry]:
    out = [((*path, "kernel"), layer.weight, kind)]
    if layer.bias is not None:
        out.append(((*path, "bias"), layer.bias, "vector"))
    return out


def _blocks(size: int, blocks: nn.ModuleList) -> list[_Entry]:
    entries = []
    for j, block in enumerate(blocks):
        for name in ("expand", "grouped", "project"):
            entries += _layer((f"stage_{size}_{j}", name), getattr(block, name), "conv")
    return entries


def _param_entries(module: nn.Module) -> list[_Entry]:
    """Every torch parameter of ``module`` with its Flax path and layout kind."""
    if isinstance(module, Generator):
        entries = _layer(("embed",), module.embed, "dense") + [(("basis",), module.basis, "basis")]
        entries += _layer(("basis_scale",), module.basis_scale, "dense")
        for i, blocks in enumerate(module.stages):
            size = 4 * 2 ** i
            if i > 0 and not isinstance(module.up[i - 1], nn.Identity):
                entries += _layer((f"up_{size}",), module.up[i - 1], "conv")
            entries += _layer((f"cond_{size}",), module.cond[i], "dense") + _blocks(size, blocks)
        return entries + _layer(("to_rgb",), module.to_rgb, "conv")
    if isinstance(module, Discriminator):
        entries = _layer(("from_rgb",), module.from_rgb, "conv")
        size = 4 * 2 ** (len(module.stages) - 1)
        for i, blocks in enumerate(module.stages):
            if i > 0 and not isinstance(module.down[i - 1], nn.Identity):
                entries += _layer((f"down_{size}",), module.down[i - 1], "conv")
            entries += _blocks(size, blocks)
            size //= 2
        entries += _layer(("basis",), module.basis, "conv") + _layer(("features",), module.features, "dense")
        return entries + _layer(("psi",), module.psi, "dense") + _layer(("embed",), module.embed, "dense")
    raise TypeError(f"not a torch R3GAN reference model: {type(module).__name__}")


@torch.no_grad()
def load_flax_params(module: nn.Module, flax_params: Mapping[str, Any]) -> None:
    """Copies jaxgan Flax params (``init_state(...).g_params`` or ``.d_params``) into ``module``;
    every Flax leaf must be used exactly once, so a mismatched architecture fails loudly."""
    entries = _param_entries(module)
    if len(entries) != _count_leaves(flax_params):
        raise ValueError(f"{type(module).__name__}: {len(entries)} torch tensors but "
                         f"{_count_leaves(flax_params)} Flax params")
    for path, param, kind in entries:
        value = np.asarray(_get(flax_params, path), np.float32)
        value = value.transpose(2, 0, 1) if kind == "basis" else _flax_to_torch(value, kind)
        value = np.array(value)  # a writable copy: arrays from jax are read-only
        if value.shape != tuple(param.shape):
            raise ValueError(f"{'/'.join(path)}: Flax gives {value.shape}, torch has {tuple(param.shape)}")
        param.copy_(torch.from_numpy(value))
