"""Workdirs through one path abstraction (``jaxgan.paths``, ``etils.epath``): a local workdir given
as a str, a ``pathlib.Path`` or an ``epath.Path``, and a ``gs://`` workdir on a fake bucket.

There is no GCS here, so the bucket is a local folder: ``epath.testing.mock_epath`` sends every
``gs://`` path epath sees there, and orbax's two calls that would reach Google's servers (the
bucket's namespace kind, the arrays' TensorStore driver) are pointed at the same folder. What the
test shows is that every workdir file goes through epath and lands in the bucket, and that
nothing is written to a local ``gs:`` folder (what ``Path("gs://b").absolute()`` made of it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from etils import epath
from etils.epath import testing as epath_testing
from faults import run_cli
from orbax.checkpoint._src.path import gcs_utils
from orbax.checkpoint._src.serialization import tensorstore_utils

from jaxgan import paths
from jaxgan.report import write_report
from jaxgan.train import train_and_evaluate
from jaxgan.workdir import generate_from_checkpoint, resolve_config, saved_config

TRAIN = ["--preset", "tiny", "--no-progress"]
PROMPT = ["--prompt", "a red circle", "--num-per-prompt", "1"]
FIXTURE = Path(__file__).parent / "fixtures" / "workdir_dcgan"  # trained 2 steps, tiny


@contextlib.contextmanager
def fake_bucket(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """``gs://`` redirected to ``root``; yields the gs:// paths epath was asked about."""
    seen: list[str] = []

    def to_local(path):
        text = os.fspath(path)
        if not text.startswith("gs://"):
            return path
        seen.append(text)
        return str(root / text.removeprefix("gs://"))

    def to_remote(text: str) -> str:
        return "gs://" + os.path.relpath(text, root)

    def redirected(original, *args, **kwargs):
        return original(*[to_local(a) if isinstance(a, str) else a for a in args], **kwargs)

    def glob(original, pattern):
        found = original(to_local(pattern))
        return [to_remote(f) for f in found] if pattern.startswith("gs://") else found

    def open_(original, path, mode):
        local = to_local(path)
        if "r" not in mode:  # a bucket has no folders: an object can be written under any name
            os.makedirs(os.path.dirname(local), exist_ok=True)
        return original(local, mode)

    def walk(original, top, **kwargs):
        for folder, dirs, files in original(to_local(top), **kwargs):
            yield (to_remote(folder) if top.startswith("gs://") else folder), dirs, files

    # The client libraries a real bucket needs are not needed by this one.
    monkeypatch.setitem(paths.REMOTE_REQUIREMENTS, "gs", ())
    monkeypatch.setenv("EPATH_USE_TF", "false")  # the mocked backends, even where TensorFlow is installed
    # orbax asks the bucket whether it has a hierarchical namespace (a Google API call) ...
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
    # ... and writes arrays with TensorStore's own gcs driver; both go to ``root`` instead.
    normalize = tensorstore_utils._normalize_path
    monkeypatch.setattr(tensorstore_utils, "_normalize_path", lambda path: to_local(normalize(path)))
    functions = ("copy", "exists", "isdir", "listdir", "makedirs", "mkdir", "remove", "rename",
                 "replace", "rmtree", "stat")
    with epath_testing.mock_epath(open=open_, glob=glob, walk=walk, **dict.fromkeys(functions, redirected)):
        yield seen


@pytest.mark.parametrize("resume_as, sample_as, report_as", [(epath.Path, str, Path)])
def test_a_local_workdir_of_any_path_type_resumes_samples_and_reports(resume_as, sample_as, report_as, tmp_path,
                                                                     quick_compiles):
    # A workdir trained for 2 steps (the fixture), resumed for a third; each path type once.
    workdir = tmp_path / "run"
    shutil.copytree(FIXTURE, workdir)
    state = train_and_evaluate(resolve_config(workdir, None, ["train.steps=3"]), resume_as(str(workdir)),
                               progress=False)
    assert int(state.step) == 3
    assert [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    manifest = generate_from_checkpoint(saved_config(sample_as(str(workdir))), sample_as(str(workdir)),
                                        ["a blue square"], 1, seed=0, out_dir=sample_as(str(tmp_path / "out")))
    assert [json.loads(line)["file"] for line in Path(manifest).read_text().splitlines()] == ["000_000.png"]
    assert (tmp_path / "out" / "grid.png").stat().st_size > 0
    report = write_report(report_as(str(workdir)))
    assert Path(report) == workdir / "report.html" and "<img" in Path(report).read_text()


def test_a_gs_workdir_trains_samples_and_reports_in_the_bucket(tmp_path, monkeypatch, quick_compiles):
    gcs, cwd = tmp_path / "gcs", tmp_path / "cwd"
    gcs.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # where ``Path("gs://bucket/run").absolute()`` would put a local gs: folder
    with fake_bucket(gcs, monkeypatch) as seen:
        for argv in (["train", *TRAIN, "--workdir", "gs://bucket/run", "--set", "train.steps=2"],
                     ["sample", "--workdir", "gs://bucket/run", *PROMPT],  # restores from the bucket
                     ["report", "--workdir", "gs://bucket/run"]):
            outcome = run_cli(argv)
            assert outcome.code == 0, outcome.err
    run = gcs / "bucket" / "run"
    written = {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}
    for name in ("config.json", "metrics.jsonl", "losses.png", "samples/step_000002.png", "samples/prompts.json",
                 "samples/cli/grid.png", "samples/cli/manifest.jsonl", "report.html"):
        assert name in written
    assert any(n.startswith("tensorboard/events.out.tfevents") for n in written)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["2"]
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [2]
    assert not (run / ".lock").exists()  # released at the end of the run
    assert "gs://bucket/run/config.json" in seen and "gs://bucket/run/.lock" in seen
    assert not list(cwd.iterdir()), "a gs:// workdir wrote to a local folder"


def test_appending_in_a_bucket_rewrites_the_object_whole(tmp_path, monkeypatch):
    with fake_bucket(tmp_path, monkeypatch):
        for row in ("a\n", "b\n"):
            with paths.appending("gs://bucket/log.jsonl") as f:
                f.write(row)
        with pytest.raises(RuntimeError), paths.appending("gs://bucket/log.jsonl") as f:
            f.write("half a row")
            raise RuntimeError("killed mid-row")
    assert (tmp_path / "bucket" / "log.jsonl").read_text() == "a\nb\n"
