"""GALIP's official checkpoints (tobran/GALIP, ``state_epoch_*.pth``) as jaxgan params.

The file is ``{"model": {"netG", "netD", "netC"}, "optimizers": ..., "epoch": ...}`` as
``torch.save`` wrote it (``lib/utils.py`` ``save_models_opt``); the state dicts carry
DistributedDataParallel's ``module.`` prefix when trained on several GPUs. netG's state dict
also holds the frozen CLIP image tower its ``CLIP_Mapper`` runs (``mapping.CLIP_ViT.*``, in
OpenAI's ``clip`` package names, float16 when the model lived on a GPU): those weights are
not imported from it but read from the Hugging Face CLIP directory ``--clip`` names (the same
ViT-B/32), and ``check_clip`` compares the two.

Layouts (docs/importing.md, "GALIP", lists the names): conv OIHW -> HWIO, linear [out, in] ->
[in, out], D_Block's gamma and beta [1] -> scalars, ``fc_code``'s outputs from the NCHW order
of its ``view(B, 64, 7, 7)`` to jaxgan's NHWC map; same-width ``D_Block``s carry a ``conv_s``
their forward never uses, which is checked for shape and dropped.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from jaxgan.config import ConfigError
from jaxgan.importers.torch_files import ImportFileError, check_state_dict, load_torch_file, state_dict_from
from jaxgan.importers.workdir import add_workdir_arguments, new_workdir, write_imported_workdir
from jaxgan.models import build_models
from jaxgan.presets import get_config
from jaxgan.state import abstract_state, init_state
from jaxgan.text import load_text_encoder
from jaxgan.text.clip_hf import hf_from_params, vision_hf_name

DEFAULT_PRESET = "galip_official_coco"
FORMAT = "tobran/GALIP state_epoch_*.pth"

# netG's copy of the frozen tower (CLIP_Adapter.CLIP_ViT, a CLIP_Mapper).
CLIP_IN_G = "mapping.CLIP_ViT."
# How close the checkpoint's tower must be to the directory's: float16 rounds at 2^-11.
CLIP_RTOL, CLIP_ATOL = 2e-3, 1e-5

_G_TOP = {"fc": "fc_code", "to_clip": "mapping.conv_fuse", "from_clip": "mapping.conv",
          "prompts": "mapping.fc_prompt", "to_rgb": "to_rgb.1"}
_BRIDGE = {"conv_0": "conv1", "conv_1": "conv2", "fuse_0": "fuse1", "fuse_1": "fuse2", "shortcut": "c_sc"}
_GBLOCK = {"conv_0": "c1", "conv_1": "c2", "fuse_0": "fuse1", "fuse_1": "fuse2", "shortcut": "c_sc"}
_FUSE = {"affine_0": "affine0", "affine_1": "affine1", "gamma_0": "fc_gamma.linear1",
         "gamma_1": "fc_gamma.linear2", "beta_0": "fc_beta.linear1", "beta_1": "fc_beta.linear2"}
_MATE = {"conv_0": "conv_r.0", "conv_1": "conv_r.2", "shortcut": "conv_s"}
_HEAD = {"joint": "joint_conv.0", "logit": "joint_conv.2"}
_LEAF = {"kernel": "weight"}


def g_name(path: tuple[str, ...]) -> str:
    """The official netG key of a jaxgan ``GalipGenerator`` param path."""
    top, rest = path[0], path[1:]
    if top.startswith("bridge_"):
        head, table = f"mapping.FBlocks.{top.split('_')[1]}", _BRIDGE
    elif top.startswith("block_"):
        head, table = f"GBlocks.{top.split('_')[1]}", _GBLOCK
    else:
        head, table = _G_TOP[top], {}
    return ".".join([head, *(table.get(p) or _FUSE.get(p) or _LEAF.get(p, p) for p in rest)])


def d_name(path: tuple[str, ...]) -> tuple[str, str]:
    """(``netD`` or ``netC``, its key) of a jaxgan ``GalipDiscriminator`` param path."""
    top, rest = path[0], path[1:]
    if top == "head":
        return "netC", ".".join(_HEAD.get(p) or _LEAF.get(p, p) for p in rest)
    head = "main" if top == "mate_out" else f"DBlocks.{top.split('_')[1]}"
    return "netD", ".".join([head, *(_MATE.get(p) or _LEAF.get(p, p) for p in rest)])


def _to_jax(leaf: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if len(shape) == 4:
        return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if len(shape) == 2:
        return value.T
    return value.reshape(shape)  # biases; D_Block's gamma and beta [1] -> ()


def _official_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if len(shape) == 2:
        return (shape[1], shape[0])
    return (1,) if shape == () else shape


def _nchw_to_nhwc_features(value: np.ndarray, grid: int) -> np.ndarray:
    """``fc_code``'s output axis (the first) from (C, g, g) order to jaxgan's (g, g, C)."""
    c, rest = value.shape[0] // (grid * grid), value.shape[1:]
    axes = (1, 2, 0, *range(3, 3 + len(rest)))
    return value.reshape(c, grid, grid, *rest).transpose(axes).reshape(value.shape)


def _convert(abstract: Any, state: Mapping[str, np.ndarray], name: Callable[[tuple[str, ...]], str],
             special: Callable[[tuple[str, ...], np.ndarray], np.ndarray] | None = None) -> dict:
    out = {}
    for path, leaf in traverse_util.flatten_dict(abstract).items():
        value = np.asarray(state[name(path)], np.float32)
        if special is not None:
            value = special(path, value)
        # np.array, not ascontiguousarray, which makes a scalar gamma 1-d.
        out[path] = np.array(_to_jax(path[-1], value, tuple(leaf.shape)), dtype=np.float32, order="C")
    return traverse_util.unflatten_dict(out)


def generator_params(netG: Mapping[str, np.ndarray], abstract: Any, grid: int, what: str = "netG") -> dict:  # noqa: N803
    """jaxgan ``GalipGenerator`` params from the official netG state dict without its CLIP keys.

    Args:
      netG: the state dict (``module.`` stripped, ``mapping.CLIP_ViT.*`` removed: ``split_clip``).
      abstract: the generator's params or their shapes (``jax.eval_shape`` of its init).
      grid: the CLIP tower's patch grid (7 for ViT-B/32): ``fc_code``'s map size.

    Raises:
      ImportFileError: one line listing the first missing, unexpected or mis-shaped keys.
    """
    flat = traverse_util.flatten_dict(abstract)
    check_state_dict({g_name(p): _official_shape(tuple(v.shape)) for p, v in flat.items()}, netG, what)

    def fc_code(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
        if path[0] != "fc":
            return value
        # torch's weight is [out, in] with `out` in the view's (C, g, g) order.
        return _nchw_to_nhwc_features(value, grid)

    return _convert(abstract, netG, g_name, fc_code)


def discriminator_params(netD: Mapping[str, np.ndarray], netC: Mapping[str, np.ndarray],  # noqa: N803
                         abstract: Any, what: str = "netD/netC") -> dict:
    """jaxgan ``GalipDiscriminator`` params (the mate and the head) from netD and netC.

    Same-width ``D_Block``s (``DBlocks.*``) hold a ``conv_s`` their forward does not use: it is
    expected, shape-checked and dropped.

    Raises:
      ImportFileError: one line listing the first missing, unexpected or mis-shaped keys.
    """
    flat = traverse_util.flatten_dict(abstract)
    expected: dict[str, dict[str, tuple[int, ...]]] = {"netD": {}, "netC": {}}
    for path, leaf in flat.items():
        net, key = d_name(path)
        expected[net][key] = _official_shape(tuple(leaf.shape))
    for top in {p[0] for p in flat if p[0].startswith("mate_") and p[0] != "mate_out"}:
        if (top, "shortcut", "kernel") not in flat:
            width = flat[(top, "conv_0", "kernel")].shape[-1]
            block = f"DBlocks.{top.split('_')[1]}"
            expected["netD"][f"{block}.conv_s.weight"] = (width, width, 1, 1)
            expected["netD"][f"{block}.conv_s.bias"] = (width,)
    check_state_dict(expected["netD"], netD, f"{what} (netD)")
    check_state_dict(expected["netC"], netC, f"{what} (netC)")
    both = {f"netD.{k}": v for k, v in netD.items()} | {f"netC.{k}": v for k, v in netC.items()}
    return _convert(abstract, both, lambda path: ".".join(d_name(path)))


def split_clip(netG: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:  # noqa: N803
    """(netG without its frozen CLIP keys, those keys without the ``mapping.CLIP_ViT.`` prefix)."""
    own = {k: v for k, v in netG.items() if not k.startswith(CLIP_IN_G)}
    clip = {k[len(CLIP_IN_G):]: v for k, v in netG.items() if k.startswith(CLIP_IN_G)}
    return own, clip


def openai_visual_from_hf(hf: Mapping[str, np.ndarray], layers: int, with_head: bool = False) -> dict[str, np.ndarray]:
    """OpenAI ``clip`` ViT tensors (``conv1.weight``, ``transformer.resblocks.0.attn.in_proj_weight``,
    ...) from a Hugging Face ``CLIPModel``'s (``vision_model.*``): q, k and v concatenate into
    ``in_proj``; ``with_head`` adds ``ln_post`` and ``proj`` (``visual_projection.weight`` transposed),
    which GALIP's CLIP_Mapper does not hold.
    """
    v = "vision_model."
    out = {"conv1.weight": hf[v + "embeddings.patch_embedding.weight"],
           "class_embedding": hf[v + "embeddings.class_embedding"],
           "positional_embedding": hf[v + "embeddings.position_embedding.weight"],
           "ln_pre.weight": hf[v + "pre_layrnorm.weight"], "ln_pre.bias": hf[v + "pre_layrnorm.bias"]}
    for i in range(layers):
        src, dst = f"{v}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{part}"] = np.concatenate(
                [hf[f"{src}self_attn.{p}_proj.{part}"] for p in ("q", "k", "v")], axis=0)
            out[f"{dst}attn.out_proj.{part}"] = hf[f"{src}self_attn.out_proj.{part}"]
            out[f"{dst}ln_1.{part}"] = hf[f"{src}layer_norm1.{part}"]
            out[f"{dst}ln_2.{part}"] = hf[f"{src}layer_norm2.{part}"]
            out[f"{dst}mlp.c_fc.{part}"] = hf[f"{src}mlp.fc1.{part}"]
            out[f"{dst}mlp.c_proj.{part}"] = hf[f"{src}mlp.fc2.{part}"]
    if with_head:
        out |= {"ln_post.weight": hf[v + "post_layernorm.weight"], "ln_post.bias": hf[v + "post_layernorm.bias"],
                "proj": np.asarray(hf["visual_projection.weight"]).T}
    return out


def check_clip(in_checkpoint: Mapping[str, np.ndarray], hf: Mapping[str, np.ndarray], layers: int,
               what: str) -> None:
    """Raises ``ImportFileError`` unless netG's CLIP copy (``split_clip``) is the tower of the
    Hugging Face tensors ``hf`` to float16 precision: same names and shapes, every value within
    ``CLIP_RTOL`` relative (``CLIP_ATOL`` absolute)."""
    expected = openai_visual_from_hf(hf, layers)
    check_state_dict({k: a.shape for k, a in expected.items()}, in_checkpoint, f"{what} (mapping.CLIP_ViT)")
    for key, ref in expected.items():
        got = np.asarray(in_checkpoint[key], np.float32)
        ref = np.asarray(ref, np.float32)
        bad = np.abs(got - ref) > CLIP_RTOL * np.abs(ref) + CLIP_ATOL
        if bad.any():
            worst = float(np.max(np.abs(got - ref)))
            raise ImportFileError(f"{what}: mapping.CLIP_ViT.{key} differs from the CLIP directory's tower "
                                  f"(max |diff| {worst:.3g} at {int(bad.sum())} values): --clip names another "
                                  "CLIP than the one GALIP was trained with")


class _Given(nn.Module):
    """A stand-in for G or D whose ``init`` returns ``values`` as its params."""

    values: Any

    @nn.compact
    def __call__(self, *args: Any, **kwargs: Any) -> None:
        for name, value in self.values.items():
            self.param(name, lambda _rng, v=value: v)


def import_galip(checkpoint: str | Path, clip: str, workdir: str | Path, preset: str = DEFAULT_PRESET,
                 overrides: Sequence[str] = (), check_clip_weights: bool = True, notice: Any = print) -> Path:
    """Writes a jaxgan workdir (``config.json``, a checkpoint at step 0, ``imported.json``) from an
    official GALIP ``state_epoch_N.pth``; returns the workdir. Optimizers start fresh.

    Args:
      checkpoint: the official file.
      clip: the Hugging Face CLIP directory GALIP was trained on (ViT-B/32 for the releases):
        ``model.clip`` and ``text.encoder``.
      workdir: a new or empty folder.
      preset: a preset with the checkpoint's settings (``galip_official_coco`` or ``_cub``).
      overrides: ``key=value`` config overrides on top (widths of a non-released model, ``data.*``).
      check_clip_weights: compare netG's copy of the tower with the directory's (``check_clip``).

    Raises:
      ImportFileError: an existing non-empty workdir, an unreadable or mismatched checkpoint.
      ConfigError: an unknown preset or override, or a preset of another architecture.
    """
    workdir = new_workdir(workdir)
    config = get_config(preset, [*overrides, f"model.clip={clip}", f"text.encoder={clip}"])
    if config.model.arch != "galip":
        raise ConfigError(f"preset {preset} is model.arch={config.model.arch}; GALIP checkpoints need a galip "
                          f"preset such as {DEFAULT_PRESET}")
    raw = load_torch_file(checkpoint)
    net_g, clip_weights = split_clip(state_dict_from(raw, checkpoint, "model", "netG"))
    net_d = state_dict_from(raw, checkpoint, "model", "netD")
    net_c = state_dict_from(raw, checkpoint, "model", "netC")
    generator, discriminator = build_models(config.model)
    tower = generator.tower
    if check_clip_weights:
        hf = hf_from_params(tower.params, vision_hf_name)
        check_clip(clip_weights, hf, tower.config.num_hidden_layers, f"{checkpoint}")
    encoder = load_text_encoder(config.text.encoder, config.text.max_length or None)
    shapes = abstract_state(config, generator, discriminator, encoder.sentence_dim, encoder.word_dim)
    g_params = generator_params(net_g, shapes.g_params, tower.config.grid_size, f"{checkpoint} netG")
    d_params = discriminator_params(net_d, net_c, shapes.d_params, f"{checkpoint}")
    # The state a fresh run starts from (optimizers, EMA, counters) around the imported params,
    # built without running G and D: compiling their init at 224 px costs minutes on a CPU.
    state = jax.jit(lambda g, d: init_state(config, _Given(g), _Given(d), encoder.sentence_dim,
                                            encoder.word_dim))(g_params, d_params)
    epoch = raw.get("epoch") if isinstance(raw, Mapping) else None
    record = {"source": str(Path(checkpoint).resolve()), "format": FORMAT, "epoch": epoch, "clip": clip,
              "clip_checked": bool(check_clip_weights), "preset": preset, "overrides": list(overrides),
              "optimizers": "fresh"}
    workdir = write_imported_workdir(workdir, config, state, record)
    notice(f"imported {checkpoint} (epoch {epoch}) into {workdir} at step 0; optimizers start fresh")
    return workdir


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``jaxgan import galip``."""
    p.add_argument("--checkpoint", required=True, help="the official state_epoch_N.pth")
    p.add_argument("--clip", required=True, metavar="DIR",
                   help="the Hugging Face CLIP directory GALIP was trained on (a local openai/clip-vit-base-patch32 "
                        "for the released models); becomes model.clip and text.encoder")
    add_workdir_arguments(p, DEFAULT_PRESET, "galip_official_cub for CUB")
    p.add_argument("--no-check-clip", dest="check_clip", action="store_false",
                   help="skip comparing the checkpoint's copy of the CLIP tower with --clip's")


def run(args: argparse.Namespace) -> int:
    """``jaxgan import galip``: the parsed flags -> ``import_galip``."""
    import_galip(args.checkpoint, args.clip, args.workdir, args.preset, args.overrides, args.check_clip)
    return 0
