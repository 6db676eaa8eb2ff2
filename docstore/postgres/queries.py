"""Named SQL queries, parsed once from the `.sql` files under `sql/`.

A file holds any number of queries, each introduced by a header and a one-line description::

    -- name: get_user
    -- Fetch one user by id.
    SELECT ... WHERE id = %(id)s;

Parameters are psycopg's `%(name)s` placeholders, or `%(name)b` for a value sent in binary (the
arrays: in text format psycopg escapes each element, 11 µs a bytea); a query's declared
parameters are read from its text so that a call with missing or extra parameters fails at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from typing_extensions import LiteralString

from docstore.errors import ConfigurationError, InvalidInput
from docstore.resources import sql_dir

_HEADER = re.compile(r"^--\s*name:\s*(?P<name>\S*)\s*$")
_VALID_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
# `%(name)s`, or `%(name)b` for a value sent in binary (arrays: no per-element text escaping).
_PARAM = re.compile(r"(?<!%)%\((?P<name>[A-Za-z_][A-Za-z0-9_]*)\)[sb]")


@dataclass(frozen=True, slots=True)
class Query:
    """One named statement and where it was written."""

    name: str
    sql: LiteralString
    description: str
    params: frozenset[str]
    source: str

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raise `InvalidInput` when `params` does not match the declared parameters."""
        try:
            given = params.keys()
        except AttributeError:
            raise InvalidInput(
                f"query {self.name!r}: params must be a mapping of its parameters", field="params"
            ) from None
        if given != self.params:
            missing = sorted(self.params - given)
            extra = sorted(given - self.params)
            raise InvalidInput(
                f"query {self.name!r} ({self.source}): missing {missing}, extra {extra}",
                field="params",
            )


def _new_query(name: str, lines: list[str], source: str) -> Query:
    if not _VALID_NAME.match(name):
        raise ConfigurationError(f"{source}: query name {name!r} is empty or not snake_case")
    description = ""
    if lines and lines[0].lstrip().startswith("--"):
        description = lines[0].lstrip()[2:].strip()
    sql = "\n".join(lines).strip()
    body = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("--")]
    if not body:
        raise ConfigurationError(f"{source}: query {name!r} has no SQL")
    if not description:
        raise ConfigurationError(f"{source}: query {name!r} needs a one-line -- description")
    params = frozenset(m.group("name") for m in _PARAM.finditer(sql))
    # The text comes from files shipped with the package, never from input: a LiteralString.
    return Query(name, sql, description, params, source)


def parse_sql(text: str, filename: str) -> list[Query]:
    """Parse one `.sql` file into its queries; errors name the file and line."""
    queries: list[Query] = []
    name: str | None = None
    start = 0
    lines: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line.strip())
        if header:
            if name is not None:
                queries.append(_new_query(name, lines, f"{filename}:{start}"))
            name, start, lines = header.group("name"), number, []
        elif name is not None:
            lines.append(line)
        elif line.strip() and not line.lstrip().startswith("--"):
            raise ConfigurationError(f"{filename}:{number}: SQL before the first -- name: header")
    if name is not None:
        queries.append(_new_query(name, lines, f"{filename}:{start}"))
    return queries


def load_queries(folder: Path) -> dict[str, Query]:
    """Parse every `*.sql` file of `folder`; a name defined twice fails with both places."""
    found: dict[str, Query] = {}
    for path in sorted(folder.glob("*.sql")):
        for query in parse_sql(path.read_text(encoding="utf-8"), path.name):
            if query.name in found:
                raise ConfigurationError(
                    f"{query.source}: query {query.name!r} already defined at "
                    f"{found[query.name].source}"
                )
            found[query.name] = query
    return found


@cache
def queries() -> Mapping[str, Query]:
    """The shipped queries, parsed once per process."""
    return load_queries(sql_dir())
