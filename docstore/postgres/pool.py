# Generated from docstore/postgres/pool_async.py by tools/async_to_sync.py:
# edit that file, then run the script (CI fails when this file is stale).
"""The psycopg connection pool docstore opens when the caller brings none."""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg_pool

from docstore.errors import ServiceUnavailable
from docstore.postgres.errors import database_error
from docstore.settings import Settings


def new_pool(settings: Settings, *, name: str = "docstore") -> psycopg_pool.ConnectionPool:
    """A closed pool configured from `settings`; the caller opens and closes it."""
    options: dict[str, Any] = {
        "connect_timeout": max(2, round(settings.connect_timeout)),
        "application_name": name,
    }
    # Sessions in UTC: timestamps come back timezone-aware in UTC with no conversion.
    server_options = "-c TimeZone=UTC"
    if settings.statement_timeout_ms:
        server_options += f" -c statement_timeout={settings.statement_timeout_ms}"
    options["options"] = server_options
    return psycopg_pool.ConnectionPool(
        settings.database_url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        timeout=settings.pool_timeout,
        kwargs=options,
        # Like the old design's pre-ping: a connection is checked before it is handed out.
        check=psycopg_pool.ConnectionPool.check_connection,
        # After an outage, retry a lost connection at least this often: psycopg_pool's backoff
        # otherwise doubles up to minutes, and callers time out long after PostgreSQL is back.
        reconnect_timeout=settings.pool_timeout,
        open=False,
        name=name,
    )


def open_pool(pool: psycopg_pool.ConnectionPool, settings: Settings) -> None:
    """Open `pool`, failing within the connect timeout when PostgreSQL is down.

    One direct connection first: its error says why (refused, auth, unknown database), which a
    pool timeout would hide.
    """
    address = settings.database_address
    try:
        probe = psycopg.Connection.connect(
            settings.database_url, connect_timeout=max(2, round(settings.connect_timeout))
        )
        probe.close()
    except psycopg.Error as exc:
        raise database_error(exc, address) from exc
    try:
        pool.open(wait=True, timeout=settings.connect_timeout + 1)
    except psycopg_pool.PoolTimeout as exc:
        pool.close()
        raise ServiceUnavailable(
            f"PostgreSQL at {address} did not accept {pool.min_size} connections in time",
            service="postgresql",
            address=address,
        ) from exc


__all__ = ["new_pool", "open_pool"]
