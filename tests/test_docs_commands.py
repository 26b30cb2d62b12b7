"""Every command the README and docs/ show parses and resolves its config, so the docs cannot
drift from the code.

A command is a line in a fenced code block that starts with ``python train.py``, ``python
sample.py``, ``python -m jaxgan`` or ``jaxgan `` (backslash continuations joined). It runs
through ``jaxgan.cli.check_command``: its command's real parser reads the flags, and the
configs it names (a preset, ``--set`` keys) are resolved; nothing trains. Shell variables set
earlier on the same page (``D="--preset ..."``, ``for i in 0 1``) are expanded; a synopsis's
optional ``[...]`` groups and unquoted ``...`` are dropped; everything from a shell operator (``&``, ``|``,
``;``, ``>``) on is not part of the command. A workdir that does not exist is a placeholder:
the config comes from the preset or the defaults.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from jaxgan import cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PREFIXES = ("python train.py", "python sample.py", "python -m jaxgan", "jaxgan ")
SCRIPTS = {"train.py": "train", "sample.py": "sample"}
OPERATORS = {"&", "&&", "|", "||", ";", ">", ">>", "<", "2>", "2>&1"}


def _logical_lines(text: str) -> list[tuple[int, str, bool]]:
    """(first line number, line with continuations joined, inside a fenced block)."""
    out, lines, fenced, i = [], text.splitlines(), False, 0
    while i < len(lines):
        start, line = i + 1, lines[i]
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            out.append((start, "```", False))
            i += 1
            continue
        while fenced and line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1].rstrip() + " " + lines[i].strip()
        out.append((start, line.strip(), fenced))
        i += 1
    return out


def _expand(line: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), line)


def commands_in(text: str) -> list[tuple[int, str, list[str]]]:
    """(line number, the line as written, ``check_command``'s argv) of every command in ``text``."""
    found, variables = [], {}  # a page is one shell session: its blocks share variables
    for number, line, fenced in _logical_lines(text):
        if not fenced:
            continue
        assignment = re.fullmatch(r"([A-Za-z_]\w*)=(\S.*)", line)
        loop = re.fullmatch(r"for (\w+) in (\S+).*", line)
        if assignment:
            variables[assignment.group(1)] = " ".join(shlex.split(assignment.group(2), comments=True))
        elif loop:
            variables[loop.group(1)] = loop.group(2)
        elif line.startswith(PREFIXES):
            found.append((number, line, _argv(_expand(line, variables))))
    return found


def _argv(line: str) -> list[str]:
    line = re.sub(r"(?<!\S)\.\.\.(?!\S)", " ", line)  # "etc." in a synopsis; a quoted "..." stays
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens, optional = [], 0
    for token in lexer:
        if token in OPERATORS:
            break
        optional += token.startswith("[")
        if not optional:
            tokens.append(token)
        optional -= optional > 0 and token.endswith("]")
    if tokens[0] == "jaxgan":
        return tokens[1:]
    if tokens[:2] == ["python", "-m"] and tokens[2] == "jaxgan":
        return tokens[3:]
    if tokens[0] == "python" and tokens[1] in SCRIPTS:
        return [SCRIPTS[tokens[1]], *tokens[2:]]
    # ``python -m jaxgan.MODULE``: the library modules are no entry points; the command is
    # ``jaxgan COMMAND``.
    return [" ".join(tokens[:3])]


DOCUMENTED = [(f"{page.relative_to(ROOT)}:{number}", line, argv)
              for page in PAGES for number, line, argv in commands_in(page.read_text())]


@pytest.mark.parametrize("where, line, argv", DOCUMENTED, ids=[w for w, _, _ in DOCUMENTED])
def test_documented_command_parses_and_resolves(where, line, argv):
    try:
        cli.check_command(argv)
    except Exception as e:  # noqa: BLE001 - any failure is the docs' to fix, reported with its place
        pytest.fail(f"{where}: {line}\n  {type(e).__name__}: {e}", pytrace=False)


def test_the_readme_shows_commands():
    assert any(where.startswith("README.md") for where, _, _ in DOCUMENTED)


def test_commands_are_read_as_a_shell_would():
    text = "\n".join([
        "Outside a block: python train.py --nope",
        "```bash",
        'D="--preset tiny --set model.width=8"   # shared flags',
        "python train.py --workdir W $D \\",
        "  --steps 3   # comment",
        "for i in 0 1; do",
        "  python train.py --process-id $i --num-processes 2 [--set ...] &",
        "done",
        'jaxgan eval --workdir W | tee log',
        'python sample.py --prompt "..." ...',
        "python -m jaxgan.eval --workdir W",
        "```",
        "```",
        "python train.py $E",
        "```",
    ])
    assert commands_in(text) == [
        (4, "python train.py --workdir W $D --steps 3   # comment",
         ["train", "--workdir", "W", "--preset", "tiny", "--set", "model.width=8", "--steps", "3"]),
        (7, "python train.py --process-id $i --num-processes 2 [--set ...] &",
         ["train", "--process-id", "0", "--num-processes", "2"]),
        (9, "jaxgan eval --workdir W | tee log", ["eval", "--workdir", "W"]),
        (10, 'python sample.py --prompt "..." ...', ["sample", "--prompt", "..."]),
        (11, "python -m jaxgan.eval --workdir W", ["python -m jaxgan.eval"]),
        (14, "python train.py $E", ["train", "$E"]),
    ]
