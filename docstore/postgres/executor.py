"""Run named queries through the connection pool, with error mapping and optional SQL logging."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg.rows import class_row, tuple_row
from pydantic import BaseModel

from docstore.errors import PoolExhausted, ServiceUnavailable
from docstore.postgres.errors import wrap_database_errors
from docstore.postgres.queries import Query, queries
from docstore.settings import Settings

Model = TypeVar("Model", bound=BaseModel)
Params = Mapping[str, Any]

sql_logger = logging.getLogger("docstore.sql")


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


class Database:
    """The pool and the named queries, shared by the repositories."""

    def __init__(
        self, pool: psycopg_pool.ConnectionPool, *, address: str, debug_sql: bool = False
    ) -> None:
        self.pool = pool
        self.address = address
        self.debug_sql = debug_sql
        self.queries = queries()
        # Connections this object has checked out: tells a busy pool from an unreachable server.
        self._in_use = 0
        self._in_use_lock = threading.Lock()

    @contextmanager
    def connection(
        self, conn: psycopg.Connection[Any] | None = None
    ) -> Iterator[psycopg.Connection[Any]]:
        """The caller's connection as is, or a pooled one (committed or rolled back on exit)."""
        if conn is not None:
            with wrap_database_errors(self.address):
                yield conn
            return
        try:
            pooled = self.pool.getconn()
        except psycopg_pool.PoolTimeout as exc:
            raise self._pool_timeout_error() from exc
        except psycopg_pool.PoolClosed as exc:
            raise ServiceUnavailable(
                f"the connection pool of PostgreSQL at {self.address} is closed",
                service="postgresql",
                address=self.address,
            ) from exc
        with self._in_use_lock:
            self._in_use += 1
        try:
            # Leaving `with pooled` commits, or rolls back on error; the pool keeps the connection.
            with wrap_database_errors(self.address), pooled:
                yield pooled
        finally:
            self.pool.putconn(pooled)
            with self._in_use_lock:
                self._in_use -= 1

    def _pool_timeout_error(self) -> ServiceUnavailable:
        # The pool counts connections it is still trying to open as part of its size, so a full
        # pool does not mean busy connections: while PostgreSQL is down it is full of attempts.
        # Exhaustion is proven by connections checked out here, or (a pool shared with other
        # code) by a pool that never failed to connect.
        never_failed = not self.pool.get_stats().get("connections_errors", 0)
        if self._in_use >= self.pool.max_size or never_failed:
            return PoolExhausted(
                f"all {self.pool.max_size} connections to PostgreSQL at {self.address} stayed busy "
                f"for {self.pool.timeout:g}s",
                service="postgresql",
                address=self.address,
            )
        return ServiceUnavailable(
            f"PostgreSQL at {self.address} is unreachable (no connection within "
            f"{self.pool.timeout:g}s)",
            service="postgresql",
            address=self.address,
        )

    @contextmanager
    def transaction(
        self, conn: psycopg.Connection[Any] | None = None
    ) -> Iterator[psycopg.Connection[Any]]:
        """A connection inside a transaction (a savepoint when `conn` is already in one)."""
        with self.connection(conn) as c, wrap_database_errors(self.address), c.transaction():
            yield c

    def query(self, name: str, params: Params) -> Query:
        """The named query, after checking that `params` matches its parameters."""
        query = self.queries[name]
        query.check_params(params)
        return query

    def run(self, cur: psycopg.Cursor[Any], query: Query, params: Params) -> None:
        """Execute `query` on `cur` (any row factory), logged under DEBUG_SQL."""
        if not self.debug_sql:
            cur.execute(query.sql, params)
            return
        started = time.perf_counter()
        try:
            cur.execute(query.sql, params)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            sql_logger.info("%s %.2f ms rows=%s", query.name, elapsed_ms, cur.rowcount)

    def fetch_one(
        self,
        name: str,
        params: Params,
        model: type[Model],
        conn: psycopg.Connection[Any] | None = None,
    ) -> Model | None:
        """First row of the named query as `model`, or None."""
        query = self.query(name, params)
        with self.connection(conn) as c, c.cursor(row_factory=class_row(model)) as cur:
            self.run(cur, query, params)
            return cur.fetchone()

    def fetch_all(
        self,
        name: str,
        params: Params,
        model: type[Model],
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[Model]:
        """All rows of the named query as `model`."""
        query = self.query(name, params)
        with self.connection(conn) as c, c.cursor(row_factory=class_row(model)) as cur:
            self.run(cur, query, params)
            return cur.fetchall()

    def fetch_rows(
        self, name: str, params: Params, conn: psycopg.Connection[Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """All rows of the named query as tuples."""
        query = self.query(name, params)
        with self.connection(conn) as c, c.cursor(row_factory=tuple_row) as cur:
            self.run(cur, query, params)
            return cur.fetchall()

    def fetch_value(
        self, name: str, params: Params, conn: psycopg.Connection[Any] | None = None
    ) -> Any:
        """First column of the first row of the named query, or None."""
        rows = self.fetch_rows(name, params, conn)
        return rows[0][0] if rows else None

    def execute(
        self, name: str, params: Params, conn: psycopg.Connection[Any] | None = None
    ) -> int:
        """Run the named statement; return the number of rows it touched."""
        query = self.query(name, params)
        with self.connection(conn) as c, c.cursor() as cur:
            self.run(cur, query, params)
            return cur.rowcount
