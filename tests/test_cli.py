"""The `jaxgan` console script: every tool behind one command."""

import argparse
import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import jaxgan
from jaxgan import cli
from jaxgan.checkpoint import CheckpointError
from jaxgan.config import ConfigError
from jaxgan.errors import JaxganError, UsageError


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in cli.COMMANDS)


def test_an_unknown_command_is_a_one_line_error(capsys):
    assert cli.main(["trian"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown command 'trian'" in err and "train" in err and "\n" not in err


def test_commands_reach_their_tools(capsys, tmp_path):
    assert cli.main(["scaling", "--chips", "8"]) == 0
    assert "8 chips" in capsys.readouterr().out
    # The tool's own one-line errors come through unchanged.
    assert cli.main(["eval", "--workdir", str(tmp_path)]) == 2
    assert "not a training workdir" in capsys.readouterr().err
    assert cli.main(["report", "--workdir", str(tmp_path)]) == 2
    assert "not a training workdir" in capsys.readouterr().err


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "jaxgan"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "pretrain-text" in done.stdout
    done = subprocess.run([sys.executable, "-m", "jaxgan", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "convert-inception" in done.stdout


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_documents_its_flags(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: jaxgan {name} ")


def _fake_command(monkeypatch, error):
    def run(args):
        raise error

    parser = lambda: argparse.ArgumentParser()  # noqa: E731
    monkeypatch.setitem(cli.COMMANDS, "fake", cli.Command("raises", parser, run))


@pytest.mark.parametrize("error, line", [
    (ConfigError("bad value"), "error: bad value"),
    (CheckpointError("checkpoint 3 is corrupt"), "error: checkpoint 3 is corrupt"),
    (FileNotFoundError(2, "No such file or directory"),
     "error: FileNotFoundError: [Errno 2] No such file or directory"),
])
def test_one_wrapper_turns_expected_errors_into_one_line(monkeypatch, capsys, error, line):
    _fake_command(monkeypatch, error)
    assert cli.main(["fake"]) == 2
    assert capsys.readouterr().err == line + "\n"


def test_unexpected_errors_keep_their_traceback(monkeypatch):
    _fake_command(monkeypatch, ZeroDivisionError("a bug"))
    with pytest.raises(ZeroDivisionError):
        cli.main(["fake"])


def test_bad_flags_exit_2_as_argparse_does(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["scaling", "--chipz", "8"])
    assert exit_.value.code == 2 and "unrecognized arguments: --chipz" in capsys.readouterr().err


def test_every_error_class_is_an_expected_error():
    """Each ``class ...Error`` in jaxgan/ subclasses JaxganError, so the wrapper words it."""
    root = Path(jaxgan.__file__).parent
    for path in sorted(root.rglob("*.py")):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                cls = getattr(importlib.import_module(module), node.name)
                assert issubclass(cls, JaxganError), f"{module}.{node.name}"


def test_check_command_parses_and_resolves_without_running(tmp_path):
    cli.check_command(["train", "--workdir", str(tmp_path / "new"), "--preset", "tiny", "--set", "model.width=8"])
    cli.check_command(["bench", "--preset", "tiny", "--batch-size", "8"])
    cli.check_command(["eval", "--help"])
    assert not (tmp_path / "new").exists()
    with pytest.raises(UsageError, match="unrecognized arguments: --stpes"):
        cli.check_command(["train", "--stpes", "3"])
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        cli.check_command(["scaling", "--preset", "huge"])
    with pytest.raises(ConfigError, match="unknown config key 'model.colour'"):
        cli.check_command(["train", "--set", "model.colour=red"])
    with pytest.raises(UsageError, match="unknown command 'trian'"):
        cli.check_command(["trian"])


def test_alignment_asks_the_dataset_for_attribute_labels(tmp_path, capsys):
    from jaxgan.config import to_json
    from jaxgan.presets import get_config

    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text(to_json(get_config("tiny", [f"data.dataset={tmp_path / 'images'}"])))
    assert cli.main(["alignment", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "attribute labels" in err[0], err
    assert not (workdir / "alignment.json").exists()
