"""The psycopg connection pools docstore opens when the caller brings none."""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg_pool

from docstore.errors import ServiceUnavailable
from docstore.postgres.errors import database_error
from docstore.settings import Settings


def connection_options(settings: Settings, *, name: str = "docstore") -> dict[str, Any]:
    """The keyword arguments of every connection docstore opens (the pools' and the probe's).

    Behind a transaction pooler (`DATABASE_POOLER=transaction`) a server connection serves
    another client at the next transaction, so nothing may live in the session: no startup
    options (PgBouncer refuses them), and no server-side prepared statements
    (`prepare_threshold=None`: psycopg then never prepares). TimeZone and statement_timeout are
    then the role's (`ALTER ROLE ... SET`, see docs/scaling.md); timestamps come back in UTC
    either way, since the models convert them.
    """
    options: dict[str, Any] = {
        "connect_timeout": max(2, round(settings.connect_timeout)),
        "application_name": name,
    }
    if settings.database_pooler == "transaction":
        options["prepare_threshold"] = None
        return options
    # Sessions in UTC: timestamps come back timezone-aware in UTC with no conversion.
    server_options = "-c TimeZone=UTC"
    if settings.statement_timeout_ms:
        server_options += f" -c statement_timeout={settings.statement_timeout_ms}"
    options["options"] = server_options
    return options


def new_pool(
    settings: Settings,
    *,
    name: str = "docstore",
    url: str | None = None,
    min_size: int | None = None,
) -> psycopg_pool.AsyncConnectionPool:
    """A closed pool configured from `settings`; the caller opens and closes it.

    `url` (default: the primary's) and `min_size` serve the replica's pool.
    """
    return psycopg_pool.AsyncConnectionPool(
        url or settings.database_url,
        min_size=settings.pool_min_size if min_size is None else min_size,
        max_size=settings.pool_max_size,
        timeout=settings.pool_timeout,
        kwargs=connection_options(settings, name=name),
        # Like the old design's pre-ping: a connection is checked before it is handed out.
        check=psycopg_pool.AsyncConnectionPool.check_connection,
        # After an outage, retry a lost connection at least this often: psycopg_pool's backoff
        # otherwise doubles up to minutes, and callers time out long after PostgreSQL is back.
        reconnect_timeout=settings.pool_timeout,
        open=False,
        name=name,
    )


async def open_pool(pool: psycopg_pool.AsyncConnectionPool, settings: Settings) -> None:
    """Open `pool`, failing within the connect timeout when PostgreSQL is down.

    One direct connection first, made like the pool's: its error says why (refused, auth,
    unknown database, a startup option a pooler refuses), which a pool timeout would hide.
    """
    address = settings.database_address
    try:
        kwargs = pool.kwargs if isinstance(pool.kwargs, dict) else {}
        conninfo = pool.conninfo if isinstance(pool.conninfo, str) else settings.database_url
        probe = await psycopg.AsyncConnection.connect(conninfo, **kwargs)
        await probe.close()
    except psycopg.Error as exc:
        raise database_error(exc, address) from exc
    try:
        await pool.open(wait=True, timeout=settings.connect_timeout + 1)
    except psycopg_pool.PoolTimeout as exc:
        await pool.close()
        raise ServiceUnavailable(
            f"PostgreSQL at {address} did not accept {pool.min_size} connections in time",
            service="postgresql",
            address=address,
        ) from exc


__all__ = ["connection_options", "new_pool", "open_pool"]
