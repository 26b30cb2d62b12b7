"""The PyTorch reference (benchmarks/) computes what jaxgan computes, from the same weights.

Forward passes of G and D in train mode and one full training step (D update, G update,
EMA) are compared against jaxgan on tiny configs, so the torch/jaxgan step-time ratio of
``benchmarks/compare_torch.py`` compares the same work.
"""

import dataclasses
import functools
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package

from helpers import random_batch, tree_max_abs_diff  # noqa: E402

from benchmarks import compare_torch  # noqa: E402
from benchmarks.torch_dcgan import BatchNorm, build_torch_models, load_flax_params, to_flax_batch_stats, to_flax_params  # noqa: E402
from benchmarks.torch_step import TorchStep  # noqa: E402
from jaxgan.models import build_models  # noqa: E402
from jaxgan.presets import get_config  # noqa: E402
from jaxgan.state import init_state  # noqa: E402
from jaxgan.step import example_noise, make_train_step  # noqa: E402

SENTENCE_DIM = 24
FORWARD_CONFIGS = {  # name: (preset, overrides, torch subpixel resize-conv)
    "tiny": ("tiny", [], False),
    "tiny-subpixel": ("tiny", [], True),
    "default": ("default", ["model.resolution=32"], False),
    "tiny-conv-transpose": ("tiny", ["model.upsample=conv_transpose"], False),
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models gain nothing from threads, and torch's OpenMP workers stall when XLA's
    threads (or another process) hold the cores; restore the setting for other modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def _fresh_state(model_config, preset):
    """Flax init is the slow part of these tests: one per model config, shared by tests."""
    config = dataclasses.replace(get_config(preset, ["train.num_devices=1"]), model=model_config)
    g, d = build_models(model_config)
    return jax.jit(lambda: init_state(config, g, d, SENTENCE_DIM))()


def _jaxgan(preset, overrides):
    config = get_config(preset, [*overrides, "train.num_devices=1"])
    g, d = build_models(config.model)
    # The state depends on the train config only through the optimizers' hyperparameters
    # and the seed, which the overrides used here leave alone.
    return config, g, d, _fresh_state(config.model, preset)


def _t(x):
    return torch.from_numpy(np.array(x))


def _nchw(x):
    return _t(x).permute(0, 3, 1, 2)


@pytest.mark.parametrize("name", list(FORWARD_CONFIGS))
def test_forward_parity_in_train_mode(name):
    preset, overrides, subpixel = FORWARD_CONFIGS[name]
    config, g, d, state = _jaxgan(preset, overrides)
    tg, td = build_torch_models(config.model, SENTENCE_DIM, subpixel=subpixel)
    load_flax_params(tg, state.g_params, state.g_stats)
    load_flax_params(td, state.d_params, state.d_stats)
    count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
    assert sum(p.numel() for p in tg.parameters()) == count(state.g_params)
    assert sum(p.numel() for p in td.parameters()) == count(state.d_params)

    b = config.train.batch_size
    batch = random_batch(b, config.model.resolution, SENTENCE_DIM, seed=1)
    z = np.random.default_rng(2).normal(size=(b, config.model.z_dim)).astype(np.float32)

    @jax.jit
    def jax_forward(z, sentence, wrong):
        fake, _ = g.apply({"params": state.g_params, "batch_stats": state.g_stats}, z, sentence,
                          train=True, mutable=["batch_stats"])
        (logits, wrong_logits), _ = d.apply({"params": state.d_params, "batch_stats": state.d_stats},
                                            fake, sentence, wrong, train=True, mutable=["batch_stats"])
        return fake, logits, wrong_logits

    fake, logits, wrong_logits = jax_forward(z, batch["sentence"], batch["wrong_sentence"])
    with torch.no_grad():
        t_fake = tg(_t(z), _t(batch["sentence"]))
        # D sees jaxgan's images, so the D comparison does not inherit G's rounding.
        t_logits, t_wrong = td(_nchw(fake), _t(batch["sentence"]), _t(batch["wrong_sentence"]))
    assert np.abs(t_fake.permute(0, 2, 3, 1).numpy() - np.asarray(fake)).max() < 1e-4
    assert np.abs(t_logits.numpy() - np.asarray(logits)).max() < 1e-4
    assert np.abs(t_wrong.numpy() - np.asarray(wrong_logits)).max() < 1e-4
    # The mapping back to Flax layout is the exact inverse.
    assert tree_max_abs_diff(to_flax_params(tg), state.g_params) == 0.0
    assert tree_max_abs_diff(to_flax_params(td), state.d_params) == 0.0


def _record_bn_updates(module):
    """For each BatchNorm: [elements per channel] of every call that updated running stats."""
    calls = {}
    for bn in (m for m in module.modules() if isinstance(m, BatchNorm)):
        calls[bn] = []

        def hook(m, args, calls=calls[bn]):
            if len(args) < 2 or args[1]:
                calls.append(args[0].numel() // args[0].shape[1])

        bn.register_forward_pre_hook(hook)
    return calls


def _expected_torch_stats(module, calls, old_stats, new_jax_stats, momentum=0.9):
    """jaxgan's running stats as torch keeps them: torch updates the running variance with
    the unbiased batch variance (n / (n - 1) times jaxgan's biased one)."""
    names = dict((bn, name) for name, bn in
                 zip(to_flax_batch_stats(module), (m for m in module.modules() if isinstance(m, BatchNorm))))
    out = {}
    for bn, ns in calls.items():
        name = names[bn]
        assert len(set(ns)) == 1, "one batch size per BatchNorm"
        n, k = ns[0], len(ns)
        decayed = momentum ** k * np.asarray(old_stats[name]["var"])
        var = decayed + (np.asarray(new_jax_stats[name]["var"]) - decayed) * n / (n - 1)
        out[name] = {"mean": np.asarray(new_jax_stats[name]["mean"]), "var": var}
    return out


# The relativistic losses also run the updated D on the real batch in G's update.
@pytest.mark.parametrize("overrides", [[], ["train.loss=hinge", "model.upsample=conv_transpose"],
                                       ["train.loss=rpgan"], ["train.loss=ragan"]],
                         ids=["nonsaturating-resize", "hinge-conv-transpose", "rpgan", "ragan"])
def test_one_training_step_matches_jaxgan(overrides):
    config, g, d, state = _jaxgan("tiny", overrides)
    batch = random_batch(config.train.batch_size, config.model.resolution, SENTENCE_DIM, seed=3)
    # The noise jaxgan draws inside the step, drawn the same way outside it.
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    z = np.asarray(example_noise(key, config.train.batch_size, config.model.z_dim, None))
    new, metrics = jax.jit(make_train_step(config, g, d))(state, batch)

    step = TorchStep(config, SENTENCE_DIM, device="cpu")
    step.load_jaxgan_state(state)
    bn_calls = {m: _record_bn_updates(m) for m in (step.generator, step.discriminator, step.ema_generator)}
    t_metrics = step(step.batch_to_device(batch), z=_t(z))

    # The reference reports the losses, logits and norms; jaxgan adds D accuracies and counters.
    assert set(t_metrics) <= set(metrics) and {"d_loss", "g_loss", "d_grad_norm", "g_update_norm"} <= set(t_metrics)
    for k in t_metrics:
        np.testing.assert_allclose(float(t_metrics[k]), float(metrics[k]), rtol=1e-4, atol=1e-6, err_msg=k)
    assert tree_max_abs_diff(to_flax_params(step.generator), new.g_params) < 1e-4
    t_d, d_params = to_flax_params(step.discriminator), dict(new.d_params)
    if config.train.loss in ("rpgan", "ragan"):
        # A relativistic loss sees only differences of logits, where D's last bias cancels:
        # its gradient is 0 up to rounding, which Adam's first step (m / sqrt(v)) scales to an
        # update anywhere in [-lr, lr]. The other leaves are compared.
        assert float(step.discriminator.to_logit.bias.grad.abs().max()) < 1e-6
        last = f"Conv_{len(step.discriminator.convs) + 1}"
        t_d[last], d_params[last] = ({"kernel": p[last]["kernel"]} for p in (t_d, d_params))
    assert tree_max_abs_diff(t_d, d_params) < 1e-4
    assert tree_max_abs_diff(to_flax_params(step.ema_generator), new.ema_params) < 1e-4
    for module, old, new_stats in ((step.generator, state.g_stats, new.g_stats),
                                   (step.discriminator, state.d_stats, new.d_stats),
                                   (step.ema_generator, state.ema_stats, new.ema_stats)):
        expected = _expected_torch_stats(module, bn_calls[module], old, new_stats)
        assert tree_max_abs_diff(to_flax_batch_stats(module), expected) < 1e-4
    assert step.step == int(new.step) == 1


def test_compile_failure_falls_back_to_eager_from_the_same_state(monkeypatch):
    """A compiler error late in the first step (here: in the EMA generator) must not leave
    the half-done D and G updates behind: the eager redo starts from the saved state."""
    config = get_config("tiny")
    batch = random_batch(config.train.batch_size, config.model.resolution, SENTENCE_DIM, seed=4)
    z = _t(np.random.default_rng(5).normal(size=(config.train.batch_size, config.model.z_dim)).astype(np.float32))

    def broken_compile(module, **kwargs):
        def run(*args, **kw):
            if module is ema:
                raise RuntimeError("simulated compiler error")
            return module(*args, **kw)
        return run

    eager = TorchStep(config, SENTENCE_DIM, device="cpu", seed=0)
    expected = eager(eager.batch_to_device(batch), z=z)

    monkeypatch.setattr(torch, "compile", broken_compile)
    compiled = TorchStep(config, SENTENCE_DIM, device="cpu", compile=True, seed=0)  # same init
    ema = compiled.ema_generator
    with pytest.warns(UserWarning, match="falling back to eager"):
        got = compiled(compiled.batch_to_device(batch), z=z)
    assert not compiled.compile and "simulated compiler error" in compiled.compile_error
    for k in expected:
        assert float(got[k]) == float(expected[k]), k
    for a, b in ((compiled.generator, eager.generator), (compiled.discriminator, eager.discriminator),
                 (compiled.ema_generator, eager.ema_generator)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name
    # Adam's moments too: a second step still agrees.
    got, expected = compiled(compiled.batch_to_device(batch), z=z), eager(eager.batch_to_device(batch), z=z)
    assert float(got["g_loss"]) == float(expected["g_loss"])


def test_cli_reports_missing_torch_in_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    assert compare_torch.main(["--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: PyTorch is not installed") and err.count("\n") == 1


def test_cli_table():
    rows = [{"preset": "tiny", "res": 32, "width": 8, "batch": 16, "dtype": "float32", "jaxgan ms": 10.0,
             "torch ms": 20.0, "ratio": 0.5, "jaxgan compile s": 3.0, "torch compile s": 1.0}]
    table = compare_torch.format_table(rows).splitlines()
    assert len(table) == 3 and table[0].split()[:2] == ["preset", "res"] and "0.50" in table[2]
