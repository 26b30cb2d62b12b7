"""Fault suite, workdir paths: a workdir jaxgan cannot reach (an unsupported scheme, a bucket
without its client libraries) is one line, never a traceback, and writes nothing locally."""

import pytest
from faults import assert_nothing_lost, run_cli, snapshot

from jaxgan import paths

TRAIN = ["--preset", "tiny", "--no-progress"]
PROMPT = ["--prompt", "a red circle", "--num-per-prompt", "1"]


@pytest.mark.parametrize("workdir, says", [
    ("s3://bucket/run", "a workdir is a local path or a gs:// URI"),
    ("gs://bucket/run", "needs jaxgan_no_such_client installed"),
])
def test_a_workdir_jaxgan_cannot_reach_is_one_line(workdir, says, tmp_path, monkeypatch):
    # A fixed missing client, so the case means the same with or without gcsfs installed.
    monkeypatch.setitem(paths.REMOTE_REQUIREMENTS, "gs", (("jaxgan_no_such_client",),))
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    for argv in (["train", *TRAIN, "--workdir", workdir], ["sample", "--workdir", workdir, *PROMPT],
                 ["eval", "--workdir", workdir], ["report", "--workdir", workdir]):
        outcome = run_cli(argv)
        assert outcome.code == 2 and says in outcome.one_line_error()
    assert_nothing_lost(before, snapshot(tmp_path))
    assert not list(tmp_path.iterdir())
