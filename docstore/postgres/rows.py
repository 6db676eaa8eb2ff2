"""Build output models from rows of our own SQL without re-validating them.

`psycopg.rows.class_row(Model)` runs pydantic validation on every row (3 µs or more for a
document: on a page of 50 that costs as much as the query). Rows of docstore's named queries are
already typed by PostgreSQL (bigint → int, text → str, timestamptz → aware datetime, ...), so
`fetch_model` / `fetch_models` build the models directly, the way `BaseModel.model_construct`
does, several times faster. What they still guarantee:

- the columns are exactly the model's fields (checked on the first run of each query, so SQL
  and model cannot drift apart silently);
- timestamps are in UTC: psycopg returns them in the session's TimeZone, so when that zone is
  not UTC they are converted.

Models with nested JSON (`UserWithDocuments`, `DocumentWithUser`) keep full validation, since
JSON carries timestamps as strings.

A repository call that is one statement runs it on a pooled connection in autocommit mode
(`autocommit_connection`): a single statement is atomic by itself, and BEGIN plus COMMIT would
double its round trips. Calls given a caller's `conn` run in the caller's transaction as is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timezone
from typing import Any, TypeVar

import psycopg
from psycopg.rows import BaseRowFactory, RowMaker
from pydantic import BaseModel

from docstore.postgres.executor import Database

Model = TypeVar("Model", bound=BaseModel)
R = TypeVar("R")

_TIMESTAMPTZ_OID = 1184
_UTC = timezone.utc
# Session TimeZone settings in which psycopg returns timestamps already at offset zero.
_UTC_SETTINGS = frozenset(
    {b"UTC", b"Etc/UTC", b"Etc/UCT", b"UCT", b"Universal", b"Etc/Universal", b"GMT", b"Etc/GMT"}
)

RowBuilder = Callable[[Sequence[Any]], Any]
# (model, query name, session in UTC) -> (number of columns, row builder); built on first use.
_builders: dict[tuple[type[BaseModel], str, bool], tuple[int, RowBuilder]] = {}


def _check_columns(model: type[BaseModel], names: tuple[str, ...]) -> None:
    expected = model.model_fields.keys()
    if len(names) != len(expected) or set(names) != expected:
        raise TypeError(
            f"columns {sorted(names)} do not match the fields of {model.__name__}: "
            f"{sorted(expected)}"
        )


def _new_builder(model: type[Model], result: Any, session_in_utc: bool) -> tuple[int, RowBuilder]:
    count = result.nfields if result is not None else 0
    names = tuple(result.fname(i).decode() for i in range(count))
    _check_columns(model, names)
    stamps = (
        ()
        if session_in_utc
        else tuple(i for i in range(count) if result.ftype(i) == _TIMESTAMPTZ_OID)
    )
    fields_set = set(names)
    new = model.__new__
    setattr_ = object.__setattr__

    def build(values: Sequence[Any]) -> Model:
        if stamps:
            values = list(values)
            for i in stamps:
                if values[i] is not None:
                    values[i] = values[i].astimezone(_UTC)
        instance = new(model)
        # What BaseModel.model_construct sets, without its per-field Python loop.
        setattr_(instance, "__dict__", dict(zip(names, values, strict=False)))
        # Shared by the rows: it holds every field, and pydantic only ever adds field names to
        # it in place (model_copy copies it first), so it never changes.
        setattr_(instance, "__pydantic_fields_set__", fields_set)
        setattr_(instance, "__pydantic_extra__", None)
        setattr_(instance, "__pydantic_private__", None)
        return instance

    return count, build


def model_row(model: type[Model], query_name: str) -> BaseRowFactory[Model]:
    """A psycopg row factory making `model` instances from rows of the named query."""

    def for_cursor(cursor: Any) -> RowMaker[Model]:  # any psycopg cursor
        result = cursor.pgresult
        in_utc = cursor.connection.pgconn.parameter_status(b"TimeZone") in _UTC_SETTINGS
        key = (model, query_name, in_utc)
        cached = _builders.get(key)
        if cached is None or result is None or result.nfields != cached[0]:
            cached = _builders[key] = _new_builder(model, result, in_utc)
        return cached[1]

    return for_cursor


@contextmanager
def autocommit_connection(
    db: Database, conn: psycopg.Connection[Any] | None = None
) -> Iterator[psycopg.Connection[Any]]:
    """The caller's connection as is, or a pooled one in autocommit for a single statement;
    driver errors become docstore errors either way.

    The pooled connection goes back to the pool as it came (autocommit off, unless the pool's
    owner configured it on), or closed (so the pool replaces it) when that cannot be done.
    """
    if conn is not None:
        with db.connection(conn) as caller_conn:
            yield caller_conn
        return
    with db.connection() as pooled:
        if pooled.autocommit:  # a pool the caller configured so: leave it as it is
            yield pooled
            return
        pooled.autocommit = True
        try:
            yield pooled
        finally:
            _end_autocommit(pooled)


def _end_autocommit(conn: psycopg.Connection[Any]) -> None:
    if conn.closed or conn.broken:
        return  # the pool discards it
    try:
        conn.autocommit = False
    except psycopg.Error:
        conn.close()  # never hand the pool a connection that would not open transactions


def _run_rows(
    db: Database,
    name: str,
    params: Mapping[str, Any],
    model: type[Model],
    conn: psycopg.Connection[Any] | None,
    take: Callable[[psycopg.Cursor[Model]], R],
) -> R:
    query = db.query(name, params)
    with (
        autocommit_connection(db, conn) as c,
        c.cursor(row_factory=model_row(model, name)) as cur,
    ):
        db.run(cur, query, params)
        return take(cur)


def fetch_models(
    db: Database,
    name: str,
    params: Mapping[str, Any],
    model: type[Model],
    conn: psycopg.Connection[Any] | None = None,
) -> list[Model]:
    """All rows of the named query as `model`, built by `model_row`."""
    return _run_rows(db, name, params, model, conn, lambda cur: cur.fetchall())


def fetch_model(
    db: Database,
    name: str,
    params: Mapping[str, Any],
    model: type[Model],
    conn: psycopg.Connection[Any] | None = None,
) -> Model | None:
    """The first row of the named query as `model`, or None."""
    return _run_rows(db, name, params, model, conn, lambda cur: cur.fetchone())


__all__ = ["autocommit_connection", "fetch_model", "fetch_models", "model_row"]
