"""Bookkeeping of the fault-injection and hostile-input suite (``tests/test_faults_*.py``).

Every case feeds one bad input or one fault to a jaxgan command and checks the promise of
docs/training.md, "What a run promises": a one-line ``error: ...`` (never a traceback) and
no file lost or broken. ``TALLY`` counts, over the whole session, the inputs tried, the
tracebacks seen and the files lost; ``tests/conftest.py`` prints the sum over the xdist
workers at the end of the run, and each case also asserts its own zeros.

Example:
    before = snapshot(workdir)
    outcome = run_cli(["sample", "--workdir", str(workdir), "--prompt", ""])
    assert outcome.code == 2 and outcome.one_line_error()
    assert_nothing_lost(before, snapshot(workdir))
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import subprocess
import sys
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path


@dataclasses.dataclass
class Tally:
    """Counts of the session: inputs tried, tracebacks seen, files lost."""

    inputs: int = 0
    tracebacks: int = 0
    lost: int = 0

    def add(self, other: dict[str, int]) -> None:
        for key, value in other.items():
            setattr(self, key, getattr(self, key) + int(value))

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def line(self) -> str:
        return (f"fault injection: {self.inputs} inputs tried, {self.tracebacks} tracebacks, "
                f"{self.lost} files lost")


TALLY = Tally()


@dataclasses.dataclass
class Outcome:
    """What one command did: its exit code and what it printed."""

    code: int
    out: str
    err: str

    def one_line_error(self) -> str:
        """The command's ``error: ...`` line (argparse's ``PROG: error: ...`` for a bad flag);
        asserts there is exactly one."""
        lines = [line for line in self.err.splitlines() if line.startswith("error: ") or ": error: " in line]
        assert len(lines) == 1, f"expected one 'error:' line, got stderr:\n{self.err}"
        assert "\n" not in lines[0]
        return lines[0]


def _has_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" in text


def run_cli(argv: Sequence[str]) -> Outcome:
    """Runs ``jaxgan ARGV`` in this process and counts it as one input tried.

    An exception escaping ``jaxgan.cli.main``, or a traceback in what it printed, counts as
    a traceback and fails the calling test.
    """
    from jaxgan import cli

    out, err = io.StringIO(), io.StringIO()
    TALLY.inputs += 1
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as e:  # argparse exits on bad flags, with its own one-line message
            code = e.code if isinstance(e.code, int) else 2
        except BaseException:  # noqa: BLE001 - what the suite counts
            TALLY.tracebacks += 1
            raise AssertionError(f"jaxgan {' '.join(argv)} raised:\n{traceback.format_exc()}") from None
    outcome = Outcome(code, out.getvalue(), err.getvalue())
    if _has_traceback(outcome.out + outcome.err):
        TALLY.tracebacks += 1
        raise AssertionError(f"jaxgan {' '.join(argv)} printed a traceback:\n{outcome.err}")
    return outcome


def run_process(argv: Sequence[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Runs ``python ARGV`` (e.g. ``train.py ...``) in a subprocess, counted as one input tried;
    a traceback in its output counts and fails the calling test."""
    TALLY.inputs += 1
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, **kwargs)
    if _has_traceback(done.stdout + done.stderr):
        TALLY.tracebacks += 1
        raise AssertionError(f"python {' '.join(argv)} printed a traceback:\n{done.stderr[-4000:]}")
    return done


def count_input(n: int = 1) -> None:
    """Counts ``n`` inputs tried by a case that drives a library function directly."""
    TALLY.inputs += n


def count_traceback(where: str) -> None:
    """Counts an unexpected exception seen by a case that drives a library function directly."""
    TALLY.tracebacks += 1
    raise AssertionError(f"{where} raised:\n{traceback.format_exc()}")


def snapshot(root: str | Path, skip: Iterable[str] = (".lock",)) -> dict[str, str]:
    """``{relative path: sha256}`` of every regular file under ``root``."""
    root, skip = Path(root), set(skip)
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name not in skip:
            files[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def assert_nothing_lost(before: dict[str, str], after: dict[str, str], may_change: Iterable[str] = ()) -> None:
    """Every file of ``before`` is still there, unchanged unless its path starts with one of
    ``may_change`` (logs a run appends to); counts and fails on the others."""
    may_change = tuple(may_change)
    lost = [p for p, digest in before.items()
            if after.get(p) != digest and not (p in after and p.startswith(may_change))]
    TALLY.lost += len(lost)
    assert not lost, f"files lost or changed: {lost}"
