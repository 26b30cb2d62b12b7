"""The step benchmark: it times the training step itself, and its FLOP counts add up."""

import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import jaxgan
from jaxgan import bench, cli, flops, program, train
from jaxgan.models import build_models
from jaxgan.presets import get_config


@pytest.mark.usefixtures("quick_compiles")  # compares programs as lowered, before XLA's passes
def test_benchmark_times_the_function_training_runs(monkeypatch, tmp_path):
    built = []
    real_make = program.make_train_step

    def spy(config, generator, discriminator, axis_name=None):
        built.append((config, generator, discriminator, axis_name))
        return real_make(config, generator, discriminator, axis_name)

    monkeypatch.setattr(program, "make_train_step", spy)
    config = get_config("tiny", ["train.num_devices=1"])
    timed = []
    real_benchmark = bench.benchmark_program
    monkeypatch.setattr(bench, "benchmark_program", lambda p, *a, **k: timed.append(p) or real_benchmark(p, *a, **k))
    result = bench.benchmark_step(config, sentence_dim=16, warmup=0, steps=2)
    run = train._Run(config, tmp_path)
    run.checkpoints.close()

    # Both went through the one builder, with the same config, modules and device axis...
    assert len(built) == 2 and built[0] == built[1]
    # ...and compile to the same program.
    state = run.program.fresh_state(16)
    batch = run.parallel.put_batch(bench.synthetic_batch(config, 16))
    assert timed[0].step.lower(state, batch).as_text() == run.step_fn.lower(state, batch).as_text()
    assert result["timed_steps"] == 2 and result["step_ms_min"] <= result["step_ms_median"] <= result["step_ms_max"]
    assert jnp.isfinite(result["d_loss"]) and jnp.isfinite(result["g_loss"])


def test_xla_flops_of_the_default_step_match_the_analytic_count():
    config = get_config("default", ["train.num_devices=1"])
    result = bench.benchmark_step(config, warmup=0, steps=1)
    print("XLA / analytic FLOPs:", result["flops_xla_over_analytic"])
    assert result["flops_xla"] == pytest.approx(result["flops_analytic"], rel=0.15)
    assert result["achieved_tflops"] > 0 and 0 < result["mfu"]


def test_conv_count_skips_padding_taps_as_computed_by_hand():
    # 4x4 stride-2 conv, padding 1, on 8x8: outputs 0..3 see 3, 4, 4, 3 in-image taps per axis.
    conv = nn.Conv(5, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))
    x = jnp.zeros((2, 8, 8, 3))
    layers = flops.trace_layers(conv, conv.init(jax.random.key(0), x), x)
    assert layers[0].macs == 2 * 14 * 14 * 3 * 5
    # 3x3 SAME conv on 4x4: 2 + 3 + 3 + 2 = 10 taps per axis.
    conv = nn.Conv(7, (3, 3), padding="SAME")
    x = jnp.zeros((1, 4, 4, 2))
    assert flops.trace_layers(conv, conv.init(jax.random.key(0), x), x)[0].macs == 10 * 10 * 2 * 7
    dense = nn.Dense(6)
    x = jnp.zeros((3, 4))
    assert flops.trace_layers(dense, dense.init(jax.random.key(0), x), x)[0].macs == 3 * 4 * 6


def test_step_count_is_the_sum_of_its_passes():
    config = get_config("tiny")
    g, d = build_models(config.model)
    count = flops.step_flops(config, g, d, sentence_dim=16)
    assert count["total"] == 4 * count["generator_forward"] + count["d_update"] + 2 * count["discriminator_forward"]
    # D sees (real, caption + wrong caption) and (fake, caption); the heads run three times.
    assert count["d_update"] > 6 * count["discriminator_forward"]


def test_relativistic_g_loss_and_diversity_twins_add_their_passes_by_hand():
    config = get_config("tiny", ["model.conv_impl=matmul"])
    g, d = build_models(config.model)
    plain = flops.step_flops(config, g, d, sentence_dim=16)
    # tiny's D at batch 16 by hand (matmul convs multiply every 4x4 tap, padding included):
    # three stride-2 4x4 convs 32->16->8->4 px (3->8->16->32 channels), the text projection
    # (16->16), the joint 1x1 conv on [h, t] (48->32 at 4x4) and the 4x4 valid logit conv.
    d_forward = 2 * 16 * (16 * 16 * 16 * 3 * 8 + 8 * 8 * 16 * 8 * 16 + 4 * 4 * 16 * 16 * 32 + 16 * 16
                          + 4 * 4 * 48 * 32 + 16 * 32)
    assert plain["discriminator_forward"] == d_forward == 12_345_344
    # G's relativistic loss runs the updated D once more, on (real, caption): one D forward.
    for loss in ("rpgan", "ragan"):
        relativistic = flops.step_flops(get_config("tiny", ["model.conv_impl=matmul", f"train.loss={loss}"]), g, d, 16)
        assert relativistic["total"] - plain["total"] == d_forward, loss
    own = jaxgan.GANLoss(d=lambda r, f, w: (f - r).mean(), g=lambda f, r: (r - f).mean(), g_needs_real=True)
    assert flops.step_flops(config, g, d, 16, loss=own)["total"] - plain["total"] == d_forward
    # The diversity term's twins (8 of 16): G's forward and backward on 8 more examples,
    # 3 x G's forward at half the batch (G's layers are linear in the batch).
    twins = flops.step_flops(get_config("tiny", ["model.conv_impl=matmul", "train.diversity_weight=1"]), g, d, 16)
    assert twins["total"] - plain["total"] == 3 * plain["generator_forward"] // 2


def test_limiting_factor_from_the_roofline():
    peaks = {"peak_flops": 100e12, "peak_bytes_per_s": 1e12}
    assert bench.limiting_factor(1.0, 90e12, 1e9, peaks) == "compute-bound"
    assert bench.limiting_factor(1.0, 1e12, 0.8e12, peaks) == "memory-bound"
    assert bench.limiting_factor(1.0, 1e12, 1e9, peaks).startswith("launch/overhead-bound")


@pytest.mark.usefixtures("quick_compiles")  # the table's form, not its numbers
def test_cli_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--preset", "tiny", "--devices", "1", "--batch-size", "8", "--batch-size", "16",
                     "--steps", "2", "--warmup", "0", "--peak-tflops", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["batch_size"] for r in rows] == [8, 16]
    assert all(r["peak_source"] == "given with --peak-tflops" and r["peak_tflops"] == 1.0 for r in rows)
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["preset", "resolution", "width", "batch_size"] and len(table) == 3


def test_cli_bad_preset_is_a_one_line_error(capsys):
    assert cli.main(["bench", "--preset", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown preset 'nope'" in err


@pytest.mark.usefixtures("quick_compiles")
def test_pmap_and_fsdp_layouts_benchmark_with_the_layout_free_analytic_count():
    layouts = (["train.num_devices=2"], ["train.num_devices=2", "train.parallel=pmap"],
               ["train.num_devices=2", "train.fsdp=2"])
    rows = [bench.benchmark_step(get_config("tiny", o), sentence_dim=16, warmup=0, steps=2) for o in layouts]
    assert [(r["parallel"], r["devices"]) for r in rows] == [("jit", 2), ("pmap", 2), ("jit", 2)]
    assert len({r["flops_analytic"] for r in rows}) == 1
    assert all(jnp.isfinite(r["d_loss"]) for r in rows)


class _FakePeaks:
    """Stands in for the matmul measurement: counts calls and answers a different peak on each,
    as a loaded machine does, so a run that measured again could not match the first."""

    def __init__(self):
        self.calls = 0

    def __call__(self, dtype, device, repeats=bench.PEAK_REPEATS, n=2048):
        self.calls += 1
        return {"flops": [1e11 * self.calls, 2e11 * self.calls, 3e11 * self.calls],
                "bytes_per_s": [1e10 * self.calls, 3e10 * self.calls]}


@pytest.mark.usefixtures("quick_compiles")  # MFU's arithmetic, not the step's speed
def test_two_runs_agree_on_mfu_as_closely_as_on_step_time(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXGAN_CACHE", str(tmp_path))
    measure = _FakePeaks()
    monkeypatch.setattr(bench, "measured_peaks", measure)
    built = program.build_train_program(get_config("tiny", ["train.num_devices=1"]))
    first, second = (bench.benchmark_program(built, sentence_dim=16, warmup=0, steps=3) for _ in range(2))

    assert measure.calls == 1  # the second run read the cached peak
    assert first["peak_tflops"] == second["peak_tflops"] == pytest.approx(0.3)  # the fastest repeat
    assert first["flops_xla"] == second["flops_xla"]
    # With one peak, MFU moves exactly as much as the step time does, in the other direction.
    assert first["mfu"] / second["mfu"] == pytest.approx(second["step_ms_median"] / first["step_ms_median"], rel=1e-12)
    assert second["peak_spread_tflops"] == pytest.approx({"min": 0.1, "median": 0.2, "max": 0.3})
    assert "cached" in second["peak_source"] and "0.100-0.200-0.300 TFLOP/s" in second["peak_source"]
    cached_path = bench.peak_cache_path(bench.machine_key("float32", built.parallel.devices[0]))
    cached = json.loads(cached_path.read_text())
    assert cached["flops"] == [1e11, 2e11, 3e11] and cached["key"]["jax"] == jax.__version__
    # --remeasure-peak measures again and replaces the entry.
    third = bench.benchmark_program(built, sentence_dim=16, warmup=0, steps=1, remeasure_peak=True)
    assert measure.calls == 2 and third["peak_tflops"] == pytest.approx(0.6) and "measured now" in third["peak_source"]
    assert json.loads(cached_path.read_text())["flops"] == [2e11, 4e11, 6e11]


def test_remeasure_peak_measures_again_once_per_dtype(monkeypatch):
    asked = []

    def fake_step(config, steps, warmup, peak_tflops, remeasure_peak):
        asked.append((config.model.dtype, remeasure_peak))
        return {"step_ms_median": 1.0, "limited_by": "-", "peak_source": "-"}

    monkeypatch.setattr(bench, "benchmark_step", fake_step)
    rows = ["bench", "--preset", "tiny", "--batch-size", "8", "--batch-size", "16"]
    assert cli.main([*rows, "--remeasure-peak"]) == 0
    assert asked == [("float32", True), ("float32", False)]  # the second row reads the fresh entry
    asked.clear()
    assert cli.main([*rows, "--dtype", "float32", "--dtype", "bfloat16", "--remeasure-peak"]) == 0
    assert asked == [("float32", True), ("bfloat16", True), ("float32", False), ("bfloat16", False)]
    asked.clear()
    assert cli.main(rows) == 0 and asked == [("float32", False)] * 2


def test_a_broken_or_unwritable_peak_cache_is_measured_again_with_a_note(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("JAXGAN_CACHE", str(tmp_path))
    measure = _FakePeaks()
    monkeypatch.setattr(bench, "measured_peaks", measure)
    device = jax.devices()[0]
    entry = bench.host_peak("float32", device)
    assert "varied 1.5x between repeats" in capsys.readouterr().err  # fastest 3e11, median 2e11
    path = Path(entry["path"])
    broken = ["{not json", "[1, 2]", "\x00\xff", json.dumps({"key": entry["key"]}),
              json.dumps({**entry, "flops": "fast"}), json.dumps({**entry, "flops": [1e11, float("nan")]})]
    for text in broken:
        path.write_text(text)
        assert bench.host_peak("float32", device)["cached"] is False
        assert "ignoring the unreadable host-peak cache" in capsys.readouterr().err
    # Another machine's entry under this name (a short-hash collision) is not used either.
    path.write_text(json.dumps({**entry, "key": {**entry["key"], "cores": -1}}))
    assert bench.host_peak("float32", device)["cached"] is False
    assert bench.host_peak("float32", device)["cached"] is True and measure.calls == 2 + len(broken)
    # A cache root that cannot be created (a file is in the way, even for root) costs a note.
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("JAXGAN_CACHE", str(tmp_path / "file"))
    assert bench.host_peak("float32", device)["cached"] is False
    assert "cannot write the host-peak cache" in capsys.readouterr().err


def test_a_steady_peak_measurement_prints_no_busy_note(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("JAXGAN_CACHE", str(tmp_path))
    monkeypatch.setattr(bench, "measured_peaks", lambda *a: {"flops": [2e11, 2.1e11, 2.2e11], "bytes_per_s": [1e10]})
    assert bench.host_peak("float32", jax.devices()[0])["cached"] is False
    assert capsys.readouterr().err == ""


def test_measured_peaks_time_every_repeat():
    samples = bench.measured_peaks("float32", jax.devices()[0], repeats=3, n=128)
    assert len(samples["flops"]) == len(samples["bytes_per_s"]) == 3
    assert all(v > 0 for v in samples["flops"] + samples["bytes_per_s"])
