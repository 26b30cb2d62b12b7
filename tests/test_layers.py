"""Imports run one way: the layer table of docs/design.md, checked against every module's imports.

Each module of jaxgan/ is parsed with ``ast`` (nothing is imported), its imports (module-level,
function-level and relative) are resolved to jaxgan modules, and each module is placed in a layer
by the longest prefix in ``LAYERS``. A module imports only from its own layer or below, nothing
imports ``jaxgan.cli``, there are no cycles, and a function-local import names no jaxgan module
(it is for heavy optional dependencies such as torch). A module the table does not place fails
the test, so a new module gets a layer when it is written.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxgan"
DESIGN = ROOT / "docs" / "design.md"

# docs/design.md's table, highest layer first. ``X.*`` is X and every module under it; a plain
# name is that module (and, for a package, its submodules). The longest matching prefix wins,
# so ``jaxgan.data.throughput`` is in the run layer although ``jaxgan.data.*`` is a library.
LAYERS: dict[str, tuple[str, ...]] = {
    "commands": ("jaxgan.cli",),
    "run": ("jaxgan.train", "jaxgan.workdir", "jaxgan.evaluator", "jaxgan.checkpoint", "jaxgan.tensorboard",
            "jaxgan.report", "jaxgan.plots", "jaxgan.preemption", "jaxgan.bench", "jaxgan.scaling",
            "jaxgan.sweep", "jaxgan.pretrain_text", "jaxgan.data.throughput", "jaxgan.importers"),
    "library": ("jaxgan.presets", "jaxgan.program", "jaxgan.parallel", "jaxgan.distributed", "jaxgan.flops",
                "jaxgan.sampling", "jaxgan.models.*", "jaxgan.data.*", "jaxgan.text.*", "jaxgan.metrics.*"),
    "core": ("jaxgan.config", "jaxgan.errors", "jaxgan.paths", "jaxgan.pixels", "jaxgan.schedules", "jaxgan.state",
             "jaxgan.step", "jaxgan.losses", "jaxgan.regularizers", "jaxgan.augment", "jaxgan.diversity"),
}
RANK = {name: rank for rank, name in enumerate(reversed(LAYERS))}  # core 0 ... commands 3
# Above every layer: the package itself (the public API, whose names load lazily) and
# ``python -m jaxgan``, an entry point like train.py and sample.py, which only calls the cli.
ENTRY_POINTS = {"jaxgan": "api", "jaxgan.__main__": "entry point"}
CLI = "jaxgan.cli"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
PACKAGES = {_module_name(p) for p in PACKAGE.rglob("__init__.py")}


def layer_of(module: str) -> str | None:
    """The layer the table gives ``module`` (longest prefix), or None if it has none."""
    if module in ENTRY_POINTS:
        return ENTRY_POINTS[module]
    best, best_len = None, -1
    for layer, patterns in LAYERS.items():
        for pattern in patterns:
            prefix = pattern.removesuffix(".*")
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = layer, len(prefix)
    return best


def _rank(module: str) -> int:
    layer = layer_of(module)
    return len(RANK) if layer in ("api", "entry point") else RANK[layer]


def _resolve(name: str) -> str | None:
    """The jaxgan module that importing ``name`` runs (its nearest existing parent), or None."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


class Import:
    """One import of a jaxgan module: who, what, where, and whether it sits in a function."""

    def __init__(self, importer: str, target: str, line: int, local: bool):
        self.importer, self.target, self.line, self.local = importer, target, line, local

    def __repr__(self) -> str:
        where = "function-local " if self.local else ""
        path = MODULES[self.importer].relative_to(ROOT) if self.importer in MODULES else self.importer
        return f"{path}:{self.line}: {where}import of {self.target}"


def imports_of(module: str, source: str | None = None) -> list[Import]:
    """Every import of a jaxgan module in ``module``'s source (its file's, unless given),
    relative ones resolved."""
    source = MODULES[module].read_text() if source is None else source
    package = module if module in PACKAGES else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - child.level + 1] + ([base] if base else []))
                # ``from pkg import name`` imports the submodule pkg.name when there is one.
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in child.names]
            else:
                visit(child, inner)
                continue
            for name in dict.fromkeys(names):
                target = _resolve(name) if name.split(".")[0] == "jaxgan" else None
                if target is not None and target != module:
                    found.append(Import(module, target, child.lineno, local))

    visit(ast.parse(source, module), False)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_module_has_a_layer():
    unplaced = [m for m in MODULES if layer_of(m) is None]
    assert not unplaced, f"modules the layer table (docs/design.md, tests/test_layers.py) does not place: {unplaced}"


def test_the_table_names_only_modules_that_exist():
    names = [pattern.removesuffix(".*") for patterns in LAYERS.values() for pattern in patterns]
    missing = [name for name in names if name not in MODULES]
    assert not missing, f"the layer table names modules that do not exist: {missing}"


def test_the_table_is_the_one_in_docs_design():
    documented = {}
    for row in DESIGN.read_text().splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        match = re.fullmatch(r"\d+ (\w+)", cells[0]) if len(cells) == 3 else None
        if match:
            documented[match.group(1)] = tuple(re.findall(r"`([\w.*]+)`", cells[1]))
    assert documented == LAYERS


def test_imports_go_down_the_layers():
    upward = [i for imports in GRAPH.values() for i in imports
              if i.target != CLI and layer_of(i.importer) is not None and layer_of(i.target) is not None
              and _rank(i.target) > _rank(i.importer)]
    assert not upward, "imports from a higher layer:\n" + "\n".join(
        f"{i!r} ({layer_of(i.importer)} -> {layer_of(i.target)})" for i in upward)


def test_nothing_imports_the_command_line():
    importers = [i for imports in GRAPH.values() for i in imports
                 if i.target == CLI and layer_of(i.importer) != "entry point"]
    assert not importers, "imports of jaxgan.cli:\n" + "\n".join(map(repr, importers))


def test_function_local_imports_are_for_heavy_optional_dependencies_only():
    local = [i for imports in GRAPH.values() for i in imports if i.local]
    assert not local, "function-local imports of jaxgan modules:\n" + "\n".join(map(repr, local))


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    edges = {m: sorted({i.target for i in imports}) for m, imports in GRAPH.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in edges:
        if v not in index:
            connect(v)
    return components


def test_there_are_no_import_cycles():
    cycles = _cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("module, layer", [
    ("jaxgan.data.throughput", "run"), ("jaxgan.data.source", "library"), ("jaxgan.data", "library"),
    ("jaxgan.metrics.fid", "library"), ("jaxgan.cli", "commands"), ("jaxgan.config", "core"),
    ("jaxgan", "api"), ("jaxgan.nonexistent", None),
])
def test_the_longest_prefix_places_a_module(module, layer):
    assert layer_of(module) == layer


def test_the_parser_sees_function_local_and_relative_imports():
    source = "from . import fid\nfrom ..config import Config\n\ndef f():\n    import jaxgan.train.x\n"
    found = {(i.target, i.local) for i in imports_of("jaxgan.metrics.probe", source)}
    assert found == {("jaxgan.metrics.fid", False), ("jaxgan.config", False), ("jaxgan.train", True)}
