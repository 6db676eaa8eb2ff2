"""The intake flow on a Redis Cluster with replicas (3 primaries + 3 replicas, REDIS_CLUSTER=true)
while the primary holding the queue is killed and its replica promoted.

Nothing is retried by the client (docstore fails fast): the flow itself must carry on — submits
keep their PENDING rows when the enqueue fails, workers claim from PostgreSQL while the queue
cannot answer, progress, cache and limiter fail open — and `requeue_stuck` re-enqueues what the
failover lost. Every document ends COMPLETED or FAILED, as its content dictates, once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

import psycopg
import pytest
import redis
from helpers import wait_until
from pydantic import SecretStr
from sides import Side, side_fixture, unwrapped  # noqa: F401

from docstore import Docstore, LimitCheck, RateLimiter, Settings, UserCreate
from docstore.errors import ServiceUnavailable
from docstore.intake.blobs import S3BlobStore
from docstore.intake.extractors import Extraction, ProgressCallback, extract_text
from docstore.intake.outcomes import Outcome
from docstore.models import DocumentResponse
from docstore.redis.keys import queue_key, rate_limit_key
from docstore.testing.redis_cluster import LocalRedisCluster

pytestmark = pytest.mark.timeout(180)

WORKERS = 3


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    cluster = LocalRedisCluster(primaries=3, replicas=1, node_timeout_ms=1000)
    cluster.start()
    yield cluster
    cluster.close()


@pytest.fixture
def cluster(redis_cluster: LocalRedisCluster) -> LocalRedisCluster:
    """The cluster with every node up (a node killed by the last test rejoined as a replica)."""
    for port in redis_cluster.ports:
        if port not in redis_cluster.processes:
            redis_cluster.start_node(port)
    redis_cluster.wait_until_healthy()
    for port in redis_cluster.processes:
        if redis_cluster.node_info(port)["role"] == "master":
            node = redis.Redis(port=port)
            node.flushall()
            # Until its replica has the flush too: a test that kills this primary at once would
            # otherwise promote a replica still holding the last test's queue (seen in CI: two
            # stale pending messages, 'assert 12 == 10' on the queue's length).
            node.execute_command("WAIT", 1, 5000)
            node.close()
    return redis_cluster


@pytest.fixture
def settings(cluster: LocalRedisCluster, docstore_settings: Settings) -> Settings:
    return docstore_settings.model_copy(
        update={
            "redis_url_secret": SecretStr(cluster.url),
            "redis_cluster": True,
            "lease_seconds": 3.0,
            "rate_limit": 10_000,
            "retry_backoff_base": 0.1,  # failing documents retry at once, not after 10 s
        }
    )


def extract(data: bytes, filename: str, progress: ProgressCallback) -> Extraction:
    """The text extractor, failing the documents whose content says so."""
    if data.startswith(b"FAIL"):
        raise ValueError("this document cannot be read")
    return extract_text(data, filename, progress)


def content(n: int) -> tuple[bytes, str]:
    """The bytes of document `n` and the status they must end in."""
    if n % 10 == 3:
        return f"FAIL {n}".encode(), "FAILED"
    return f"quarterly report number {n}".encode(), "COMPLETED"


def statuses(database_url: str, ids: list[int]) -> dict[int, str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT id, status FROM documents WHERE id = ANY(%s)", [ids])
        return {int(i): str(s) for i, s in rows.fetchall()}


def away_from(settings: Settings, cluster: LocalRedisCluster, port: int) -> Settings:
    """`settings` naming a node other than `port` in REDIS_URL (the sync cluster client asks
    that node for the layout when it is made)."""
    other = next(p for p in cluster.processes if p != port)
    return settings.model_copy(
        update={"redis_url_secret": SecretStr(f"redis://127.0.0.1:{other}/0")}
    )


def queue_primary(cluster: LocalRedisCluster) -> int:
    return cluster.primary_of_slot(cluster.slot_of(queue_key("documents")))


def wait_for_failover(cluster: LocalRedisCluster, killed: int) -> None:
    def promoted() -> bool:
        try:
            return queue_primary(cluster) != killed
        except RuntimeError:
            return False

    wait_until(promoted, 30, "a replica to take over the queue's slots")


class Workers:
    """Worker threads running `process_next` (and `requeue_stuck` when idle) like a service's
    worker loop: an outage of a call is logged by docstore and the loop goes on."""

    def __init__(self, store: Docstore, count: int) -> None:
        self.store = store
        self.outcomes: list[Outcome] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(count)]

    def __enter__(self) -> Workers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, n: int) -> None:
        while not self._stop.is_set():
            try:
                outcome = self.store.process_next(f"worker-{n}", extract, block_ms=100)
                if outcome is None:
                    self.store.requeue_stuck(pending_for=0.5)
                    continue
            except ServiceUnavailable as exc:  # Redis failing over: the next call goes on
                with self._lock:
                    self.failures.append(exc.message)
                time.sleep(0.05)
                continue
            with self._lock:
                self.outcomes.append(outcome)


def assert_each_once(
    outcomes: list[Outcome], expected: dict[int, str], final: dict[int, str]
) -> None:
    assert final == expected  # COMPLETED or FAILED, as the content dictates
    ends = Counter(o.document_id for o in outcomes if o.action in ("completed", "failed"))
    assert ends == Counter(list(expected))  # every document ended once: none twice, none lost


def test_the_intake_flow_goes_on_through_a_primary_failover(
    side: Side,
    cluster: LocalRedisCluster,
    settings: Settings,
    docstore_blob_store: S3BlobStore,
    docstore_database_url: str,
) -> None:
    killed = queue_primary(cluster)
    settings = away_from(settings, cluster, killed)
    with (
        cast(Any, side.connect(settings, blobs=docstore_blob_store)) as store,
        Workers(store, WORKERS) as workers,
    ):
        user = store.users.create(UserCreate(email="cluster@example.com")).user
        expected: dict[int, str] = {}
        for n in range(60):
            if n == 20:
                cluster.kill(killed)  # mid-load: workers busy, submits going on
            assert store.limiter.hit(f"user-{user.id}").allowed  # fails open meanwhile
            data, status = content(n)
            expected[store.submit_document(user, f"{n}.txt", data).id] = status
        wait_for_failover(cluster, killed)
        ids = list(expected)
        wait_until(
            lambda: set(statuses(docstore_database_url, ids).values()) <= {"COMPLETED", "FAILED"},
            90,
            "every document to end COMPLETED or FAILED",
        )
    assert_each_once(workers.outcomes, expected, statuses(docstore_database_url, ids))
    # After the failover: progress, cache and limiter answer from the promoted replica.
    with cast(Any, side.connect(settings, blobs=docstore_blob_store)) as store:
        done = next(i for i, s in expected.items() if s == "COMPLETED")
        progress = store.progress.get(done)
        assert progress is None or progress.percent == 100
        document = store.documents.get(done)
        key = f"document:{done}"
        assert store.cache.get_or_set(key, lambda: document, DocumentResponse) == document
        assert store.cache.get(key, DocumentResponse) == document  # stored on the cluster
        assert store.limiter.hit(f"user-{user.id}").allowed


def test_requeue_stuck_re_enqueues_what_the_failover_lost(
    side: Side,
    cluster: LocalRedisCluster,
    settings: Settings,
    docstore_blob_store: S3BlobStore,
    docstore_database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="docstore")
    killed = queue_primary(cluster)
    settings = away_from(settings, cluster, killed)
    with cast(Any, side.connect(settings, blobs=docstore_blob_store)) as store:
        user = store.users.create(UserCreate(email="lost@example.com")).user
        expected: dict[int, str] = {}

        def submit(first: int, count: int) -> list[int]:
            ids = []
            for n in range(first, first + count):
                data, status = content(n)
                ids.append(store.submit_document(user, f"{n}.txt", data).id)
                expected[ids[-1]] = status
            return ids

        cluster.kill(killed)
        lost = submit(0, 10)  # while no replica has taken over: their messages are lost
        lost_at = time.monotonic()
        wait_for_failover(cluster, killed)
        not_enqueued = [r for r in caplog.records if "not enqueued" in r.getMessage()]
        assert len(not_enqueued) == len(lost)
        # Queued after the loss (past requeue_stuck's 5 s margin): the backlog is not copied.
        time.sleep(max(0.0, 5.5 - (time.monotonic() - lost_at)))
        queued = submit(10, 10)
        assert store.queue.stats().length == len(queued)
        report = store.requeue_stuck(pending_for=0)
        assert report.requeued == len(lost)
        assert store.queue.stats().length == len(queued) + len(lost)
        with Workers(store, WORKERS) as workers:
            ids = list(expected)
            wait_until(
                lambda: (
                    set(statuses(docstore_database_url, ids).values()) <= {"COMPLETED", "FAILED"}
                ),
                90,
                "every document to end COMPLETED or FAILED",
            )
    assert_each_once(workers.outcomes, expected, statuses(docstore_database_url, ids))


def test_limits_decided_together_on_a_cluster_reach_every_key_s_node(
    side: Side, cluster: LocalRedisCluster, settings: Settings
) -> None:
    with cast(Any, side.connect(settings)) as store:
        core = unwrapped(store.redis_core)
        address = side.make(RateLimiter, core, limit=3, period=3600, policy="address")
        key = side.make(RateLimiter, core, limit=1, period=3600, policy="key")
        names = [f"client-{n}" for n in range(12)]
        slots = {cluster.primary_of_slot(cluster.slot_of(rate_limit_key("key", n))) for n in names}
        assert len(slots) > 1  # the keys sit on several primaries
        decide = side.blocking(side.twin(RateLimiter).decide_together)
        checks = [LimitCheck(unwrapped(address), n, consume=False) for n in names]
        checks += [LimitCheck(unwrapped(key), n) for n in names]
        first = decide(checks)
        for port in cluster.processes:  # every node forgets the scripts: NOSCRIPT on each
            redis.Redis(port=port).script_flush()
        second = decide(checks)
        assert [r.allowed for r in first] == [True] * 24
        assert [r.allowed for r in second] == [True] * 12 + [False] * 12
        assert all(r.remaining == 3 for r in second[:12])
