"""The async Redis core and Redis side on real servers: the cache (single flight across tasks and
clients, fail-open), the limiter and its failure policy, the queue (delivery, reclaim, dead
letters, a blocking read that leaves the loop free), progress, and parity with the sync classes."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
import redis.asyncio
from pydantic import BaseModel

from docstore import InvalidInput, RedisCommandError, ServiceUnavailable, Settings
from docstore.ephemeral.cache import RedisCache
from docstore.ephemeral.cache_async import AsyncRedisCache
from docstore.ephemeral.progress import ProgressTracker
from docstore.ephemeral.progress_async import AsyncProgressTracker
from docstore.ephemeral.queue import TaskQueue
from docstore.ephemeral.queue_async import AsyncTaskQueue
from docstore.ephemeral.rate_limit import RateLimiter
from docstore.ephemeral.rate_limit_async import AsyncRateLimiter
from docstore.ephemeral.values import CacheStats, DecidedBy, FailurePolicy, Progress
from docstore.redis.core import RedisCore
from docstore.redis.core_async import AsyncRedisCore
from docstore.testing.servers import LocalRedis

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

Error = ServiceUnavailable | RedisCommandError


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings_for(url: str) -> Settings:
    return Settings.model_validate({"REDIS_URL": url})


@pytest.fixture
async def core(docstore_redis_url: str) -> AsyncIterator[AsyncRedisCore]:
    core = AsyncRedisCore.from_settings(settings_for(docstore_redis_url))
    yield core
    await core.client.aclose()


@pytest.fixture
async def outage(
    local_redis_factory: Callable[[], LocalRedis],
) -> AsyncIterator[tuple[LocalRedis, AsyncRedisCore]]:
    """A core on a private server the test stops when it wants Redis gone."""
    server = local_redis_factory()
    core = AsyncRedisCore.from_settings(settings_for(server.url))
    yield server, core
    await core.client.aclose()


# -- the core -----------------------------------------------------------------------------------


async def test_the_core_is_built_on_an_asyncio_client(core: AsyncRedisCore) -> None:
    assert isinstance(core.client, redis.asyncio.Redis)
    assert AsyncRedisCore.of(core) is core
    assert AsyncRedisCore.of(core.client).address == core.address
    assert core.socket_timeout is not None


async def test_fail_open_awaits_the_call_and_falls_back_only_on_failures(
    core: AsyncRedisCore, outage: tuple[LocalRedis, AsyncRedisCore]
) -> None:
    errors: list[Error] = []

    def fallback(error: Error) -> str:
        errors.append(error)
        return "fell back"

    await core.client.set("docstore:test:{k}", "v")
    assert await core.fail_open(lambda: core.client.get("docstore:test:{k}"), fallback) == b"v"
    await core.client.set("docstore:test:{string}", "text")
    with pytest.raises(RedisCommandError, match="WRONGTYPE"):
        await core.fail_open(lambda: core.client.lpush("docstore:test:{string}", "x"), fallback)
    assert errors == []
    refused = await core.fail_open(
        lambda: core.client.lpush("docstore:test:{string}", "x"), fallback, also_refused=True
    )
    assert refused == "fell back" and isinstance(errors.pop(), RedisCommandError)

    server, down = outage
    server.stop()
    assert await down.fail_open(lambda: down.client.get("k"), fallback) == "fell back"
    (error,) = errors
    assert isinstance(error, ServiceUnavailable) and error.address == down.address
    with pytest.raises(ServiceUnavailable), down.errors():
        await down.client.ping()


async def test_a_script_is_loaded_again_after_the_script_cache_is_flushed(
    core: AsyncRedisCore,
) -> None:
    progress = AsyncProgressTracker(core)
    assert core.script("progress_set") is core.script("progress_set")
    assert await progress.set(1, 10, "ocr") is not None
    await core.client.script_flush()
    stored = await progress.set(1, 20, "ocr")
    assert stored is not None and stored.percent == 20


# -- cache --------------------------------------------------------------------------------------


async def test_cache_get_set_and_delete_round_trip(core: AsyncRedisCore) -> None:
    cache = AsyncRedisCache(core)
    assert await cache.get("answer", int) is None
    assert await cache.set("answer", {"value": 42}) is True
    assert await cache.get("answer", dict[str, int]) == {"value": 42}
    assert await cache.delete("answer") is True
    assert await cache.get("answer", dict[str, int]) is None
    assert await cache.cache_document_result(7, [1, 2]) is True
    assert await cache.get_document_result(7, list[int]) == [1, 2]
    assert await cache.invalidate_document(7) is True
    assert cache.stats() == CacheStats(hits=2, misses=2, errors=0, loads=0)


async def test_get_or_set_runs_the_loader_once_for_20_concurrent_tasks(
    core: AsyncRedisCore, docstore_redis_url: str
) -> None:
    # Two caches on two clients, as two processes would have: the single flight is Redis's lock.
    other = AsyncRedisCore.from_settings(settings_for(docstore_redis_url))
    caches = [AsyncRedisCache(core), AsyncRedisCache(other)]
    runs = 0
    results: list[int] = []

    async def loader() -> int:
        nonlocal runs
        runs += 1
        await anyio.sleep(0.3)
        return 42

    async def one_task(cache: AsyncRedisCache) -> None:
        results.append(await cache.get_or_set("slow", loader, int))

    async with anyio.create_task_group() as tasks:
        for i in range(20):
            tasks.start_soon(one_task, caches[i % 2])
    await other.client.aclose()

    assert runs == 1
    assert results == [42] * 20
    assert sum(cache.stats().loads for cache in caches) == 1
    assert await caches[0].get_or_set("slow", loader, int) == 42 and runs == 1


async def test_the_cache_fails_open_when_redis_is_down(
    outage: tuple[LocalRedis, AsyncRedisCore],
) -> None:
    server, core = outage
    cache = AsyncRedisCache(core)
    assert await cache.set("k", 1) is True
    server.stop()

    async def loader() -> int:
        return 3

    assert await cache.get("k", int) is None
    assert await cache.set("k", 2) is False
    assert await cache.get_or_set("k", loader, int) == 3
    assert await cache.delete("k") is False
    stats = cache.stats()
    assert (stats.errors, stats.loads) == (4, 1)


# -- rate limit ---------------------------------------------------------------------------------


async def test_limiter_hit_peek_and_reset(core: AsyncRedisCore) -> None:
    limiter = AsyncRateLimiter(core, limit=3, period=3600, policy="async")
    assert (await limiter.peek("u")).remaining == 3
    assert [(await limiter.hit("u")).remaining for _ in range(3)] == [2, 1, 0]
    denied = await limiter.hit("u")
    assert not denied.allowed and denied.retry_after > 0
    assert denied.decided_by is DecidedBy.REDIS and "Retry-After" in denied.headers()
    assert not (await limiter.peek("u")).allowed
    await limiter.reset("u")
    assert (await limiter.hit("u", cost=3)).allowed
    assert (await limiter.hit("other")).remaining == 2  # keys are counted apart


async def test_limiter_failure_policy_decides_when_redis_is_down(
    outage: tuple[LocalRedis, AsyncRedisCore],
) -> None:
    server, core = outage
    lenient = AsyncRateLimiter(core, limit=1, period=3600, policy="lenient")
    strict = AsyncRateLimiter(
        core, limit=1, period=3600, policy="strict", failure_policy=FailurePolicy.DENY
    )
    assert (await lenient.hit("u")).allowed and (await strict.hit("u")).allowed
    server.stop()
    allowed, denied = await lenient.hit("u"), await strict.hit("u")
    assert allowed.allowed and allowed.degraded
    assert not denied.allowed and denied.decided_by is DecidedBy.FAILURE_POLICY
    with pytest.raises(ServiceUnavailable):
        await lenient.reset("u")


# -- queue --------------------------------------------------------------------------------------


async def test_queue_enqueue_consume_and_ack(core: AsyncRedisCore) -> None:
    queue = AsyncTaskQueue(core)
    first = await queue.enqueue(1)
    assert len(await queue.enqueue_many([2, 3])) == 2
    assert await queue.enqueue_many([]) == []
    messages = await queue.consume("worker-a", count=10)
    assert [(m.document_id, m.deliveries) for m in messages] == [(1, 1), (2, 1), (3, 1)]
    assert messages[0].message_id == first
    assert (await queue.oldest_enqueued_at()) == messages[0].enqueued_at
    assert (await queue.stats()).pending == 3
    assert await queue.ack(*messages) == 3
    assert await queue.ack(first) == 0
    stats = await queue.stats()
    assert (stats.length, stats.pending, stats.dead_letters) == (0, 0, 0)
    assert await queue.oldest_enqueued_at() is None


async def test_queue_reclaims_idle_messages_then_dead_letters_them(core: AsyncRedisCore) -> None:
    queue = AsyncTaskQueue(core, max_deliveries=2, reclaim_idle=0.1)
    await queue.enqueue(9)
    assert [m.deliveries for m in await queue.consume("worker-a")] == [1]
    await anyio.sleep(0.15)
    assert [m.deliveries for m in await queue.reclaim("worker-b")] == [2]
    await anyio.sleep(0.15)
    assert await queue.consume("worker-c") == []  # delivered twice: dead, not handed out
    (letter,) = await queue.dead_letters()
    assert (letter.document_id, letter.deliveries, letter.last_consumer) == (
        9,
        2,
        "worker-b",
    )  # held it last
    stats = await queue.stats()
    assert (stats.length, stats.pending, stats.dead_letters) == (0, 0, 1)


async def test_a_blocking_consume_leaves_the_event_loop_free(core: AsyncRedisCore) -> None:
    queue = AsyncTaskQueue(core)
    await queue.enqueue(1)
    assert [m.document_id for m in await queue.consume("worker-a")] == [1]  # group exists now
    got: list[int] = []

    async def wait_for_one() -> None:
        got.extend(m.document_id for m in await queue.consume("worker-b", block_ms=5000))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(wait_for_one)
        await anyio.sleep(0.2)  # runs while the read blocks: the loop is free
        await queue.enqueue(2)
    # Had the read blocked the loop, the enqueue would have waited for its 5 s to run out and
    # the read would have returned nothing.
    assert got == [2]


async def test_queue_raises_service_unavailable_when_redis_is_down(
    outage: tuple[LocalRedis, AsyncRedisCore],
) -> None:
    server, core = outage
    queue = AsyncTaskQueue(core)
    await queue.enqueue(1)
    server.stop()
    with pytest.raises(ServiceUnavailable):
        await queue.consume("worker-a")
    with pytest.raises(ServiceUnavailable):
        await queue.stats()


# -- progress -----------------------------------------------------------------------------------


async def test_progress_set_get_and_clear(core: AsyncRedisCore) -> None:
    progress = AsyncProgressTracker(core, ttl=60)
    assert await progress.get(5) is None
    stored = await progress.set(5, 40, "ocr")
    assert isinstance(stored, Progress) and (stored.percent, stored.stage) == (40, "ocr")
    late = await progress.set(5, 10, "upload")  # stale: never goes backwards
    assert late is not None and late.percent == 40
    read = await progress.get(5)
    assert read is not None and read.percent == 40 and read.updated_at.tzinfo is not None
    await progress.clear(5)
    assert await progress.get(5) is None


async def test_progress_set_is_best_effort_and_get_raises_when_redis_is_down(
    outage: tuple[LocalRedis, AsyncRedisCore],
) -> None:
    server, core = outage
    progress = AsyncProgressTracker(core)
    server.stop()
    assert await progress.set(1, 50, "ocr") is None
    with pytest.raises(ServiceUnavailable):
        await progress.get(1)


# -- parity with the sync side ------------------------------------------------------------------

# Plain helpers with no I/O: the same on both sides, not coroutine functions.
NOT_IO = {
    "RedisCore.of",
    "RedisCore.from_settings",
    "RedisCore.script",
    "RedisCore.errors",
    "RedisCore.socket_timeout",
    "RedisCache.stats",
    "RedisCache.document_key",
    "RedisCache.pending_invalidations",
    "RedisCache.invalidate_later",  # no I/O: it runs in a task being cancelled
}
PAIRS = [
    (RedisCore, AsyncRedisCore),
    (RedisCache, AsyncRedisCache),
    (RateLimiter, AsyncRateLimiter),
    (TaskQueue, AsyncTaskQueue),
    (ProgressTracker, AsyncProgressTracker),
]


def _parameters(function: object) -> list[tuple[str, object, object]]:
    signature = inspect.signature(function)  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


@pytest.mark.parametrize(("sync", "async_"), PAIRS, ids=lambda cls: cls.__name__)
def test_every_sync_method_has_an_async_twin_with_the_same_parameters(
    sync: type, async_: type
) -> None:
    public = [name for name in vars(sync) if not name.startswith("_")]
    assert public, "the scan sees the sync methods"
    assert _parameters(sync.__init__) == _parameters(async_.__init__)
    for name in public:
        assert hasattr(async_, name), f"{async_.__name__}.{name} is missing"
        plain, twin = inspect.getattr_static(sync, name), inspect.getattr_static(async_, name)
        if not callable(plain) and not isinstance(plain, (property, classmethod, staticmethod)):
            continue  # an attribute (a slot), not a method
        if isinstance(plain, property):
            assert isinstance(twin, property) and f"{sync.__name__}.{name}" in NOT_IO
            continue
        plain, twin = getattr(sync, name), getattr(async_, name)
        assert _parameters(plain) == _parameters(twin), name
        if f"{sync.__name__}.{name}" in NOT_IO:
            assert not inspect.iscoroutinefunction(twin), name
        else:
            assert inspect.iscoroutinefunction(twin), f"{async_.__name__}.{name} is not async"
            assert not inspect.iscoroutinefunction(plain), name


async def test_a_command_of_docstores_async_client_makes_no_task(core: AsyncRedisCore) -> None:
    # Before Python 3.12, redis-py sent each command under `asyncio.wait_for`, which made a task
    # per command (two more turns of the loop, ~35 us of CPU); docstore's clients send under a
    # timeout scope instead.
    made: list[object] = []
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        made.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    await core.client.set("docstore:test:{tasks}", "v")  # connects
    loop.set_task_factory(counting)
    try:
        for _ in range(5):
            assert await core.client.get("docstore:test:{tasks}") == b"v"
    finally:
        loop.set_task_factory(factory)
    assert made == []


class Point(BaseModel):
    x: int
    y: int


async def test_get_or_set_returns_on_a_miss_what_a_hit_returns(
    core: AsyncRedisCore, docstore_redis_url: str
) -> None:
    # A miss returned the loader's raw value (a dict, "5") and a hit the value read as the
    # type; a value that is no such type was stored, and no later read could decode it.
    cache = AsyncRedisCache(core)
    sync = RedisCache(RedisCore(redis.Redis.from_url(docstore_redis_url)))

    async def point() -> Any:
        return {"x": 1, "y": "2"}

    async def five() -> Any:
        return "5"

    async def not_a_number() -> Any:
        return "abc"

    for _ in range(2):  # a miss, then a hit
        assert await cache.get_or_set("point", point, Point) == Point(x=1, y=2)
        assert await cache.get_or_set("five", five, int) == 5
        assert sync.get_or_set("sync-five", lambda: "5", int) == 5
    with pytest.raises(InvalidInput, match="not a int"):
        await cache.get_or_set("nan", not_a_number, int)
    with pytest.raises(InvalidInput, match="not a int"):
        sync.get_or_set("sync-nan", lambda: "abc", int)
    assert await cache.get("nan", int) is None and sync.get("sync-nan", int) is None


async def test_get_or_set_refuses_a_loader_of_the_other_side(
    core: AsyncRedisCore, docstore_redis_url: str
) -> None:
    # The async cache awaited a plain function's value: a raw TypeError after the loader ran.
    cache = AsyncRedisCache(core)
    with pytest.raises(InvalidInput, match="loader must be an async function"):
        await cache.get_or_set("plain", lambda: 5, int)

    async def five() -> int:
        return 5

    sync = RedisCache(RedisCore(redis.Redis.from_url(docstore_redis_url)))
    with pytest.raises(InvalidInput, match="loader must be a plain function"):
        sync.get_or_set("async", five, int)  # type: ignore[arg-type]
    assert await cache.get("plain", int) is None
