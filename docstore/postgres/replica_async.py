"""`AsyncReplica`: a second pool on a streaming replica, for the reads that tolerate lag.

The executor (`docstore.postgres.executor`) asks it for a cursor for each query of
`docstore.postgres.routing.REPLICA_QUERIES`; it answers None — the executor then uses the
primary — while the replica is down or replays more than `max_lag` seconds behind. Its lag is
measured at most once per `check_interval` (one small query, on the call that finds the last
measure too old); a replica found down is tried again after five intervals. A change of state
is logged once, never raised: the primary can always answer these reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import psycopg
import psycopg_pool
from psycopg.rows import BaseRowFactory

from docstore._async_runtime import finish, take_or_cancel
from docstore.postgres.errors import database_error
from docstore.postgres.pool_async import connection_options
from docstore.postgres.queries import Query, queries
from docstore.settings import Settings

logger = logging.getLogger("docstore.replica")

State = Literal["unknown", "ok", "lagging", "down"]
# The executor's `_execute(cursor, query, params)` (logging and timing stay there).
Execute = Callable[..., Any]

# Errors after which a read is retried on the primary: the replica's connection is gone or the
# server is shutting down or starting (57P*), or replay cancelled the query (40001: conflict
# with recovery). Any other error is the query's own and is raised.
_FALLBACK_STATES = ("40001", "57P")
# A replica found down is tried again after this many check intervals.
_DOWN_RETRY_INTERVALS = 5


class AsyncReplica:
    """The replica's pool, its address and its last known state (shared by all threads)."""

    def __init__(
        self,
        pool: psycopg_pool.AsyncConnectionPool,
        *,
        address: str,
        max_lag: float = 5.0,
        check_interval: float = 1.0,
        timeout: float = 1.0,
    ) -> None:
        self.pool = pool
        self.address = address
        self.max_lag = max_lag
        self.check_interval = check_interval
        self.timeout = timeout
        self.state: State = "unknown"
        self.lag: float | None = None
        # Reads answered here, and lag-tolerant reads sent to the primary instead.
        self.reads = 0
        self.reads_on_primary = 0
        self._next_check = 0.0
        self._opened = False
        self._lock = threading.Lock()  # never held across I/O

    @classmethod
    def from_settings(cls, settings: Settings) -> AsyncReplica | None:
        """A replica on `DATABASE_REPLICA_URL` (its pool not yet open), or None when unset."""
        url, address = settings.database_replica_url, settings.database_replica_address
        if url is None or address is None:
            return None
        pool = psycopg_pool.AsyncConnectionPool(
            url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            timeout=settings.replica_timeout,
            kwargs={**connection_options(settings, name="docstore-replica"), "autocommit": True},
            check=psycopg_pool.AsyncConnectionPool.check_connection,
            reconnect_timeout=settings.pool_timeout,
            open=False,
            name="docstore-replica",
        )
        return cls(
            pool,
            address=address,
            max_lag=settings.replica_max_lag,
            check_interval=settings.replica_check_interval,
            timeout=settings.replica_timeout,
        )

    async def close(self) -> None:
        """Close the replica's pool."""
        await self.pool.close()

    @asynccontextmanager
    async def cursor(
        self, query: Query, params: Any, factory: BaseRowFactory[Any], execute: Execute
    ) -> AsyncIterator[psycopg.AsyncCursor[Any] | None]:
        """A cursor on which `query` ran on the replica, or None: run it on the primary."""
        if not await self._usable():
            self._count(on_replica=False)
            yield None
            return
        conn = await self._connection()
        if conn is None:
            self._count(on_replica=False)
            yield None
            return
        try:
            cur = conn.cursor(row_factory=factory)
            try:
                await execute(cur, query, params)
            except psycopg.Error as exc:
                await cur.close()
                if not _replica_failed(exc):
                    raise database_error(exc, self.address) from exc
                self._set_state("down", f"{type(exc).__name__}: {exc.diag.message_primary}")
                self._count(on_replica=False)
                yield None
                return
            self._count(on_replica=True)
            try:
                yield cur
            finally:
                await cur.close()
        finally:
            await finish(self.pool.putconn, conn)  # even when cancelled

    # -- inside -----------------------------------------------------------------------------------

    async def _connection(self) -> psycopg.AsyncConnection[Any] | None:
        if not self._opened:
            # Safe to call side by side (each waits until the pool is open); a replica down at
            # start-up is no error: the pool keeps trying in the background.
            await self.pool.open(wait=False)
            self._opened = True
        try:
            return await take_or_cancel(
                lambda: self.pool.getconn(timeout=self.timeout), self.pool.putconn
            )
        except (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
            self._set_state("down", f"no connection within {self.timeout:g}s ({exc})")
            return None

    async def _usable(self) -> bool:
        """The last known state, measured again when it is older than `check_interval`."""
        now = time.monotonic()
        with self._lock:
            if now < self._next_check:
                return self.state == "ok"
            # This caller measures; the others meanwhile go by the last state.
            self._next_check = now + self.check_interval
        return await self.check()

    async def check(self) -> bool:
        """Measure the lag now and set the state by it (also for a health report); True when
        lag-tolerant reads may go to the replica."""
        with self._lock:
            self._next_check = max(self._next_check, time.monotonic() + self.check_interval)
        lag = await self._measure_lag()
        if lag is None:
            return False
        self.lag = lag
        if lag > self.max_lag:
            self._set_state("lagging", f"replay {lag:.1f}s behind (limit {self.max_lag:g}s)")
            return False
        self._set_state("ok", "")
        return True

    async def _measure_lag(self) -> float | None:
        conn = await self._connection()
        if conn is None:
            return None
        try:
            cur = await conn.execute(queries()["replica_lag_seconds"].sql)
            row = await cur.fetchone()
        except psycopg.Error as exc:
            self._set_state("down", f"{type(exc).__name__}: {exc.diag.message_primary}")
            return None
        finally:
            await finish(self.pool.putconn, conn)  # even when cancelled
        return float(row[0]) if row is not None and row[0] is not None else 0.0

    def _set_state(self, state: State, why: str) -> None:
        with self._lock:
            previous, self.state = self.state, state
            if state == "down":
                self._next_check = time.monotonic() + self.check_interval * _DOWN_RETRY_INTERVALS
        if state == previous:
            return
        if state == "ok":
            if previous != "unknown":
                logger.warning("replica at %s is back: lag-tolerant reads go to it", self.address)
            return
        logger.warning(
            "replica at %s is %s (%s): lag-tolerant reads go to the primary",
            self.address,
            state,
            why,
        )

    def _count(self, *, on_replica: bool) -> None:
        with self._lock:  # exact under threads; uncontended it costs well under a microsecond
            if on_replica:
                self.reads += 1
            else:
                self.reads_on_primary += 1

    def __repr__(self) -> str:
        return f"AsyncReplica({self.address}, {self.state})"


def _replica_failed(exc: psycopg.Error) -> bool:
    sqlstate = exc.sqlstate or ""
    if not sqlstate:  # no answer from the server: the connection is gone
        return isinstance(exc, psycopg.OperationalError)
    return sqlstate.startswith(("08", *_FALLBACK_STATES))


__all__ = ["AsyncReplica"]
