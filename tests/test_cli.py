"""The `jaxgan` console script: every tool behind one command."""

import subprocess
import sys
from pathlib import Path

from jaxgan import cli


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
