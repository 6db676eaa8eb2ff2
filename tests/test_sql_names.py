"""Every query name the code runs exists in sql/, and every query in sql/ is used somewhere."""

from __future__ import annotations

import ast
from pathlib import Path

import docstore
from docstore.queries import queries

PACKAGE = Path(docstore.__file__).resolve().parent
# Database methods whose first argument is a query name.
QUERY_METHODS = {
    "fetch_one",
    "fetch_all",
    "fetch_rows",
    "fetch_value",
    "execute",
    "execute_many",
    "query",
}


def _trees() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in PACKAGE.rglob("*.py")]


def _names_passed_to_database() -> dict[str, str]:
    """Literal first arguments of `....db.fetch_one("name", ...)`-style calls, with a place."""
    found: dict[str, str] = {}
    for path, tree in _trees():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in QUERY_METHODS
                and isinstance(node.func.value, ast.Attribute | ast.Name)
                and (getattr(node.func.value, "attr", None) or getattr(node.func.value, "id", ""))
                in {"db", "database", "self"}
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.setdefault(node.args[0].value, f"{path.name}:{node.lineno}")
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
    assert {"insert_user", "claim_next_document", "search_documents"} <= used.keys()


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
