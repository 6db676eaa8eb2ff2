"""PostgreSQL stopped and started again under a stream of repository calls from several threads.

While it is down every call fails with `ServiceUnavailable` (typed, within the pool timeout,
never a hang or a raw driver error); once it is back the pool recovers by itself and every call
made from then on succeeds; a write interrupted by the outage is all there or not there at all.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from helpers import wait_until
from sides import Side, side_fixture  # noqa: F401 (fixtures)

from docstore import (
    Docstore,
    DocumentCreate,
    Outcome,
    ServiceUnavailable,
    Settings,
    UserCreate,
    extract_text,
)
from docstore.errors import PoolExhausted
from docstore.intake.blobs import LocalBlobStore, S3BlobStore
from docstore.postgres.schema import apply_schema
from docstore.testing.servers import LocalPostgres

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

THREADS = 4
ROWS_PER_WRITE = 5  # documents written by one create_many call or one explicit transaction


@dataclass
class Call:
    op: str
    marker: str  # t<thread>-c<n>: the filename prefix of the rows a write creates
    started: float
    ended: float
    error: Exception | None


@dataclass
class Stream:
    """Calls of every thread, appended as they end (list.append is atomic)."""

    calls: list[Call] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def of(self, thread: int) -> list[Call]:
        return [c for c in self.calls if c.marker.startswith(f"t{thread}-")]


def run_calls(store: Docstore, user_id: int, thread: int, stream: Stream) -> None:
    """Cycle through repository calls until told to stop; record each outcome."""
    counter = itertools.count()
    known_ids: list[int] = []

    def create_many(marker: str) -> None:
        items = [
            DocumentCreate(user_id=user_id, filename=f"{marker}-{i}.txt", s3_key=f"k/{marker}/{i}")
            for i in range(ROWS_PER_WRITE)
        ]
        known_ids.extend(d.id for d in store.documents.create_many(items))

    def transaction(marker: str) -> None:
        # Several statements in one transaction: an outage between them must roll all back.
        with store.db.transaction() as conn:
            for i in range(ROWS_PER_WRITE):
                doc = store.documents.create(
                    DocumentCreate(
                        user_id=user_id, filename=f"{marker}-{i}.txt", s3_key=f"k/{marker}/{i}"
                    ),
                    conn=conn,
                )
                known_ids.append(doc.id)

    reads: dict[str, Callable[[], object]] = {
        "list": lambda: store.documents.list_for_user(user_id, limit=20),
        "get": lambda: store.documents.get(known_ids[-1]) if known_ids else None,
        "count": lambda: store.documents.count_by_status(user_id),
        "search": lambda: store.documents.search(user_id, "report"),
        "user": lambda: store.users.get(user_id),
    }
    read_ops = itertools.cycle(reads)
    while not stream.stop.is_set():
        n = next(counter)
        marker = f"t{thread}-c{n}"
        # Every other call writes: create_many (one statement) or an explicit transaction.
        op = ("create_many" if n % 4 == 0 else "transaction") if n % 2 == 0 else next(read_ops)
        started = time.monotonic()
        error: Exception | None = None
        try:
            if op == "create_many":
                create_many(marker)
            elif op == "transaction":
                transaction(marker)
            else:
                reads[op]()
        except Exception as exc:  # every outcome is recorded and judged
            error = exc
        stream.calls.append(Call(op, marker, started, time.monotonic(), error))
        time.sleep(0.01)


@pytest.fixture
def server(local_postgres_factory: Callable[[], LocalPostgres]) -> LocalPostgres:
    server = local_postgres_factory()
    apply_schema(Settings.model_validate({"DATABASE_URL": server.url}))
    # The test servers run with synchronous_commit=off (speed), which lets a crash lose
    # commits already acknowledged; a real server's default keeps them, so judge that.
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("ALTER DATABASE postgres SET synchronous_commit = on")
    return server


@pytest.fixture
def store(side: Side, server: LocalPostgres) -> Iterator[Docstore]:
    settings = Settings.model_validate(
        {
            "DATABASE_URL": server.url,
            "pool_min_size": 2,
            "pool_max_overflow": 2,
            "pool_timeout": 2,
            "connect_timeout": 1,
        }
    )
    with side.connect(settings) as opened:
        yield opened


@pytest.mark.parametrize(
    ("mode", "outage_seconds"),
    # fast: clients disconnected, clean shutdown; immediate: a crash, recovered from the WAL.
    # The long outage lets psycopg_pool's reconnection backoff grow (it used to outlast it).
    [("fast", 8.0), ("immediate", 3.0)],
)
def test_calls_fail_typed_while_down_and_all_succeed_once_back(
    server: LocalPostgres, store: Docstore, mode: str, outage_seconds: float
) -> None:
    user_id = store.users.create(UserCreate(email="restart@example.com")).user.id
    stream = Stream()
    threads = [
        threading.Thread(target=run_calls, args=(store, user_id, i, stream), daemon=True)
        for i in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_until(
            lambda: all(sum(c.error is None for c in stream.of(i)) >= 8 for i in range(THREADS)),
            30,
            "every thread made successful calls",
        )
        server.stop(mode)
        down_at = time.monotonic()
        # Down until every thread has seen calls fail, and long enough for the backoff to grow.
        wait_until(
            lambda: all(
                sum(c.started > down_at and c.error is not None for c in stream.of(i)) >= 2
                for i in range(THREADS)
            ),
            30,
            "every thread saw calls fail",
        )
        time.sleep(max(0.0, down_at + outage_seconds - time.monotonic()))
        up_at_call = time.monotonic()
        server.start()
        up_at = time.monotonic()
        wait_until(
            lambda: all(
                sum(c.started > up_at and c.error is None for c in stream.of(i)) >= 8
                for i in range(THREADS)
            ),
            30,
            "every thread made successful calls after the restart",
        )
    finally:
        stream.stop.set()
        for thread in threads:
            thread.join(timeout=30)  # each call is bounded by the pool timeout
    assert not any(thread.is_alive() for thread in threads), "a call hung"

    calls = list(stream.calls)
    errors = [c.error for c in calls if c.error is not None]
    assert errors, "the outage was not noticed"
    # Typed errors only: never a raw psycopg / psycopg_pool error, never anything else.
    unexpected = [repr(e) for e in errors if not isinstance(e, ServiceUnavailable)]
    assert unexpected == []
    assert {e.service for e in errors if isinstance(e, ServiceUnavailable)} == {"postgresql"}
    assert all(type(e).__module__ == "docstore.errors" for e in errors)
    # Unreachable, not "every connection busy": 4 threads never hold more than the 4 allowed.
    assert not [e for e in errors if isinstance(e, PoolExhausted)]
    # Made while it was down: none could succeed.
    while_down = [c for c in calls if c.started > down_at and c.ended < up_at_call]
    assert while_down and all(c.error is not None for c in while_down)
    # Made after it was back: every one succeeded (the pool recovered by itself).
    after = [c for c in calls if c.started > up_at]
    failed_after = Counter(f"{c.op}: {c.error!r}" for c in after if c.error is not None)
    assert not failed_after, failed_after

    # No write is half there: per write, all of its rows or none.
    with store.pool.connection() as conn:
        counts: dict[str, int] = dict(
            conn.execute(
                "SELECT split_part(filename, '-', 1) || '-' || split_part(filename, '-', 2),"
                " count(*) FROM documents GROUP BY 1"
            ).fetchall()
        )
    writes = [c for c in calls if c.op in ("create_many", "transaction")]
    assert {counts.get(c.marker, 0) for c in writes} <= {0, ROWS_PER_WRITE}, counts
    lost = [c.marker for c in writes if c.error is None and counts.get(c.marker) != ROWS_PER_WRITE]
    assert lost == [], "acknowledged writes are missing"
    assert sum(counts.values()) == ROWS_PER_WRITE * len(counts)
    failed_writes = [c for c in writes if c.error is not None]
    assert failed_writes, "no write was interrupted"

    # Healthy afterwards (no Redis in this test: only PostgreSQL is judged).
    report = store.health()
    assert report.postgres_version and report.postgres_error is None
    assert report.pool.size <= report.pool.max_size


# --- pool exhaustion ------------------------------------------------------------------------

POOL_MAX = 3


@pytest.fixture
def small_pool_store(side: Side, docstore_database_url: str) -> Iterator[Docstore]:
    settings = Settings.model_validate(
        {
            "DATABASE_URL": docstore_database_url,
            "pool_min_size": 1,
            "pool_max_overflow": POOL_MAX - 1,
            "pool_timeout": 3,
        }
    )
    with side.connect(settings) as opened:
        yield opened


def test_callers_beyond_the_pool_queue_then_get_a_connection_or_pool_exhausted(
    small_pool_store: Docstore,
) -> None:
    store = small_pool_store
    waiters = 7
    held = threading.Barrier(POOL_MAX + 1)
    release_holder = [threading.Event() for _ in range(POOL_MAX)]
    finish = threading.Event()
    outcomes: list[str | Exception] = []

    def hold(i: int) -> None:
        with store.db.connection() as conn:
            conn.execute("SELECT pg_sleep(0.05)")
            held.wait(10)
            release_holder[i].wait(30)

    def wait_for_a_connection() -> None:
        try:
            with store.db.connection() as conn:
                conn.execute("SELECT pg_sleep(0.01)")
                outcomes.append("connected")
                finish.wait(30)  # keep it: the callers behind must run into the timeout
        except Exception as exc:  # judged below
            outcomes.append(exc)

    holders = [threading.Thread(target=hold, args=(i,), daemon=True) for i in range(POOL_MAX)]
    callers = [threading.Thread(target=wait_for_a_connection, daemon=True) for _ in range(waiters)]
    try:
        for thread in holders:
            thread.start()
        held.wait(10)  # every connection the pool may open is busy
        for thread in callers:
            thread.start()
        wait_until(
            lambda: store.pool.get_stats().get("requests_waiting") == waiters,
            10,
            "every caller queued",
        )
        # Two connections come back while all callers wait: the first two in the queue get them.
        release_holder[0].set()
        release_holder[1].set()
        wait_until(lambda: len(outcomes) == waiters, 30, "every caller got an answer")
    finally:
        finish.set()
        for event in release_holder:
            event.set()
        for thread in holders + callers:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in holders + callers), "deadlock"

    assert outcomes.count("connected") == 2
    refused = [o for o in outcomes if o != "connected"]
    assert len(refused) == waiters - 2
    assert all(isinstance(o, PoolExhausted) for o in refused), refused
    assert all(f"all {POOL_MAX} connections" in str(o) for o in refused)
    assert store.pool.get_stats().get("requests_errors") == waiters - 2

    # Healthy afterwards: more callers than connections, each briefly busy, all served in turn.
    start = threading.Barrier(10)
    served: list[object] = []

    def brief_call() -> None:
        start.wait(10)
        with store.db.connection() as conn:
            served.append(conn.execute("SELECT pg_sleep(0.05), 1").fetchone())

    queued_before = store.pool.get_stats().get("requests_queued", 0)
    burst = [threading.Thread(target=brief_call, daemon=True) for _ in range(10)]
    for thread in burst:
        thread.start()
    for thread in burst:
        thread.join(timeout=30)
    assert len(served) == 10
    stats = store.pool.get_stats()
    assert stats.get("requests_queued", 0) - queued_before >= 10 - POOL_MAX
    assert stats["pool_size"] <= POOL_MAX and stats.get("requests_waiting") == 0
    assert store.health().postgres_version


def test_nested_checkouts_that_would_deadlock_get_pool_exhausted_instead(
    small_pool_store: Docstore,
) -> None:
    """Each thread holds a connection and asks for a second: a classic pool deadlock, broken by
    the pool timeout. The first to time out gets a typed error and lets go of its connection,
    which may then serve a thread still waiting."""
    store = small_pool_store
    all_holding = threading.Barrier(POOL_MAX)
    outcomes: list[object] = []

    def nested() -> None:
        with store.db.connection():
            all_holding.wait(10)
            try:
                # A second connection (not `conn=`) while holding one.
                outcomes.append(store.db.value("server_version", {}))
            except Exception as exc:  # judged below
                outcomes.append(exc)

    threads = [threading.Thread(target=nested, daemon=True) for _ in range(POOL_MAX)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "deadlock"
    assert len(outcomes) == POOL_MAX
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert errors and all(isinstance(e, PoolExhausted) for e in errors), outcomes
    assert all(isinstance(o, str) for o in outcomes if o not in errors)
    assert store.db.value("server_version", {})


def test_a_message_read_while_postgresql_is_down_is_acked_not_dead_lettered(
    side: Side,
    server: LocalPostgres,
    docstore_redis_url: str,
    docstore_blob_store: S3BlobStore,
) -> None:
    # The message stayed pending: every retry of a worker read another one, and after
    # QUEUE_MAX_DELIVERIES reclaims they went to the dead letters, documents that never
    # failed. PostgreSQL keeps the document PENDING; a worker claims it from there.
    settings = Settings.model_validate(
        {
            "DATABASE_URL": server.url,
            "REDIS_URL": docstore_redis_url,
            "pool_min_size": 1,
            "pool_timeout": 2,
            "connect_timeout": 1,
        }
    )
    with side.connect(settings, blobs=docstore_blob_store) as store:
        user = store.users.create(UserCreate(email="dead@example.com")).user
        document = store.submit_document(user, "a.txt", b"waits for postgresql")
        assert store.queue.stats().length == 1
        server.stop("fast")
        try:
            with pytest.raises(ServiceUnavailable):
                store.process_next("worker-1", extract_text, block_ms=0)
            assert store.queue.stats().pending == 0  # acked: nothing to reclaim or dead-letter
        finally:
            server.start()
        outcomes: list[Outcome] = []

        def processed() -> bool:
            try:
                outcome = store.process_next("worker-1", extract_text, block_ms=0)
            except ServiceUnavailable:  # the pool is still reconnecting
                return False
            if outcome is None:
                return False
            outcomes.append(outcome)
            return True

        wait_until(processed, 30, "a worker processed the document")
        assert outcomes[-1].action == "completed" and outcomes[-1].document_id == document.id
        assert store.queue.stats().dead_letters == 0


def test_health_reports_postgresql_down_within_its_own_short_wait(
    side: Side, server: LocalPostgres
) -> None:
    settings = Settings.model_validate(
        {"DATABASE_URL": server.url, "pool_min_size": 1, "pool_timeout": 60, "connect_timeout": 1}
    )
    with side.connect(settings) as store:
        assert store.health().postgres_error is None
        server.stop()
        try:
            report = store.health()  # a liveness probe: not POOL_TIMEOUT's 60 s
        finally:
            server.start()
    assert report.postgres_version is None and not report.ok
    assert report.postgres_error is not None and "within 2s" in report.postgres_error


def test_health_calls_a_pool_whose_connections_are_all_at_work_busy_not_down(
    small_pool_store: Docstore,
) -> None:
    store = small_pool_store
    holding = threading.Barrier(POOL_MAX + 1)
    release = threading.Event()

    def hold() -> None:
        with store.transaction():
            holding.wait()
            release.wait(30)

    threads = [threading.Thread(target=hold) for _ in range(POOL_MAX)]
    for thread in threads:
        thread.start()
    try:
        holding.wait()
        report = store.health()
    finally:
        release.set()
        for thread in threads:
            thread.join()
    # (No Redis in this test: only PostgreSQL is judged.)
    assert (report.postgres_busy, report.postgres_error) == (True, None)
    assert store.health().postgres_busy is False


def test_a_health_check_gives_its_connection_back_as_it_took_it(
    small_pool_store: Docstore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="psycopg.pool")
    for _ in range(3):
        assert small_pool_store.health().postgres_version
    assert [r.getMessage() for r in caplog.records if "rolling back" in r.getMessage()] == []


def test_a_submit_while_postgresql_is_down_deletes_its_blob_after_one_wait(
    side: Side, server: LocalPostgres, docstore_redis_url: str, tmp_path: Path
) -> None:
    # No connection came, so no row was written: the blob was kept all the same, after a
    # second wait of POOL_TIMEOUT to ask PostgreSQL whether a row named it.
    settings = Settings.model_validate(
        {
            "DATABASE_URL": server.url,
            "REDIS_URL": docstore_redis_url,
            "pool_min_size": 1,
            "pool_timeout": 1,
            "connect_timeout": 1,
        }
    )
    blobs = tmp_path / "blobs"
    with side.connect(settings, blobs=LocalBlobStore(blobs)) as store:
        user = store.users.create(UserCreate(email="down@example.com")).user
        server.stop("fast")
        try:
            with pytest.raises(ServiceUnavailable) as down:
                store.submit_document(user, "a.txt", b"never recorded")
        finally:
            server.start()
    assert down.value.before_sending
    assert [p for p in blobs.rglob("*") if p.is_file()] == []
