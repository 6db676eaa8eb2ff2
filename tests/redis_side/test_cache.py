"""RedisCache on a real Redis: JSON round trips, TTL jitter, single flight, invalidation."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

import pytest
import redis
from pydantic import BaseModel
from sides import Side, core_on_fixture, side_fixture  # noqa: F401 (fixtures)

from docstore import Docstore, FailurePolicy, InvalidInput, RedisCore
from docstore.ephemeral.cache import NOT_KEPT, NOT_KEPT_TTL, RedisCache


class Result(BaseModel):
    text: str
    pages: int
    finished_at: datetime


RESULT = Result(text="hello", pages=3, finished_at=datetime(2024, 5, 1, tzinfo=timezone.utc))


@pytest.fixture
def cache(client: redis.Redis) -> RedisCache:
    return RedisCache(client, default_ttl=60)


@pytest.fixture
def side_cache(
    side: Side, core_on: Callable[[str], RedisCore], docstore_redis_url: str
) -> RedisCache:
    """The cache of one side (sync, or async behind blocking calls) on the test Redis."""
    return side.make(RedisCache, core_on(docstore_redis_url), default_ttl=60)


def test_values_round_trip_as_json_under_the_namespace(
    cache: RedisCache, client: redis.Redis
) -> None:
    assert cache.set("result", RESULT)
    assert cache.get("result", Result) == RESULT
    raw = client.get("docstore:cache:{result}")
    assert raw is not None
    assert json.loads(raw) == {"text": "hello", "pages": 3, "finished_at": "2024-05-01T00:00:00Z"}
    cache.set("many", [RESULT, RESULT])
    assert cache.get("many", list[Result]) == [RESULT, RESULT]
    cache.set("plain", {"a": 1})
    assert cache.get("plain", dict[str, int]) == {"a": 1}


def test_misses_hits_and_unreadable_values_are_counted(cache: RedisCache) -> None:
    assert cache.get("absent", Result) is None
    cache.set("result", RESULT)
    cache.get("result", Result)
    cache.set("wrong", {"nope": True})
    assert cache.get("wrong", Result) is None
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.errors, stats.loads) == (1, 1, 1, 0)


def sent_by_clients(client: redis.Redis, action: Callable[[], object]) -> list[str]:
    """The commands clients sent Redis during `action` (MONITOR; not those scripts ran)."""
    with client.monitor() as monitor:
        action()
        client.echo("end of action")
        sent: list[tuple[str, str]] = []  # (client's port, command)
        while (command := monitor.next_command())["command"] != "ECHO end of action":
            if command["client_type"] != "lua":
                sent.append((command["client_port"], command["command"].split()[0]))
        # Not those of the connection that sent the ECHO (opened for it, perhaps).
        return [name for port, name in sent if port != command["client_port"]]


def test_get_or_set_skips_the_plain_get_while_most_reads_miss(
    side_cache: RedisCache, client: redis.Redis
) -> None:
    cache = side_cache

    def read(key: str) -> list[str]:
        return sent_by_clients(client, lambda: cache.get_or_set(key, lambda: RESULT, Result))

    cache.get_or_set("warm", lambda: RESULT, Result)  # connection made, scripts loaded
    # Mostly hits (a new cache assumes so): a hit is one GET, a miss GET and the two scripts.
    assert (read("first"), read("first")) == (["GET", "EVALSHA", "EVALSHA"], ["GET"])
    for n in range(10):
        read(f"miss-{n}")
    # Now most recent reads missed: the GET is skipped (before, a miss always cost three).
    assert (read("k"), read("k")) == (["EVALSHA", "EVALSHA"], ["EVALSHA"])
    for _ in range(40):
        read("k")
    assert read("k") == ["GET"]  # mostly hits again
    assert cache.stats().loads == 13


def test_a_value_keep_refuses_is_returned_but_not_stored(
    side_cache: RedisCache, client: redis.Redis
) -> None:
    cache = side_cache
    loads: list[int] = []

    def loader(pages: int) -> Callable[[], Result]:
        def load() -> Result:
            loads.append(pages)
            return RESULT.model_copy(update={"pages": pages})

        return load

    def read(pages: int) -> Result:
        return cache.get_or_set("doc", loader(pages), Result, keep=lambda r: r.pages > 3)

    assert read(1).pages == 1
    # In its place, for a second at most, a mark that is no value: a plain read misses.
    assert client.get("docstore:cache:{doc}") == NOT_KEPT
    assert 0 < client.pttl("docstore:cache:{doc}") <= NOT_KEPT_TTL * 1000
    client.pexpire("docstore:cache:{doc}", 60_000)  # the rest must not depend on a slow machine
    assert cache.get("doc", Result) is None
    # Readers finding the mark load for themselves: one command, no lock, nothing stored.
    assert sent_by_clients(client, lambda: read(2)) in (["GET"], ["EVALSHA"])
    assert not client.exists("docstore:cache:{doc}:lock")
    assert loads == [1, 2]
    # Misses, but none that would make hits go through the lock's script first.
    cache.set("other", RESULT)
    for _ in range(10):
        read(3)
    assert sent_by_clients(client, lambda: cache.get_or_set("other", loader(0), Result)) == ["GET"]
    assert (cache.stats().misses, cache.stats().hits) == (13, 1)
    del loads[2:]
    client.delete("docstore:cache:{doc}")  # the mark expired
    assert read(5).pages == 5  # kept: stored, and served from now on
    assert read(6).pages == 5
    assert loads == [1, 2, 5]


def test_a_cached_value_keep_refuses_is_loaded_afresh(cache: RedisCache) -> None:
    cache.set("doc", RESULT)  # stored without `keep` (an older docstore, say)
    fresh = RESULT.model_copy(update={"pages": 9})
    assert cache.get_or_set("doc", lambda: fresh, Result, keep=lambda r: r.pages > 3) == fresh
    assert cache.get("doc", Result) == fresh


@pytest.mark.parametrize("keep", ["yes", 1])
def test_a_keep_that_is_no_function_is_refused_before_redis_is_asked(
    cache: RedisCache, keep: object
) -> None:
    with pytest.raises(InvalidInput, match="keep must be a function of the value"):
        cache.get_or_set("doc", lambda: RESULT, Result, keep=keep)  # type: ignore[arg-type]
    assert cache.stats().loads == 0


def test_twenty_readers_of_a_value_not_kept_never_wait_on_each_other(cache: RedisCache) -> None:
    """The first holds the lock while it loads; the others wait for its value, and each loads
    for itself once it turns out not kept (before `keep`, nothing told them to stop waiting)."""
    start = threading.Barrier(20)
    release = threading.Event()
    results: list[int] = []

    def loader() -> int:
        release.wait(5)
        return 1

    def caller() -> None:
        start.wait()
        results.append(cache.get_or_set("busy", loader, int, keep=lambda n: n > 1))

    threads = [threading.Thread(target=caller) for _ in range(20)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join()
    assert results == [1] * 20
    assert cache.stats().loads == 20
    assert cache.get("busy", int) is None


def test_ttl_gets_jitter_but_never_exceeds_the_requested_ttl(
    cache: RedisCache, client: redis.Redis
) -> None:
    for i in range(20):
        cache.set(f"k{i}", i, ttl=100)
    ttls = [client.pttl(f"docstore:cache:{{k{i}}}") for i in range(20)]
    assert all(89_000 < ttl <= 100_000 for ttl in ttls)
    assert len(set(ttls)) > 1


def test_delete_forgets_a_value(cache: RedisCache) -> None:
    cache.set("k", 1)
    assert cache.delete("k")
    assert cache.get("k", int) is None


def test_twenty_concurrent_misses_run_the_loader_once(cache: RedisCache) -> None:
    calls = []
    start = threading.Barrier(20)
    results: list[Result] = []

    def loader() -> Result:
        calls.append(1)
        time.sleep(0.3)
        return RESULT

    def caller() -> None:
        start.wait()
        results.append(cache.get_or_set("slow", loader, Result))

    threads = [threading.Thread(target=caller) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert results == [RESULT] * 20
    assert cache.get("slow", Result) == RESULT


def test_a_failing_loader_stores_nothing_and_frees_the_key(cache: RedisCache) -> None:
    def broken() -> int:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        cache.get_or_set("k", broken, int)
    assert cache.get("k", int) is None
    assert cache.get_or_set("k", lambda: 5, int) == 5
    assert cache.get("k", int) == 5


def test_a_crashed_lock_holder_cannot_wedge_the_key(cache: RedisCache, client: redis.Redis) -> None:
    # A holder that died: its lock lingers until its timeout, then a waiter loads and stores.
    client.set("docstore:cache:{k}:lock", "dead-worker", px=300)
    assert cache.get_or_set("k", lambda: 7, int) == 7
    assert cache.get("k", int) == 7
    assert cache.stats().loads == 1


def test_waiters_stop_waiting_after_wait_timeout(client: redis.Redis) -> None:
    cache = RedisCache(client, lock_timeout=60, wait_timeout=0.2)
    client.set("docstore:cache:{k}:lock", "stuck-worker", px=60_000)
    assert cache.get_or_set("k", lambda: 8, int) == 8
    # It did not hold the lock, so it did not store its value over the holder's.
    assert cache.get("k", int) is None


def test_invalidation_during_a_load_keeps_the_stale_value_out(cache: RedisCache) -> None:
    def loader() -> str:
        cache.delete("k")  # the document changed while we were loading it
        return "stale"

    assert cache.get_or_set("k", loader, str) == "stale"
    assert cache.get("k", str) is None


def test_a_value_of_an_old_shape_is_replaced(cache: RedisCache) -> None:
    cache.set("k", {"old": "shape"})
    assert cache.get_or_set("k", lambda: RESULT, Result) == RESULT
    assert cache.get("k", Result) == RESULT


def test_document_results_are_cached_and_invalidated(
    cache: RedisCache, client: redis.Redis
) -> None:
    assert cache.cache_document_result(42, RESULT)
    assert client.exists("docstore:cache:{document:42:result}")
    assert cache.get_document_result(42, Result) == RESULT
    assert cache.invalidate_document(42)
    assert cache.get_document_result(42, Result) is None
    with pytest.raises(InvalidInput):
        cache.get_document_result(0, Result)


def test_bad_arguments_are_refused(cache: RedisCache, client: redis.Redis) -> None:
    with pytest.raises(InvalidInput):
        cache.set("", 1)
    with pytest.raises(InvalidInput):
        cache.set("k", 1, ttl=0)
    with pytest.raises(InvalidInput):
        cache.set("k", object())
    with pytest.raises(InvalidInput):
        RedisCache(client, jitter=1.5)


def test_the_store_carries_the_redis_side(docstore_store: Docstore) -> None:
    store = docstore_store
    assert store.cache.get_or_set("k", lambda: RESULT, Result) == RESULT
    assert store.cache.default_ttl == store.settings.cache_ttl
    hit = store.limiter.hit("client")
    assert hit.allowed and hit.limit == store.settings.rate_limit
    assert store.limiter.failure_policy is FailurePolicy.ALLOW
    store.queue.enqueue(11)
    assert [m.document_id for m in store.queue.consume("worker-a")] == [11]
    assert store.queue.max_deliveries == store.settings.queue_max_deliveries
    stored = store.progress.set(11, 50, "ocr")
    assert stored is not None and store.progress.get(11) == stored


def test_names_starting_with_a_brace_get_distinct_keys(cache: RedisCache) -> None:
    from docstore.redis.keys import cache_key, cache_lock_key

    names = ["}x", "{}x", "{x", "x", "{{x"]
    keys = [cache_key(name) for name in names]
    assert len(set(keys)) == len(names)
    assert cache_key("x") == "docstore:cache:{x}"  # ordinary names are unchanged
    for name in names:
        assert cache.set(name, name)
    assert [cache.get(name, str) for name in names] == names
    assert cache_lock_key("}x").startswith(cache_key("}x"))


def test_a_type_or_loader_that_is_none_is_refused_typed(cache: RedisCache) -> None:
    # A PydanticSchemaGenerationError, an unhashable TypeError and a "not callable" TypeError
    # from inside docstore before.
    # A string was taken for a type's name: "" raised IndexError, "a\x00b" SyntaxError, "int"
    # read as int, an unknown name failed on the first value.
    for type_ in (5, [int], 2.5, "", "a\x00b", "\ud800", "int", "NoSuch", b"int"):
        with pytest.raises(InvalidInput, match="type_"):
            cache.get("k", type_)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="loader"):
        cache.get_or_set("k", 5, int)  # type: ignore[arg-type]
    assert cache.get_or_set("k", lambda: 7, int) == 7
