"""End to end: train.py's loop, exact resume, sample.py, and clean errors on bad input."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import trees_bitwise_equal
from PIL import Image

from jaxgan import cli
from jaxgan.data.pipeline import Pipeline
from jaxgan.presets import get_config
from jaxgan.train import NonFiniteLossError, train_and_evaluate

TINY = ["train.num_devices=1", "train.checkpoint_every=3", "train.log_every=1", "train.sample_every=3"]


def _everything(state):
    return (state.step, state.g_params, state.d_params, state.g_stats, state.d_stats,
            state.g_opt_state, state.d_opt_state, state.ema_params, state.ema_stats, state.key)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run of 6 steps through the command line, shared by the sampling tests."""
    workdir = tmp_path_factory.mktemp("run")
    args = ["--workdir", str(workdir), "--preset", "tiny", "--steps", "6", "--no-progress"]
    evaluation = ["eval.every=3", "eval.num_samples=64"]
    assert cli.train_main(args + [f"--set={o}" for o in TINY + evaluation]) == 0
    return workdir


def test_run_writes_its_outputs(trained):
    for name in ("config.json", "metrics.jsonl", "losses.png", "samples/step_000006.png"):
        assert (trained / name).exists(), name
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert {"d_loss", "g_loss", "d_grad_norm", "g_update_norm", "steps_per_sec"} <= set(rows[0])
    assert sorted(int(p.name) for p in (trained / "checkpoints").iterdir() if p.name.isdigit()) == [3, 6]
    assert json.loads((trained / "config.json").read_text())["model"]["width"] == 8


@pytest.mark.parametrize("parallel", ["jit", "pmap"])
def test_resume_is_bitwise_exact(tmp_path, parallel):
    overrides = [*TINY, f"train.parallel={parallel}", "train.num_devices=2"]
    straight = train_and_evaluate(get_config("tiny", overrides + ["train.steps=6"]), tmp_path / "a",
                                  progress=False)
    train_and_evaluate(get_config("tiny", overrides + ["train.steps=3"]), tmp_path / "b", progress=False)
    resumed = train_and_evaluate(get_config("tiny", overrides + ["train.steps=6"]), tmp_path / "b",
                                 progress=False)
    assert int(resumed.step) == 6
    assert trees_bitwise_equal(_everything(straight), _everything(resumed))
    # The log has each step once, as if the run had never stopped.
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def _poison(monkeypatch, bad_steps):
    """NaN text embeddings in the batches of the given (0-based) steps."""
    original = Pipeline.batch

    def poisoned(self, step):
        batch = original(self, step)
        if step in bad_steps:
            batch["sentence"] = np.full_like(batch["sentence"], np.nan)
        return batch

    monkeypatch.setattr(Pipeline, "batch", poisoned)


def test_repeated_non_finite_steps_stop_training_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch):
    _poison(monkeypatch, range(4, 100))  # steps 5, 6, ... see NaN text
    with pytest.raises(NonFiniteLossError, match="2 consecutive steps up to step 6 .* last good checkpoint is step 3"):
        train_and_evaluate(get_config("tiny", TINY + ["train.steps=9", "train.max_skips=2"]), tmp_path,
                           progress=False)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["3"]


def test_a_non_finite_step_is_skipped_and_never_reaches_the_params(tmp_path, monkeypatch):
    _poison(monkeypatch, {4})  # step 5 only
    config = get_config("tiny", TINY + ["train.steps=6"])
    state = train_and_evaluate(config, tmp_path, progress=False)
    assert int(state.step) == 6 and int(state.skipped) == 1 and int(state.streak) == 0
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(_everything(state)))
    rows = {r["step"]: r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())}
    assert rows[5]["skipped"] == 1 and rows[5]["nonfinite_streak"] == 1 and not np.isfinite(rows[5]["d_loss"])
    # The skipped step changed nothing: its update norm is reported, but the params after
    # step 5 are those after step 4 (the norms logged at steps 4 and 5 are equal).
    assert rows[5]["g_param_norm"] == rows[4]["g_param_norm"] and rows[5]["d_param_norm"] == rows[4]["d_param_norm"]
    assert rows[6]["nonfinite_streak"] == 0 and np.isfinite(rows[6]["d_loss"])


def test_sample_writes_images_grid_and_manifest(trained, tmp_path):
    out = tmp_path / "samples"
    prompts = ["a small red circle in the top left", "a large blue square at the bottom"]
    args = ["--workdir", str(trained), "--num-per-prompt", "3", "--seed", "5", "--out", str(out)]
    assert cli.sample_main(args + [a for p in prompts for a in ("--prompt", p)]) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["seed"]) for r in rows] == [(p, s) for p in prompts for s in (5, 6, 7)]
    images = [np.asarray(Image.open(out / r["file"])) for r in rows]
    assert all(im.shape == (32, 32, 3) for im in images)
    assert Image.open(out / "grid.png").size[0] > 3 * 32
    # A sample depends on its prompt and seed only, not on the rest of the batch.
    alone = tmp_path / "alone"
    assert cli.sample_main(["--workdir", str(trained), "--prompt", prompts[1], "--num-per-prompt", "1",
                            "--seed", "6", "--out", str(alone)]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(alone / "000_000.png")), images[4])


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: "), err
    return err


def test_bad_train_input_is_one_line(tmp_path, capsys):
    assert cli.train_main(["--workdir", str(tmp_path), "--preset", "huge"]) == 2
    assert "unknown preset 'huge'; valid presets: default" in _error_line(capsys)
    assert cli.train_main(["--workdir", str(tmp_path), "--set", "model.colour=red"]) == 2
    assert "unknown config key 'model.colour'" in _error_line(capsys)
    assert cli.train_main(["--workdir", str(tmp_path), "--set", "model.resolution=100"]) == 2
    assert "power of two" in _error_line(capsys)


def test_bad_sample_input_is_one_line(trained, tmp_path, capsys):
    assert cli.sample_main(["--workdir", str(trained), "--prompt", "  "]) == 2
    assert "empty prompt" in _error_line(capsys)
    assert cli.sample_main(["--workdir", str(tmp_path), "--prompt", "a red circle"]) == 2
    assert "not a training workdir" in _error_line(capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(trained / "config.json", empty / "config.json")
    assert cli.sample_main(["--workdir", str(empty), "--prompt", "a red circle"]) == 2
    assert "no checkpoint found" in _error_line(capsys)


def test_incompatible_and_corrupt_checkpoints_are_named(trained, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    config = json.loads((other / "config.json").read_text())
    config["model"]["width"] = 16
    (other / "config.json").write_text(json.dumps(config))
    assert cli.sample_main(["--workdir", str(other), "--prompt", "a red circle"]) == 2
    err = _error_line(capsys)
    assert "checkpoints/6 is incompatible" in err and "model.width: checkpoint 8 vs config 16" in err

    # A checkpoint from before a model field existed (here upsample and d_width) loads
    # as one written under that field's default...
    older = tmp_path / "older"
    shutil.copytree(trained, older)
    for path in [older / "config.json", *(older / "checkpoints").glob("*/config/metadata")]:
        saved = json.loads(path.read_text())
        del saved["model"]["upsample"], saved["model"]["d_width"]
        path.write_text(json.dumps(saved))
    assert cli.sample_main(["--workdir", str(older), "--prompt", "a red circle", "--num-per-prompt", "1"]) == 0
    capsys.readouterr()
    # ...and is still refused by a config that sets it to something else.
    config = json.loads((older / "config.json").read_text())
    config["model"]["d_width"] = 16
    (older / "config.json").write_text(json.dumps(config))
    assert cli.sample_main(["--workdir", str(older), "--prompt", "a red circle"]) == 2
    assert "model.d_width: checkpoint 0 vs config 16" in _error_line(capsys)

    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    for f in (broken / "checkpoints" / "6" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    assert cli.sample_main(["--workdir", str(broken), "--prompt", "a red circle"]) == 2
    assert "checkpoints/6 is corrupt" in _error_line(capsys)
    # The training outputs next to it are untouched.
    assert (broken / "checkpoints" / "3").exists() and (broken / "metrics.jsonl").exists()


def test_alignment_report_covers_every_combination(trained):
    assert cli.main(["alignment", "--workdir", str(trained), "--per-combination", "1"]) == 0
    report = json.loads((trained / "alignment.json").read_text())
    assert report["step"] == 6 and report["samples"] == 432
    assert set(report["accuracy"]) == {"color", "shape", "size", "position", "all"}
    # A 6-step tiny generator is near chance on colour (1/8), far from the trained target.
    assert 0.0 <= report["accuracy"]["color"] < 0.5


def test_resume_refuses_a_different_data_position(trained, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    args = ["--workdir", str(other), "--steps", "9", "--no-progress", "--set", "train.batch_size=8"]
    assert cli.train_main(args) == 2
    err = _error_line(capsys)
    assert "is incompatible with the config (train.batch_size: checkpoint 16 vs config 8)" in err
    assert sorted(p.name for p in (other / "checkpoints").iterdir() if p.name.isdigit()) == ["3", "6"]


def test_a_refused_resume_leaves_config_json_and_sampling_as_they_were(trained, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    saved = (other / "config.json").read_bytes()
    args = ["--workdir", str(other), "--preset", "tiny", "--set", "model.width=16", "--no-progress"]
    assert cli.train_main(args) == 2
    assert "model.width: checkpoint 8 vs config 16" in _error_line(capsys)
    assert (other / "config.json").read_bytes() == saved
    assert not list(other.glob(".config.json.tmp-*"))
    assert cli.sample_main(["--workdir", str(other), "--prompt", "a red circle", "--num-per-prompt", "1",
                            "--out", str(tmp_path / "samples")]) == 0


def test_a_partial_last_metrics_line_is_dropped_on_resume_with_a_notice(trained, tmp_path, capsys):
    # What a process killed while writing a row leaves behind.
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    with open(other / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "d_lo')
    assert cli.train_main(["--workdir", str(other), "--steps", "7", "--no-progress"]) == 0
    assert "dropped a partial last line" in capsys.readouterr().out
    rows = [json.loads(line) for line in (other / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 8))


def _lock(workdir, host, pid):
    (workdir / ".lock").write_text(json.dumps({"host": host, "pid": pid, "since": time.time() - 120}))


def test_a_second_run_on_a_locked_workdir_is_refused_naming_the_holder(trained, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    rows = (other / "metrics.jsonl").read_bytes()
    _lock(other, socket.gethostname(), os.getpid())  # a live process on this host
    assert cli.train_main(["--workdir", str(other), "--steps", "7", "--no-progress"]) == 2
    err = _error_line(capsys)
    assert f"is in use by pid {os.getpid()} on {socket.gethostname()} (for 2 min)" in err
    assert (other / "metrics.jsonl").read_bytes() == rows  # nothing written
    assert sorted(p.name for p in (other / "checkpoints").iterdir() if p.name.isdigit()) == ["3", "6"]

    # Another host's lock cannot be checked from here: refused, unless broken explicitly.
    _lock(other, "elsewhere", 1)
    assert cli.train_main(["--workdir", str(other), "--steps", "7", "--no-progress"]) == 2
    err = _error_line(capsys)
    assert "in use by pid 1 on elsewhere" in err and "pass --break-lock" in err
    assert cli.train_main(["--workdir", str(other), "--steps", "7", "--no-progress", "--break-lock"]) == 0
    assert "broke" in capsys.readouterr().out
    assert not (other / ".lock").exists()  # released at the end


def test_a_lock_left_by_a_killed_run_on_this_host_is_taken_over(trained, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _lock(other, socket.gethostname(), gone.pid)
    assert cli.train_main(["--workdir", str(other), "--steps", "7", "--no-progress"]) == 0
    assert f"took over {other}'s lock from pid {gone.pid}" in capsys.readouterr().out
    assert not (other / ".lock").exists()


def test_periodic_evaluation_is_logged_with_the_protocol_hash(trained):
    rows = [json.loads(line) for line in (trained / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]
    assert {"fid", "kid", "is", "precision", "recall", "density", "coverage", "alignment_all",
            "protocol_hash", "fidelity_iou", "fidelity_iou_real", "fidelity_iou_ratio", "fidelity_iou/small_circle",
            "diversity_spread", "diversity_spread_real", "diversity_spread_ratio"} <= set(rows[0])
    assert rows[0]["diversity_groups"] == 6  # 64 samples, 10 per caption
    assert rows[0]["protocol_hash"] == rows[1]["protocol_hash"]
    assert rows[0]["fid"] != rows[1]["fid"]  # the generator changed between the two
    assert (trained / "eval.png").exists()


def test_eval_command_reproduces_the_training_time_numbers(trained, capsys):
    assert cli.main(["eval", "--workdir", str(trained), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    (report_path,) = (trained / "eval").glob("step_000006-*.json")
    report = json.loads(report_path.read_text())
    assert report["step"] == 6 and report["protocol_hash"] in printed and report["protocol_hash"] in report_path.name
    assert report["protocol"]["num_samples"] == 64 and report["num_devices"] == 8
    assert re.search(r"shape fidelity +IoU [0-9.]+ \(real 0\.99[0-9]+, ratio [0-9.]+\)", printed)
    assert re.search(r"caption diversity +spread [0-9.]+ \(real [0-9.]+, ratio", printed)
    # Same checkpoint, same protocol, 8 devices here and 1 in training: the same numbers.
    during = [json.loads(line) for line in (trained / "eval.jsonl").read_text().splitlines()][-1]
    assert during["protocol_hash"] == report["protocol_hash"]
    for name, value in report["metrics"].items():
        assert value == pytest.approx(during[name], rel=1e-6, abs=1e-9), name
    # Another generator is another protocol.
    assert cli.main(["eval", "--workdir", str(trained), "--generator", "raw", "--no-progress",
                     "--out", str(trained / "raw.json")]) == 0
    assert json.loads((trained / "raw.json").read_text())["protocol_hash"] != report["protocol_hash"]


@pytest.mark.parametrize("args, message", [
    (["--features", "inception:/no/such/weights.safetensors"], "no/such/weights.safetensors"),
    (["--features", "vgg"], "unknown feature network"),
    (["--num-samples", "0"], "num_samples must be positive"),
    (["--step", "4"], "checkpoint"),
])
def test_bad_eval_input_is_one_line(trained, capsys, args, message):
    assert cli.main(["eval", "--workdir", str(trained), "--no-progress", *args]) == 2
    assert message in _error_line(capsys)


def test_eval_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert cli.main(["eval", "--workdir", str(tmp_path), "--no-progress"]) == 2
    assert "not a training workdir" in _error_line(capsys)


def test_sample_attention_needs_a_model_with_word_attention(trained, capsys):
    assert cli.sample_main(["--workdir", str(trained), "--prompt", "a red circle", "--attention",
                            "--out", str(trained / "attention")]) == 2
    assert _error_line(capsys).startswith("error: --attention needs a model with word attention")
    assert not (trained / "attention").exists()


def _events(directory):
    """(tag, step, value) of every summary in a directory's event files (TFRecord framing:
    length, its CRC, the Event proto, its CRC)."""
    import struct

    from tensorboardX.proto import event_pb2

    out = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
            i += 12 + length + 4
            for v in event.summary.value:
                kind = v.WhichOneof("value")
                out.append((v.tag, event.step, v.simple_value if kind == "simple_value" else getattr(v, kind)))
    return out


def test_tensorboard_has_losses_metrics_learning_rates_and_sample_grids(trained):
    events = _events(trained / "tensorboard")
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    d_loss = {step: value for tag, step, value in events if tag == "discriminator/d_loss"}
    assert d_loss == pytest.approx({r["step"]: r["d_loss"] for r in rows})
    assert {step for tag, step, _ in events if tag == "lr/generator"} == {1, 2, 3, 4, 5, 6}
    evals = [json.loads(line) for line in (trained / "eval.jsonl").read_text().splitlines()]
    fid = {step: value for tag, step, value in events if tag == "eval/fid"}
    assert fid == pytest.approx({r["step"]: r["fid"] for r in evals})
    # Every number of an evaluation row is a scalar too, the within-caption diversity among them.
    assert "diversity_spread_ratio" in evals[0]
    for key in (k for k, v in evals[0].items() if k != "step" and isinstance(v, (int, float))):
        logged = {step: value for tag, step, value in events if tag == f"eval/{key}"}
        assert logged == pytest.approx({r["step"]: r[key] for r in evals}), key
    # The captioned sample grids, as PNGs of the same size as the files written beside them.
    grids = {step: value for tag, step, value in events if tag == "samples"}
    assert sorted(grids) == [3, 6]
    with Image.open(trained / "samples" / "step_000006.png") as grid:
        assert (grids[6].width, grids[6].height) == grid.size
    assert any(tag.startswith("config") for tag, _, _ in events)


def test_report_renders_curves_and_samples_in_a_headless_browser(trained, tmp_path):
    import shutil
    import subprocess

    from jaxgan import report

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium on this machine (make test installs it from Debian's packages)")
    page = report.write_report(trained, tmp_path / "report.html")
    run = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1300,4000"]
    dom = subprocess.run(run + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    for section in ("summary", "losses", "metrics", "evaluation", "samples", "config"):
        assert f'id="{section}"' in dom, section
    # Loss curves, training metrics, evaluation curves and the two sample grids, all embedded.
    assert dom.count('src="data:image/png;base64,') == 5
    assert "a small" in dom or "a large" in dom  # the grids' prompts are listed
    shot = tmp_path / "shot.png"
    subprocess.run(run + [f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # Rendered, not blank: matplotlib's blue and orange curves are on screen, and the sample
    # grids' dark backgrounds cover a real share of the page.
    blue = np.all(np.abs(pixels - [31, 119, 180]) < 40, axis=-1).sum()
    orange = np.all(np.abs(pixels - [255, 127, 14]) < 40, axis=-1).sum()
    assert blue > 500 and orange > 500
    assert (pixels.mean(axis=-1) < 100).mean() > 0.01
