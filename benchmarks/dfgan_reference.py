"""A PyTorch reference of the official DF-GAN networks (NetG, NetD, NetC).

Written here from the published definitions in tobran/DF-GAN ``code/models/GAN.py`` (read for
facts: module structure, parameter names, shapes, initialisation, forward order), so that the
state dicts it saves have the official names and layouts. ``official_checkpoint`` saves them
as the official ``save_models`` does: ``{'model': {'netG', 'netD', 'netC'}, 'optimizers':
{'optimizer_G', 'optimizer_D'}, 'epoch'}``. The parity tests import such a file into jaxgan
and compare images and logits (tests/test_dfgan_import.py).

Facts used:
  - NetG: ``fc`` Linear(nz, 8nf*4*4) viewed as [B, 8nf, 4, 4]; the condition is
    ``cat(noise, sentence)``; one G_Block per doubling (channels from ``get_G_in_out_chs``);
    ``to_rgb`` = LeakyReLU(0.2), Conv3x3, Tanh (the conv is ``to_rgb.1``).
  - G_Block: nearest x2 upsampling first; ``c_sc`` 1x1 only when the channels change;
    residual = fuse1 (DFBLK at in_ch) -> c1 -> fuse2 (DFBLK at out_ch) -> c2; all convs biased.
  - DFBLK: affine0 -> LeakyReLU(0.2) -> affine1 -> LeakyReLU(0.2).
  - Affine: fc_gamma and fc_beta, each linear1 (cond -> C), ReLU, linear2 (C -> C);
    linear2 starts at weight 0 with bias 1 (gamma) and 0 (beta).
  - NetD: ``conv_img`` 3x3 (biased), then D_Blocks: conv_r = Conv4x4/2 (no bias), LReLU,
    Conv3x3 (no bias), LReLU; ``conv_s`` 1x1 (biased) exists in every block but is applied
    only when the channels change, before the 2x2 average pool; ``x + gamma * res``, gamma
    a [1] parameter starting at 0.
  - NetC: the sentence tiled to 4x4 and concatenated after the features; joint_conv =
    Conv3x3(8nf + cond -> 2nf, no bias), LReLU, Conv4x4 valid (-> 1, no bias).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def g_in_out_channels(nf: int, imsize: int) -> list[tuple[int, int]]:
    """(in, out) channels of each G_Block: nf * min(2**i, 8) for i < log2(imsize) - 1, reversed."""
    chs = [nf * min(2 ** i, 8) for i in range(int(np.log2(imsize)) - 1)][::-1]
    return list(zip(chs[:-1], chs[1:]))


def d_in_out_channels(nf: int, imsize: int) -> list[tuple[int, int]]:
    """(in, out) channels of each D_Block: nf * min(2**i, 8), increasing."""
    chs = [nf * min(2 ** i, 8) for i in range(int(np.log2(imsize)) - 1)]
    return list(zip(chs[:-1], chs[1:]))


class Affine(nn.Module):
    def __init__(self, cond_dim: int, features: int):
        super().__init__()
        def mlp() -> nn.Sequential:
            return nn.Sequential(OrderedDict([("linear1", nn.Linear(cond_dim, features)), ("relu1", nn.ReLU()),
                                              ("linear2", nn.Linear(features, features))]))
        self.fc_gamma, self.fc_beta = mlp(), mlp()
        nn.init.zeros_(self.fc_gamma.linear2.weight)
        nn.init.ones_(self.fc_gamma.linear2.bias)
        nn.init.zeros_(self.fc_beta.linear2.weight)
        nn.init.zeros_(self.fc_beta.linear2.bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.fc_gamma(y)[:, :, None, None] * x + self.fc_beta(y)[:, :, None, None]


class DFBLK(nn.Module):
    def __init__(self, cond_dim: int, features: int):
        super().__init__()
        self.affine0, self.affine1 = Affine(cond_dim, features), Affine(cond_dim, features)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.affine0(x, y), 0.2)
        return F.leaky_relu(self.affine1(h, y), 0.2)


class G_Block(nn.Module):  # noqa: N801 - the official module name, which the state dict does not show
    def __init__(self, cond_dim: int, in_ch: int, out_ch: int):
        super().__init__()
        self.learnable_sc = in_ch != out_ch
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.fuse1, self.fuse2 = DFBLK(cond_dim, in_ch), DFBLK(cond_dim, out_ch)
        if self.learnable_sc:
            self.c_sc = nn.Conv2d(in_ch, out_ch, 1, 1, 0)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2)  # nearest
        shortcut = self.c_sc(x) if self.learnable_sc else x
        return shortcut + self.c2(self.fuse2(self.c1(self.fuse1(x, y)), y))


class NetG(nn.Module):
    def __init__(self, ngf: int, nz: int, cond_dim: int, imsize: int, ch_size: int = 3):
        super().__init__()
        self.ngf = ngf
        self.fc = nn.Linear(nz, ngf * 8 * 4 * 4)
        pairs = g_in_out_channels(ngf, imsize)
        self.GBlocks = nn.ModuleList([G_Block(cond_dim + nz, i, o) for i, o in pairs])
        self.to_rgb = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(pairs[-1][1], ch_size, 3, 1, 1), nn.Tanh())

    def forward(self, noise: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        out = self.fc(noise).view(noise.size(0), 8 * self.ngf, 4, 4)
        cond = torch.cat((noise, c), dim=1)
        for block in self.GBlocks:
            out = block(out, cond)
        return self.to_rgb(out)


class D_Block(nn.Module):  # noqa: N801
    def __init__(self, fin: int, fout: int):
        super().__init__()
        self.learned_shortcut = fin != fout
        self.conv_r = nn.Sequential(nn.Conv2d(fin, fout, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
                                    nn.Conv2d(fout, fout, 3, 1, 1, bias=False), nn.LeakyReLU(0.2))
        self.conv_s = nn.Conv2d(fin, fout, 1, 1, 0)  # created in every block, used when fin != fout
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.conv_r(x)
        if self.learned_shortcut:
            x = self.conv_s(x)
        return F.avg_pool2d(x, 2) + self.gamma * res


class NetD(nn.Module):
    def __init__(self, ndf: int, imsize: int = 128, ch_size: int = 3):
        super().__init__()
        self.conv_img = nn.Conv2d(ch_size, ndf, 3, 1, 1)
        self.DBlocks = nn.ModuleList([D_Block(i, o) for i, o in d_in_out_channels(ndf, imsize)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_img(x)
        for block in self.DBlocks:
            out = block(out)
        return out


class NetC(nn.Module):
    def __init__(self, ndf: int, cond_dim: int = 256):
        super().__init__()
        self.cond_dim = cond_dim
        self.joint_conv = nn.Sequential(nn.Conv2d(ndf * 8 + cond_dim, ndf * 2, 3, 1, 1, bias=False),
                                        nn.LeakyReLU(0.2), nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False))

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = y.view(-1, self.cond_dim, 1, 1).repeat(1, 1, 4, 4)
        return self.joint_conv(torch.cat((out, y), 1))


def build(nf: int, nz: int, cond_dim: int, imsize: int, seed: int = 0,
          randomize: bool = True) -> tuple[NetG, NetD, NetC]:
    """The three networks; ``randomize`` replaces every parameter by N(0, 0.1^2) noise (plus 1
    for the Affine gammas' biases, and D's gammas at 0.5) so that no block is an identity
    at init and a parity test sees every weight."""
    torch.manual_seed(seed)
    nets = NetG(nf, nz, cond_dim, imsize), NetD(nf, imsize), NetC(nf, cond_dim)
    if randomize:
        with torch.no_grad():
            for net in nets:
                for name, p in net.named_parameters():
                    p.copy_(torch.randn_like(p) * 0.1)
                    if name.endswith("gamma"):
                        p.add_(0.5)
                    elif name.endswith("fc_gamma.linear2.bias"):
                        p.add_(1.0)
    return nets


def official_optimizers(netG: NetG, netD: NetD, netC: NetC) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam as the official train.py makes it: lr 1e-4 (G) and 4e-4 (D), betas (0, 0.9), D's
    over NetD's parameters then NetC's."""
    return (torch.optim.Adam(netG.parameters(), lr=1e-4, betas=(0.0, 0.9)),
            torch.optim.Adam(list(netD.parameters()) + list(netC.parameters()), lr=4e-4, betas=(0.0, 0.9)))


def surrogate_step(netG: NetG, netD: NetD, netC: NetC, opt_g: torch.optim.Adam, opt_d: torch.optim.Adam,
                   noise: torch.Tensor, sentence: torch.Tensor) -> None:
    """One Adam step of each optimizer on simple losses (G: mean squared image; D: mean logit
    of the generated images), only to give the optimizers moments worth carrying over."""
    for opt, loss in ((opt_g, lambda: netG(noise, sentence).square().mean()),
                      (opt_d, lambda: netC(netD(netG(noise, sentence).detach()), sentence).mean())):
        opt.zero_grad()
        loss().backward()
        opt.step()


def official_checkpoint(path: str | Path, netG: NetG, netD: NetD, netC: NetC, epoch: int = 0,
                        data_parallel: bool = False, optimizers: tuple | None = None) -> Path:
    """Saves the networks and their optimizers (default: fresh ``official_optimizers``) in the
    official ``state_epoch_*.pth`` layout; ``data_parallel`` adds DataParallel's ``module.``."""
    opt_g, opt_d = optimizers or official_optimizers(netG, netD, netC)

    def sd(net: nn.Module) -> dict:
        return {("module." if data_parallel else "") + k: v for k, v in net.state_dict().items()}

    state = {"model": {"netG": sd(netG), "netD": sd(netD), "netC": sd(netC)},
             "optimizers": {"optimizer_G": opt_g.state_dict(), "optimizer_D": opt_d.state_dict()}, "epoch": epoch}
    path = Path(path)
    torch.save(state, path)
    return path
