"""model.arch=galip on a random tiny CLIP directory: shapes, the frozen towers, the step's
GALIP pieces (D on CLIP features, G's CLIP term), the tower as an input of the compiled
programs, layouts, presets and errors.

Cost: two compiled steps (1 device, then pmap over 8 from the same fresh state), one
compiled function for everything checked by hand (``by_hand``) and one for sampling."""

import contextlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import save_galip_tiny_clip, tree_max_abs_diff, trees_bitwise_equal

from jaxgan import flops, train
from jaxgan.bench import synthetic_batch
from jaxgan.config import ConfigError
from jaxgan.models import GALIPConfig, build_models, sentence_width, step_pieces
from jaxgan.models.galip import clip_features, clip_similarity
from jaxgan.models.layers import SelfAttention
from jaxgan.pixels import to_uint8
from jaxgan.presets import get_config
from jaxgan.program import build_train_program
from jaxgan.regularizers import ma_gp
from jaxgan.sampling import make_generate_fn, sample_noise
from jaxgan.state import frozen_params
from jaxgan.text import load_clip
from jaxgan.text.errors import TextEncoderError
from jaxgan.train import train_and_evaluate

pytestmark = pytest.mark.usefixtures("quick_compiles")
PROJECTION = 24  # the CLIP's joint width: the sentence embeddings' width
HIDDEN, MLP, LAYERS, IMAGE, GRID = 16, 20, 2, 40, 5
# A tiny GALIP: CLIP 40 px, 8 px patches (a 5x5 grid: like ViT-B/32's 7x7, not a power of two,
# so G's first block follows a resize 5 -> 8), 2 layers; D reads states 1 and 2, G's prompt
# enters before layer 1.
TINY = ["model.width=4", "model.z_dim=8", "model.resolution=32", "model.d_layers=1,2", "model.prompt_layers=1",
        "model.bridge_width=4", "model.bridge_blocks=1", "model.conv_impl=conv", "train.batch_size=8"]
# Layout comparisons train with plain SGD (tests/test_step.py explains why).
LAYOUT = ["train.optimizer=sgd", "train.g_lr=2e-2", "train.d_lr=2e-2"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A random tiny CLIPModel directory as transformers' save_pretrained writes it."""
    directory = tmp_path_factory.mktemp("galip_clip")
    save_galip_tiny_clip(directory)
    return str(directory)


def _config(clip_dir, *overrides):
    return get_config("galip64", [f"model.clip={clip_dir}", *TINY, *overrides])


def _batch(cfg, seed=0):
    return synthetic_batch(cfg, PROJECTION, seed=seed)


@contextlib.contextmanager
def _quick_compiles():
    # Module fixtures are set up before the function-scoped quick_compiles: switch it here too.
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


def _train(cfg, fresh, steps: int = 2):
    """``steps`` steps of the program training runs (``build_train_program``: the architecture's
    pieces included) from the single-copy state ``fresh`` (None: the program's jitted init,
    ``fresh_state``: one trace, where ``init_placed_state`` traces twice for its shardings), on
    batches of seeds 0, 1, ...; returns the initial and final states on the host, each step's
    metrics and the step's lowered text (it is compiled from that lowering, so reading it is free)."""
    program = build_train_program(cfg)
    fresh = jax.device_get(program.fresh_state(PROJECTION)) if fresh is None else fresh
    state = program.parallel.put_state(fresh)
    batches = [program.parallel.put_batch(_batch(cfg, seed=i)) for i in range(steps)]
    lowered = program.step.lower(state, batches[0], program.frozen)
    step, history = lowered.compile(), []
    for batch in batches:
        state, metrics = step(state, batch, program.frozen)
        history.append({k: float(v) for k, v in program.parallel.to_host(metrics).items()})
    return fresh, program.parallel.to_host(state), history, lowered.as_text()


@pytest.fixture(scope="module")
def single_run(clip_dir):
    """Two steps on one device (plain SGD, for the layout comparison) from the program's fresh
    state, on batches of seeds 0 and 1: (config, fresh state, final state, metrics, lowered step)."""
    cfg = _config(clip_dir, *LAYOUT, "train.num_devices=1")
    with _quick_compiles():
        return cfg, *_train(cfg, None)


@pytest.fixture(scope="module")
def by_hand(single_run):
    """One compiled function of the fresh state on batch 0: G's images, their CLIP features, D's
    logits from images and from features, and MA-GP (k=2, p=6) of D as a function of (CLIP
    features, sentence) at the real images' features, as GALIP's MA_GP(CLIP_real, sent_emb, ...)."""
    cfg, fresh = single_run[:2]
    g, d = build_models(cfg.model)
    d_input = step_pieces(cfg.model, g, d)["d_input"]
    batch = _batch(cfg)
    z = jnp.ones((8, cfg.model.z_dim))

    @jax.jit
    def run(g_params, d_params, frozen, image, s, w):
        variables = lambda p: {"params": p, "frozen": frozen}  # noqa: E731
        fake = g.apply(variables(g_params), z, s)
        features = clip_features(d.tower, frozen["clip_vision"], d.layers, fake)
        d_fn = lambda x, s: d.apply(variables(d_params), x, s)  # noqa: E731
        penalty = ma_gp(d_fn, d_input(image.astype(jnp.float32) / 127.5 - 1.0, frozen), s, 2.0, 6.0)
        return (fake, features, d.apply(variables(d_params), fake, s, w), d.apply(variables(d_params), features, s, w),
                penalty)

    with _quick_compiles():
        out = run(fresh.g_params, fresh.d_params, frozen_params(g, d), batch["image"], batch["sentence"],
                  batch["wrong_sentence"])
    return g, d, z, batch, out


def test_shapes_d_reads_images_or_their_clip_features_and_sampling_gets_the_tower(single_run, by_hand):
    cfg, fresh = single_run[:2]
    g, d, z, batch, (fake, features, (logits, wrong), (from_features, _), _) = by_hand
    assert fake.shape == (8, 32, 32, 3) and fake.dtype == jnp.float32
    assert sentence_width(g) == PROJECTION and sentence_width(build_models(get_config("tiny").model)[0]) is None
    assert features.shape == (8, 2, GRID, GRID, HIDDEN)
    assert logits.shape == wrong.shape == (8,)
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(from_features))
    # The mate: one block per D layer after the first, one to 8 * d_width, then the head.
    assert set(fresh.d_params) == {"mate_0", "mate_out", "head"}
    # The head: conv (g - 3)x(g - 3) valid on [8 * d_width map, sentence] to 2 * d_width, then 4x4 valid.
    assert fresh.d_params["head"]["joint"]["kernel"].shape == (GRID - 3, GRID - 3, 8 * 4 + PROJECTION, 2 * 4)
    # G: the first block at 8x8 keeps its size (no upsampling conv), then 8 -> 16 -> 32.
    assert set(fresh.g_params) >= {"block_0", "block_1", "block_2"} and "block_3" not in fresh.g_params
    # No CLIP tensor is a trained param (the tower's would be under embeddings/encoder/...).
    names = {jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(
        (fresh.g_params, fresh.d_params, fresh.ema_params))}
    assert not [n for n in names if any(w in n for w in ("embeddings", "encoder", "layrnorm", "projection"))]
    # Sampling passes the tower to its compiled generator: the same images, as uint8.
    images = make_generate_fn(g)(fresh.ema_params, fresh.ema_stats, z, {"sentence": batch["sentence"]})
    assert images.dtype == jnp.uint8
    assert np.max(np.abs(np.asarray(images, np.int32) - np.asarray(to_uint8(fake), np.int32))) <= 1
    # Given the step's frozen params (G's and D's, merged), it reads them, not a copy of its own.
    step_frozen = jax.device_put(frozen_params(g, d))
    shared = make_generate_fn(g, step_frozen)
    assert shared.frozen is step_frozen
    np.testing.assert_array_equal(shared(fresh.ema_params, fresh.ema_stats, z, {"sentence": batch["sentence"]}),
                                  images)


@pytest.mark.parametrize("layout", [["train.num_devices=1"], ["train.parallel=pmap", "train.num_devices=8"]])
def test_training_previews_read_the_steps_copy_of_the_clip_tower(tmp_path, layout):
    # A run holds the frozen tower once: the preview sampler takes the step's device copy, under
    # pmap the first device's share of it, buffer for buffer.
    config = get_config("galip64_shapes", [*layout, "eval.every=0"])
    run = train._Run(config, tmp_path / "run")
    run.checkpoints.close()
    step_copy = run.program.frozen
    assert step_copy
    if run.parallel.mode != "pmap":
        assert run.generate.frozen is step_copy
        return
    pointer = lambda x: x.unsafe_buffer_pointer()  # noqa: E731
    shares = jax.tree.map(lambda x: pointer(x.addressable_data(0)), step_copy)
    assert jax.tree.map(pointer, run.generate.frozen) == shares
    # And the previews are those of a sampler with its own copy of the tower.
    state = jax.device_get(run.program.fresh_state(run.encoder.sentence_dim, run.encoder.word_dim))
    z, text = sample_noise([0, 1], config.model.z_dim), run.table.text(run.prompts[:2])
    np.testing.assert_array_equal(run.generate(state.ema_params, state.ema_stats, z, text),
                                  make_generate_fn(run.sample_generator)(state.ema_params, state.ema_stats, z, text))


def test_two_steps_are_finite_leave_clip_bitwise_unchanged_and_g_loss_adds_the_clip_term(clip_dir, single_run,
                                                                                       by_hand):
    cfg, fresh, state, history, _ = single_run
    before = load_clip(clip_dir).vision.params  # a fresh read of the weights
    g, d = by_hand[:2]
    assert trees_bitwise_equal(g.tower.params, before) and d.tower is g.tower
    for h in history:
        assert all(np.isfinite(v) for v in h.values()), h
        # G's loss = hinge G loss - 4 * mean cos(CLIP(fake), sentence) (no CA, so no KL).
        assert h["g_loss"] == pytest.approx(h["g_adversarial"] - 4.0 * h["g_clip_sim"], rel=1e-5, abs=1e-6)
        assert -1 <= h["g_clip_sim"] <= 1 and h["d_penalty"] > 0
    assert int(state.step) == 2 and int(state.skipped) == 0
    assert tree_max_abs_diff(state.g_params, fresh.g_params) > 1e-3
    # G's prompt tokens enter only inside the frozen tower: they moved, so the gradient crossed it.
    assert tree_max_abs_diff(state.g_params["prompts"], fresh.g_params["prompts"]) > 1e-6
    # Step 0's penalty is MA-GP of D on (CLIP features of the real batch, sentence), by hand.
    assert history[0]["d_penalty"] == pytest.approx(float(by_hand[-1][-1]), rel=1e-4)


def test_galip_trains_the_same_on_1_and_8_devices(clip_dir, single_run):
    assert jax.device_count() == 8
    _, fresh, single, h1, _ = single_run
    # From the same fresh state (the 8-device program's own init is the same; not compiled again).
    _, other, h2, hlo = _train(_config(clip_dir, *LAYOUT, "train.num_devices=8", "train.parallel=pmap"), fresh)
    diff = tree_max_abs_diff((single.g_params, single.d_params, single.ema_params),
                             (other.g_params, other.d_params, other.ema_params))
    assert diff < 2e-5, diff
    for a, b in zip(h1, h2):
        assert a["g_loss"] == pytest.approx(b["g_loss"], rel=1e-4)
        assert a["d_penalty"] == pytest.approx(b["d_penalty"], rel=1e-4)
    # pmap's program too reads the tower as an input (one copy per device), not as constants.
    assert _largest_constant(hlo) < 1024


def _largest_constant(hlo: str) -> int:
    """Bytes of the largest dense constant in lowered StableHLO text (printed as hex)."""
    return max((len(m.group(1)) // 2 for m in re.finditer(r'dense<"0x([0-9A-F]+)">', hlo)), default=0)


def test_the_step_reads_the_clip_tower_as_an_input_not_as_constants(single_run, by_hand):
    cfg, hlo = single_run[0], single_run[-1]
    g, d = by_hand[:2]
    frozen = frozen_params(g, d)
    largest = max(x.nbytes for x in jax.tree.leaves(frozen))  # the 8x8x3x16 patch conv: 12 KiB
    # The compiled step embeds no constant near a tower leaf's size: the weights are its input.
    assert _largest_constant(hlo) < 1024 < largest
    # The check sees a closed-over tower: D's CLIP features without the frozen argument embed it.
    d_input, image = step_pieces(cfg.model, g, d)["d_input"], jnp.zeros((1, 32, 32, 3))
    assert _largest_constant(jax.jit(lambda x: d_input(x, {})).lower(image).as_text()) == largest
    assert _largest_constant(jax.jit(d_input).lower(image, frozen).as_text()) < 1024


def test_presets_need_a_clip_directory_and_layers_that_fit_it(clip_dir):
    for r in (64, 128, 256):
        model = get_config(f"galip{r}").model
        assert isinstance(model, GALIPConfig) and model.resolution == r and model.clip_weight == 4.0
        assert (model.d_layers, model.width) == ("2,5,9", 64)
        with pytest.raises(ConfigError, match=r"^model.clip is empty: model.arch=galip needs a Hugging Face "):
            build_models(model)
    with pytest.raises(TextEncoderError):
        build_models(get_config("galip64", ["model.clip=/nonexistent/clip"]).model)
    with pytest.raises(ConfigError, match=r"model.d_layers \[5, 9\] are not hidden states"):
        build_models(_config(clip_dir, "model.d_layers=2,5,9").model)
    with pytest.raises(ConfigError, match="model.d_layers must be comma-separated"):
        _config(clip_dir, "model.d_layers=2,x")
    with pytest.raises(ConfigError, match="model.ca is not a galip option"):
        _config(clip_dir, "model.ca=true")
    g, d = build_models(_config(clip_dir).model)
    with pytest.raises(ConfigError, match="projection width 24, got 12"):
        clip_similarity(g.tower, g.tower.params, jnp.zeros((2, 32, 32, 3)), jnp.zeros((2, 12)))


def _layer_macs(batch, tokens, width=HIDDEN, mlp=MLP):
    """One CLIP encoder layer by hand: q, k, v, out projections, the two attention matmuls, the MLP."""
    return 4 * batch * tokens * width * width + 2 * batch * tokens * tokens * width + 2 * batch * tokens * width * mlp


def test_flops_count_the_frozen_tower_without_weight_gradients_by_hand(single_run, by_hand):
    cfg, fresh = single_run[:2]
    g, d = by_hand[:2]
    count = flops.step_flops(cfg, g, d, PROJECTION)
    b, tokens = 8, GRID * GRID + 1
    patches = b * GRID * GRID * (8 * 8 * 3) * HIDDEN  # the 8x8 stride-8 patch conv
    encoder = patches + LAYERS * _layer_macs(b, tokens)  # D reads the last state: every layer runs
    # d_input: forward on real and fake for D, forward + input gradient on the fakes for G.
    assert count["d_input"] == 2 * encoder * (2 + 2)
    # The CLIP term: the whole tower plus the visual projection, forward + input gradient.
    assert count["g_loss_term"] == 2 * (encoder + b * HIDDEN * PROJECTION) * 2
    # G's frozen layers (a prompt token makes layer 1's sequence one longer) cost forward, EMA
    # forward and input gradient; its trained layers also the weight gradient.
    g_layers = flops.trace_layers(g, {"params": fresh.g_params, "frozen": frozen_params(g)},
                                  jnp.zeros((b, cfg.model.z_dim)), jnp.zeros((b, PROJECTION)))
    frozen = sum(x.macs for x in g_layers if x.frozen)
    assert frozen == (LAYERS - 1) * _layer_macs(b, tokens) + _layer_macs(b, tokens + 1)
    trained = sum(x.macs for x in g_layers if not x.frozen)
    assert trained > 0 and count["generator"] == 2 * (4 * trained + 3 * frozen)
    assert count["total"] == sum(count[k] for k in ("generator", "d_input", "d_update", "g_loss_through_d",
                                                    "g_loss_term"))


def test_flops_count_sagan_attention_by_hand():
    attention = SelfAttention()
    x = jnp.zeros((2, 4, 4, 16))
    layers = flops.trace_layers(attention, jax.eval_shape(attention.init, jax.random.key(0), x), x)
    n, c, inner = 16, 16, 2
    projections = 2 * n * (3 * c * inner + inner * c)  # f, g, h to C/8, v back to C
    assert sum(x.macs for x in layers) == projections + 2 * 2 * n * n * inner


def test_a_run_whose_text_encoder_is_not_the_clip_stops_with_one_line(clip_dir, tmp_path):
    # The shipped shapes encoder's sentences are 128 wide; the tiny CLIP's joint width is 24.
    config = _config(clip_dir, "train.num_devices=1", "train.steps=1", "eval.every=0")
    with pytest.raises(ConfigError, match=r"needs sentence embeddings of width 24 \(its CLIP's\), but "
                                          r"text.encoder='shapes' gives 128: set text.encoder"):
        train_and_evaluate(config, tmp_path / "run")
