"""The package's imports run one way: every module of vqdoctor/ sits in a layer (docs/architecture.md)
and imports only from its own layer or those below, and no two modules import each other, directly
or round a loop. The graph is read from the source (every ``import`` statement, including those
inside functions and under ``TYPE_CHECKING``: a hidden import that runs back up is still a loop)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "vqdoctor"

# Lowest first. A module belongs to the layer of the longest prefix that names it; a new top-level
# module or package must be placed here (and in docs/architecture.md) before the test passes.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # the package root holds __version__ and names its public API as strings (loaded on first use)
    ("base", ("vqdoctor", "vqdoctor.errors", "vqdoctor.options", "vqdoctor.stages")),
    ("core", ("vqdoctor.core",)),
    ("io", ("vqdoctor.io", "vqdoctor.samples")),
    ("sources", ("vqdoctor.codebooks", "vqdoctor.adapters", "vqdoctor.io.stream")),
    ("report", ("vqdoctor.report",)),
    ("analysis", ("vqdoctor.remedies", "vqdoctor.verdicts", "vqdoctor.check", "vqdoctor.diagnose",
                  "vqdoctor.stats_report", "vqdoctor.fixes", "vqdoctor.distributed", "vqdoctor.repair")),
    ("api", ("vqdoctor.api", "vqdoctor.memory", "vqdoctor.monitor", "vqdoctor.trend", "vqdoctor.integrations")),
    ("cli", ("vqdoctor.cli", "vqdoctor.__main__")),
)
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}


def module_files(package: Path = PACKAGE) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _owner(name: str, modules: dict[str, tuple[Path, bool]]) -> str | None:
    """The module an imported dotted name lives in (``vqdoctor.core.usage.UsageStats`` -> ``vqdoctor.core.usage``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, tuple[Path, bool]]) -> dict[str, dict[str, int]]:
    """module -> {imported vqdoctor module: line of the first such import}."""
    graph: dict[str, dict[str, int]] = {}
    for mod, (path, is_pkg) in modules.items():
        here = mod if is_pkg else mod.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                # `from pkg import sub` imports the submodule; `from mod import name` the module
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            for target in targets:
                owner = _owner(target, modules) if target.split(".")[0] == "vqdoctor" else None
                if owner is not None and owner != mod:
                    edges.setdefault(owner, node.lineno)
        graph[mod] = edges
    return graph


def layer_of(module: str) -> str | None:
    best: tuple[int, str] | None = None
    for name, prefixes in LAYERS:
        for p in prefixes:
            if module == p or (p != "vqdoctor" and module.startswith(p + ".")):
                if best is None or len(p) > best[0]:
                    best = (len(p), name)
    return None if best is None else best[1]


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


MODULES = module_files()
GRAPH = import_graph(MODULES)


def test_the_graph_is_read_from_the_source():
    # known edges of the real code: a top-level import, one inside a function, one relative
    assert "vqdoctor.core.assign" in GRAPH["vqdoctor.core.kmeans"]
    assert len(MODULES) > 100 and all(layer_of(m) for m in MODULES)


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in MODULES if layer_of(m) is None)
    assert unplaced == [], f"place these modules in LAYERS (and docs/architecture.md): {unplaced}"


def test_no_import_runs_up_a_layer():
    upward = []
    for mod, edges in sorted(GRAPH.items()):
        for target, line in sorted(edges.items()):
            a, b = layer_of(mod), layer_of(target)
            if a and b and RANK[b] > RANK[a]:
                upward.append(f"{MODULES[mod][0].relative_to(PACKAGE.parent)}:{line} ({a}) imports {target} ({b})")
    assert upward == [], "imports that run up a layer:\n" + "\n".join(upward)


def test_no_import_cycle():
    assert cycles(GRAPH) == [], "modules that import each other (directly or round a loop)"


def test_the_checker_sees_what_it_must_reject(tmp_path):
    # a toy package with an upward import under TYPE_CHECKING, one inside a function, and a loop
    pkg = tmp_path / "vqdoctor"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vqdoctor.cli.x import f\n")
    (pkg / "core" / "b.py").write_text("def g():\n    from . import c\n")
    (pkg / "core" / "c.py").write_text("import vqdoctor.core.b\n")
    (pkg / "cli").mkdir()
    (pkg / "cli" / "__init__.py").write_text("")
    (pkg / "cli" / "x.py").write_text("from ..core.a import *\n")
    mods = module_files(pkg)
    graph = import_graph(mods)
    assert graph["vqdoctor.core.a"] == {"vqdoctor.cli.x": 3}
    assert graph["vqdoctor.core.b"] == {"vqdoctor.core.c": 2} and graph["vqdoctor.cli.x"] == {"vqdoctor.core.a": 1}
    assert cycles(graph) == [["vqdoctor.cli.x", "vqdoctor.core.a"], ["vqdoctor.core.b", "vqdoctor.core.c"]]
    assert layer_of("vqdoctor.io.stream") == "sources" and layer_of("vqdoctor.io.atomic") == "io"
    assert layer_of("vqdoctor") == "base" and layer_of("vqdoctor.verdicts") == "analysis"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("vqdoctor.core.")))
def test_core_imports_only_core_and_base(module):
    # the strictest layer, named one module at a time: core reads tensors and returns values
    bad = {t for t in GRAPH[module] if layer_of(t) not in ("base", "core")}
    assert bad == set(), module
