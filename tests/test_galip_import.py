"""GALIP's official networks in jaxgan: the ``galip_official_*`` settings compute what
tobran/GALIP's NetG, NetD and NetC compute (benchmarks/galip_reference.py, a PyTorch
reference written from the published definitions), and ``jaxgan.importers.galip`` maps an
official ``state_epoch_*.pth`` onto jaxgan's params.

A random tiny CLIP with ViT-B/32's geometry (224 px, 32 px patches: a 7x7 grid, 12 layers) but
width 32 stands in for ViT-B/32; G and D are thin (nf 2, bridge 8, D's map 16 channels)."""

import json
import re
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import save_tiny_hf_clip

from jaxgan.cli import run_command
from jaxgan.importers.galip import check_clip, discriminator_params, generator_params, openai_visual_from_hf, split_clip
from jaxgan.importers.torch_files import ImportFileError, load_torch_file, state_dict_from
from jaxgan.models import build_models
from jaxgan.models.galip import clip_similarity, tower_params
from jaxgan.models.layers import resize_nearest, torch_nearest_index
from jaxgan.pixels import to_uint8
from jaxgan.presets import get_config
from jaxgan.sampling import sample_noise
from jaxgan.text.clip_hf import SHAPES_CLIP_DIR
from jaxgan.workdir import TrainedGenerator, saved_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package
from benchmarks.galip_reference import CLIP_IMG_ENCODER, NetC, NetD, NetG, openai_clip_from_hf, randomize_  # noqa: E402

pytestmark = pytest.mark.usefixtures("quick_compiles")
HIDDEN, PROJECTION, Z, NF, BRIDGE, D_OUT = 32, 16, 8, 2, 8, 16
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """(CLIP directory, official checkpoint path, the reference modules) with random weights."""
    root = tmp_path_factory.mktemp("galip_official")
    # The text tower takes the shipped shapes CLIP's tokenizer (172 tokens), so captions work.
    hf = save_tiny_hf_clip(root / "clip", 172, eos=3, bos=2, pad=0, image_size=224, patch_size=32, hidden=HIDDEN,
                           layers=12, max_positions=32, projection=PROJECTION,
                           text=dict(hidden_size=16, intermediate_size=20, num_hidden_layers=1, num_attention_heads=2),
                           vision=dict(intermediate_size=48, num_attention_heads=2))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SHAPES_CLIP_DIR / name, root / "clip" / name)
    clip = openai_clip_from_hf(hf)
    net_g = NetG(NF, Z, PROJECTION, 224, 3, clip, code_ch=BRIDGE, mid_ch=BRIDGE // 2).eval()
    net_d = NetD(HIDDEN, D_OUT).eval()
    net_c = NetC(D_OUT, PROJECTION, hidden=2 * NF, grid=7).eval()
    for seed, net in enumerate((net_g, net_d, net_c)):
        randomize_(net, seed + 1)
    # As a DistributedDataParallel run saves them: every key under "module.".
    model = {name: {f"module.{k}": v for k, v in net.state_dict().items()}
             for name, net in (("netG", net_g), ("netD", net_d), ("netC", net_c))}
    torch.save({"model": model, "epoch": 7}, root / "state_epoch_007.pth")
    return {"clip": str(root / "clip"), "pth": root / "state_epoch_007.pth", "hf": hf,
            "G": net_g, "D": net_d, "C": net_c, "encoder": CLIP_IMG_ENCODER(clip).eval()}


def _config(official, *overrides):
    return get_config("galip_official_coco", [f"model.clip={official['clip']}", f"text.encoder={official['clip']}",
                                              f"model.width={NF}", f"model.d_width={NF}", f"model.z_dim={Z}",
                                              f"model.bridge_width={BRIDGE}", "model.conv_impl=conv", *overrides])


@pytest.fixture(scope="module")
def imported(official):
    """jaxgan's G and D under galip_official_coco with the checkpoint's params."""
    cfg = _config(official).model
    generator, discriminator = build_models(cfg)
    z, s = jnp.zeros((1, Z)), jnp.zeros((1, PROJECTION))
    g_abstract = jax.eval_shape(lambda: generator.init(jax.random.key(0), z, s)["params"])
    d_abstract = jax.eval_shape(lambda: discriminator.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), s)["params"])
    raw = load_torch_file(official["pth"])
    net_g, clip_weights = split_clip(state_dict_from(raw, official["pth"], "model", "netG"))
    g_params = generator_params(net_g, g_abstract, generator.tower.config.grid_size)
    d_params = discriminator_params(state_dict_from(raw, official["pth"], "model", "netD"),
                                    state_dict_from(raw, official["pth"], "model", "netC"), d_abstract)
    return {"G": generator, "D": discriminator, "g": g_params, "d": d_params, "clip_weights": clip_weights}


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def test_torch_nearest_rule_is_pytorch_interpolate_and_centre_is_nearest_exact():
    for size_in, size_out in ((7, 8), (64, 224), (256, 224), (5, 8), (4, 8)):
        x = np.random.default_rng(size_in).normal(size=(1, size_in, size_in, 2)).astype(np.float32)
        t = torch.from_numpy(x.transpose(0, 3, 1, 2))
        floor = F.interpolate(t, size=(size_out, size_out)).numpy().transpose(0, 2, 3, 1)
        exact = F.interpolate(t, size=(size_out, size_out), mode="nearest-exact").numpy().transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(np.asarray(resize_nearest(jnp.asarray(x), size_out, "floor")), floor)
        np.testing.assert_array_equal(np.asarray(resize_nearest(jnp.asarray(x), size_out, "centre")), exact)
    # The rules differ where GALIP resizes: its 7 -> 8 grid repeats row 0, not row 3.
    assert list(torch_nearest_index(7, 8)) == [0, 0, 1, 2, 3, 4, 5, 6]


def test_reference_openai_tower_is_the_hf_tower(official):
    """The reference's OpenAI-structured ViT (q, k, v fused into in_proj) is transformers'
    CLIP vision tower: same image embeddings from the same pixels."""
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        theirs = official["hf"].get_image_features(pixel_values=pixels)
        theirs = getattr(theirs, "pooler_output", theirs)
        enc = official["encoder"]
        enc_in = enc.transf_to_CLIP_input
        enc.transf_to_CLIP_input = lambda x: x  # feed the pixels as they are
        try:
            _, ours = enc(pixels)
        finally:
            enc.transf_to_CLIP_input = enc_in
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-5, rtol=1e-5)


def test_imported_generator_draws_the_official_image(official, imported):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, Z)).astype(np.float32)
    s = rng.normal(size=(2, PROJECTION)).astype(np.float32)
    with torch.no_grad():
        theirs = _nhwc(official["G"](torch.from_numpy(z), torch.from_numpy(s)))
    ours = np.asarray(jax.jit(imported["G"].apply)({"params": imported["g"]}, jnp.asarray(z), jnp.asarray(s)))
    assert ours.shape == theirs.shape == (2, 224, 224, 3)
    assert np.abs(theirs).max() > 0.1  # an image, not a vanishing output
    np.testing.assert_allclose(ours, theirs, atol=TOLERANCE, rtol=0)


def test_imported_discriminator_gives_the_official_logits_and_clip_similarity(official, imported):
    """Real images enter at 256 px (GALIP's data), resized 256 -> 224 by the floor rule."""
    rng = np.random.default_rng(1)
    s = rng.normal(size=(3, PROJECTION)).astype(np.float32)
    images = rng.uniform(-1, 1, size=(3, 256, 256, 3)).astype(np.float32)
    with torch.no_grad():
        feats, emb = official["encoder"](torch.from_numpy(images.transpose(0, 3, 1, 2)))
        logits = official["C"](official["D"](feats), torch.from_numpy(s)).reshape(-1).numpy()
        sim = torch.cosine_similarity(emb, torch.from_numpy(s)).mean().item()
    tower = imported["D"].tower

    @jax.jit
    def ours(params, images, s):
        return (imported["D"].apply({"params": params}, images, s),
                clip_similarity(tower, tower_params(tower, None), images, s, "floor", "galip"))

    our_logits, our_sim = ours(imported["d"], jnp.asarray(images), jnp.asarray(s))
    assert np.ptp(logits) > 1e-3  # the three pairs score differently
    np.testing.assert_allclose(np.asarray(our_logits), logits, atol=TOLERANCE, rtol=0)
    assert abs(float(our_sim) - sim) < 1e-5


def test_the_checkpoints_clip_copy_is_checked_against_the_directory(official, imported):
    hf = {k: v.numpy() for k, v in official["hf"].state_dict().items()}
    check_clip(imported["clip_weights"], hf, 12, "ckpt")  # the same tower: passes
    # As a GPU run saves it, in float16: still the same tower.
    check_clip({k: v.astype(np.float16) for k, v in imported["clip_weights"].items()}, hf, 12, "ckpt")
    other = dict(imported["clip_weights"])
    other["transformer.resblocks.3.mlp.c_fc.weight"] = other["transformer.resblocks.3.mlp.c_fc.weight"] + 0.01
    with pytest.raises(ImportFileError, match=r"^ckpt: mapping.CLIP_ViT.transformer.resblocks.3.mlp.c_fc.weight "
                                              r"differs .*another CLIP[^\n]*$"):
        check_clip(other, hf, 12, "ckpt")
    assert set(openai_visual_from_hf(hf, 12)) == set(imported["clip_weights"])


def test_a_checkpoint_of_other_widths_is_a_one_line_error(official, imported):
    raw = load_torch_file(official["pth"])
    net_g, _ = split_clip(state_dict_from(raw, official["pth"], "model", "netG"))
    g_abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), imported["g"])
    del net_g["to_rgb.1.bias"]
    net_g["GBlocks.0.c1.weight"] = net_g["GBlocks.0.c1.weight"][:, :3]
    with pytest.raises(ImportFileError, match=r"^netG: 2 differences from the expected layout: missing "
                                              r"to_rgb.1.bias; GBlocks.0.c1.weight has shape"):
        generator_params(net_g, g_abstract, 7)


def test_jaxgan_import_galip_writes_a_workdir_that_samples_the_official_image(official, tmp_path, capsys):
    workdir = tmp_path / "imported"
    sizes = [f"model.width={NF}", f"model.d_width={NF}", f"model.z_dim={Z}", f"model.bridge_width={BRIDGE}"]
    argv = ["galip", "--checkpoint", str(official["pth"]), "--clip", official["clip"], "--workdir", str(workdir)]
    assert run_command("import", [*argv, *(a for kv in sizes for a in ("--set", kv))]) == 0
    assert json.loads((workdir / "imported.json").read_text())["epoch"] == 7
    config = saved_config(workdir)
    assert (config.model.resolution, config.model.nearest, config.model.clip_pixels) == (224, "floor", "galip")
    sampler = TrainedGenerator(config, workdir)  # what sample.py runs
    prompts, seeds = ["a red circle", "a small blue square"], [0, 1]
    ours = sampler(prompts, seeds)
    z = np.asarray(sample_noise(seeds, Z))
    with torch.no_grad():
        sentence = np.array(sampler.embed.text(prompts)["sentence"])
        theirs = official["G"](torch.from_numpy(np.array(z)), torch.from_numpy(sentence))
    theirs = np.asarray(to_uint8(jnp.asarray(_nhwc(theirs))))
    assert ours.shape == theirs.shape == (2, 224, 224, 3)
    assert len(np.unique(theirs)) > 10
    # Equal pixels, but for a rare rounding tie at a level boundary.
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1 and (ours == theirs).mean() > 0.999
    # A second import into the now non-empty workdir is refused in one line.
    assert run_command("import", [*argv, *(a for kv in sizes for a in ("--set", kv))]) == 2
    assert re.fullmatch(r"error: \S+imported exists and is not empty; import into a new or empty folder\n",
                        capsys.readouterr().err)
