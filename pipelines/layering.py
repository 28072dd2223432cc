"""The import layering, checked: ``python -m pipelines.layering`` prints every violation and exits 1.

Packages are layered (``docs/architecture.md``): ``training`` at the bottom, then ``distill``, then
``pruning`` (Distilled Pruning trains on distilled sets), then ``search``, then ``pipelines``; a module
imports only from its own package or the ones below. Inside a package no two modules import each
other, directly or round a circle, eagerly or from inside a function, except the registrations below:
a registry module that imports its built-in families at its end, after the names they register with
exist. Those are declared here, so a new circle is an error rather than a pattern to copy.
"""
from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("training", "distill", "pruning", "search", "pipelines")  # each imports only those before it
# Registry module -> the family modules it imports at its end so they register themselves.
REGISTRATIONS = {
    ("training.models", "training.vit"),
    ("distill.methods", "distill.dm"),
    ("distill.methods", "distill.coresets"),
}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.AST, package: str, modules: set[str] | dict) -> list[str]:
    """The modules an import statement loads: ``from a import b`` is ``a.b`` when that is a module, else ``a``."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            parent = ".".join(parts[:len(parts) - node.level + 1])
            base = parent + ("." + node.module if node.module else "")
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    return []


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its body (functions included)."""
    files = {_module_name(p, root): p for layer in LAYERS for p in sorted((root / layer).rglob("*.py"))}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            graph[name] |= {t for t in _targets(node, package, files) if t in files and t != name}
        graph[name]  # noqa: B018 (every module is a node, importing or not)
    return dict(graph)


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    return [f"{m} imports {t}: {t.split('.')[0]} is not below {m.split('.')[0]}"
            for m, targets in sorted(graph.items()) for t in sorted(targets)
            if rank[t.split(".")[0]] > rank[m.split(".")[0]]]


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles (strongly connected components of more than one module), registrations aside."""
    edges = {m: {t for t in ts if (m, t) not in REGISTRATIONS} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def problems(root: Path = ROOT) -> list[str]:
    graph = import_graph(root)
    stale = [f"declared registration {a} -> {b} is not an import any more" for a, b in sorted(REGISTRATIONS)
             if b not in graph.get(a, set())]
    return layer_violations(graph) + [f"import circle: {' <-> '.join(c)}" for c in circles(graph)] + stale


if __name__ == "__main__":
    found = problems()
    print("\n".join(found) if found else f"layering ok: {', '.join(LAYERS)}, no import circles")
    sys.exit(1 if found else 0)
