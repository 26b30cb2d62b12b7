"""``jaxgan import dfgan``: an official DF-GAN checkpoint (tobran/DF-GAN) as a jaxgan workdir.

The official ``state_epoch_N.pth`` holds ``{'model': {'netG', 'netD', 'netC'}, 'optimizers':
{'optimizer_G', 'optimizer_D'}, 'epoch'}`` (its ``save_models``). jaxgan's ``model.arch=dfgan``
with ``g_norm=none``, ``g_shortcut=nearest``, no attention, CA, spectral norm or projection
computes the same functions (docs/importing.md, "DF-GAN", compares them layer by layer), so the
import is a renaming and a change of layouts:

  - Conv2d weights [out, in, kh, kw] -> kernels [kh, kw, in, out]; Linear weights transposed.
  - NetG's ``fc`` output is viewed as [B, 8nf, 4, 4] (channel-major); jaxgan reshapes to
    [B, 4, 4, 8nf], so its columns are permuted to (row, column, channel) order.
  - Each Affine's ``fc_gamma``/``fc_beta`` ``linear1``/``linear2`` -> ``gamma_0``/``gamma_1``,
    ``beta_0``/``beta_1``; DFBLK ``fuse1``/``fuse2`` -> ``fuse_0``/``fuse_1``.
  - D_Block: ``conv_r.0``/``conv_r.2`` -> ``conv_0``/``conv_1``, ``conv_s`` -> ``shortcut``
    (the official block creates ``conv_s`` also where the channels stay the same and never
    applies it there: those weights are checked for shape and dropped), ``gamma`` [1] -> [].
  - NetC's ``joint_conv.0``/``joint_conv.2`` -> D's ``matcher/joint``/``matcher/logit``.

The workdir gets a checkpoint at step 0: G, D and the EMA generator (= netG: DF-GAN keeps no
average; the official presets set ``train.ema_decay=0``, so the EMA follows G when training
resumes). Adam's moments (``exp_avg``, ``exp_avg_sq``) and step count are carried over into
optax's ``mu``/``nu``/``count`` through the same layout changes when the file has them for
every parameter (torch's and optax's Adam compute the same update); otherwise the optimizer
states start fresh, which is said.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxgan.importers.torch_files import ImportFileError, check_state_dict, load_torch_file, state_dict_from
from jaxgan.importers.workdir import add_workdir_arguments, new_workdir, write_imported_workdir
from jaxgan.models import build_models
from jaxgan.models.dfgan import DFGANConfig, dfgan_d_channels
from jaxgan.presets import get_config
from jaxgan.state import GANState, init_state
from jaxgan.text import load_text_encoder
from jaxgan.text.hf import to_flax_layout, torch_shape

DEFAULT_PRESET = "dfgan_official_cub"
# What the official DF-GAN lacks: a config with any of these away from its default has
# params (or a forward pass) that no official checkpoint has.
_NOT_OFFICIAL = {"g_norm": "none", "g_shortcut": "nearest", "word_attention": "", "self_attention": 0,
                 "spectral_norm": False, "d_head_width": 0, "d_projection": False, "ca": False}


def check_official(cfg: Any) -> None:
    """Raises ``ImportFileError`` unless ``cfg`` is a DF-GAN config the official networks match."""
    if not isinstance(cfg, DFGANConfig):
        raise ImportFileError(f"an official DF-GAN checkpoint needs model.arch=dfgan, not {cfg.arch}")
    off = [f"model.{k}={getattr(cfg, k)!r}" for k, v in _NOT_OFFICIAL.items() if getattr(cfg, k) != v]
    if off:
        raise ImportFileError(f"the official DF-GAN has no {', '.join(off)}: import with the official settings "
                              f"(preset {DEFAULT_PRESET})")


def official_name(path: tuple[str, ...]) -> tuple[str, str]:
    """(network, official parameter name) of a flattened jaxgan DF-GAN param path.

    Example:
        official_name(("block_0", "fuse_1", "affine_0", "gamma_1", "kernel"))
        # ("netG", "GBlocks.0.fuse2.affine0.fc_gamma.linear2.weight")
    """
    leaf = {"kernel": "weight", "bias": "bias", "gamma": "gamma"}[path[-1]]
    head, rest = path[0], path[1:-1]
    if head == "fc":
        return "netG", f"fc.{leaf}"
    if head == "to_rgb":
        return "netG", f"to_rgb.1.{leaf}"
    if head == "trunk":
        if rest == ("conv_img",):
            return "netD", f"conv_img.{leaf}"
        block = int(rest[0].removeprefix("block_"))
        if path[-1] == "gamma":
            return "netD", f"DBlocks.{block}.gamma"
        part = {"conv_0": "conv_r.0", "conv_1": "conv_r.2", "shortcut": "conv_s"}[rest[1]]
        return "netD", f"DBlocks.{block}.{part}.{leaf}"
    if head == "matcher":
        return "netC", f"joint_conv.{ {'joint': 0, 'logit': 2}[rest[0]] }.{leaf}"
    block = int(head.removeprefix("block_"))
    if rest[0] in ("conv_0", "conv_1", "shortcut"):
        return "netG", f"GBlocks.{block}.{ {'conv_0': 'c1', 'conv_1': 'c2', 'shortcut': 'c_sc'}[rest[0]] }.{leaf}"
    fuse, affine, mlp = rest  # fuse_j / affine_k / gamma_m or beta_m
    kind, m = mlp.split("_")
    return "netG", (f"GBlocks.{block}.fuse{int(fuse[-1]) + 1}.affine{affine[-1]}.fc_{kind}.linear{int(m) + 1}"
                    f".{leaf}")


def to_jaxgan(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    """An official tensor (or an Adam moment of it) in the layout of jaxgan's param ``path``."""
    value = np.asarray(value, np.float32)
    if path[-1] == "gamma":
        return value.reshape(())
    if path[0] == "fc":
        # torch's fc output o = c * 16 + (4 * row + column); jaxgan's = (4 * row + column) * C + c.
        c = value.shape[0] // 16
        value = value.reshape(c, 16, *value.shape[1:]).swapaxes(0, 1).reshape(value.shape)
    return np.ascontiguousarray(to_flax_layout(path[-1], value))


def official_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The official tensor shape of jaxgan's param ``path`` of ``shape``."""
    return (1,) if path[-1] == "gamma" else torch_shape(path[-1], shape)


def _unused_shortcuts(cfg: DFGANConfig) -> dict[str, tuple[int, ...]]:
    """The ``conv_s`` params of the D_Blocks that keep their channels (created, never applied)."""
    chs = dfgan_d_channels(cfg.resolution, cfg.discriminator_width)
    out = {}
    for i, (fin, fout) in enumerate(zip(chs[:-1], chs[1:])):
        if fin == fout:
            out |= {f"DBlocks.{i}.conv_s.weight": (fout, fin, 1, 1), f"DBlocks.{i}.conv_s.bias": (fout,)}
    return out


@dataclasses.dataclass
class Imported:
    """The jaxgan params of an official checkpoint, and what else the file held."""

    g_params: dict
    d_params: dict
    epoch: int | None
    # Per network ("generator", "discriminator"): (count, mu, nu) trees, or the reason there are none.
    adam: dict[str, tuple[int, dict, dict] | str]


def _adam_moments(optimizer: Any, names: list[str], paths: dict[str, tuple[str, ...]]) -> tuple[int, dict, dict] | str:
    """(count, mu, nu) in jaxgan's layout from a torch Adam ``state_dict`` over the params
    ``names`` (in ``parameters()`` order), or why they cannot be used."""
    if not isinstance(optimizer, dict) or "state" not in optimizer or "param_groups" not in optimizer:
        return "no optimizer state in the file"
    indices = [i for group in optimizer["param_groups"] for i in group.get("params", [])]
    if len(indices) != len(names):
        return f"the optimizer lists {len(indices)} parameters, the networks have {len(names)}"
    mu, nu, counts = {}, {}, set()
    for index, name in zip(indices, names):
        if name not in paths:
            continue  # an unused conv_s: no gradient, no state
        state = optimizer["state"].get(index)
        if not state or "exp_avg" not in state or "exp_avg_sq" not in state:
            return f"no Adam moments for {name}"
        path = paths[name]
        mu[path], nu[path] = to_jaxgan(path, state["exp_avg"]), to_jaxgan(path, state["exp_avg_sq"])
        counts.add(int(np.asarray(state.get("step", 0))))
    if len(counts) != 1:
        return f"the parameters' Adam step counts differ ({sorted(counts)[:3]})"
    return counts.pop(), traverse_util.unflatten_dict(mu), traverse_util.unflatten_dict(nu)


def convert_checkpoint(path: str | Path, cfg: DFGANConfig, sentence_dim: int) -> Imported:
    """The official checkpoint ``path`` as jaxgan DF-GAN params for ``cfg`` and sentence width
    ``sentence_dim`` (the official cond_dim).

    Raises:
      ImportFileError: torch is missing, the file is unreadable or unsafe, a network is
        missing, or its keys or shapes differ from those ``cfg`` implies (one line listing
        the first differences), or the sentence width differs from the checkpoint's.
    """
    check_official(cfg)
    obj = load_torch_file(path)
    nets = {net: state_dict_from(obj, path, "model", net) for net in ("netG", "netD", "netC")}
    generator, discriminator = build_models(cfg)
    z = jnp.zeros((1, cfg.z_dim))
    s = jnp.zeros((1, sentence_dim))
    shapes = {
        "generator": jax.eval_shape(lambda: generator.init(jax.random.key(0), z, s, train=False))["params"],
        "discriminator": jax.eval_shape(lambda: discriminator.init(
            jax.random.key(0), jnp.zeros((1, cfg.resolution, cfg.resolution, 3)), s, train=False))["params"],
    }
    # The official condition is [noise, sentence]: its width tells the checkpoint's cond_dim.
    affine = nets["netG"].get("GBlocks.0.fuse1.affine0.fc_gamma.linear1.weight")
    if affine is not None and affine.ndim == 2 and affine.shape[1] - cfg.z_dim != sentence_dim:
        raise ImportFileError(f"{path}: netG reads sentences of width {affine.shape[1] - cfg.z_dim} (cond_dim) "
                              f"with model.z_dim={cfg.z_dim}, but the text encoder gives width {sentence_dim}")
    expected: dict[str, dict[str, tuple[int, ...]]] = {"netG": {}, "netD": dict(_unused_shortcuts(cfg)), "netC": {}}
    paths: dict[str, dict[str, tuple]] = {"netG": {}, "netD": {}, "netC": {}}
    for tree in shapes.values():
        for p, leaf in traverse_util.flatten_dict(tree).items():
            net, name = official_name(p)
            expected[net][name] = official_shape(p, leaf.shape)
            paths[net][name] = p
    for net, sd in nets.items():
        check_state_dict(expected[net], sd, f"{path} {net}")
    g = {paths["netG"][n]: to_jaxgan(paths["netG"][n], v) for n, v in nets["netG"].items()}
    d = {paths[net][n]: to_jaxgan(paths[net][n], v)
         for net in ("netD", "netC") for n, v in nets[net].items() if n in paths[net]}
    optimizers = obj.get("optimizers", {}) if isinstance(obj, dict) else {}
    adam = {
        "generator": _adam_moments(optimizers.get("optimizer_G"), list(nets["netG"]), paths["netG"]),
        # The official optimizer_D runs over NetD's parameters, then NetC's.
        "discriminator": _adam_moments(optimizers.get("optimizer_D"), list(nets["netD"]) + list(nets["netC"]),
                                       {**paths["netD"], **paths["netC"]}),
    }
    epoch = obj.get("epoch") if isinstance(obj, dict) else None
    return Imported(traverse_util.unflatten_dict(g), traverse_util.unflatten_dict(d),
                    int(epoch) if isinstance(epoch, (int, np.integer)) else None, adam)


def _with_adam(opt_state: Any, moments: tuple[int, dict, dict]) -> Any:
    """``opt_state`` (optax.inject_hyperparams(adam)) with Adam's count and moments replaced."""
    count, mu, nu = moments
    adam_state, *rest = opt_state.inner_state
    adam_state = adam_state._replace(count=jnp.asarray(count, adam_state.count.dtype),
                                     mu=jax.tree.map(jnp.asarray, mu), nu=jax.tree.map(jnp.asarray, nu))
    return opt_state._replace(inner_state=(adam_state, *rest))


def import_dfgan(checkpoint: str | Path, workdir: str | Path, text_encoder: str,
                 preset: str = DEFAULT_PRESET, overrides: list[str] | tuple[str, ...] = (),
                 notice: Any = print) -> Path:
    """Writes a jaxgan workdir (``config.json``, a checkpoint at step 0) from an official
    DF-GAN ``state_epoch_N.pth``; returns the workdir.

    Args:
      checkpoint: the official file.
      workdir: a new or empty folder.
      text_encoder: a jaxgan text encoder (name or directory) whose sentence width is the
        checkpoint's cond_dim: for the released models, their DAMSM text encoder.
      preset: a preset with the checkpoint's settings (``dfgan_official_cub`` or ``_coco``).
      overrides: ``key=value`` config overrides on top (``model.width=...``, ``data.*``).

    Raises:
      ImportFileError: an existing non-empty workdir, an unreadable or mismatched checkpoint.
      ConfigError: an unknown preset or override.
    """
    workdir = new_workdir(workdir)
    config = get_config(preset, [*overrides, f"text.encoder={text_encoder}"])
    check_official(config.model)
    encoder = load_text_encoder(config.text.encoder, config.text.max_length or None)
    imported = convert_checkpoint(checkpoint, config.model, encoder.sentence_dim)
    generator, discriminator = build_models(config.model)
    # The official networks replace the random init (which is also not computed: compiling
    # DF-GAN's init costs minutes on CPU); the EMA generator starts as a copy of G.
    variables = ({"params": jax.tree.map(jnp.asarray, imported.g_params)},
                 {"params": jax.tree.map(jnp.asarray, imported.d_params)})
    state: GANState = init_state(config, generator, discriminator, encoder.sentence_dim, encoder.word_dim,
                                 variables=variables)
    optimizers = {}
    for net, field in (("generator", "g_opt_state"), ("discriminator", "d_opt_state")):
        moments = imported.adam[net]
        if isinstance(moments, str) or config.train.optimizer != "adam":
            optimizers[net] = f"fresh ({moments if isinstance(moments, str) else 'train.optimizer is not adam'})"
            continue
        state = state.replace(**{field: _with_adam(getattr(state, field), moments)})
        optimizers[net] = f"Adam moments at step {moments[0]}"
    record = {"source": str(Path(checkpoint).resolve()), "format": "tobran/DF-GAN state_epoch_*.pth",
              "epoch": imported.epoch, "text_encoder": text_encoder, "preset": preset,
              "overrides": list(overrides), "optimizers": optimizers}
    workdir = write_imported_workdir(workdir, config, state, record)
    notice(f"imported {checkpoint} (epoch {imported.epoch}) into {workdir} at step 0; optimizers: "
           + "; ".join(f"{k} {v}" for k, v in optimizers.items()))
    return workdir


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``jaxgan import dfgan``."""
    p.add_argument("--checkpoint", required=True, help="the official state_epoch_N.pth")
    p.add_argument("--text-encoder", required=True, metavar="DIR",
                   help="a jaxgan text encoder (directory or name) whose sentence width is the checkpoint's "
                        "cond_dim (256 for the released models: their DAMSM encoder, see `jaxgan import damsm`)")
    add_workdir_arguments(p, DEFAULT_PRESET, "dfgan_official_coco for COCO")


def run(args: argparse.Namespace) -> int:
    """``jaxgan import dfgan``: the parsed flags -> ``import_dfgan``."""
    import_dfgan(args.checkpoint, args.workdir, args.text_encoder, args.preset, args.overrides)
    return 0

