"""Which documents changed, told to listeners (the cache) once the change is committed.

psycopg has no after-commit hook, so the store keeps a post-commit list itself: a write that runs
alone (autocommit) is told at once; a write that joins a transaction opened by
`store.transaction()` (the same as `store.db.transaction()`) is kept on that transaction's list
and told after its COMMIT, or forgotten when it rolls back (a savepoint that rolls back forgets
its own writes only). A write joining a transaction the store did not open (a connection the
caller took from the pool itself) cannot be seen committing: it is told at once (logged once),
and its transaction's id is noted; `settle()` (which `store.get_document` runs before it reads
the cache) asks PostgreSQL which noted transactions committed and tells their writes again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol, TypeVar

from psycopg import pq

from docstore._async_runtime import AsyncCall, finish
from docstore.postgres.executor_async import AsyncDatabase, Connection, check_connection

T = TypeVar("T")

logger = logging.getLogger("docstore.changes")


class AsyncChangeListener(Protocol):
    """Told the ids of documents whose change was committed."""

    async def __call__(self, document_ids: list[int]) -> None: ...


# Told, without I/O, the ids of documents that may have changed (None: any document) when a
# write, a COMMIT or the telling itself was interrupted: the change's outcome is unknown.
UnsureListener = Callable[[list[int] | None], None]


class AsyncDocumentChanges:
    """The post-commit lists of changed document ids, one per open transaction."""

    def __init__(self) -> None:
        self._listeners: list[AsyncChangeListener] = []
        self._unsure_listeners: list[UnsureListener] = []
        # id(connection) -> one list of changed ids per transaction level (savepoints nest).
        self._open: dict[int, list[list[int]]] = {}
        self._warned = False
        # Writes in transactions docstore did not open: transaction id -> changed ids.
        self._db: AsyncDatabase | None = None
        self._foreign: dict[str, list[int]] = {}
        self._foreign_lock = threading.Lock()

    def attach(self, db: AsyncDatabase) -> None:
        """The executor that notes and later checks transactions docstore did not open."""
        self._db = db

    def listen(
        self, listener: AsyncChangeListener, if_unsure: UnsureListener | None = None
    ) -> None:
        """Call `await listener(ids)` with the ids of documents whose change was committed, and
        `if_unsure(ids)` with those that may have changed when a write was interrupted."""
        self._listeners.append(listener)
        if if_unsure is not None:
            self._unsure_listeners.append(if_unsure)

    async def write(
        self,
        ids: list[int],
        conn: Connection | None,
        run: AsyncCall[T],
        touched: Callable[[T], Iterable[int]],
    ) -> T:
        """Run `run()`, a statement writing documents `ids`, then tell
        `changed(touched(result), conn)`. When the statement is interrupted (cancelled, or
        failed) it may still have committed: its documents are told as unsure, or kept for the
        store's transaction around it to tell once that commits."""
        try:
            result = await run()
        except BaseException:
            levels = self._open.get(id(conn)) if conn is not None else None
            if levels:
                levels[-1].extend(ids)
            else:
                self.unsure(ids)
            raise
        await self.changed(touched(result), conn)
        return result

    def unsure(self, ids: list[int] | None) -> None:
        """Tell the unsure listeners (no I/O)."""
        for listener in self._unsure_listeners:
            listener(ids)

    async def changed(self, ids: Iterable[int], conn: Connection | None) -> None:
        """Documents `ids` were written on `conn` (None: in a statement of their own)."""
        changed = list(ids)
        if not changed:
            return
        levels = self._open.get(id(conn)) if conn is not None else None
        if levels:
            levels[-1].extend(changed)
            return
        if self._listeners and conn is not None and _in_transaction(conn):
            try:
                await self._note_foreign(changed, conn)
            except BaseException:
                self.unsure(changed)
                raise
        await self.notify(changed)

    async def _note_foreign(self, ids: list[int], conn: Connection) -> None:
        if not self._warned:
            self._warned = True
            logger.warning(
                "documents changed in a transaction docstore did not open: their cached copies "
                "are dropped now and again once it committed (store.get_document checks); "
                "use store.transaction()"
            )
        if self._db is not None:
            xid = str(await self._db.value("current_transaction_id", {}, conn))
            with self._foreign_lock:
                self._foreign.setdefault(xid, []).extend(ids)

    async def settle(self) -> None:
        """Tell again the writes of noted transactions that have committed since (one query,
        only while some are noted); forget those that rolled back."""
        with self._foreign_lock:
            xids = list(self._foreign)
        if not xids or self._db is None:
            return
        committed: list[int] = []
        told: list[str] = []
        for xid, status in await self._db.all("transaction_outcomes", {"xids": xids}):
            if status == "in progress":
                continue
            with self._foreign_lock:
                if status == "aborted":
                    self._foreign.pop(xid, None)
                    continue
                # Committed, or too old to tell: drop to be sure. Noted until told, so that
                # another caller of settle() meanwhile waits for its own drop.
                committed.extend(self._foreign.get(xid, []))
                told.append(xid)
        if committed:
            await self.notify(sorted(set(committed)))
        with self._foreign_lock:
            for xid in told:
                self._foreign.pop(xid, None)

    async def notify(self, ids: list[int]) -> None:
        """Tell every listener now (unsure, if this is interrupted)."""
        try:
            for listener in self._listeners:
                await listener(ids)
        except BaseException:
            self.unsure(ids)
            raise

    def tracks(self, conn: Connection) -> bool:
        """Whether a transaction of the store is open on `conn`."""
        return bool(self._open.get(id(conn)))

    def begin(self, conn: Connection) -> None:
        self._open.setdefault(id(conn), []).append([])

    def rollback(self, conn: Connection) -> list[int]:
        """End a level that failed: the ids it noted, forgotten here."""
        levels = self._open[id(conn)]
        dropped = levels.pop()
        if not levels:
            del self._open[id(conn)]
        return dropped

    def level(self, conn: Connection) -> list[int]:
        """The ids the innermost level open on `conn` has noted so far."""
        return list(self._open[id(conn)][-1])

    def release(self, conn: Connection) -> list[int]:
        """End a level without error: the ids to tell once the outermost level committed
        (empty for an inner level, whose ids now belong to the level around it)."""
        levels = self._open[id(conn)]
        mine = levels.pop()
        if levels:
            levels[-1].extend(mine)
            return []
        del self._open[id(conn)]
        return sorted(set(mine))


def _in_transaction(conn: Connection) -> bool:
    return conn.info.transaction_status != pq.TransactionStatus.IDLE


class AsyncTrackedDatabase(AsyncDatabase):
    """The executor (`store.db`) whose transactions tell the cache what they committed."""

    changes: AsyncDocumentChanges

    @asynccontextmanager
    async def transaction(self, conn: Connection | None = None) -> AsyncIterator[Connection]:
        """A connection inside a transaction (a savepoint when `conn` is already in one); the
        documents changed in it are told to the listeners once it committed."""
        if conn is not None:
            check_connection(conn)  # before asking about it: bad input is `InvalidInput`
        # A savepoint inside a transaction someone else opened: its COMMIT is out of sight.
        if conn is None or self.changes.tracks(conn) or not _in_transaction(conn):
            async with self._telling(super().transaction(conn)) as c:
                yield c
        else:
            async with super().transaction(conn) as c:
                yield c

    @asynccontextmanager
    async def connection(self, conn: Connection | None = None) -> AsyncIterator[Connection]:
        """The caller's connection as is, or a pooled one whose block is one transaction: the
        documents changed in that block are told to the listeners once it committed."""
        if conn is not None:
            async with super().connection(conn) as c:
                yield c
        else:
            async with self._telling(super().connection(), own_commits=True) as c:
                yield c

    @asynccontextmanager
    async def _telling(
        self, block: AbstractAsyncContextManager[Connection], *, own_commits: bool = False
    ) -> AsyncIterator[Connection]:
        """`block`, one level of a transaction, noting what its writes change; told once the
        outermost level committed, forgotten when it rolls back, unsure when its COMMIT was
        interrupted. `own_commits`: the caller may COMMIT inside the block (a `commit()`, or
        a transaction opened in it, which psycopg makes the outermost): when it then fails,
        what it noted is told all the same, not forgotten."""
        committed: list[int] = []
        mine: list[int] = []
        told_anyway: list[int] = []
        try:
            async with block as c:
                self.changes.begin(c)
                try:
                    yield c
                except BaseException:
                    dropped = self.changes.rollback(c)
                    told_anyway = dropped if own_commits else []
                    raise
                mine = self.changes.level(c)
                committed = self.changes.release(c)
        except BaseException:
            if committed:  # the COMMIT was interrupted: it may have happened
                self.changes.unsure(committed)
            if told_anyway:  # past `block`: its connection is back, rolled back
                await self._tell_anyway(told_anyway)
            raise
        # Past `block`: the outermost level has committed.
        if committed:
            await self.changes.notify(committed)
        elif mine and not _in_transaction(c):
            # An inner level whose block was the outermost transaction after all (opened
            # inside `connection()` before any statement): its COMMIT is done, tell it now.
            await self.changes.notify(mine)


    async def _tell_anyway(self, ids: list[int]) -> None:
        """Tell `ids`, which may have committed, on the way out of a failed block: the drop
        runs to its end, and its own failure leaves them unsure (told by `notify`), never
        replacing the block's error."""
        with contextlib.suppress(Exception):
            await finish(self.changes.notify, ids)


def tracked_database(db: AsyncDatabase, changes: AsyncDocumentChanges) -> AsyncTrackedDatabase:
    """`db` as an `AsyncTrackedDatabase` telling `changes` (same pool, queries and counters)."""
    tracked = AsyncTrackedDatabase.__new__(AsyncTrackedDatabase)
    tracked.__dict__.update(db.__dict__)
    tracked.changes = changes
    return tracked


__all__ = [
    "AsyncChangeListener",
    "AsyncDocumentChanges",
    "AsyncTrackedDatabase",
    "UnsureListener",
    "tracked_database",
]
