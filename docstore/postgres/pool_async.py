"""The psycopg connection pools docstore opens when the caller brings none."""

from __future__ import annotations

import select
import time
import weakref
from typing import Any

import psycopg
import psycopg_pool
from psycopg import pq

from docstore.errors import ServiceUnavailable
from docstore.postgres.errors import database_error
from docstore.settings import Settings


def connection_options(settings: Settings, *, name: str = "docstore") -> dict[str, Any]:
    """The keyword arguments of every connection docstore opens (the pools' and the probe's).

    Behind a transaction pooler (`DATABASE_POOLER=transaction`) a server connection serves
    another client at the next transaction, so nothing may live in the session: no startup
    options (PgBouncer refuses them), and no server-side prepared statements
    (`prepare_threshold=None`: psycopg then never prepares) unless the pooler keeps them itself
    (`DATABASE_POOLER_PREPARED`: PgBouncer 1.21 and later with `max_prepared_statements`, which
    re-prepares psycopg's protocol-level statements on whichever server connection it uses).
    TimeZone and statement_timeout are then the role's (`ALTER ROLE ... SET`, see
    docs/scaling.md); timestamps come back in UTC either way, since the models convert them.
    """
    options: dict[str, Any] = {
        "connect_timeout": max(2, round(settings.connect_timeout)),
        "application_name": name,
    }
    if settings.database_pooler == "transaction":
        if not settings.database_pooler_prepared:
            options["prepare_threshold"] = None
        return options
    # Sessions in UTC: timestamps come back timezone-aware in UTC with no conversion.
    server_options = "-c TimeZone=UTC"
    if settings.statement_timeout_ms:
        server_options += f" -c statement_timeout={settings.statement_timeout_ms}"
    options["options"] = server_options
    return options


Connection = psycopg.AsyncConnection[Any]


class AsyncCheckedPool(psycopg_pool.AsyncConnectionPool[Connection]):
    """A pool that checks a connection before handing it out, by a round trip only when needed.

    Like the old design's pre-ping, a connection is checked on checkout, but the empty round
    trip (`check_connection`) is made only for a connection that sat in the pool for
    `check_idle_after` seconds or more, was never handed out, or whose socket has something
    to read. A connection the server closed (restart, `pg_terminate_backend`, an idle timeout,
    a pooler letting go) has: its end of file or the server's last message is waiting there,
    so it is found without a round trip; one lost silently (a network path gone, no FIN) is
    found by the round trip once idle long enough, and before that fails its statement with
    the typed error of an outage. `check_idle_after=0` checks every checkout, as before.
    """

    def __init__(self, *args: Any, check_idle_after: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, check=self._check_before_use, **kwargs)
        self.check_idle_after = check_idle_after
        # When each connection last came back (weak: a connection the pool drops is forgotten).
        self._returned_at: weakref.WeakKeyDictionary[Connection, float] = (
            weakref.WeakKeyDictionary()
        )
        self.round_trip_checks = 0  # checks that needed the round trip (for tests and stats)

    async def putconn(self, conn: Connection) -> None:
        """Return `conn` to the pool, noting when."""
        self._returned_at[conn] = time.monotonic()
        await super().putconn(conn)

    async def _check_before_use(self, conn: Connection) -> None:
        returned_at = self._returned_at.get(conn)
        if (
            returned_at is not None
            and time.monotonic() - returned_at < self.check_idle_after
            and conn.pgconn.status == pq.ConnStatus.OK
            and not _has_input(conn.pgconn.socket)
        ):
            return
        self.round_trip_checks += 1
        await psycopg_pool.AsyncConnectionPool.check_connection(conn)


def _has_input(fd: int) -> bool:
    """Whether an idle connection's socket is readable (data, end of file or an error): an idle
    connection is sent nothing unless the server is closing it (or a LISTEN's notification,
    which the round trip then reads)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)  # Windows: no poll
    return bool(readable)


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
    return AsyncCheckedPool(
        url or settings.database_url,
        min_size=settings.pool_min_size if min_size is None else min_size,
        max_size=settings.pool_max_size,
        timeout=settings.pool_timeout,
        # Autocommit: most statements run alone (a statement is atomic by itself), and each
        # would otherwise switch it on and off again, 5 us a statement; units of work open
        # their own transaction (`AsyncDatabase.transaction` / `connection`).
        kwargs={**connection_options(settings, name=name), "autocommit": True},
        check_idle_after=settings.pool_check_idle_after,
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
    A pool that did not fill in time is closed (psycopg_pool's `wait` does it) and can never
    open again: a caller who wants to retry makes a new one.
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
        raise ServiceUnavailable(
            f"PostgreSQL at {address} did not accept {pool.min_size} connections in time",
            service="postgresql",
            address=address,
        ) from exc


__all__ = ["AsyncCheckedPool", "connection_options", "new_pool", "open_pool"]
