# Generated from docstore/postgres/executor_async.py by tools/async_to_sync.py:
# edit that file, then run the script (CI fails when this file is stale).
"""The one executor of named queries: connections, statements, COPY, logging and error mapping.

One rule for every verb: without `conn`, a single statement runs on a pooled connection in
autocommit (a statement is atomic by itself, and BEGIN plus COMMIT would double its round trips);
with `conn`, it runs in the caller's transaction as is. With a replica, the lag-tolerant queries
(`docstore.postgres.routing`) run without `conn` on the replica while it keeps up, else here.
Rows become the given model through the trusted row builder (`docstore.postgres.rows`) for flat
models, through full pydantic validation for models with nested JSON; without a model they are
tuples.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import Any, TypeVar, overload

import psycopg
import psycopg_pool
from psycopg.rows import BaseRowFactory, tuple_row
from pydantic import BaseModel

from docstore._sync_runtime import CallWith, cancelled_once, finish, take_or_cancel
from docstore.errors import ConfigurationError, InvalidInput, PoolExhausted, ServiceUnavailable
from docstore.observability.database import observe_pool, observe_query
from docstore.postgres.errors import wrap_database_errors
from docstore.postgres.queries import Query, queries
from docstore.postgres.replica import Replica
from docstore.postgres.routing import Consistency, consistency, may_read_from_replica
from docstore.postgres.rows import row_factory

Model = TypeVar("Model", bound=BaseModel)
R = TypeVar("R")
T = TypeVar("T")
Params = Mapping[str, Any]
Connection = psycopg.Connection[Any]

sql_logger = logging.getLogger("docstore.sql")


def check_connection(conn: object) -> None:
    """A `conn=` argument must be a connection docstore handed out (`store.transaction()`)."""
    if not isinstance(conn, psycopg.Connection):
        raise InvalidInput(
            "conn must be a connection of store.transaction() or store.db.connection()",
            field="conn",
        )


class Database:
    """The pool and the named queries, shared by the repositories and the migration."""

    def __init__(
        self,
        pool: psycopg_pool.ConnectionPool,
        *,
        address: str,
        debug_sql: bool = False,
        replica: Replica | None = None,
    ) -> None:
        """`replica` (`Replica.from_settings`) is closed by `close`; `pool` is the caller's."""
        self.pool = pool
        self.address = address
        self.debug_sql = debug_sql
        self.replica = replica
        self.queries = queries()
        observe_pool(pool, address)  # connection gauges, when OpenTelemetry is on
        # Connections this object has checked out: tells a busy pool from an unreachable server.
        self._in_use = 0
        self._in_use_lock = threading.Lock()

    # -- the verbs ------------------------------------------------------------------------------

    @overload
    def one(
        self, name: str, params: Params, model: type[Model], conn: Connection | None = None
    ) -> Model | None: ...

    @overload
    def one(
        self, name: str, params: Params, model: None = None, conn: Connection | None = None
    ) -> tuple[Any, ...] | None: ...

    def one(
        self,
        name: str,
        params: Params,
        model: type[BaseModel] | None = None,
        conn: Connection | None = None,
    ) -> Any:
        """The first row of the named query (as `model`, else a tuple), or None."""
        return self._run(name, params, model, conn, _first_row)

    @overload
    def all(
        self, name: str, params: Params, model: type[Model], conn: Connection | None = None
    ) -> list[Model]: ...

    @overload
    def all(
        self, name: str, params: Params, model: None = None, conn: Connection | None = None
    ) -> list[tuple[Any, ...]]: ...

    def all(
        self,
        name: str,
        params: Params,
        model: type[BaseModel] | None = None,
        conn: Connection | None = None,
    ) -> Any:
        """Every row of the named query (as `model`, else tuples)."""
        return self._run(name, params, model, conn, _every_row)

    def value(self, name: str, params: Params, conn: Connection | None = None) -> Any:
        """The first column of the first row of the named query, or None."""
        row = self.one(name, params, None, conn)
        return row[0] if row else None

    def execute(self, name: str, params: Params, conn: Connection | None = None) -> int:
        """Run the named statement; the number of rows it touched."""
        count: int = self._run(name, params, None, conn, _rows_touched)
        return count

    def copy(self, name: str, rows: Iterable[Sequence[Any]], conn: Connection | None = None) -> int:
        """Stream `rows` through the named `COPY ... FROM STDIN`; the number of rows sent."""
        query = self.query(name, {})

        def copy_rows(cur: psycopg.Cursor[Any]) -> int:
            count = 0
            started = time.perf_counter()
            with observe_query(query.name, query.sql, self.address):  # noqa: RUF100, SIM117
                with cur.copy(query.sql) as copy:
                    for row in rows:
                        copy.write_row(row)
                        count += 1
            if self.debug_sql:
                elapsed_ms = (time.perf_counter() - started) * 1000
                sql_logger.info("%s %.2f ms rows=%s", query.name, elapsed_ms, count)
            return count

        return self._on_cursor(conn, tuple_row, copy_rows)

    # -- where reads go ---------------------------------------------------------------------------

    @staticmethod
    def consistency(level: Consistency) -> AbstractContextManager[None]:
        """`with db.consistency("primary"):` every read of the block goes to the primary (see
        `docstore.postgres.routing`); a plain context manager on both sides."""
        return consistency(level)

    def close(self) -> None:
        """Close the replica's pool, if any (the primary's pool belongs to whoever made it)."""
        if self.replica is not None:
            self.replica.close()

    # -- units of work ----------------------------------------------------------------------------

    @contextmanager
    def transaction(self, conn: Connection | None = None) -> Iterator[Connection]:
        """A connection inside a transaction (a savepoint when `conn` is already in one)."""
        if conn is None:
            # psycopg's transaction() sends BEGIN and COMMIT on an autocommit connection (ours),
            # and is the outer transaction of one without (a pool of the caller's): no switching.
            with self._pooled() as pooled, _cancelled_once_in_and_out(pooled.transaction()):
                yield pooled
            return
        # Errors of the transaction's own BEGIN/COMMIT are mapped by `connection` too.
        with self.connection(conn) as c, _cancelled_once_in_and_out(c.transaction()):
            yield c

    @contextmanager
    def connection(self, conn: Connection | None = None) -> Iterator[Connection]:
        """The caller's connection as is, or a pooled one (committed or rolled back on exit)."""
        if conn is not None:
            check_connection(conn)
            with wrap_database_errors(self.address):
                yield conn
            return
        with self._pooled() as pooled:
            # The block is one transaction: docstore's pool hands out connections in
            # autocommit, switched off for it and on again after.
            toggled = pooled.autocommit
            if toggled:
                pooled.set_autocommit(False)
            try:
                # Leaving `with pooled` commits, or rolls back on error.
                with _cancelled_once_in_and_out(pooled):
                    yield pooled
            finally:
                if toggled:
                    finish(_set_autocommit_back, pooled, True)

    @contextmanager
    def _pooled(self) -> Iterator[Connection]:
        """A connection of the pool for a unit of work, its errors mapped, given back after.
        (Single statements, the hot path, do the same inline in `_on_cursor`.)"""
        pooled = self._checkout()
        try:
            with wrap_database_errors(self.address):
                yield pooled
        finally:
            self._give_back(pooled)

    def use_pool(self, pool: psycopg_pool.ConnectionPool) -> None:
        """Take statements to `pool` from now on (a store replacing a pool that failed to
        open)."""
        self.pool = pool
        observe_pool(pool, self.address)

    def server_version(self, timeout: float) -> str:
        """The primary's version, on a connection taken within `timeout` seconds: a health
        check hears of an outage within it, not after the pool's timeout."""
        query = self.query("server_version", {})

        def read(cur: psycopg.Cursor[Any]) -> Any:
            self._execute(cur, query, {})
            return cur.fetchone()

        row = self._on_cursor(None, tuple_row, read, timeout=timeout)
        return str(row[0]) if row else ""

    def _checkout(self, timeout: float | None = None) -> Connection:
        """A connection of the pool (given back by `_give_back`), or the error telling why not;
        waiting at most `timeout` seconds (default: the pool's)."""
        try:
            # Waiting for a connection may drop a cancel (see `take_or_cancel`): raised here.
            pooled = take_or_cancel(lambda: self.pool.getconn(timeout=timeout), self.pool.putconn)
        except psycopg_pool.PoolTimeout as exc:
            raise self._pool_timeout_error(timeout or self.pool.timeout) from exc
        except psycopg_pool.PoolClosed as exc:
            # Not an outage (retrying would not help): a store used before it was opened, or
            # after it was closed.
            not_open = ConfigurationError(
                f"the connection pool of PostgreSQL at {self.address} is not open: open the "
                "store first (connect(), `with`, or open()); a closed store stays closed"
            )
            not_open.before_sending = True
            raise not_open from exc
        with self._in_use_lock:
            self._in_use += 1
        return pooled

    def _give_back(self, pooled: Connection) -> None:
        try:
            # Even when the task is cancelled meanwhile: putconn may wait for the pool's lock.
            finish(self.pool.putconn, pooled)
        finally:
            with self._in_use_lock:
                self._in_use -= 1

    def query(self, name: str, params: Params) -> Query:
        """The named query, after checking that `params` matches its parameters."""
        try:
            query = self.queries[name]
        except (KeyError, TypeError):
            raise InvalidInput(f"no query is named {name!r}", field="name") from None
        query.check_params(params)
        return query

    # -- inside -----------------------------------------------------------------------------------

    def _run(
        self,
        name: str,
        params: Params,
        model: type[BaseModel] | None,
        conn: Connection | None,
        fetch: CallWith[psycopg.Cursor[Any], R],
    ) -> R:
        """Run the named query and `fetch` its outcome from the cursor: on the replica when it
        may and can, else on `conn`, else alone on a pooled connection in autocommit. Every
        statement's path, so plain coroutines: each context-manager layer cost 3 us a call."""
        query = self.query(name, params)
        factory = row_factory(model, name)
        if conn is None and self.replica is not None and may_read_from_replica(name):
            with self.replica.cursor(query, params, factory, self._execute) as cur:
                if cur is not None:
                    return fetch(cur)

        def run(cur: psycopg.Cursor[Any]) -> R:
            self._execute(cur, query, params)
            return fetch(cur)

        return self._on_cursor(conn, factory, run)

    def _on_cursor(
        self,
        conn: Connection | None,
        factory: BaseRowFactory[Any],
        work: CallWith[psycopg.Cursor[Any], R],
        timeout: float | None = None,
    ) -> R:
        """`work(cursor)` on a cursor of the caller's `conn` as is, or of a pooled
        connection (waited for at most `timeout` seconds, default the pool's) in autocommit for
        that one statement, which goes back to the pool as it came (autocommit off, unless the
        pool's owner configured it on), or closed (so the pool replaces it) when that cannot be
        done."""
        if conn is not None:
            check_connection(conn)
            with wrap_database_errors(self.address):  # noqa: RUF100, SIM117
                with conn.cursor(row_factory=factory) as cur:
                    return work(cur)
        pooled = self._checkout(timeout)
        try:
            with wrap_database_errors(self.address):
                toggled = not pooled.autocommit
                if toggled:
                    pooled.set_autocommit(True)
                try:
                    with pooled.cursor(row_factory=factory) as cur:
                        return work(cur)
                finally:
                    if toggled:
                        finish(_set_autocommit_back, pooled, False)
        finally:
            self._give_back(pooled)

    def _execute(self, cur: psycopg.Cursor[Any], query: Query, params: Params) -> None:
        # A span and a duration per statement when OpenTelemetry is on (a no-op otherwise).
        # Cancelled once at most: psycopg then cancels the statement on the server and reads
        # its outcome, which a second cancel (anyio's scopes ask again) would cut short.
        with observe_query(query.name, query.sql, self.address):
            if not self.debug_sql:
                cancelled_once(lambda: cur.execute(query.sql, params))
                return
            started = time.perf_counter()
            try:
                cancelled_once(lambda: cur.execute(query.sql, params))
            finally:
                elapsed_ms = (time.perf_counter() - started) * 1000
                sql_logger.info("%s %.2f ms rows=%s", query.name, elapsed_ms, cur.rowcount)

    def _pool_timeout_error(self, waited: float) -> ServiceUnavailable:
        # The pool counts connections it is still trying to open as part of its size, so a full
        # pool does not mean busy connections: while PostgreSQL is down it is full of attempts.
        # Exhaustion is proven by connections checked out here, or (a pool shared with other
        # code) by a pool that never failed to connect.
        never_failed = not self.pool.get_stats().get("connections_errors", 0)
        if self._in_use >= self.pool.max_size or never_failed:
            return PoolExhausted(
                f"all {self.pool.max_size} connections to PostgreSQL at {self.address} stayed busy "
                f"for {waited:g}s",
                service="postgresql",
                address=self.address,
                before_sending=True,
            )
        return ServiceUnavailable(
            f"PostgreSQL at {self.address} is unreachable (no connection within {waited:g}s)",
            service="postgresql",
            address=self.address,
            before_sending=True,
        )


def _first_row(cur: psycopg.Cursor[Any]) -> Any:
    return cur.fetchone()


def _every_row(cur: psycopg.Cursor[Any]) -> Any:
    return cur.fetchall()


def _rows_touched(cur: psycopg.Cursor[Any]) -> int:
    return cur.rowcount


@contextmanager
def _cancelled_once_in_and_out(block: AbstractContextManager[T]) -> Iterator[T]:
    """`with block`, its entry and exit (BEGIN, COMMIT, ROLLBACK) cancelled once at most
    (see `cancelled_once`): a COMMIT cut short is otherwise left to finish after the caller
    was told it failed."""
    value = cancelled_once(block.__enter__)
    try:
        yield value
    except BaseException as exc:
        if not cancelled_once(partial(block.__exit__, type(exc), exc, exc.__traceback__)):
            raise
    else:
        cancelled_once(partial(block.__exit__, None, None, None))


def _set_autocommit_back(conn: Connection, on: bool) -> None:
    """Give `conn` back the autocommit the pool made it with, or close it (the pool then
    replaces it): never hand the pool a connection that is not as it made it."""
    if conn.closed or conn.broken:
        return  # the pool discards it
    try:
        conn.set_autocommit(on)
    except psycopg.Error:
        conn.close()


__all__ = ["Connection", "Database", "Params", "check_connection"]
