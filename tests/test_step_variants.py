"""The step's variants (DF-GAN, gradient penalties, DiffAugment, CA, word attention): the
composed loss is the sum of its pieces, parallel modes agree, lazy penalties do not recompile."""

import jax
import numpy as np
import pytest
from helpers import train_steps, tree_max_abs_diff

from jaxgan.bench import synthetic_batch
from jaxgan.losses import LOSSES, matching_aware_d_loss
from jaxgan.models import build_models
from jaxgan.pixels import to_float
from jaxgan.presets import get_config
from jaxgan.regularizers import ma_gp
from jaxgan.state import init_state
from jaxgan.step import example_noise, make_train_step

pytestmark = pytest.mark.usefixtures("quick_compiles")
SENTENCE_DIM = 12
DFGAN = ["model.arch=dfgan", "model.conv_impl=conv", "model.width=4", "model.text_dim=8", "train.batch_size=16",
         "train.loss=hinge", "train.penalty=magp", "train.g_lr=2e-3", "train.d_lr=2e-3"]
# Layout comparisons train with plain SGD (see tests/test_step.py) at 10x the learning rate.
LAYOUT = ["train.optimizer=sgd", "train.g_lr=2e-2", "train.d_lr=2e-2"]


def _train(overrides, steps=3, count_traces=None):
    cfg = get_config("tiny", [*DFGAN, *overrides])
    state, history = train_steps(cfg, SENTENCE_DIM, steps, lambda i: synthetic_batch(cfg, SENTENCE_DIM, seed=i),
                                 count_traces)
    return cfg, state, history


def test_dfgan_with_magp_augment_word_attention_and_g_norm_trains_the_same_on_1_and_2_devices():
    # pmap is the mode with per-device pieces (augmentation offsets, the penalty's batch,
    # gradient averaging); jit over a mesh runs the single-device program on a global batch.
    # g_norm=batch: the generator's BatchNorm is synchronised over the pmap axis.
    extra = ["train.augment=color,translation,cutout", "model.word_attention=16", "model.g_norm=batch"]
    _, single, h1 = _train([*extra, *LAYOUT, "train.num_devices=1"])
    _, other, h2 = _train([*extra, *LAYOUT, "train.num_devices=2", "train.parallel=pmap"])
    assert jax.tree.leaves(single.g_stats), "g_norm=batch keeps running statistics"
    diff = tree_max_abs_diff((single.g_params, single.d_params, single.ema_params, single.g_stats, single.ema_stats),
                             (other.g_params, other.d_params, other.ema_params, other.g_stats, other.ema_stats))
    assert diff < 2e-5, diff
    for a, b in zip(h1, h2):
        assert a["d_loss"] == pytest.approx(b["d_loss"], rel=1e-4)
        assert a["d_penalty"] == pytest.approx(b["d_penalty"], rel=1e-4)
    assert all(h["d_penalty"] > 0 for h in h1)


def test_d_loss_is_hinge_plus_lazy_ma_gp_and_the_lazy_step_compiles_once():
    cfg = get_config("tiny", [*DFGAN, "train.num_devices=1", "train.penalty_every=2"])
    g, d = build_models(cfg.model)
    state = init_state(cfg, g, d, SENTENCE_DIM)
    traces = []

    def traced(state, batch):
        traces.append(1)  # runs only while tracing
        return make_train_step(cfg, g, d)(state, batch)

    step = jax.jit(traced)
    batch = synthetic_batch(cfg, SENTENCE_DIM, seed=0)
    first = state
    history = []
    for i in range(4):
        state, metrics = step(state, synthetic_batch(cfg, SENTENCE_DIM, seed=i))
        history.append({k: float(v) for k, v in metrics.items()})
    assert len(traces) == 1
    assert [h["d_penalty"] > 0 for h in history] == [True, False, True, False]

    # Step 0 by hand: D of the initial params on real, wrong and fake pairs, plus MA-GP
    # (k=2, p=6) scaled by the lazy interval 2.
    @jax.jit
    def by_hand(state, batch):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), 0)
        z = example_noise(key, 16, cfg.model.z_dim, None)
        fake = g.apply({"params": state.g_params}, z, batch["sentence"], train=True)
        real = to_float(batch["image"])
        dv = {"params": state.d_params}
        real_logits, wrong_logits = d.apply(dv, real, batch["sentence"], batch["wrong_sentence"])
        adversarial = matching_aware_d_loss(LOSSES["hinge"], real_logits, d.apply(dv, fake, batch["sentence"]),
                                            wrong_logits)
        penalty = 2 * ma_gp(lambda x, s: d.apply(dv, x, s), real, batch["sentence"], weight=2.0, power=6.0)
        return adversarial, penalty

    adversarial, penalty = by_hand(first, batch)
    assert history[0]["d_penalty"] == pytest.approx(float(penalty), rel=1e-4)
    assert history[0]["d_loss"] == pytest.approx(float(adversarial + penalty), rel=1e-4)
    assert all(0.0 <= h["d_acc_real"] <= 1.0 for h in history)


def test_conditioning_augmentation_adds_its_kl_term_to_the_generator_loss():
    # No gradient penalty here: its double backward only lengthens the compile.
    _, state, history = _train(["train.num_devices=1", "model.ca=true", "train.kl_weight=0.5",
                                "train.penalty=none"], steps=2)
    for h in history:
        assert h["g_kl"] > 0
        assert h["g_loss"] == pytest.approx(h["g_adversarial"] + 0.5 * h["g_kl"], rel=1e-5)
    assert "ca" in state.g_params


@pytest.mark.parametrize("overrides", [
    ["model.arch=dcgan", "train.penalty=r1", "train.loss=lsgan", "model.ca=true"],
    ["model.arch=dcgan", "train.penalty=wgan_gp", "train.loss=wasserstein", "train.augment=translation"],
    ["model.spectral_norm=true", "model.self_attention=16"],
])
def test_other_variants_train_with_finite_losses(overrides):
    _, state, history = _train(["train.num_devices=1", *overrides], steps=2)
    assert all(np.isfinite(v) for h in history for v in h.values())
    assert int(state.skipped) == 0
