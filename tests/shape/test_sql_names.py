"""Every query name the code runs exists in sql/, and every query in sql/ is used somewhere."""

from __future__ import annotations

import ast
from pathlib import Path

import docstore
from docstore.postgres.queries import queries

PACKAGE = Path(docstore.__file__).resolve().parent
# Executor verbs whose first argument is a query name (and the lifecycle's `_write`, which runs
# one and tells the cache).
QUERY_METHODS = {"one", "all", "value", "execute", "copy", "query", "_write"}


def _trees() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in PACKAGE.rglob("*.py")]


def _query_name_argument(call: ast.Call) -> ast.expr | None:
    """The argument holding the query name in `db.one("name", ...)`, if `call` is such a call."""
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr in QUERY_METHODS:
        owner = func.value
        owner_name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
        if owner_name in {"db", "database", "self"} and call.args:
            return call.args[0]
    return None


def _names_passed_to_database() -> dict[str, str]:
    """Literal query names passed to the database helpers, with the place of first use."""
    found: dict[str, str] = {}
    for path, tree in _trees():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            argument = _query_name_argument(node)
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                found.setdefault(argument.value, f"{path.name}:{node.lineno}")
    return found


def _string_constants() -> set[str]:
    return {
        node.value
        for _, tree in _trees()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_the_scan_sees_the_repositories() -> None:
    used = _names_passed_to_database()
    assert {"insert_user", "claim_next_document", "search_documents", "server_version"} <= (
        used.keys()
    )


def test_every_query_name_the_code_uses_exists() -> None:
    defined = queries().keys()
    missing = {
        name: place for name, place in _names_passed_to_database().items() if name not in defined
    }
    assert missing == {}, f"queries used but not defined in sql/: {missing}"


def test_every_query_in_sql_is_used_by_the_code() -> None:
    constants = _string_constants()
    unused = sorted(
        f"{query.name} ({query.source})"
        for query in queries().values()
        if query.name not in constants
    )
    assert unused == [], f"queries defined in sql/ but never named in docstore/: {unused}"
