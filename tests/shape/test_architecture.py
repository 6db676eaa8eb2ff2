"""The package's shape: imports only point down the layers, no cycles, one PostgreSQL executor."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import docstore

PACKAGE = Path(docstore.__file__).resolve().parent

# Lower numbers sit lower: a module may import its own layer or below, never above.
LAYERS: list[tuple[int, str]] = [
    (0, r"docstore\.(settings|errors|rules|models|resources|health|_async_runtime|_sync_runtime)"),
    (0, r"docstore\.terminal"),
    (0, r"docstore\.observability(\..*)?"),
    (1, r"docstore\.postgres(\..*)?"),
    (1, r"docstore\.redis(\..*)?"),
    (2, r"docstore\.repositories(\..*)?"),
    (2, r"docstore\.ephemeral(\..*)?"),
    (3, r"docstore\.intake(\..*)?"),
    (3, r"docstore\.migrate\.(?!cli$|__main__$).*|docstore\.migrate"),
    (4, r"docstore\.store(_async)?"),
    (4, r"docstore\.doctor(\..*)?"),
    (5, r"docstore|docstore\.(cli|quickstart|__main__)|docstore\.migrate\.(cli|__main__)"),
    (5, r"docstore\.testing(\..*)?"),
]
# The two cores and the two halves built on them stay apart.
APART = [("docstore.postgres", "docstore.redis"), ("docstore.repositories", "docstore.ephemeral")]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
    return {
        _module_name(path): ast.parse(path.read_text(), str(path)) for path in PACKAGE.rglob("*.py")
    }


def _imports(tree: ast.Module, known: set[str]) -> set[str]:
    """docstore modules imported anywhere in `tree` (a `from x import y` names x.y if a module)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("docstore"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("docstore"):
            module = str(node.module)
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known)
    return found & known


def _layer(module: str) -> int:
    for layer, pattern in LAYERS:
        if re.fullmatch(pattern, module):
            return layer
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(tree, known) - {name} for name, tree in modules.items()}


def test_every_module_has_a_layer() -> None:
    graph = _graph()
    for module in graph:
        _layer(module)
    # The scan sees real imports (so the tests below can fail).
    assert "docstore.postgres.executor" in graph["docstore.store"]
    assert "docstore.redis.core" in graph["docstore.ephemeral.cache"]


def test_imports_only_point_down() -> None:
    upward = sorted(
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(module)
    )
    assert upward == []


@pytest.mark.parametrize(("one", "other"), APART)
def test_the_halves_do_not_import_each_other(one: str, other: str) -> None:
    def inside(module: str, prefix: str) -> bool:
        return module == prefix or module.startswith(prefix + ".")

    crossing = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in targets
        if (inside(module, one) and inside(target, other))
        or (inside(module, other) and inside(target, one))
    )
    assert crossing == []


def test_no_import_cycles() -> None:
    edges = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_only_the_postgres_core_touches_connections_and_cursors() -> None:
    touching = re.compile(r"\.cursor\(|psycopg\.connect\(|\.getconn\(|\bcur\.copy\(")
    allowed = {PACKAGE / "postgres", PACKAGE / "testing"}
    offenders = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if not any(folder in path.parents for folder in allowed)
        and touching.search(path.read_text())
    )
    assert offenders == []


def test_every_folder_says_what_it_holds_and_may_import() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 80, f"{init.relative_to(PACKAGE)} needs a docstring"
