"""The import graph of src/mechscope: no circles between modules or between packages, and no
import that runs back up.

Every module's imports are read with `ast` (imports inside functions included; those under
`if TYPE_CHECKING:` are left out, as they never run). An edge goes to the module named
(`from mechscope.a import b` reaches `mechscope.a.b` when that is a module, else `mechscope.a`).
Layers, bottom up: the core (models, data, tasks, metrics, files, errors, progress, artefacts,
validate)
imports only the core; the methods (zoo, patching, circuits, sae, directions, evolution, regions,
basis) import no command-line code (cli, cli_common, report, sweep, any `*.cli` module).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import networkx as nx

import mechscope

ROOT = Path(mechscope.__file__).parent
CORE = {
    "models",
    "data",
    "tasks",
    "metrics",
    "files",
    "errors",
    "progress",
    "artefacts",
    "validate",
}
METHODS = {
    "zoo",
    "patching",
    "circuits",
    "sae",
    "directions",
    "evolution",
    "regions",
    "basis",
    "graphs",
    "steering",
}
TOP = {"cli", "cli_common", "report", "sweep"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ["mechscope", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:`."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


@functools.cache
def import_graph() -> nx.DiGraph:
    """module -> every mechscope module it imports (at any depth of its code)."""
    modules = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_only(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            for t in targets:
                if t in modules and t != name:
                    g.add_edge(name, t)
                elif t.split(".")[0] == "mechscope" and t not in modules:
                    g.graph.setdefault("missing", []).append(f"{name} imports {t}")
    return g


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    if parts[1] in TOP or parts[-1] == "cli":
        return "top"
    return "core" if parts[1] in CORE else "method" if parts[1] in METHODS else "unknown"


def test_every_module_has_a_layer():
    assert [m for m in import_graph() if _layer(m) == "unknown"] == []


def test_every_import_names_a_module():
    """A renamed module leaves no import of its old name behind (in function bodies too)."""
    assert import_graph().graph.get("missing", []) == []


def test_the_graph_reads_imports_inside_functions():
    g = import_graph()
    # `Placement.__post_init__` imports `mechscope.validate` in its body
    assert g.has_edge("mechscope.models.placement", "mechscope.validate")
    assert g.has_edge("mechscope.sae.sources", "mechscope.sae.bundled")


def test_no_circles_between_modules():
    g = import_graph()
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert cycles == []


def test_no_circles_between_packages():
    """Nor between the top-level packages and modules (sae -> directions, never back)."""
    g = import_graph()
    top = nx.DiGraph()
    for a, b in g.edges:
        pa, pb = ".".join(a.split(".")[:2]), ".".join(b.split(".")[:2])
        if pa != pb:
            top.add_edge(pa, pb)
    assert [sorted(c) for c in nx.strongly_connected_components(top) if len(c) > 1] == []


def test_no_import_runs_back_up():
    g = import_graph()
    up = [
        (a, b)
        for a, b in g.edges
        if (_layer(a) == "core" and _layer(b) != "core")
        or (_layer(a) == "method" and _layer(b) == "top")
    ]
    assert up == []
