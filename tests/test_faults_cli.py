"""Fault suite, command line: bad flags, keys and workdirs give one line, never a traceback."""

import pytest
from faults import assert_nothing_lost, run_cli, snapshot


@pytest.mark.parametrize("argv", [
    ["train", "--preset", "no-such-preset"],
    ["train", "--set", "train.stpes=10"],
    ["train", "--set", "train.steps"],
    ["sample", "--workdir", "/nonexistent/jaxgan-run", "--prompt", "a red circle"],
    ["eval", "--workdir", "/nonexistent/jaxgan-run"],
])
def test_bad_command_line_is_one_line(argv, tmp_path):
    outcome = run_cli(argv)
    assert outcome.code == 2
    outcome.one_line_error()


def test_workdir_under_a_file_is_one_line_and_keeps_files(tmp_path):
    # A path that cannot be created: its parent is a regular file (what a read-only or
    # virtual filesystem gives too, as another OSError).
    (tmp_path / "notes.txt").write_text("a finished run's notes\n")
    before = snapshot(tmp_path)
    outcome = run_cli(["train", "--preset", "tiny", "--workdir", str(tmp_path / "notes.txt" / "run"),
                       "--set", "train.steps=1"])
    assert outcome.code == 2
    assert "notes.txt" in outcome.one_line_error()
    assert_nothing_lost(before, snapshot(tmp_path))
