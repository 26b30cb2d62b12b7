"""``jaxgan import dfgan``: official DF-GAN checkpoints give the same images, logits and Adam steps.

The reference is benchmarks/dfgan_reference.py (NetG, NetD, NetC written from the published
definitions), with random weights saved in the official ``state_epoch_*.pth`` layout. Tiny
widths (nf=4 at 32 px) keep it cheap; the sentence width is the shipped shapes encoder's (128),
which the workdir test samples through. The end-to-end test chains a DAMSM encoder
(benchmarks/damsm_reference.py) at the released width, 256, through both import commands.
"""

import copy
import json
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package

from benchmarks import damsm_reference  # noqa: E402
from benchmarks.dfgan_reference import (  # noqa: E402
    D_Block,
    G_Block,
    NetC,
    build,
    official_checkpoint,
    official_optimizers,
    surrogate_step,
)
from jaxgan.checkpoint import Checkpointer  # noqa: E402
from jaxgan.cli import run_command  # noqa: E402
from jaxgan.data import make_source, shapes  # noqa: E402
from jaxgan.data.embeddings import EmbeddingTable  # noqa: E402
from jaxgan.data.pipeline import Pipeline  # noqa: E402
from jaxgan.importers.dfgan import (  # noqa: E402
    convert_checkpoint,
    import_dfgan,
    official_name,
    official_shape,
)
from jaxgan.importers.torch_files import ImportFileError  # noqa: E402
from jaxgan.importers.workdir import data_position_at_start  # noqa: E402
from jaxgan.models import build_models  # noqa: E402
from jaxgan.models.dfgan import DBlock, GBlock, MatchingHead  # noqa: E402
from jaxgan.pixels import to_float  # noqa: E402
from jaxgan.presets import get_config  # noqa: E402
from jaxgan.sampling import apply_generator, sample_noise  # noqa: E402
from jaxgan.state import abstract_state  # noqa: E402
from jaxgan.text import load_text_encoder  # noqa: E402
from jaxgan.workdir import TrainedGenerator, resolve_config, restore_state  # noqa: E402

NF, NZ, COND, RES = 4, 100, 128, 32
TINY = ["model.resolution=32", "model.width=4"]


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """The reference networks after one surrogate Adam step, and their official file."""
    torch.set_num_threads(1)
    netG, netD, netC = build(NF, NZ, COND, RES, seed=0)
    optimizers = official_optimizers(netG, netD, netC)
    gen = torch.Generator().manual_seed(1)
    surrogate_step(netG, netD, netC, *optimizers, torch.randn(2, NZ, generator=gen),
                   torch.randn(2, COND, generator=gen))
    path = official_checkpoint(tmp_path_factory.mktemp("official") / "state_epoch_007.pth", netG, netD, netC,
                               epoch=7, data_parallel=True, optimizers=optimizers)
    config = get_config("dfgan_official_cub", TINY)
    return netG, netD, netC, optimizers, path, config, convert_checkpoint(path, config.model, COND)


def _inputs(seed: int, n: int = 3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, NZ)).astype(np.float32), rng.standard_normal((n, COND)).astype(np.float32),
            rng.uniform(-1, 1, (n, RES, RES, 3)).astype(np.float32))


def test_generator_gives_the_reference_image(official, quick_compiles):
    netG, _, _, _, _, config, imported = official
    z, s, _ = _inputs(0)
    generator, _ = build_models(config.model)
    ours = np.asarray(jax.jit(lambda p: generator.apply({"params": p}, z, s, train=False))(imported.g_params))
    with torch.no_grad():
        ref = netG(torch.from_numpy(z), torch.from_numpy(s)).numpy().transpose(0, 2, 3, 1)
    assert ref.std() > 0.05  # random weights: an image, not a constant
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_discriminator_gives_the_reference_logits(official, quick_compiles):
    _, netD, netC, _, _, config, imported = official
    _, s, x = _inputs(1)
    wrong = np.roll(s, 1, axis=0)
    _, discriminator = build_models(config.model)
    logits, wrong_logits = jax.jit(lambda p: discriminator.apply({"params": p}, x, s, wrong, train=False))(
        imported.d_params)
    with torch.no_grad():
        features = netD(torch.from_numpy(x.transpose(0, 3, 1, 2)))
        ref = netC(features, torch.from_numpy(s)).numpy().reshape(-1)
        ref_wrong = netC(features, torch.from_numpy(wrong)).numpy().reshape(-1)
    assert np.ptp(ref) > 1e-2
    np.testing.assert_allclose(np.asarray(logits), ref, atol=1e-4)
    np.testing.assert_allclose(np.asarray(wrong_logits), ref_wrong, atol=1e-4)


def test_adam_moments_continue_the_torch_optimizer(official, tmp_path, quick_compiles):
    """The imported optimizer state takes the same next Adam step as torch's own."""
    netG, netD, netC, (opt_g, _), _, config, imported = official
    count, mu, nu = imported.adam["generator"]
    assert count == 1
    netG, opt_g = copy.deepcopy((netG, opt_g))  # the fixture's networks stay as saved
    z, s, _ = _inputs(2, n=2)
    opt_g.zero_grad()
    netG(torch.from_numpy(z), torch.from_numpy(s)).square().mean().backward()
    grads = {name: p.grad for name, p in netG.named_parameters()}
    opt_g.step()
    # The gradients, in the layout of a netG state dict, take the params' way into jaxgan.
    torch.save({"model": {"netG": grads, "netD": netD.state_dict(), "netC": netC.state_dict()}}, tmp_path / "g.pth")
    g_grads = convert_checkpoint(tmp_path / "g.pth", config.model, COND).g_params
    tx = optax.adam(1e-4, b1=0.0, b2=0.9)
    adam, *rest = tx.init(imported.g_params)
    state = (adam._replace(count=jnp.asarray(count, jnp.int32), mu=mu, nu=nu), *rest)
    ours = jax.jit(lambda g, st, p: optax.apply_updates(p, tx.update(g, st, p)[0]))(g_grads, state, imported.g_params)
    after = convert_checkpoint(official_checkpoint(tmp_path / "after.pth", netG, netD, netC),
                               config.model, COND).g_params
    moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(), after, imported.g_params)
    assert min(jax.tree.leaves(moved)) > 1e-5  # every weight moved (by about lr)
    diff = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(), ours, after)
    assert max(jax.tree.leaves(diff)) < 1e-7


def test_imported_workdir_samples_the_reference_and_resumes(official, tmp_path, quick_compiles):
    netG, *_, path, _, imported = official
    workdir = tmp_path / "w"
    lines = []
    import_dfgan(path, workdir, "shapes", overrides=TINY, notice=lines.append)
    assert "Adam moments at step 1" in lines[0]
    config = resolve_config(workdir)
    assert config == get_config("dfgan_official_cub", [*TINY, "text.encoder=shapes"])
    # sample.py's path: the EMA generator of the workdir, fed the prompts' sentence embeddings.
    generate = TrainedGenerator(config, workdir)
    prompts, seeds = ["a red circle", "a small blue square"], [3, 4]
    images = generate(prompts, seeds)
    z = np.array(sample_noise(seeds, NZ))
    sentence = np.array(generate.encoder(prompts).sentence)
    with torch.no_grad():
        ref = netG(torch.from_numpy(z), torch.from_numpy(sentence)).numpy().transpose(0, 2, 3, 1)
    ref_uint8 = np.clip(np.round((ref + 1) * 127.5), 0, 255)
    assert np.abs(images.astype(np.float64) - ref_uint8).max() <= 1  # rounding at a half-step
    # A resumed train.py: the checkpoint restores for a resume (Adam's count carried over) and
    # the data pipeline accepts its position.
    abstract = abstract_state(config, generate.generator, build_models(config.model)[1], COND)
    checkpoints = Checkpointer(workdir / "checkpoints")
    try:
        resumed = checkpoints.restore_for_resume(abstract, config)
    finally:
        checkpoints.close()
    assert resumed.step == 0 and not resumed.changes.refused
    assert int(resumed.state.g_opt_state.inner_state[0].count) == 1
    shapes_config = get_config("dfgan_official_cub", [*TINY, "data.dataset=shapes"])
    assert Pipeline(shapes_config, make_source(shapes_config), None).resume(
        data_position_at_start(shapes_config)) == 0


def _shapes_vocabulary() -> dict[str, int]:
    """A DAMSM ``wordtoix`` holding every word of a shapes caption (AttnGAN's ``<end>`` at 0)."""
    text = " ".join([*(re.sub(r"\{\w+\}", " ", t) for t in shapes.TEMPLATES),
                     *(v for values in shapes.ATTRIBUTE_VALUES.values() for v in values)])
    return {"<end>": 0, **{w: i + 1 for i, w in enumerate(dict.fromkeys(re.findall(r"\w+", text.lower())))}}


def test_release_files_import_end_to_end_and_evaluate(tmp_path, capsys, quick_compiles):
    """Issue 26, item 4: random weights in the release layouts (text_encoder200.pth, the captions
    pickle, state_epoch_N.pth at cond_dim 256), through `jaxgan import damsm` and `jaxgan import
    dfgan`, give the PyTorch pipeline's images and logits (caption -> DF-GAN's tokenize ->
    RNN_ENCODER's sent_emb -> NetG / NetD + NetC), and `jaxgan eval` runs on the workdir."""
    torch.set_num_threads(1)
    wordtoix = _shapes_vocabulary()
    rnn, pth, vocab = damsm_reference.official_files(tmp_path, wordtoix, seed=2)
    netG, netD, netC = build(NF, NZ, 256, RES, seed=3)
    release = official_checkpoint(tmp_path / "state_epoch_100.pth", netG, netD, netC, epoch=100)
    encoder_dir, workdir = tmp_path / "damsm", tmp_path / "w"
    assert run_command("import", ["damsm", "--text-encoder", str(pth), "--vocab", str(vocab),
                                  "--out", str(encoder_dir)]) == 0
    overrides = [*TINY, "data.dataset=shapes"]
    assert run_command("import", ["dfgan", "--checkpoint", str(release), "--text-encoder", str(encoder_dir),
                                  "--workdir", str(workdir), *sum((["--set", o] for o in overrides), [])]) == 0
    assert "(epoch 100)" in capsys.readouterr().out

    # sample.py's path (TrainedGenerator) up to its uint8 rounding: the workdir's config and EMA
    # generator, the captions' sentences from its DAMSM encoder, seeded noise.
    config = resolve_config(workdir)
    encoder = load_text_encoder(config.text.encoder, config.text.max_length or None)
    state = restore_state(config, workdir, encoder)
    real = shapes.batch(0, 3, RES, split="test")
    captions = [*real["caption"][:2], "A LARGE red Circle, at the top-left!"]  # case and punctuation too
    seeds = [5, 6, 7]
    text, wrong = (EmbeddingTable.on_demand(encoder).text(c) for c in (captions, real["wrong_caption"]))
    generator, discriminator = build_models(config.model)
    z = sample_noise(seeds, NZ)
    images = jax.jit(lambda p, s, t: apply_generator(generator, {"params": p, "batch_stats": s}, z, t))(
        state.ema_params, state.ema_stats, text)
    x = np.array(to_float(jnp.asarray(real["image"])))
    logits, wrong_logits = jax.jit(lambda p, t, w: discriminator.apply({"params": p}, x, t, w, train=False))(
        state.d_params, text["sentence"], wrong["sentence"])

    _, sent = damsm_reference.encode(rnn, damsm_reference.tokenize(wordtoix, captions))
    _, sent_wrong = damsm_reference.encode(rnn, damsm_reference.tokenize(wordtoix, real["wrong_caption"]))
    with torch.no_grad():
        ref = netG(torch.from_numpy(np.array(z)), torch.from_numpy(sent)).numpy().transpose(0, 2, 3, 1)
        features = netD(torch.from_numpy(x.transpose(0, 3, 1, 2)))
        ref_logits = netC(features, torch.from_numpy(sent)).numpy().reshape(-1)
        ref_wrong = netC(features, torch.from_numpy(sent_wrong)).numpy().reshape(-1)
    assert ref.std() > 0.05 and np.ptp(ref_logits) > 1e-2  # not constants
    np.testing.assert_allclose(np.asarray(images), ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(wrong_logits), ref_wrong, atol=1e-4, rtol=0)

    # jaxgan eval under a tiny protocol on the shapes test split.
    assert run_command("eval", ["--workdir", str(workdir), "--no-progress", "--num-samples", "16",
                                "--num-reference", "16", "--fidelity-samples", "0", "--diversity-captions", "0"]) == 0
    (report_path,) = (workdir / "eval").glob("step_000000-*.json")
    report = json.loads(report_path.read_text())
    assert report["protocol"]["num_samples"] == 16
    for name in ("fid", "precision", "recall"):
        assert np.isfinite(report["metrics"][name]), name
    assert report["metrics"]["fid"] > 0


def test_missing_key_is_one_line(official, tmp_path):
    netG, netD, netC, *_ = official
    sd = netG.state_dict()
    del sd["GBlocks.1.c_sc.weight"]
    torch.save({"model": {"netG": sd, "netD": netD.state_dict(), "netC": netC.state_dict()}}, tmp_path / "bad.pth")
    config = get_config("dfgan_official_cub", TINY)
    with pytest.raises(ImportFileError, match=r"^.*netG: 1 differences .*missing GBlocks\.1\.c_sc\.weight$"):
        convert_checkpoint(tmp_path / "bad.pth", config.model, COND)


def test_cli_refuses_a_non_empty_workdir_and_a_wrong_sentence_width(official, tmp_path, capsys):
    path = official[4]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    argv = ["dfgan", "--checkpoint", str(path), "--text-encoder", "shapes", *sum((["--set", o] for o in TINY), [])]
    assert run_command("import", [*argv, "--workdir", str(busy)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "exists and is not empty" in err
    assert run_command("import", [*argv, "--workdir", str(tmp_path / "new"), "--set", "model.z_dim=90"]) == 2
    err = capsys.readouterr().err.strip()
    assert "netG reads sentences of width 138" in err and "gives width 128" in err


def test_torch_init_draws_each_layer_as_pytorch_does():
    """model.init=torch: every weight and bias uniform in +-1/sqrt(fan_in) with PyTorch's fan_in of
    the official layer it maps to; the fusion MLPs' last layers and D's gamma as the paper's."""
    key, cond = jax.random.key(0), jnp.zeros((1, 40))
    ours = {
        ("block_0",): (GBlock(16, torch_init=True).init(key, jnp.zeros((1, 4, 4, 32)), cond, train=False),
                       G_Block(40, 32, 16), "GBlocks.0."),
        ("trunk", "block_0"): (DBlock(32, torch_init=True).init(key, jnp.zeros((1, 8, 8, 16)), train=False),
                               D_Block(16, 32), "DBlocks.0."),
        ("matcher",): (MatchingHead(4, torch_init=True).init(key, jnp.zeros((1, 4, 4, 32)), cond, train=False),
                       NetC(4, 40), ""),
    }
    checked = 0
    for prefix, (variables, reference, strip) in ours.items():
        theirs = dict(reference.named_parameters())
        for path, value in jax.tree_util.tree_flatten_with_path(variables["params"])[0]:
            path = prefix + tuple(k.key for k in path)
            _, name = official_name(path)
            ref = theirs[name.removeprefix(strip)].detach().numpy()
            assert official_shape(path, value.shape) == ref.shape
            value = np.asarray(value)
            if "linear2" in name or name.endswith("gamma"):  # the paper's own init: exact
                np.testing.assert_array_equal(value.reshape(-1), ref.reshape(-1))
                continue
            weight = theirs[name.removeprefix(strip).replace(".bias", ".weight")]
            bound = 1 / np.sqrt(weight[0].numel())  # PyTorch's fan_in: in * kh * kw
            assert np.abs(value).max() <= bound and np.abs(value).max() > 0.5 * bound, name
            if value.size >= 256:
                assert abs(value.std() / (bound / np.sqrt(3)) - 1) < 0.15, name
            checked += 1
    assert checked >= 20
