"""Apply, roll back and report the yoyo migrations shipped in `migrations/`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from yoyo import get_backend, read_migrations

from docstore.errors import RollbackRefused, SchemaError, ServiceUnavailable
from docstore.resources import migrations_dir
from docstore.settings import Settings

_LOCK_TIMEOUT_SECONDS = 60
# The session setting the rollback files read, and the SQLSTATE they raise when it is not 'yes'
# and the tables they would drop or alter hold rows.
CONFIRM_DESTROY_SETTING = "docstore.confirm_destroy"
_REFUSED_SQLSTATE = "55R01"


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """One migration and whether it is applied."""

    id: str
    applied: bool


def _confirmed_url(url: str) -> str:
    """`url` with `-c docstore.confirm_destroy=yes` added to the session options.

    yoyo runs each migration on a new connection made from the URL, so the setting travels in
    it (libpq's `options`, which replaces PGOPTIONS, so those are kept too).
    """
    parts = urlsplit(url)
    args = dict(parse_qsl(parts.query))
    options = args.get("options", os.environ.get("PGOPTIONS", ""))
    args["options"] = f"{options} -c {CONFIRM_DESTROY_SETTING}=yes".strip()
    return urlunsplit(parts._replace(query=urlencode(args)))


@contextmanager
def _backend(settings: Settings, *, confirm_destroy: bool = False) -> Iterator[Any]:
    url = _confirmed_url(settings.yoyo_url) if confirm_destroy else settings.yoyo_url
    try:
        backend = get_backend(url)
    except Exception as exc:
        raise ServiceUnavailable(
            f"PostgreSQL at {settings.database_address} is unavailable for migrations: "
            f"{type(exc).__name__}",
            service="postgresql",
            address=settings.database_address,
        ) from exc
    try:
        yield backend
    finally:
        backend.connection.close()


def _migrations() -> Any:
    return read_migrations(str(migrations_dir()))


def apply_schema(settings: Settings) -> list[str]:
    """Apply every pending migration (idempotent); return the ids applied now."""
    with _backend(settings) as backend, backend.lock(_LOCK_TIMEOUT_SECONDS):
        pending = backend.to_apply(_migrations())
        try:
            backend.apply_migrations(pending)
        except Exception as exc:
            raise SchemaError(f"applying migrations failed: {type(exc).__name__}: {exc}") from exc
        return [m.id for m in pending]


def rollback_schema(
    settings: Settings, *, count: int | None = 1, confirm_destroy: bool = False
) -> list[str]:
    """Roll back the last `count` applied migrations (all when None); return their ids.

    A rollback that would drop or alter tables holding rows raises `RollbackRefused` unless
    `confirm_destroy` is true; the migrations before it stay rolled back (they destroyed nothing).
    """
    if count is not None and count < 1:
        raise SchemaError("count must be at least 1")
    with (
        _backend(settings, confirm_destroy=confirm_destroy) as backend,
        backend.lock(_LOCK_TIMEOUT_SECONDS),
    ):
        applied = backend.to_rollback(_migrations())
        chosen = applied if count is None else applied[:count]
        done: list[str] = []
        for migration in chosen:
            _rollback_one(backend, migration, done)
            done.append(migration.id)
        return done


def _rollback_one(backend: Any, migration: Any, done: list[str]) -> None:
    """Roll back one migration (its own transaction), so a refusal can say what went before."""
    try:
        backend.rollback_migrations([migration])
    except Exception as exc:
        if isinstance(exc, psycopg.Error) and exc.diag.sqlstate == _REFUSED_SQLSTATE:
            before = f" (rolled back before refusing: {', '.join(done)})" if done else ""
            raise RollbackRefused(
                f"{exc.diag.message_primary}{before}", rolled_back=list(done)
            ) from exc
        raise SchemaError(
            f"rolling back {migration.id} failed: {type(exc).__name__}: {exc}"
        ) from exc


def schema_status(settings: Settings) -> list[MigrationStatus]:
    """Every shipped migration, in order, with whether it is applied."""
    with _backend(settings) as backend:
        return [MigrationStatus(m.id, backend.is_applied(m)) for m in _migrations()]
