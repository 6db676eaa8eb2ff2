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
from yoyo.exceptions import LockTimeout

from docstore.errors import ConfigurationError, RollbackRefused, SchemaError
from docstore.postgres.errors import database_error
from docstore.resources import migrations_dir
from docstore.rules import Flag, PositiveInt, check
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
    shipped: bool = True


def _yoyo_url(settings: Settings, *, confirm_destroy: bool) -> str:
    """The URL yoyo connects with: the connect timeout and a name for the session, and with
    `confirm_destroy`, `-c docstore.confirm_destroy=yes` in its options (libpq's `options`,
    which replaces PGOPTIONS, so those are kept too)."""
    parts = urlsplit(settings.yoyo_url)
    args = dict(parse_qsl(parts.query))
    args.setdefault("connect_timeout", str(max(2, round(settings.connect_timeout))))
    args.setdefault("application_name", "docstore-schema")
    if confirm_destroy:
        if settings.database_pooler == "transaction":
            # The confirmation travels as a startup option, which a transaction pooler refuses
            # (and a SET would not outlive its transaction there).
            raise ConfigurationError(
                "a confirmed rollback needs a direct connection to PostgreSQL, not a "
                "transaction pooler: give the server's own URL and DATABASE_POOLER=none"
            )
        options = args.get("options", os.environ.get("PGOPTIONS", ""))
        args["options"] = f"{options} -c {CONFIRM_DESTROY_SETTING}=yes".strip()
    return urlunsplit(parts._replace(query=urlencode(args)))


@contextmanager
def _backend(settings: Settings, *, confirm_destroy: bool = False) -> Iterator[Any]:
    url = _yoyo_url(settings, confirm_destroy=confirm_destroy)
    address = settings.database_address
    try:
        backend = get_backend(url)
    except psycopg.Error as exc:
        raise database_error(exc, address) from exc
    except Exception as exc:
        raise ConfigurationError(f"DATABASE_URL: {type(exc).__name__}: {exc}") from exc
    if settings.database_pooler == "transaction" and not settings.database_pooler_prepared:
        # yoyo's own queries repeat: psycopg would prepare them on a server connection that
        # the pooler then hands to another client.
        backend.connection.prepare_threshold = None
    try:
        yield backend
    except psycopg.Error as exc:
        raise database_error(exc, address) from exc
    finally:
        backend.connection.close()


@contextmanager
def _locked(backend: Any) -> Iterator[None]:
    """yoyo's lock (a row in its lock table) for the block; held too long, a `SchemaError`."""
    try:
        with backend.lock(_LOCK_TIMEOUT_SECONDS):
            yield
    except LockTimeout as exc:
        raise SchemaError(
            f"another schema command has held the migration lock for {_LOCK_TIMEOUT_SECONDS} s "
            f"({exc}). If none runs (one was killed), `docstore schema break-lock` removes it"
        ) from exc


def break_schema_lock(settings: Settings) -> int:
    """Remove yoyo's migration lock, left behind by a schema command that was killed; the
    number of lock rows removed. Only when no schema command runs."""
    with _backend(settings) as backend:
        table = backend.lock_table_quoted
        if not _table_exists(backend, table):
            return 0
        count = f"SELECT count(*) FROM {table}"  # noqa: S608 - yoyo's own quoted name
        held = int(backend.execute(count).fetchone()[0])
        backend.break_lock()
        return held


def _table_exists(backend: Any, table: str) -> bool:
    """Whether yoyo's table `table` (quoted) exists yet (a database never migrated has none)."""
    return bool(backend.execute(f"SELECT to_regclass('{table}') IS NOT NULL").fetchone()[0])


def _not_shipped(backend: Any) -> list[str]:
    """Ids of applied migrations this package does not ship (a newer docstore applied them)."""
    table = backend.migration_table_quoted
    if not _table_exists(backend, table):
        return []
    shipped = {m.id for m in _migrations()}
    ids = f"SELECT migration_id FROM {table} ORDER BY applied_at_utc"  # noqa: S608 - as above
    applied = backend.execute(ids)
    return [row[0] for row in applied.fetchall() if row[0] not in shipped]


def _migrations() -> Any:
    return read_migrations(str(migrations_dir()))


def apply_schema(settings: Settings) -> list[str]:
    """Apply every pending migration (idempotent); return the ids applied now."""
    with _backend(settings) as backend, _locked(backend):
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
    if count is not None:
        count = check(PositiveInt, count, "count")
    # True or False only: a truthy "no" must never confirm destroying data.
    confirm_destroy = check(Flag, confirm_destroy, "confirm_destroy")
    with _backend(settings, confirm_destroy=confirm_destroy) as backend, _locked(backend):
        newer = _not_shipped(backend)
        if newer:
            raise SchemaError(
                f"the database holds migrations this docstore does not ship ({', '.join(newer)}):"
                " roll back with the docstore version that applied them"
            )
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
    """Every shipped migration, in order, with whether it is applied; then any applied
    migration this package does not ship (`shipped=False`: a newer docstore applied it)."""
    with _backend(settings) as backend:
        shipped = [MigrationStatus(m.id, backend.is_applied(m)) for m in _migrations()]
        return shipped + [MigrationStatus(id, True, shipped=False) for id in _not_shipped(backend)]
