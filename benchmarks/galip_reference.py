"""A PyTorch reference of GALIP's official networks (Tao et al., CVPR 2023; tobran/GALIP,
``code/models/GALIP.py``): ``NetG``, ``NetD`` and ``NetC`` with the frozen CLIP pieces they
run (``CLIP_IMG_ENCODER``, ``CLIP_Mapper``, ``CLIP_Adapter``), written here from the published
definitions so that the parity tests can compare jaxgan's ``model.arch=galip`` (with the
``galip_official_*`` settings) and ``jaxgan import galip`` against them (tests/test_galip_import.py).

What is the official code's, kept as is: the module names and nesting (so ``state_dict()``
has the official checkpoint's keys), the order of every operation, ``F.interpolate``'s
default nearest mode, the double shift of ``transf_to_CLIP_input``, ``fc_code``'s NCHW view,
the prompt tokens appended before layers 1-8 and dropped after each, ``0.1 * map_feat``, the
unused ``conv_s`` of same-width ``D_Block``s.

What is parameterised, so a tiny random CLIP and tiny widths can stand in for ViT-B/32
(defaults are the official values): the CLIP width (768 in the code), its grid (7) and input
size (224), the layers D reads (1, 4, 8 counted from 0: hidden states 2, 5, 9) and G prompts
(1-8), the bridge widths (64, 32), D's output width (512) and the head's hidden width (128).

The CLIP is OpenAI's ``clip`` package's ViT (``conv1``, ``class_embedding``,
``positional_embedding``, ``ln_pre``, ``transformer.resblocks[i]`` with
``nn.MultiheadAttention``, sequence-first, ``ln_post``, ``proj``), as the official classes read
it; ``openai_clip_from_hf`` fills one from a Hugging Face ``CLIPModel`` (the weights jaxgan
loads from the same directory). The official run holds the CLIP in float16 on the GPU; this
reference runs in float32. Used only by tests and benchmarks: nothing under ``jaxgan/`` imports torch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jaxgan.importers.galip import openai_visual_from_hf

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


# --- OpenAI's CLIP image tower (the structure of the `clip` package's VisionTransformer) -------


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block on sequence-first [L, N, D] tokens: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp: int, eps: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, mlp)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(mlp, width))]))
        self.ln_2 = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp: int, eps: float):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, mlp, eps) for _ in range(layers)])


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int, mlp: int,
                 output_dim: int, eps: float = 1e-5):
        super().__init__()
        self.input_resolution = input_resolution
        grid = input_resolution // patch_size
        self.conv1 = nn.Conv2d(3, width, patch_size, patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width, eps=eps)
        self.transformer = Transformer(width, layers, heads, mlp, eps)
        self.ln_post = nn.LayerNorm(width, eps=eps)
        self.proj = nn.Parameter(torch.zeros(width, output_dim))


class OpenAIClip(nn.Module):
    """What the official classes read of ``clip.load(...)[0]``: its ``visual``."""

    def __init__(self, visual: VisionTransformer):
        super().__init__()
        self.visual = visual


def openai_clip_from_hf(hf_model) -> OpenAIClip:
    """An ``OpenAIClip`` holding the image tower of a transformers ``CLIPModel``, in float32."""
    v = hf_model.config.vision_config
    visual = VisionTransformer(v.image_size, v.patch_size, v.hidden_size, v.num_hidden_layers,
                               v.num_attention_heads, v.intermediate_size, hf_model.config.projection_dim,
                               v.layer_norm_eps)
    hf = {k: t.detach().cpu().numpy() for k, t in hf_model.state_dict().items()}
    weights = openai_visual_from_hf(hf, v.num_hidden_layers, with_head=True)
    visual.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in weights.items()})
    return OpenAIClip(visual).eval()


# --- GALIP's code/models/GALIP.py ------------------------------------------------------------


class CLIP_IMG_ENCODER(nn.Module):  # noqa: N801 - the official names, so state dicts match
    """The frozen tower as D sees it: (stacked patch maps after the selected blocks, image embedding)."""

    def __init__(self, CLIP: OpenAIClip, selected: Sequence[int] = (1, 4, 8)):  # noqa: N803
        super().__init__()
        model = CLIP.visual
        self.size = model.input_resolution
        self.selected = tuple(selected)
        self.conv1, self.class_embedding = model.conv1, model.class_embedding
        self.positional_embedding, self.ln_pre = model.positional_embedding, model.ln_pre
        self.transformer, self.ln_post, self.proj = model.transformer, model.ln_post, model.proj
        for p in self.parameters():
            p.requires_grad = False

    def transf_to_CLIP_input(self, inputs: torch.Tensor) -> torch.Tensor:  # noqa: N802
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        var = torch.tensor(STD).view(1, 3, 1, 1)
        inputs = F.interpolate(inputs * 0.5 + 0.5, size=(self.size, self.size))
        return ((inputs + 1) * 0.5 - mean) / var  # the official second shift

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(self.transf_to_CLIP_input(img))
        grid, width = x.size(-1), x.size(1)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        x = torch.cat([self.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1]), x], dim=1)
        x = self.ln_pre(x + self.positional_embedding).permute(1, 0, 2)
        local = []
        for i in range(len(self.transformer.resblocks)):
            x = self.transformer.resblocks[i](x)
            if i in self.selected:
                local.append(x.permute(1, 0, 2)[:, 1:, :].permute(0, 2, 1).reshape(-1, width, grid, grid))
        x = self.ln_post(x.permute(1, 0, 2)[:, 0, :]) @ self.proj
        return torch.stack(local, dim=1), x


class CLIP_Mapper(nn.Module):  # noqa: N801
    def __init__(self, CLIP: OpenAIClip, selected: Sequence[int] = (1, 2, 3, 4, 5, 6, 7, 8)):  # noqa: N803
        super().__init__()
        model = CLIP.visual
        self.selected = tuple(selected)
        self.conv1, self.class_embedding = model.conv1, model.class_embedding
        self.positional_embedding, self.ln_pre = model.positional_embedding, model.ln_pre
        self.transformer = model.transformer
        for p in model.parameters():
            p.requires_grad = False

    def forward(self, img: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        x, grid, width = img, img.size(-1), img.size(1)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        x = torch.cat([self.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1]), x], dim=1)
        x = self.ln_pre(x + self.positional_embedding).permute(1, 0, 2)
        prompt_idx = 0
        for i in range(len(self.transformer.resblocks)):
            if i in self.selected:
                x = torch.cat((x, prompts[:, prompt_idx, :].unsqueeze(0)), dim=0)
                prompt_idx += 1
                x = self.transformer.resblocks[i](x)[:-1]
            else:
                x = self.transformer.resblocks[i](x)
        return x.permute(1, 0, 2)[:, 1:, :].permute(0, 2, 1).reshape(-1, width, grid, grid)


class Affine(nn.Module):
    def __init__(self, cond_dim: int, num_features: int):
        super().__init__()
        self.fc_gamma = nn.Sequential(OrderedDict([("linear1", nn.Linear(cond_dim, num_features)),
                                                   ("relu1", nn.ReLU()),
                                                   ("linear2", nn.Linear(num_features, num_features))]))
        self.fc_beta = nn.Sequential(OrderedDict([("linear1", nn.Linear(cond_dim, num_features)),
                                                  ("relu1", nn.ReLU()),
                                                  ("linear2", nn.Linear(num_features, num_features))]))
        # The official start: an identity (gamma 1, beta 0).
        nn.init.zeros_(self.fc_gamma.linear2.weight)
        nn.init.ones_(self.fc_gamma.linear2.bias)
        nn.init.zeros_(self.fc_beta.linear2.weight)
        nn.init.zeros_(self.fc_beta.linear2.bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weight, bias = self.fc_gamma(y), self.fc_beta(y)
        return weight[:, :, None, None].expand(x.size()) * x + bias[:, :, None, None].expand(x.size())


class DFBLK(nn.Module):
    def __init__(self, cond_dim: int, in_ch: int):
        super().__init__()
        self.affine0 = Affine(cond_dim, in_ch)
        self.affine1 = Affine(cond_dim, in_ch)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.affine0(x, y), 0.2)
        return F.leaky_relu(self.affine1(h, y), 0.2)


class M_Block(nn.Module):  # noqa: N801
    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, cond_dim: int, k: int, s: int, p: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, mid_ch, k, s, p)
        self.fuse1 = DFBLK(cond_dim, mid_ch)
        self.conv2 = nn.Conv2d(mid_ch, out_ch, k, s, p)
        self.fuse2 = DFBLK(cond_dim, out_ch)
        self.learnable_sc = in_ch != out_ch
        if self.learnable_sc:
            self.c_sc = nn.Conv2d(in_ch, out_ch, 1, stride=1, padding=0)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shortcut = self.c_sc(h) if self.learnable_sc else h
        return shortcut + self.fuse2(self.conv2(self.fuse1(self.conv1(h), c)), c)


class CLIP_Adapter(nn.Module):  # noqa: N801
    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, G_ch: int, CLIP_ch: int, cond_dim: int,  # noqa: N803
                 k: int, s: int, p: int, map_num: int, CLIP: OpenAIClip,  # noqa: N803
                 prompt_layers: Sequence[int] = (1, 2, 3, 4, 5, 6, 7, 8)):
        super().__init__()
        self.CLIP_ch = CLIP_ch
        self.FBlocks = nn.ModuleList([M_Block(in_ch, mid_ch, out_ch, cond_dim, k, s, p)])
        for _ in range(map_num - 1):
            self.FBlocks.append(M_Block(out_ch, mid_ch, out_ch, cond_dim, k, s, p))
        self.conv_fuse = nn.Conv2d(out_ch, CLIP_ch, 5, 1, 2)
        self.CLIP_ViT = CLIP_Mapper(CLIP, prompt_layers)
        self.conv = nn.Conv2d(CLIP_ch, G_ch, 5, 1, 2)
        self.fc_prompt = nn.Linear(cond_dim, CLIP_ch * len(prompt_layers))

    def forward(self, out: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        prompts = self.fc_prompt(c).view(c.size(0), -1, self.CLIP_ch)
        for block in self.FBlocks:
            out = block(out, c)
        fuse_feat = self.conv_fuse(out)
        map_feat = self.CLIP_ViT(fuse_feat, prompts)
        return self.conv(fuse_feat + 0.1 * map_feat)


def get_G_in_out_chs(nf: int, imsize: int) -> list[tuple[int, int]]:  # noqa: N802
    layer_num = int(np.log2(imsize)) - 1
    channel_nums = [nf * min(2 ** idx, 8) for idx in range(layer_num)][::-1]
    return list(zip(channel_nums[:-1], channel_nums[1:]))


class G_Block(nn.Module):  # noqa: N801
    def __init__(self, cond_dim: int, in_ch: int, out_ch: int, imsize: int):
        super().__init__()
        self.imsize = imsize
        self.learnable_sc = in_ch != out_ch
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.fuse1 = DFBLK(cond_dim, in_ch)
        self.fuse2 = DFBLK(cond_dim, out_ch)
        if self.learnable_sc:
            self.c_sc = nn.Conv2d(in_ch, out_ch, 1, stride=1, padding=0)

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(h, size=(self.imsize, self.imsize))
        shortcut = self.c_sc(h) if self.learnable_sc else h
        return shortcut + self.c2(self.fuse2(self.c1(self.fuse1(h, y)), y))


class NetG(nn.Module):
    """noise [B, nz], sentence [B, cond_dim] -> image [B, ch_size, imsize, imsize] (no tanh)."""

    def __init__(self, ngf: int, nz: int, cond_dim: int, imsize: int, ch_size: int, CLIP: OpenAIClip,  # noqa: N803
                 code_ch: int = 64, mid_ch: int = 32, map_num: int = 4,
                 prompt_layers: Sequence[int] = (1, 2, 3, 4, 5, 6, 7, 8)):
        super().__init__()
        v = CLIP.visual
        self.code_sz, self.code_ch = v.input_resolution // v.conv1.kernel_size[0], code_ch
        self.CLIP_ch = v.conv1.out_channels
        self.fc_code = nn.Linear(nz, self.code_sz * self.code_sz * self.code_ch)
        self.mapping = CLIP_Adapter(code_ch, mid_ch, code_ch, ngf * 8, self.CLIP_ch, cond_dim + nz, 3, 1, 1,
                                    map_num, CLIP, prompt_layers)
        self.GBlocks = nn.ModuleList([])
        pairs = get_G_in_out_chs(ngf, imsize)
        size = 4
        for idx, (in_ch, out_ch) in enumerate(pairs):
            size = size * 2 if idx < len(pairs) - 1 else imsize
            self.GBlocks.append(G_Block(cond_dim + nz, in_ch, out_ch, size))
        self.to_rgb = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(out_ch, ch_size, 3, 1, 1))

    def forward(self, noise: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        cond = torch.cat((noise, c), dim=1)
        code = self.fc_code(noise).view(noise.size(0), self.code_ch, self.code_sz, self.code_sz)
        out = self.mapping(code, cond)
        for block in self.GBlocks:
            out = block(out, cond)
        return self.to_rgb(out)


class D_Block(nn.Module):  # noqa: N801
    def __init__(self, fin: int, fout: int, k: int, s: int, p: int, res: bool, CLIP_feat: bool):  # noqa: N803
        super().__init__()
        self.res, self.CLIP_feat = res, CLIP_feat
        self.learned_shortcut = fin != fout
        self.conv_r = nn.Sequential(nn.Conv2d(fin, fout, k, s, p, bias=False), nn.LeakyReLU(0.2),
                                    nn.Conv2d(fout, fout, k, s, p, bias=False), nn.LeakyReLU(0.2))
        self.conv_s = nn.Conv2d(fin, fout, 1, stride=1, padding=0)  # in the state dict even when unused
        if res:
            self.gamma = nn.Parameter(torch.zeros(1))
        if CLIP_feat:
            self.beta = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, CLIP_feat: torch.Tensor | None = None) -> torch.Tensor:  # noqa: N803
        res = self.conv_r(x)
        if self.learned_shortcut:
            x = self.conv_s(x)
        out = x + self.gamma * res if self.res else x
        return out + self.beta * CLIP_feat if self.CLIP_feat else out


class NetD(nn.Module):
    """The stacked CLIP maps [B, n, width, g, g] -> D's map [B, out_ch, g, g]."""

    def __init__(self, clip_width: int = 768, out_ch: int = 512, maps: int = 3):
        super().__init__()
        self.DBlocks = nn.ModuleList([D_Block(clip_width, clip_width, 3, 1, 1, res=True, CLIP_feat=True)
                                      for _ in range(maps - 1)])
        self.main = D_Block(clip_width, out_ch, 3, 1, 1, res=True, CLIP_feat=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = h[:, 0]
        for idx, block in enumerate(self.DBlocks):
            out = block(out, h[:, idx + 1])
        return self.main(out)


class NetC(nn.Module):
    """D's map and the sentence -> one logit per pair, [B, 1, 1, 1]."""

    def __init__(self, in_ch: int = 512, cond_dim: int = 512, hidden: int = 128, grid: int = 7):
        super().__init__()
        self.cond_dim, self.grid = cond_dim, grid
        self.joint_conv = nn.Sequential(nn.Conv2d(in_ch + cond_dim, hidden, 4, 1, 0, bias=False), nn.LeakyReLU(0.2),
                                        nn.Conv2d(hidden, 1, 4, 1, 0, bias=False))

    def forward(self, out: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        cond = cond.view(-1, self.cond_dim, 1, 1).repeat(1, 1, self.grid, self.grid)
        return self.joint_conv(torch.cat((out, cond), 1))


def randomize_(module: nn.Module, seed: int) -> None:
    """Draws every trainable layer afresh with PyTorch's default init, and D_Block's gamma and
    beta from U(0.5, 1): the official zero-initialised gammas, betas and affine outputs would
    hide half of the network from a parity test. The frozen CLIP keeps its weights."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, m in module.named_modules():
            if "CLIP_ViT" not in name and isinstance(m, (nn.Linear, nn.Conv2d)):
                m.reset_parameters()
        for name, p in module.named_parameters():
            if name.rsplit(".", 1)[-1] in ("gamma", "beta"):
                p.uniform_(0.5, 1.0)
