"""Losses against values computed by hand, finite differences and the step that uses them."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_batch
from jax.test_util import check_grads

from jaxgan import losses, regularizers
from jaxgan.models import build_models
from jaxgan.presets import get_config
from jaxgan.state import init_state
from jaxgan.step import example_noise, make_train_step


def test_nonsaturating_against_log_sigmoid():
    logits = jnp.array([-2.0, 0.0, 3.0])
    sig = 1 / (1 + np.exp(-np.array([-2.0, 0.0, 3.0])))
    assert float(losses.nonsaturating_d_real(logits)) == pytest.approx(np.mean(-np.log(sig)), rel=1e-6)
    assert float(losses.nonsaturating_d_fake(logits)) == pytest.approx(np.mean(-np.log(1 - sig)), rel=1e-6)
    assert float(losses.nonsaturating_g(logits)) == pytest.approx(np.mean(-np.log(sig)), rel=1e-6)


def test_nonsaturating_is_stable_for_large_logits():
    assert np.isfinite(float(losses.nonsaturating_d_fake(jnp.array([1e4]))))
    assert float(losses.nonsaturating_d_real(jnp.array([-1e4]))) == pytest.approx(1e4)


def test_hinge_by_hand():
    logits = jnp.array([-2.0, 0.5, 3.0])
    assert float(losses.hinge_d_real(logits)) == pytest.approx((3.0 + 0.5 + 0.0) / 3)
    assert float(losses.hinge_d_fake(logits)) == pytest.approx((0.0 + 1.5 + 4.0) / 3)
    assert float(losses.hinge_g(logits)) == pytest.approx(-0.5)


def test_matching_aware_weights_fake_and_mismatch_by_half():
    real, fake, wrong = jnp.array([1.0]), jnp.array([-1.0]), jnp.array([0.5])
    h = losses.LOSSES["hinge"]
    expected = max(0, 1 - 1.0) + 0.5 * (max(0, 1 - 1.0) + max(0, 1 + 0.5))
    assert float(losses.matching_aware_d_loss(h, real, fake, wrong)) == pytest.approx(expected)


def test_lsgan_by_hand():
    logits = jnp.array([-1.0, 0.5, 2.0])
    assert float(losses.lsgan_d_real(logits)) == pytest.approx(0.5 * (4.0 + 0.25 + 1.0) / 3)
    assert float(losses.lsgan_d_fake(logits)) == pytest.approx(0.5 * (1.0 + 0.25 + 4.0) / 3)
    assert float(losses.lsgan_g(logits)) == pytest.approx(0.5 * (4.0 + 0.25 + 1.0) / 3)
    assert losses.LOSSES["lsgan"].threshold == 0.5


def test_wasserstein_by_hand():
    logits = jnp.array([-1.0, 0.5, 3.5])
    assert float(losses.wasserstein_d_real(logits)) == pytest.approx(-1.0)
    assert float(losses.wasserstein_d_fake(logits)) == pytest.approx(1.0)
    assert float(losses.wasserstein_g(logits)) == pytest.approx(-1.0)
    assert losses.LOSSES["wasserstein"].threshold == 0.0


def test_thresholds_default_to_zero_and_old_construction_still_works():
    assert losses.LOSSES["hinge"].threshold == 0.0
    assert losses.LOSSES["nonsaturating"].threshold == 0.0
    custom = losses.AdversarialLoss(losses.hinge_d_real, losses.hinge_d_fake, losses.hinge_g)
    assert custom.threshold == 0.0
    assert losses.as_gan_loss(custom).threshold == 0.0
    assert losses.as_gan_loss(custom._replace(threshold=0.5)).threshold == 0.5
    rp = losses.LOSSES["rpgan"]
    assert losses.as_gan_loss(rp) is rp
    with pytest.raises(TypeError, match="GANLoss or an AdversarialLoss"):
        losses.as_gan_loss(lambda x: x)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_losses_are_float32_for_bfloat16_logits(name):
    logits = jnp.array([-1.5, 0.25, 2.0], jnp.bfloat16)
    loss = losses.LOSSES[name]
    real, fake, wrong = logits, logits[::-1] - 0.5, logits + 0.75
    terms = (lambda r, f, w: loss.d(r, f, w), lambda r, f, w: loss.g(f, r))
    for term in terms:
        value = term(real, fake, wrong)
        assert value.dtype == jnp.float32 and value.shape == ()
        as_f32 = [x.astype(jnp.float32) for x in (real, fake, wrong)]
        assert float(value) == pytest.approx(float(term(*as_f32)), rel=1e-6)


def test_kl_by_hand():
    mu = jnp.array([[0.5, -1.0], [0.0, 2.0]])
    log_sigma = jnp.array([[0.0, np.log(2.0)], [np.log(0.5), 0.0]])
    m, ls = np.asarray(mu, np.float64), np.asarray(log_sigma, np.float64)
    per_example = 0.5 * np.sum(m ** 2 + np.exp(2 * ls) - 1 - 2 * ls, axis=1)
    assert float(losses.kl_to_standard_normal(mu, log_sigma)) == pytest.approx(per_example.mean(),
                                                                              rel=1e-6)


def test_kl_closed_form_cases():
    dim = 7
    zeros = jnp.zeros((3, dim))
    assert float(losses.kl_to_standard_normal(zeros, zeros)) == pytest.approx(0.0, abs=1e-7)
    kl = losses.kl_to_standard_normal
    assert float(kl(jnp.ones((3, dim)), zeros)) == pytest.approx(0.5 * dim)
    # StackGAN's parameterisation: log_var = 2 log sigma.
    log_var = jnp.full((3, dim), np.log(3.0))
    expected = 0.5 * dim * (3.0 - 1.0 - np.log(3.0))
    assert float(kl(zeros, 0.5 * log_var)) == pytest.approx(expected, rel=1e-6)
    assert kl(zeros.astype(jnp.bfloat16), zeros).dtype == jnp.float32


def test_kl_matches_monte_carlo():
    # KL(q || p) = E_q[log q(z) - log p(z)] for z = mu + sigma * eps.
    rng = np.random.default_rng(0)
    mu, log_sigma = np.array([[0.3, -0.7, 1.2]]), np.array([[-0.4, 0.2, 0.1]])
    sigma = np.exp(log_sigma)
    eps = rng.standard_normal((400_000, 3))
    z = mu + sigma * eps
    log_q = np.sum(-0.5 * eps ** 2 - log_sigma, axis=1)
    log_p = np.sum(-0.5 * z ** 2, axis=1)
    mc = np.mean(log_q - log_p)
    value = losses.kl_to_standard_normal(jnp.asarray(mu), jnp.asarray(log_sigma))
    assert float(value) == pytest.approx(mc, abs=5e-3)


def test_discriminator_accuracy_by_hand():
    real = jnp.array([1.0, -0.5, 2.0, 0.1])
    fake = jnp.array([-1.0, 0.3, -0.2, -3.0])
    wrong = jnp.array([0.0, 0.6, 0.7, 0.2])
    acc = losses.discriminator_accuracy(real, fake, wrong)
    assert float(acc["d_acc_real"]) == pytest.approx(3 / 4)
    assert float(acc["d_acc_fake"]) == pytest.approx(3 / 4)
    assert float(acc["d_acc_wrong"]) == pytest.approx(0.0)  # 0.0 is not < 0.0
    lsgan_threshold = losses.LOSSES["lsgan"].threshold
    acc = losses.discriminator_accuracy(real, fake, wrong, threshold=lsgan_threshold)
    assert float(acc["d_acc_real"]) == pytest.approx(2 / 4)
    assert float(acc["d_acc_fake"]) == pytest.approx(4 / 4)
    assert float(acc["d_acc_wrong"]) == pytest.approx(2 / 4)
    assert all(v.dtype == jnp.float32 for v in acc.values())


def _softplus(x):
    return np.log1p(np.exp(x))


def _logits(seed, n=6):
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=2.0, size=n).astype(np.float32) for _ in range(3)]


# The formulas the step computed before GANLoss, written out: the built-in losses in the new
# form must give exactly these bits, or the default run's numbers would move.
OLD_FORMULAS = {
    "nonsaturating": (lambda r, f, w: jnp.mean(jax.nn.softplus(-r)) + 0.5 * (
        jnp.mean(jax.nn.softplus(f)) + jnp.mean(jax.nn.softplus(w))), lambda f: jnp.mean(jax.nn.softplus(-f))),
    "hinge": (lambda r, f, w: jnp.mean(jax.nn.relu(1.0 - r)) + 0.5 * (
        jnp.mean(jax.nn.relu(1.0 + f)) + jnp.mean(jax.nn.relu(1.0 + w))), lambda f: -jnp.mean(f)),
    "lsgan": (lambda r, f, w: 0.5 * jnp.mean(jnp.square(r - 1.0)) + 0.5 * (
        0.5 * jnp.mean(jnp.square(f)) + 0.5 * jnp.mean(jnp.square(w))),
        lambda f: 0.5 * jnp.mean(jnp.square(f - 1.0))),
    "wasserstein": (lambda r, f, w: -jnp.mean(r) + 0.5 * (jnp.mean(f) + jnp.mean(w)), lambda f: -jnp.mean(f)),
}


@pytest.mark.parametrize("name", sorted(OLD_FORMULAS))
def test_builtin_losses_in_the_new_form_are_bit_identical_to_the_old_formulas(name):
    old_d, old_g = OLD_FORMULAS[name]
    new = losses.LOSSES[name]
    assert not new.g_needs_real
    for seed in range(2):
        r, f, w = (jnp.asarray(x) for x in _logits(seed, 37))
        assert np.array_equal(new.d(r, f, w), old_d(r, f, w))
        assert np.array_equal(new.g(f, None), old_g(f))
        assert np.array_equal(jax.jit(new.d)(r, f, w), jax.jit(old_d)(r, f, w))
        assert np.array_equal(jax.jit(lambda x: new.g(x, None))(f), jax.jit(old_g)(f))
        # The gradients the optimizers see, too.
        assert np.array_equal(jax.grad(new.d, argnums=(0, 1, 2))(r, f, w), jax.grad(old_d, argnums=(0, 1, 2))(r, f, w))
        assert np.array_equal(jax.grad(new.g)(f, None), jax.grad(old_g)(f))
        assert np.array_equal(losses.matching_aware_d_loss(new, r, f, w), old_d(r, f, w))


def test_rpgan_by_hand():
    r, f, w = _logits(1)
    r64, f64, w64 = (x.astype(np.float64) for x in (r, f, w))
    d_plain = np.mean(_softplus(f64 - r64))
    assert float(losses.rpgan_d(r, f)) == pytest.approx(d_plain, rel=1e-6)
    assert float(losses.rpgan_g(f, r)) == pytest.approx(np.mean(_softplus(r64 - f64)), rel=1e-6)
    # Matching-aware: the wrong pairs are a second negative, each kind weighted 1/2.
    expected = 0.5 * (d_plain + np.mean(_softplus(w64 - r64)))
    loss = losses.LOSSES["rpgan"]
    assert float(loss.d(r, f, w)) == pytest.approx(expected, rel=1e-6)
    assert float(loss.g(f, r)) == pytest.approx(np.mean(_softplus(r64 - f64)), rel=1e-6)
    assert loss.g_needs_real
    # Pairing is elementwise: shuffling the fakes against the reals changes the loss.
    assert float(losses.rpgan_d(r, f[::-1])) != pytest.approx(d_plain, rel=1e-3)


def test_rpgan_on_two_pairs_by_hand():
    # D(real) = [2, 0], D(fake) = [1, 1]: softplus(-1) and softplus(1), mean log(1 + e^-1) ...
    r, f = jnp.array([2.0, 0.0]), jnp.array([1.0, 1.0])
    expected = 0.5 * (np.log(1 + np.exp(-1.0)) + np.log(1 + np.exp(1.0)))
    assert float(losses.rpgan_d(r, f)) == pytest.approx(expected, rel=1e-6)
    # ... and G's loss is D's with the pairs swapped: the same two terms here.
    assert float(losses.rpgan_g(f, r)) == pytest.approx(expected, rel=1e-6)
    assert float(losses.rpgan_d(r, r)) == pytest.approx(np.log(2.0), rel=1e-6)  # D cannot tell: log 2


def test_ragan_by_hand():
    r, f, w = _logits(2)
    r64, f64, w64 = (x.astype(np.float64) for x in (r, f, w))

    def d_plain(real, neg):
        return np.mean(_softplus(neg.mean() - real)) + np.mean(_softplus(neg - real.mean()))

    assert float(losses.ragan_d(r, f)) == pytest.approx(d_plain(r64, f64), rel=1e-6)
    g_expected = np.mean(_softplus(r64.mean() - f64)) + np.mean(_softplus(r64 - f64.mean()))
    assert float(losses.ragan_g(f, r)) == pytest.approx(g_expected, rel=1e-6)
    loss = losses.LOSSES["ragan"]
    assert float(loss.d(r, f, w)) == pytest.approx(0.5 * (d_plain(r64, f64) + d_plain(r64, w64)), rel=1e-6)
    assert float(loss.g(f, r)) == pytest.approx(g_expected, rel=1e-6)
    assert loss.g_needs_real
    # With one real and one fake, average and pairing agree up to the second term.
    one_r, one_f = jnp.array([0.7]), jnp.array([-0.4])
    assert float(losses.ragan_d(one_r, one_f)) == pytest.approx(2 * float(losses.rpgan_d(one_r, one_f)), rel=1e-6)


@pytest.mark.parametrize("name", ["rpgan_d", "rpgan_g", "ragan_d", "ragan_g", "ma_rpgan", "ma_ragan"])
def test_relativistic_gradients_match_finite_differences(name):
    fn = {"rpgan_d": losses.rpgan_d, "rpgan_g": losses.rpgan_g, "ragan_d": losses.ragan_d,
          "ragan_g": losses.ragan_g, "ma_rpgan": losses.LOSSES["rpgan"].d, "ma_ragan": losses.LOSSES["ragan"].d}[name]
    with jax.enable_x64(True):
        args = tuple(jnp.asarray(x, jnp.float64) for x in _logits(3, 5))[:3 if name.startswith("ma_") else 2]
        assert fn(*args).dtype == jnp.float64
        check_grads(fn, args, order=2, modes=["rev"], eps=1e-5, atol=1e-7, rtol=1e-7)
        # A non-trivial gradient: every logit moves the loss.
        assert all(np.all(np.abs(g) > 1e-4) for g in jax.grad(fn, argnums=tuple(range(len(args))))(*args))


def test_relativistic_g_losses_change_with_the_real_logits():
    _, f, _ = _logits(4)
    for name in ("rpgan", "ragan"):
        g = losses.LOSSES[name].g
        assert float(g(f, jnp.zeros_like(f))) != pytest.approx(float(g(f, jnp.ones_like(f))), rel=1e-3)


def test_relativistic_accuracies_by_hand():
    real = jnp.array([1.0, -0.5, 2.0, 0.1])
    fake = jnp.array([-1.0, 0.3, -0.2, 0.5])
    wrong = jnp.array([0.0, -0.6, 2.5, 0.2])
    pair = losses.LOSSES["rpgan"].accuracies(real, fake, wrong)
    assert float(pair["d_acc_real"]) == float(pair["d_acc_fake"]) == pytest.approx(2 / 4)  # 1 > -1, 2 > -0.2
    assert float(pair["d_acc_wrong"]) == pytest.approx(2 / 4)  # 1 > 0, -0.5 > -0.6
    avg = losses.LOSSES["ragan"].accuracies(real, fake, wrong)  # mean real 0.65, mean fake -0.1
    assert float(avg["d_acc_real"]) == pytest.approx(3 / 4)
    assert float(avg["d_acc_fake"]) == pytest.approx(4 / 4)
    assert float(avg["d_acc_wrong"]) == pytest.approx(3 / 4)
    assert all(v.dtype == jnp.float32 for v in (*pair.values(), *avg.values()))
    # Threshold losses keep their threshold rule.
    assert losses.LOSSES["lsgan"].accuracies(real, fake, wrong) == losses.discriminator_accuracy(
        real, fake, wrong, 0.5)


SENTENCE_DIM, BATCH = 12, 8


def _tiny(*overrides, abstract=False):
    cfg = get_config("tiny", [f"train.batch_size={BATCH}", "train.num_devices=1", *overrides])
    g, d = build_models(cfg.model)
    def init():
        return init_state(cfg, g, d, SENTENCE_DIM)

    # Shapes only, or one compiled init rather than hundreds of eager ops.
    return cfg, g, d, jax.eval_shape(init) if abstract else jax.jit(init)()


def test_g_loss_gets_real_logits_only_when_it_asks():
    cfg, g, d, state = _tiny(abstract=True)
    batch = random_batch(BATCH, 32, SENTENCE_DIM, seed=0)
    seen = {}

    def g_loss(key):
        def g_fn(fake, real):
            seen[key] = None if real is None else (real.shape, fake.shape)
            return jnp.mean(fake)
        return g_fn

    for needs in (False, True):
        loss = losses.GANLoss(d=losses.LOSSES["hinge"].d, g=g_loss(needs), g_needs_real=needs)
        jax.eval_shape(make_train_step(cfg, g, d, loss=loss), state, batch)  # traces only
    assert seen == {False: None, True: ((BATCH,), (BATCH,))}


@pytest.mark.usefixtures("quick_compiles")
def test_rpgan_with_lazy_r1r2_trains_two_steps():
    cfg, g, d, state = _tiny("train.loss=rpgan", "train.penalty=r1r2", "train.penalty_every=2")
    assert float(state.hparams["penalty_weight"]) == pytest.approx(regularizers.DEFAULT_WEIGHTS["r1r2"])
    step = jax.jit(make_train_step(cfg, g, d))
    batches = [random_batch(BATCH, 32, SENTENCE_DIM, seed=i) for i in range(2)]
    first, m0 = step(state, batches[0])
    second, m1 = step(first, batches[1])
    for m in (m0, m1):
        assert all(np.isfinite(np.asarray(v)).all() for v in m.values())
    assert int(second.step) == 2 and int(second.skipped) == 0
    assert float(m1["d_penalty"]) == 0.0  # lazy: computed on even steps only

    # Step 0 by hand. D's loss: the matching-aware RpGAN loss + 2 * gamma/2 (R1 + R2) (lazy,
    # every 2). G's loss: RpGAN's, against the *updated* D's logits on the real batch (no
    # augmentation in tiny): D(real) really reaches G's loss, from the D that G trains against.
    @jax.jit
    def by_hand(state, updated, batch):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), 0)
        z = example_noise(key, BATCH, cfg.model.z_dim, None)
        fake, _ = g.apply({"params": state.g_params, "batch_stats": state.g_stats}, z, batch["sentence"],
                          train=True, mutable=["batch_stats"])
        real = batch["image"].astype(jnp.float32) / 127.5 - 1

        def d_fn(params, x, s, wrong=None):
            return d.apply({"params": params, "batch_stats": state.d_stats}, x, s, wrong, train=True,
                           mutable=["batch_stats"])[0]

        r, w = d_fn(state.d_params, real, batch["sentence"], batch["wrong_sentence"])
        f = d_fn(state.d_params, fake, batch["sentence"])
        penalty = 2 * regularizers.r1r2_penalty(functools.partial(d_fn, state.d_params), real, fake,
                                                batch["sentence"], weight=0.05)
        g_loss = losses.rpgan_g(d_fn(updated.d_params, fake, batch["sentence"]),
                                d_fn(updated.d_params, real, batch["sentence"]))
        stale_g_loss = losses.rpgan_g(d_fn(updated.d_params, fake, batch["sentence"]), r)
        return penalty, losses.LOSSES["rpgan"].d(r, f, w) + penalty, jnp.mean(r > f), g_loss, stale_g_loss

    penalty, d_loss, acc, g_loss, stale_g_loss = by_hand(state, first, batches[0])
    assert float(m0["d_penalty"]) == pytest.approx(float(penalty), rel=1e-4)
    assert float(penalty) > 1e-3
    assert float(m0["d_loss"]) == pytest.approx(float(d_loss), rel=1e-4)
    assert float(m0["d_acc_real"]) == pytest.approx(float(acc))
    assert float(m0["g_adversarial"]) == pytest.approx(float(g_loss), rel=1e-5)
    # The D(real) of D's own pass (before its update) would give another G loss.
    assert abs(float(g_loss) - float(stale_g_loss)) > 1e-5


def test_ragan_with_r2_traces_on_dfgan_with_spectral_norm_and_augmentation():
    # DF-GAN's D keeps spectral-norm vectors as mutable state: G's extra pass on the real batch
    # must thread it like D's other passes. Traced only (compiling DF-GAN costs ~20 s here);
    # the arithmetic of that pass is checked on dcgan above.
    cfg, g, d, state = _tiny("model.arch=dfgan", "model.spectral_norm=true", "train.loss=ragan",
                             "train.penalty=r2", "train.augment=translation", abstract=True)
    assert jax.tree.leaves(state.d_stats)  # the mutable state this test is about
    new, metrics = jax.eval_shape(make_train_step(cfg, g, d), state, random_batch(BATCH, 32, SENTENCE_DIM, seed=0))
    assert jax.tree.structure(new.d_stats) == jax.tree.structure(state.d_stats)
    assert {"d_penalty", "g_adversarial", "d_acc_wrong"} <= set(metrics)
