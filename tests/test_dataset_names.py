"""No code compares a dataset's name outside the sources themselves and the shapes metric.

What only some datasets can do is a capability their ``ExampleSource`` declares
(``jaxgan.data.source``); callers ask the source for it. This test greps the package for the
comparisons that would bypass that interface.
"""

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "jaxgan"
# The sources (the TFDS source maps its dataset names to caption rules) and the shapes metric.
ALLOWED = {"data/shapes.py", "data/folder.py", "data/tfds_source.py", "data/source.py",
           "metrics/attributes.py", "metrics/features.py"}
NAME = r"""["']shapes["']"""
PATTERNS = [re.compile(p) for p in (
    rf"[=!]=\s*{NAME}", rf"{NAME}\s*[=!]=",                      # x == "shapes", "shapes" != x
    r"\bdataset\s*[=!]=", r"[=!]=\s*[\w.]*\bdataset\b",            # config.data.dataset == ..., ... != protocol.dataset
    r"[=!]=\s*[\w.]*\bSHAPES\b", r"\bSHAPES\s*[=!]=",              # == SHAPES (the old constant)
    r"[=!]=\s*[\w.]*\bshapes\.NAME\b",                             # == shapes.NAME
    rf"\bin\s*[\(\[\{{]\s*{NAME}",                                 # in ("shapes", ...)
    rf"startswith\(\s*{NAME}",                                     # spec.startswith("shapes")
)]


def _hits(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if any(p.search(line) for p in PATTERNS)]


@pytest.mark.parametrize("line", [
    'if config.data.dataset == SHAPES:', 'if protocol.dataset != "shapes":', 'fit="" if name == "shapes" else x',
    "if dataset in ('shapes', 'mnist'):", 'ok = features.startswith("shapes")', 'if "shapes" == name:',
    'if self.config.data.dataset != shapes.NAME:',
])
def test_the_patterns_catch_a_name_comparison(line):
    assert _hits(line) == [line]


def test_the_patterns_leave_capabilities_and_other_names_alone():
    assert not _hits("if source.attributes and not source.drawn:\n"
                     "if name == SHAPES_ENCODER:\nreturn _BUILT_IN[dataset]\n")


def test_no_dataset_name_comparisons_outside_the_sources_and_the_shapes_metric():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative not in ALLOWED:
            hits = _hits(path.read_text())
            if hits:
                found[relative] = hits
    assert not found, ("dataset names compared outside the sources; declare a capability on the "
                       f"ExampleSource and ask for it instead: {found}")
