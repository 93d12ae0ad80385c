"""No import cycles among the modules of mella_assets (and resources/, sensors/, installed inside it).

The graph is read from the source (AST), not by importing: every ``import`` / ``from ... import`` of a mella_assets
module counts wherever it stands — at module level, under ``if TYPE_CHECKING:``, or inside a function (a deferred
import hides a cycle, it does not remove it). ``from package import name`` where ``name`` is a submodule counts as
an import of that submodule; an import of a package counts as an import of its ``__init__``. Importing
``a.b.c`` is an edge to ``a.b.c`` only (not to the ``a`` and ``a.b`` packages Python also initialises), so a
package's ``__init__`` may re-export its own submodules.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Source folder -> the package it installs as ([tool.setuptools.package-dir] in pyproject.toml).
SOURCE_PACKAGES = {
    ROOT / "mella_assets": "mella_assets",
    ROOT / "resources": "mella_assets.resources",
    ROOT / "sensors": "mella_assets.sensors",
}
# Known cycles left in place, as the import edges (importer, imported) that close them. Each entry needs a reason;
# removing the cycle means removing its entry (test_allowlist_is_current fails while an entry is stale).
ALLOWED_EDGES: dict[tuple[str, str], str] = {}


def _module_files() -> dict[str, Path]:
    """Dotted module name -> source file, for every module under the source folders."""
    modules = {}
    for folder, package in SOURCE_PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def _existing(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` if it is one of our modules, else its longest prefix that is (None outside mella_assets)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The mella_assets modules ``module`` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # Relative: level 1 is the module's own package (the module itself for an __init__).
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # A submodule named in the import list is imported itself; any other name comes from ``base``.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            imported = _existing(target, modules)
            if imported is not None and imported != module:
                found.add(imported)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _module_files()
    return {module: _imports(module, path, modules) for module, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle path (first module repeated at the end) per strongly connected component with a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(start: str) -> None:  # Tarjan's algorithm, iterative (no recursion limit)
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)

    for module in sorted(graph):
        if module not in index:
            connect(module)
    return [_cycle_path(graph, component) for component in components]


def _cycle_path(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the first module (by name) of a strongly connected component."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")  # not a strongly connected component


def _without_allowed(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {module: {i for i in imported if (module, i) not in ALLOWED_EDGES} for module, imported in graph.items()}


def test_graph_is_read() -> None:
    """The graph covers the installed packages and sees deferred imports (guards against an empty, vacuous graph)."""
    graph = import_graph()
    assert {"mella_assets.crawl.html", "mella_assets.resources.fetch", "mella_assets.sensors"} <= set(graph)
    assert "mella_assets.lib.robots" in graph["mella_assets.resources.fetch"]
    assert "mella_assets.lib.robots" in graph["mella_assets.crawl.crawler"]  # imported inside a function


def test_no_import_cycles() -> None:
    cycles = _cycles(_without_allowed(import_graph()))
    assert not cycles, "import cycles:\n" + "\n".join("  " + " -> ".join(cycle) for cycle in cycles)


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, frontier = {start}, [start]
    while frontier:
        node = frontier.pop()
        if node == goal:
            return True
        for child in graph.get(node, ()):
            if child not in seen:
                seen.add(child)
                frontier.append(child)
    return False


def test_allowlist_is_current() -> None:
    """Every allowed edge still exists and still closes a cycle; otherwise its entry must go."""
    graph = import_graph()
    stale = [
        (importer, imported)
        for importer, imported in ALLOWED_EDGES
        if imported not in graph.get(importer, set()) or not _reaches(graph, imported, importer)
    ]
    assert not stale, f"allowlisted edges that no longer close a cycle (remove them from ALLOWED_EDGES): {stale}"
