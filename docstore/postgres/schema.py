"""Apply, roll back and report the yoyo migrations shipped in `migrations/`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from yoyo import get_backend, read_migrations

from docstore.errors import SchemaError, ServiceUnavailable
from docstore.resources import migrations_dir
from docstore.settings import Settings

_LOCK_TIMEOUT_SECONDS = 60


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """One migration and whether it is applied."""

    id: str
    applied: bool


@contextmanager
def _backend(settings: Settings) -> Iterator[Any]:
    try:
        backend = get_backend(settings.yoyo_url)
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


def rollback_schema(settings: Settings, *, count: int | None = 1) -> list[str]:
    """Roll back the last `count` applied migrations (all when None); return their ids."""
    if count is not None and count < 1:
        raise SchemaError("count must be at least 1")
    with _backend(settings) as backend, backend.lock(_LOCK_TIMEOUT_SECONDS):
        applied = backend.to_rollback(_migrations())
        chosen = applied if count is None else applied[:count]
        try:
            backend.rollback_migrations(chosen)
        except Exception as exc:
            raise SchemaError(
                f"rolling back migrations failed: {type(exc).__name__}: {exc}"
            ) from exc
        return [m.id for m in chosen]


def schema_status(settings: Settings) -> list[MigrationStatus]:
    """Every shipped migration, in order, with whether it is applied."""
    with _backend(settings) as backend:
        return [MigrationStatus(m.id, backend.is_applied(m)) for m in _migrations()]
