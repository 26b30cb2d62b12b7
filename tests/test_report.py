"""The HTML report on hostile and malformed inputs: every string escaped, nothing fetched or
run (a Content-Security-Policy), malformed files skipped with a note instead of a traceback."""

import json
import re

import numpy as np
from PIL import Image

from jaxgan import report

HOSTILE = '<script>alert(1)</script><img src=x onerror=alert(2)>"\''


def _workdir(tmp_path):
    w = tmp_path / "run"
    (w / "samples").mkdir(parents=True)
    (w / "eval").mkdir()
    config = {"data": {"dataset": HOSTILE}, "model": {"arch": HOSTILE, "resolution": HOSTILE}, HOSTILE: HOSTILE}
    (w / "config.json").write_text(json.dumps(config))
    rows = [{"step": 1, "d_loss": 0.5, "g_loss": 0.7, HOSTILE: HOSTILE}, {"step": 2, "d_loss": HOSTILE}]
    # A partial last line, as a killed writer leaves it.
    (w / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "d_lo')
    (w / "eval.jsonl").write_text('{"step": 2, "fid": 1.0}\nnot json\n')
    (w / "eval" / "step_000002-abc.json").write_text("{broken")
    (w / "samples" / "prompts.json").write_text(json.dumps([HOSTILE, {"x": HOSTILE}]))
    grid = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    grid.save(w / "samples" / "step_000002.png")
    grid.save(w / "samples" / f"step_2{HOSTILE.replace('/', '')}.png")
    return w


def test_hostile_strings_are_escaped_and_malformed_inputs_noted(tmp_path):
    page = report.build_report(_workdir(tmp_path))
    # No tag or attribute came through from the inputs: only escaped text.
    assert "<script" not in page and not re.search(r"<[^>]*onerror", page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert f"content=\"{report.CSP}\"" in page and "default-src 'none'" in report.CSP
    # The malformed files are named in a notes section; the rest still renders.
    notes = page[page.index('id="notes"'):]
    assert "eval.jsonl" in notes and "step_000002-abc.json" in notes and "losses.png" in notes
    assert 'id="samples"' in page and page.count('src="data:image/png;base64,') >= 1
    # Only grids named step_N.png are shown; the hostile file name is not.
    assert page.count('<img alt="samples at') == 1


def test_the_measures_with_a_real_ceiling_show_generated_real_and_ratio(tmp_path):
    w = tmp_path / "run"
    w.mkdir()
    (w / "config.json").write_text(json.dumps({"data": {"dataset": "shapes"}}))
    row = {"step": 4, "protocol_hash": "abc", "fid": 1.0, "fidelity_iou": 0.45, "fidelity_iou_real": 0.9,
           "fidelity_iou_ratio": 0.5, "diversity_spread_real": 0.2}
    (w / "eval.jsonl").write_text(json.dumps(row) + "\n")
    page = report.build_report(w)
    assert "<tr><th>shape fidelity: mask IoU</th><td>0.45</td><td>0.9</td><td>0.5</td></tr>" in page
    # Diversity measured on real images only (a real source): the generated cells stay empty.
    assert "<tr><th>within-caption diversity: spread</th><td></td><td>0.2</td><td></td></tr>" in page
