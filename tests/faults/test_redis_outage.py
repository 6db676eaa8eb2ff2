"""Redis down, frozen, then back: the cache fails open, the limiter applies its policy, the queue
and progress readers raise `ServiceUnavailable`, and everything recovers (scripts reloaded)."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis
from sides import Side, side_fixture  # noqa: F401 (fixtures)

from docstore import RedisCore, ServiceUnavailable, Settings
from docstore.ephemeral.cache import RedisCache
from docstore.ephemeral.progress import ProgressTracker
from docstore.ephemeral.queue import TaskQueue
from docstore.ephemeral.rate_limit import DecidedBy, FailurePolicy, RateLimiter
from docstore.redis.client import new_redis
from docstore.redis.keys import cache_lock_key
from docstore.redis.scripts import lua_source
from docstore.testing.servers import LocalRedis

pytestmark = pytest.mark.timeout(60)


@dataclass
class RedisSide:
    server: LocalRedis
    client: redis.Redis
    cache: RedisCache
    lenient: RateLimiter
    strict: RateLimiter
    queue: TaskQueue
    progress: ProgressTracker

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@pytest.fixture
def redis_side(side: Side, local_redis_factory: Callable[[], LocalRedis]) -> Iterator[RedisSide]:
    server = local_redis_factory()
    client = side.make(new_redis, Settings.model_validate({"REDIS_URL": server.url}))
    # One core for all five, as the store wires them: one address, scripts registered once.
    core = side.make(RedisCore, client)
    yield RedisSide(
        server=server,
        client=client,
        cache=side.make(RedisCache, core),
        lenient=side.make(RateLimiter, core, limit=2, period=3600, policy="lenient"),
        strict=side.make(
            RateLimiter,
            core,
            limit=2,
            period=3600,
            policy="strict",
            failure_policy=FailurePolicy.DENY,
        ),
        queue=side.make(TaskQueue, core),
        progress=side.make(ProgressTracker, core),
    )
    if server.process is not None and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)
    side.close_redis(client)


def warm_up(side: RedisSide) -> None:
    assert side.cache.get_or_set("k", lambda: 1, int) == 1
    assert side.lenient.hit("u").allowed and side.strict.hit("u").allowed
    side.queue.enqueue(1)
    assert side.progress.set(1, 10, "ocr") is not None


def assert_calm_outage(side: RedisSide, caplog: pytest.LogCaptureFixture) -> None:
    # Cache: a miss, a skipped write, the loader still runs, errors counted.
    errors_before = side.cache.stats().errors
    assert side.cache.get("k", int) is None
    assert side.cache.set("k", 2) is False
    assert side.cache.get_or_set("k", lambda: 3, int) == 3
    assert side.cache.stats().errors == errors_before + 3

    # Limiter: each policy decides, and says so.
    with caplog.at_level(logging.WARNING, logger="docstore.rate_limit"):
        allowed = side.lenient.hit("u")
        denied = side.strict.hit("u")
    assert allowed.allowed and allowed.decided_by is DecidedBy.FAILURE_POLICY
    assert not denied.allowed and denied.degraded
    assert denied.headers()["Retry-After"] == "1"
    assert "failure policy deny" in caplog.text

    # Queue and progress reads: typed errors naming the server.
    with pytest.raises(ServiceUnavailable) as raised:
        side.queue.enqueue(2)
    assert raised.value.service == "redis" and raised.value.address == side.address
    with pytest.raises(ServiceUnavailable):
        side.queue.consume("worker-a")
    with pytest.raises(ServiceUnavailable):
        side.progress.get(1)
    # Progress writes are best effort: a worker keeps working.
    assert side.progress.set(1, 20, "ocr") is None


def assert_recovered(side: RedisSide) -> None:
    result = side.strict.hit("fresh")
    assert result.allowed and result.decided_by is DecidedBy.REDIS
    assert side.cache.get_or_set("k2", lambda: 4, int) == 4
    assert side.cache.get("k2", int) == 4
    side.queue.enqueue(3)
    # A frozen server kept its memory (and maybe the write that timed out): at least once.
    assert 3 in [m.document_id for m in side.queue.consume("worker-a", count=5)]
    stored = side.progress.set(1, 30, "ocr")
    assert stored is not None and stored.percent == 30.0


def test_stopped_redis_is_survived_and_recovered(
    redis_side: RedisSide, caplog: pytest.LogCaptureFixture
) -> None:
    warm_up(redis_side)
    sha = hashlib.sha1(lua_source("rate_limit").encode()).hexdigest()
    redis_side.server.stop()
    assert_calm_outage(redis_side, caplog)

    redis_side.server.start()  # same port, empty memory, no scripts
    assert redis_side.client.script_exists(sha) == [False]
    assert_recovered(redis_side)
    assert redis_side.client.script_exists(sha) == [True]
    assert redis_side.lenient.hit("u").decided_by is DecidedBy.REDIS


def test_frozen_redis_is_survived_within_the_socket_timeout(
    redis_side: RedisSide, caplog: pytest.LogCaptureFixture
) -> None:
    warm_up(redis_side)
    assert redis_side.server.process is not None
    os.kill(redis_side.server.process.pid, signal.SIGSTOP)  # accepts nothing, answers nothing
    try:
        assert_calm_outage(redis_side, caplog)
    finally:
        os.kill(redis_side.server.process.pid, signal.SIGCONT)
    assert_recovered(redis_side)


def test_invalidations_past_their_bound_drop_every_cached_document_when_redis_answers(
    side: Side, local_redis_factory: Callable[[], LocalRedis]
) -> None:
    server = local_redis_factory()
    client = side.make(new_redis, Settings.model_validate({"REDIS_URL": server.url}))
    cache = side.make(RedisCache, side.make(RedisCore, client), max_pending_invalidations=2)
    for document_id in (1, 2, 3, 4):
        assert cache.cache_document_result(document_id, {"v": document_id})
    assert cache.set("other", 1)
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        assert cache.invalidate_documents([1]) is False
        assert cache.invalidate_documents([2, 3]) is False  # 3 waiting: past the bound of 2
        assert cache.pending_invalidations == 3
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    # The next call drops every document result: also 4, whose id the overflow forgot.
    assert cache.get_document_result(4, dict) is None
    assert cache.pending_invalidations == 0
    assert [cache.get_document_result(i, dict) for i in (1, 2, 3)] == [None, None, None]
    assert cache.get("other", int) == 1  # not a document result: kept
    side.close_redis(client)


def test_a_lock_a_frozen_redis_took_for_nobody_is_released_by_the_next_call(
    side: Side, local_redis_factory: Callable[[], LocalRedis]
) -> None:
    server = local_redis_factory()
    client = side.make(new_redis, Settings.model_validate({"REDIS_URL": server.url}))
    cache = side.make(RedisCache, side.make(RedisCore, client))
    for n in range(40):  # mostly misses: get_or_set now sends its lock script first
        assert cache.get_or_set(f"cold-{n}", lambda n=n: n, int) == n
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        assert cache.get_or_set("k", lambda: 7, int) == 7  # the script timed out: loaded anyway
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    watcher = redis.Redis.from_url(server.url)
    # Waking up, Redis ran the script it had buffered: the lock is held for nobody...
    assert watcher.exists(cache_lock_key("k"))
    # ...until the cache's next call releases it (the next reader of "k" need not wait 10 s).
    assert cache.get("other", int) is None
    assert not watcher.exists(cache_lock_key("k"))
    watcher.close()
    side.close_redis(client)


def test_a_read_that_cannot_pay_its_owed_drops_asks_a_frozen_redis_once(
    side: Side, local_redis_factory: Callable[[], LocalRedis]
) -> None:
    # A drop owed to a frozen Redis was paid first by each read, which then asked Redis again
    # for the value (and for owed locks): two or three socket timeouts for one read, and a
    # copy the unpaid drop was meant to remove could be served should Redis answer meanwhile.
    server = local_redis_factory()
    client = side.make(new_redis, Settings.model_validate({"REDIS_URL": server.url}))
    cache = side.make(RedisCache, side.make(RedisCore, client))
    assert cache.cache_document_result(1, {"v": 1})
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        assert cache.invalidate_document(1) is False  # owed from now on
        before = cache.stats()
        assert cache.get_or_set("k", lambda: 7, int) == 7
        assert cache.get_document_result(1, dict) is None
        after = cache.stats()
        assert after.errors == before.errors + 2  # one failed contact per read
        assert after.loads == before.loads + 1
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert cache.get_document_result(1, dict) is None  # paid now: the stale copy is gone
    assert cache.pending_invalidations == 0
    side.close_redis(client)


def test_one_call_at_a_time_drops_every_cached_document_the_others_fail_open(
    side: Side, local_redis_factory: Callable[[], LocalRedis]
) -> None:
    # Past the bound of owed drops, the next call drops every cached document (a SCAN of the
    # keyspace). Every call meanwhile started its own SCAN of the same keys; now they load
    # from the source without asking Redis, and without reading the cache, until it is done.
    server = local_redis_factory()
    settings = Settings.model_validate({"REDIS_URL": server.url, "REDIS_SOCKET_TIMEOUT": 2})
    client = side.make(new_redis, settings)
    cache = side.make(RedisCache, side.make(RedisCore, client), max_pending_invalidations=1)
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        assert cache.invalidate_documents([1]) is False
        assert cache.invalidate_documents([2, 3]) is False  # past the bound: everything owed
        errors = cache.stats().errors
        dropping = threading.Thread(target=cache.get, args=("a", int))
        dropping.start()  # scans, and waits on the frozen Redis for its socket timeout
        time.sleep(0.5)
        assert cache.get_or_set("b", lambda: 2, int) == 2
        assert dropping.is_alive()  # answered while the other call still waited on Redis
        assert cache.stats().errors == errors  # and without asking Redis itself
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    dropping.join()
    assert cache.get("a", int) is None and cache.pending_invalidations == 0
    side.close_redis(client)


def test_locks_a_redis_will_not_release_never_make_reads_miss(
    side: Side, local_redis_factory: Callable[[], LocalRedis]
) -> None:
    # A user without scripting: get_or_set's script is refused, so its lock is owed for
    # release, and the release (a script too) is refused for good. Reads then all missed.
    server = local_redis_factory()
    admin = redis.Redis.from_url(server.url)
    admin.acl_setuser(
        "app", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-@scripting"]
    )
    url = server.url.replace("redis://", "redis://app:pw@", 1)
    client = side.make(new_redis, Settings.model_validate({"REDIS_URL": url}))
    cache = side.make(RedisCache, side.make(RedisCore, client))
    for n in range(40):  # mostly misses: get_or_set goes to its script first
        assert cache.get_or_set(f"cold-{n}", lambda n=n: n, int) == n
    assert cache.set("k", 5)
    assert cache.get("k", int) == 5
    admin.close()
    side.close_redis(client)


def test_a_write_a_frozen_redis_cannot_take_fails_open_within_the_socket_timeout(
    side: Side, local_redis_factory: Callable[[], LocalRedis]
) -> None:
    # 64 MB is more than loopback's socket buffers hold: the send itself waits, under the
    # socket timeout (the async client sends under a timeout scope, not `wait_for`).
    server = local_redis_factory()
    client = side.make(new_redis, Settings.model_validate({"REDIS_URL": server.url}))
    cache = side.make(RedisCache, side.make(RedisCore, client))
    assert cache.set("small", 1)
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        errors = cache.stats().errors
        assert cache.set("big", "x" * (64 << 20)) is False
        assert cache.stats().errors == errors + 1
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    # The cut-off send closed its connection: the next command goes out on a clean one.
    assert cache.get("small", int) == 1
    assert cache.set("after", 2) and cache.get("after", int) == 2
    side.close_redis(client)
