"""The operation and table of a named SQL statement, for the database span conventions
(`db.operation.name`, `db.collection.name`, `db.query.summary`), read once per query from its
text: never from parameter values, which the text does not hold."""

from __future__ import annotations

import re
from dataclasses import dataclass

_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_STRING = re.compile(r"'(?:[^']|'')*'")
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*|\(|\)")
_VERBS = ("SELECT", "INSERT", "UPDATE", "DELETE", "COPY", "MERGE")
_WRITES = ("INSERT", "UPDATE", "DELETE", "MERGE")
# Words after which a statement names a table.
_MARKERS = {"FROM", "INTO", "UPDATE", "JOIN", "COPY"}
_NOT_TABLES = {"SELECT", "LATERAL", "ONLY", "VALUES", "STDIN", "STDOUT"}


@dataclass(frozen=True, slots=True)
class SqlSummary:
    """`operation` (SELECT, ...), `collection` (the main table, or None) and their summary."""

    operation: str
    collection: str | None

    @property
    def summary(self) -> str:
        return f"{self.operation} {self.collection}" if self.collection else self.operation


def summarize(sql: str) -> SqlSummary:
    """The main statement's verb (the first at the top level: CTE bodies and subqueries are in
    parentheses) and the first table it names, else the first table named anywhere (a SELECT
    from CTEs names the table the CTEs read); a SELECT over a CTE that writes is that write."""
    tokens = _TOKEN.findall(_STRING.sub("''", _COMMENT.sub(" ", sql)))
    top: list[str] = []
    depth = 0
    for part in tokens:
        if part == ")":
            depth -= 1
        elif depth == 0:
            top.append(part)
        if part == "(":
            depth += 1
    words = [t.upper() for t in top]
    # WITH name AS (...), name AS MATERIALIZED (...): a name read like a table, not one.
    ctes = {
        top[i - 1].lower()
        for i, w in enumerate(words[:-1])
        if w == "AS" and i > 0 and (top[i + 1] == "(" or words[i + 1].endswith("MATERIALIZED"))
    }
    verb_at = next((i for i, w in enumerate(words) if w in _VERBS), None)
    if verb_at is None:
        return SqlSummary(words[0] if words else "SQL", None)
    if words[verb_at] == "SELECT" and ctes:
        # WITH x AS (UPDATE ...) SELECT ... FROM x: the statement is the write its CTE does.
        for i in range(1, len(tokens)):
            if tokens[i - 1] == "(" and tokens[i].upper() in _WRITES:
                return SqlSummary(tokens[i].upper(), _first_table(tokens[i:], ctes))
    table = _first_table(top[verb_at:], ctes) or _first_table(tokens, ctes)
    return SqlSummary(words[verb_at], table)


def _first_table(tokens: list[str], ctes: set[str]) -> str | None:
    for i in range(len(tokens) - 1):
        word = tokens[i].upper()
        if word not in _MARKERS or (i and tokens[i - 1].upper() in ("DISTINCT", "FOR")):
            continue  # IS DISTINCT FROM compares values; FOR UPDATE locks rows
        name = tokens[i + 1]
        # A name followed by "(" is a function, except the columns after INTO t or COPY t.
        called = word not in ("INTO", "COPY") and i + 2 < len(tokens) and tokens[i + 2] == "("
        plain = name != "(" and not called and name.upper() not in _NOT_TABLES
        if plain and name.lower() not in ctes:
            return name.lower()
    return None


__all__ = ["SqlSummary", "summarize"]
