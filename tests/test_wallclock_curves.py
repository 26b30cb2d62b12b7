import json
import os
import struct

import pytest

from benchmarks.wallclock_curves import main, run_points, since

PROTOCOL = "fc8e8717626fe3d4"


def _workdir(root, name, checkpoints):
    """A training workdir whose checkpoints were written ``seconds`` after its config.json."""
    w = root / name
    (w / "eval").mkdir(parents=True)
    (w / "config.json").write_text("{}")
    start = 1_000_000_000
    os.utime(w / "config.json", (start, start))
    for step, seconds, fid, alignment in checkpoints:
        (w / "checkpoints" / str(step)).mkdir(parents=True)
        os.utime(w / "checkpoints" / str(step), (start + seconds, start + seconds))
        result = {"step": step, "metrics": {"fid": fid, "alignment_all": alignment}}
        (w / "eval" / f"step_{step:06d}-{PROTOCOL}.json").write_text(json.dumps(result))
    return w


def test_points_are_minutes_since_the_config_and_skip_other_protocols_and_deleted_checkpoints(tmp_path):
    w = _workdir(tmp_path, "run", [(1000, 240, 2.0, 0.5), (500, 90, 5.0, 0.1), (1500, 930, 0.3, 0.97)])
    (w / "eval" / "step_000500-0123456789abcdef.json").write_text(json.dumps({"metrics": {"fid": 9.0}}))
    (w / "checkpoints" / "1500").rmdir()  # scored, then deleted by the keep-N policy: no time to plot
    points = run_points(w, PROTOCOL)
    assert [(step, round(minutes, 6)) for minutes, step, _ in points] == [(500, 1.5), (1000, 4.0)]
    assert points[0][2]["fid"] == 5.0


def test_main_writes_the_plot_and_rejects_a_non_workdir(tmp_path, capsys):
    a = _workdir(tmp_path, "a", [(500, 60, 1.0, 0.9)])
    b = _workdir(tmp_path, "b", [(250, 120, 0.5, 0.95)])
    out = tmp_path / "curves.png"
    assert main([f"DCGAN={a}", f"DF-GAN={b}", "--protocol", PROTOCOL, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "DF-GAN\t250\t2.00 min\tFID 0.5\tall four 95.00%" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="is not a training workdir"):
        main([f"x={tmp_path}", "--protocol", PROTOCOL, "--out", str(out)])


def test_the_zoomed_row_keeps_only_the_late_checkpoints(tmp_path):
    w = _workdir(tmp_path, "run", [(500, 90, 5.0, 0.1), (1000, 600, 0.4, 0.97), (1500, 1200, 0.3, 0.99)])
    points = run_points(w, PROTOCOL)
    assert [step for _, step, _ in since(points, 10.0)] == [1000, 1500]  # written at 10 and 20 min
    assert since(points, 20.5) == []
    out = tmp_path / "zoomed.png"
    assert main([f"DF-GAN={w}", "--protocol", PROTOCOL, "--out", str(out), "--zoom-from", "10"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Two rows of panels: the PNG is twice as tall as the one-row figure (11 x 4 in at 100 dpi).
    width, height = struct.unpack(">II", out.read_bytes()[16:24])
    assert (width, height) == (1100, 800)


def test_window_means_average_only_the_checkpoints_written_inside_the_window(tmp_path, capsys):
    from benchmarks.window_means import main as window_main
    from benchmarks.window_means import window_means

    w = _workdir(tmp_path, "run", [(500, 600, 5.0, 0.5), (1000, 1500, 0.4, 0.97), (1500, 1800, 0.2, 0.99),
                                   (2000, 2100, 0.1, 1.0)])
    for f in (w / "eval").glob("*.json"):  # the other columns the window reports
        result = json.loads(f.read_text())
        result["metrics"].update(kid=result["metrics"]["fid"] / 100, alignment_shape=result["metrics"]["alignment_all"])
        f.write_text(json.dumps(result))
    steps, means = window_means(w, PROTOCOL, 25, 33)  # 25 and 30 min in, 10 and 35 out
    assert steps == [1000, 1500]
    assert means["fid"] == pytest.approx(0.3) and means["alignment_all"] == pytest.approx(0.98)
    assert window_means(w, PROTOCOL, 40, 50) == ([], {})
    assert window_main([str(w), "--protocol", PROTOCOL, "--from-minute", "25", "--to-minute", "33"]) == 0
    assert "steps 1000-1500 (2)\tFID 0.3\tKID 0.003\tshape 98.00%\tall four 98.00%" in capsys.readouterr().out
