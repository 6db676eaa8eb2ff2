"""Turn psycopg and psycopg_pool exceptions into `docstore.errors`, in one place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg_pool

from docstore.errors import (
    ConfigurationError,
    Conflict,
    DatabaseError,
    DocstoreError,
    InvalidInput,
    ServiceUnavailable,
)

# SQLSTATE classes: 22 data exception, 23 integrity constraint violation.
_INPUT_CLASSES = ("22", "23")
# 08 connection exception, 53 insufficient resources, 57 operator intervention (shutdown,
# statement timeout), 58 system error.
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58")
# PgBouncer's answer to a startup packet with `options` (or another parameter it does not track).
_STARTUP_REFUSED = "unsupported startup parameter"
# 26000 invalid_sql_statement_name, 42P05 duplicate_prepared_statement: what prepared
# statements do when a pooler hands one client's server connection to another.
_PREPARED_STATEMENT_STATES = ("26000", "42P05")


def database_error(exc: psycopg.Error, address: str) -> DocstoreError:
    """The docstore error for one psycopg error (message without credentials)."""
    sqlstate = exc.sqlstate or ""
    diag = exc.diag
    text = str(exc).strip()
    detail = diag.message_primary or (text.splitlines()[0] if text else type(exc).__name__)
    if _STARTUP_REFUSED in text:
        refused = text[text.index(_STARTUP_REFUSED) :].splitlines()[0]
        return ConfigurationError(
            f"the server at {address} refused a startup parameter ({refused}): behind PgBouncer "
            "or another pooler in transaction mode, set DATABASE_POOLER=transaction"
        )
    if sqlstate in _PREPARED_STATEMENT_STATES:
        return DatabaseError(
            f"PostgreSQL error {sqlstate}: {detail} (a server-side prepared statement went "
            "missing: behind a pooler in transaction mode, set DATABASE_POOLER=transaction, "
            "and DATABASE_POOLER_PREPARED only for one that keeps them, PgBouncer 1.21+ with "
            "max_prepared_statements)"
        )
    if isinstance(exc, psycopg.errors.UniqueViolation | psycopg.errors.ExclusionViolation):
        constraint = diag.constraint_name
        return Conflict(
            f"conflicts with an existing row ({constraint})", constraint_name=constraint
        )
    if not sqlstate and isinstance(exc, psycopg.DataError):
        # psycopg refused a parameter before sending it (a NUL in text): nothing ran.
        return InvalidInput(f"PostgreSQL cannot take this value: {detail}")
    if sqlstate.startswith("54") and "tsvector" in detail:
        return InvalidInput(
            f"the text is too long for the full-text search index ({detail})", field="text"
        )
    if _is_tsquery_refusal(sqlstate, detail):
        return InvalidInput(f"PostgreSQL cannot parse it as a web search ({detail})", field="query")
    if sqlstate.startswith(_INPUT_CLASSES):
        constraint = diag.constraint_name
        return InvalidInput(
            f"refused by the database: {detail}",
            field=diag.column_name or _column_of(constraint, diag.table_name),
            constraint=constraint,
        )
    if isinstance(exc, psycopg.OperationalError) or sqlstate.startswith(_UNAVAILABLE_CLASSES):
        return ServiceUnavailable(
            f"PostgreSQL at {address} is unavailable: {detail}",
            service="postgresql",
            address=address,
        )
    return DatabaseError(f"PostgreSQL error {sqlstate or '?'}: {detail}")


def _column_of(constraint: str | None, table: str | None) -> str | None:
    """The column a constraint named by PostgreSQL's convention (`<table>_<column>_check`,
    `..._fkey`, `..._key`) is about."""
    if not constraint or not table or not constraint.startswith(f"{table}_"):
        return None
    for suffix in ("_check", "_fkey", "_key"):
        if constraint.endswith(suffix):
            return constraint[len(table) + 1 : -len(suffix)] or None
    return None


def _is_tsquery_refusal(sqlstate: str, detail: str) -> bool:
    """True for PostgreSQL failing on a text search query rather than on the statement or server.

    54: program limit exceeded ("tsquery is too large", "stack depth limit exceeded"); the
    tsquery parser's own stack overflow is an internal error (XX000) or a syntax error (42601).
    """
    return sqlstate.startswith("54") or (sqlstate in ("XX000", "42601") and "tsquery" in detail)


@contextmanager
def wrap_database_errors(address: str) -> Iterator[None]:
    """Re-raise psycopg and pool errors as docstore errors, chained to the original."""
    try:
        yield
    except psycopg_pool.PoolTimeout as exc:
        raise ServiceUnavailable(
            f"no PostgreSQL connection to {address} within the pool timeout",
            service="postgresql",
            address=address,
        ) from exc
    except psycopg.Error as exc:
        raise database_error(exc, address) from exc
    except UnicodeEncodeError as exc:
        # Text that skipped validation (e.g. a model made with `model_construct`) and holds a
        # lone surrogate: psycopg cannot encode the parameter, nothing reached the server.
        raise InvalidInput(
            "text holds a lone surrogate, which UTF-8 cannot encode", field="text"
        ) from exc


__all__ = ["database_error", "wrap_database_errors"]
