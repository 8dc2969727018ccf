"""The package's shape (issue 22 item 20): no import circles between rice's modules, no loose modules at the top.

The import graph is read from the source (every import statement, also those inside functions, except type-only
ones under ``if TYPE_CHECKING``), so a lazy import that closes a circle counts: it still ties the two modules
together, and a later eager import turns it into a start-up failure.
"""

from __future__ import annotations

import ast
from pathlib import Path

import rice

PACKAGE = Path(rice.__file__).parent
# the top of the package holds the entry points and what every part below shares, nothing else
TOP_LEVEL = {"__init__", "__main__", "_lazy", "config", "distributed"}


def _modules(package: Path) -> dict[str, Path]:
    modules = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _type_only(tree: ast.AST) -> set[int]:
    nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            nodes |= {id(inner) for inner in ast.walk(node)}
    return nodes


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the rice modules it imports (``from a.b import c`` names a.b, and a.b.c when c is a module)."""
    modules = _modules(package)

    def owner(name: str) -> str | None:  # the longest module prefix of a dotted name
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_only(tree)
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    base = ".".join(parent + ([base] if base else []))
                targets |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        graph[name] = {owner(t) for t in targets if t.split(".")[0] == package.name and owner(t)} - {name, None}
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_import_circles():
    circles = import_circles(import_graph(PACKAGE))
    assert not circles, f"import circles: {circles}"


def test_the_circle_finder_sees_a_lazy_circle(tmp_path):
    """The check itself: two modules that import each other, one of them inside a function, are a circle."""
    package = tmp_path / "rice"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from rice.b import g\n\ndef f():\n    return g()\n")
    (package / "b.py").write_text("def g():\n    from rice import a\n    return a\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rice.a import f\n")
    assert import_circles(import_graph(package)) == [["rice.a", "rice.b"]]


def test_no_loose_modules_at_the_top_of_the_package():
    loose = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in TOP_LEVEL)
    assert not loose, f"modules at the top of rice/: {loose}; put each in the subpackage of its job"


def test_the_cli_is_a_package_of_command_modules():
    from rice.cli import app

    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    groups = {g.name for g in app.registered_groups}
    assert {"train", "eval", "demo", "search", "embed", "scan", "eval-scan", "serve", "export"} <= commands
    assert "index" in groups
    assert all(c.callback.__module__.startswith("rice.cli.") for c in app.registered_commands)
