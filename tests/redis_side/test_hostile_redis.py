"""Hostile input to the Redis side: cache keys and values, limiter keys and costs, queue worker ids,
counts, block times and message ids, progress percentages and stages (hypothesis).

Property: a call stores the value exactly and reads it back identical, or raises `InvalidInput`;
no redis-py, pydantic or Unicode error escapes, an input never makes the cache "fail open" (an
input error is not an outage), and no other key of the keyspace changes.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from hostile import (
    BIG_HOSTILE,
    BIG_PLAIN,
    BIG_SURROGATE,
    attempt,
    encodable,
    hostile_number,
    hostile_text,
    mostly,
    property_settings,
)
from hypothesis import example, given
from hypothesis import strategies as st
from sides import Side, side_fixture, side_store_fixture  # noqa: F401 (fixtures)

from docstore import Docstore
from docstore.ephemeral.queue import TaskQueue
from docstore.ephemeral.rate_limit import RateLimiter
from docstore.errors import InvalidInput
from docstore.redis.keys import rate_limit_key
from docstore.rules import REDIS_NAME_LENGTH as MAX_NAME_LENGTH

BYSTANDER_DOCUMENT = 987_654_321_987


def keyspace(store: Docstore) -> dict[bytes, bytes]:
    """Every key and its serialized value (DUMP), to prove a call touched nothing else."""
    client = store.redis
    return {key: client.dump(key) for key in client.scan_iter(count=1000)}  # type: ignore[misc]


def seed(store: Docstore, side: Side) -> None:
    """Something of every kind that must survive whatever a test sends."""
    store.cache.set("bystander", {"keep": ["me", 1, 2.5, None]}, ttl=3600)
    # A day-long period: the key lives on (about 43 min) however long the examples take. The store's
    # own limiter (100 per minute) would let it expire within 2 s and change the keyspace.
    side.make(RateLimiter, store.redis, limit=100, period=24 * 3600).hit("bystander", cost=3)
    store.progress.set(BYSTANDER_DOCUMENT, 40, "ocr")
    side.make(TaskQueue, store.redis, stream="bystander").enqueue(BYSTANDER_DOCUMENT)


def same(left: Any, right: Any) -> bool:
    """Equal, with NaN equal to NaN and no bool/int/float confusion."""
    if type(left) is not type(right):
        return False
    if isinstance(left, float):
        return (math.isnan(left) and math.isnan(right)) or left == right
    if isinstance(left, list):
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same(left[k], right[k]) for k in left)
    return bool(left == right)


def has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return not encodable(value)
    if isinstance(value, list):
        return any(has_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    return False


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from([2**63, -(2**64), 10**400]),
        st.floats(),
        hostile_text,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(hostile_text, children, max_size=3)
    ),
    max_leaves=8,
)
redis_names = st.one_of(hostile_text, st.sampled_from(["}", "{", "}{", "*", "{documents}"]))


def test_cache_round_trips_hostile_keys_and_values_or_refuses(
    side: Side, side_store: Docstore
) -> None:
    store = side_store
    seed(store, side)
    cache = store.cache
    tally: Counter[str] = Counter()

    def must_not_load() -> Any:
        raise AssertionError("the loader ran although the value was cached")

    @property_settings(75)
    @given(
        key=redis_names, value=json_values, ttl=st.one_of(st.none(), st.just(60), hostile_number)
    )
    @example(key="k", value=BIG_HOSTILE, ttl=None)
    @example(key=BIG_PLAIN, value=1, ttl=None)
    @example(key="k", value=BIG_SURROGATE, ttl=None)
    @example(key="redis.call('FLUSHALL')", value={"\x00": [float("nan"), float("inf")]}, ttl=1e300)
    @example(key="k\ud800", value=1, ttl=60)
    @example(key="nan", value=[float("nan"), float("-inf"), -0.0, 10**400], ttl=60)
    def check(key: Any, value: Any, ttl: Any) -> None:
        before = keyspace(store)
        errors = cache.stats().errors
        stored, error = attempt(lambda: cache.set(key, value, ttl))
        if stored is None:
            tally["refused"] += 1
            if not encodable(key) or not key or len(key) > MAX_NAME_LENGTH or has_surrogate(value):
                assert isinstance(error, InvalidInput)
        else:
            tally["stored"] += 1
            assert stored is True
            assert encodable(key) and 0 < len(key) <= MAX_NAME_LENGTH
            got = cache.get(key, Any)  # type: ignore[arg-type]
            assert same(got, value), (got, value)
            assert same(cache.get_or_set(key, must_not_load, Any), value)  # type: ignore[arg-type]
            assert cache.delete(key) is True
            assert cache.get(key, Any) is None  # type: ignore[arg-type]
        # Lookups of any key are a miss, a hit or InvalidInput, and change nothing.
        attempt(lambda: cache.get(key, int))
        attempt(lambda: cache.delete(key))
        assert cache.stats().errors == errors, "an input made the cache fail open"
        assert keyspace(store) == before

    check()
    assert cache.get("bystander", dict) == {"keep": ["me", 1, 2.5, None]}
    assert tally["stored"] >= 5 and tally["refused"] >= 5, tally


def test_rate_limiter_takes_hostile_keys_and_costs(side: Side, side_store: Docstore) -> None:
    store = side_store
    seed(store, side)
    limiter = side.make(RateLimiter, store.redis, limit=10, period=60, policy="hostile")
    # Its stored GCRA state, not `peek`: the remaining count refills while the test runs (one unit
    # every 0.6 s), so under load it flaked (99 == 97).
    bystander_key = rate_limit_key(store.limiter.policy, "bystander")
    bystander = store.redis.get(bystander_key)
    assert bystander is not None
    tally: Counter[str] = Counter()

    @property_settings(75)
    @given(key=redis_names, cost=mostly(st.integers(1, 10), hostile_number))
    @example(key=BIG_PLAIN, cost=1)
    @example(key="bystander", cost=1)  # another policy's key of the same name
    @example(key="*", cost=True)
    @example(key="\r\nFLUSHALL\r\n", cost=10)
    def check(key: Any, cost: Any) -> None:
        before = keyspace(store)
        result, error = attempt(lambda: limiter.hit(key, cost))
        if result is None:
            tally["refused"] += 1
            if isinstance(cost, bool) or not isinstance(key, str) or not encodable(key):
                assert isinstance(error, InvalidInput)
            assert keyspace(store) == before
            return
        tally["decided"] += 1
        assert not isinstance(cost, bool) and 1 <= cost <= 10
        assert result.allowed and result.remaining == 10 - cost
        assert limiter.peek(key).remaining == 10 - cost
        after = keyspace(store)
        own = rate_limit_key(limiter.policy, key).encode()
        assert set(after) - set(before) == {own}
        assert {k: v for k, v in after.items() if k != own} == before
        limiter.reset(key)
        assert keyspace(store) == before

    check()
    assert store.redis.get(bystander_key) == bystander
    assert tally["decided"] >= 5 and tally["refused"] >= 5, tally


def test_queue_takes_hostile_worker_ids_counts_block_times_and_message_ids(
    side: Side,
    side_store: Docstore,
) -> None:
    store = side_store
    seed(store, side)
    queue = store.queue
    bystander = side.make(TaskQueue, store.redis, stream="bystander")
    stats = queue.stats()
    tally: Counter[str] = Counter()

    @property_settings(75)
    @given(
        worker=st.one_of(st.just("worker-1"), redis_names),
        document_id=st.one_of(st.integers(1, 2**63 - 1), hostile_number),
        count=mostly(st.integers(1, 5), hostile_number),
        block_ms=mostly(st.integers(0, 10_000), hostile_number),
        min_idle=mostly(st.floats(0, 3600), hostile_number),
        message_ids=st.lists(st.one_of(hostile_text, st.just("0-0")), min_size=1, max_size=3),
    )
    @example(worker=BIG_PLAIN, document_id=1, count=1, block_ms=0, min_idle=0, message_ids=["0-0"])
    @example(
        worker="w\ud800",
        document_id=True,
        count=True,
        block_ms=True,
        min_idle=float("nan"),
        message_ids=["\ud800"],
    )
    @example(
        worker="w",
        document_id=2**63,
        count=2**64,
        block_ms=10**400,
        min_idle=float("inf"),
        message_ids=["'; DROP", "*", "$1"],
    )
    def check(
        worker: Any,
        document_id: Any,
        count: Any,
        block_ms: Any,
        min_idle: Any,
        message_ids: list[str],
    ) -> None:
        enqueued, error = attempt(lambda: queue.enqueue(document_id))
        if enqueued is None:
            tally["enqueue refused"] += 1
            assert isinstance(error, InvalidInput)
            expected = [7]
        else:
            assert isinstance(document_id, int) and not isinstance(document_id, bool)
            assert 1 <= document_id <= 2**63 - 1
            expected = [document_id, 7]
        queue.enqueue(7)  # something is always waiting, so no consume blocks
        messages, error = attempt(lambda: queue.consume(worker, count, block_ms))
        if messages is None:
            tally["consume refused"] += 1
            messages = queue.consume("cleaner", count=2)
        else:
            tally["consumed"] += 1
            assert not isinstance(count, bool) and not isinstance(block_ms, bool)
        leftovers = queue.consume("cleaner", count=2)
        assert [m.document_id for m in messages + leftovers] == expected
        acked, error = attempt(lambda: queue.ack(*message_ids))
        if acked is None:
            tally["ack refused"] += 1
        else:
            assert acked == 0  # none of them is a pending message
        assert queue.ack(*messages, *leftovers) == len(expected)
        reclaimed, error = attempt(lambda: queue.reclaim(worker, count, min_idle))
        assert reclaimed in ([], None)
        assert queue.stats() == stats

    check()
    # The other stream's message was consumed by nobody: it is still waiting.
    assert [m.document_id for m in bystander.consume("last", count=5)] == [BYSTANDER_DOCUMENT]
    assert tally["consumed"] >= 5 and tally["consume refused"] >= 3, tally


def test_progress_stores_hostile_stages_exactly_or_refuses(
    side: Side, side_store: Docstore
) -> None:
    store = side_store
    seed(store, side)
    progress = store.progress
    tally: Counter[str] = Counter()

    @property_settings(75)
    @given(
        document_id=st.one_of(st.integers(1, 2**63 - 1), hostile_number).filter(
            lambda d: d != BYSTANDER_DOCUMENT
        ),
        percent=mostly(st.one_of(st.floats(0, 100), st.integers(0, 100)), hostile_number),
        stage=st.one_of(st.just("ocr"), redis_names),
    )
    @example(document_id=1, percent=50, stage=BIG_PLAIN)
    @example(document_id=1, percent=50, stage="\x00\u202e{*}\r\nredis.call('FLUSHALL')")
    @example(document_id=1, percent=True, stage="ocr")
    @example(document_id=2**63, percent=50, stage="ocr")
    @example(document_id=1, percent=50, stage="ocr\ud800")
    def check(document_id: Any, percent: Any, stage: Any) -> None:
        before = keyspace(store)
        stored, error = attempt(lambda: progress.set(document_id, percent, stage))
        if stored is None:
            tally["refused"] += 1
            assert isinstance(error, InvalidInput)
            assert keyspace(store) == before
        else:
            tally["stored"] += 1
            assert not isinstance(percent, bool) and not isinstance(document_id, bool)
            assert stored.stage == stage and stored.percent == float(percent)
            got = progress.get(document_id)
            assert got is not None and got.stage == stage and got.percent == float(percent)
            progress.clear(document_id)
            assert progress.get(document_id) is None
            assert keyspace(store) == before
        attempt(lambda: progress.get(document_id))
        assert keyspace(store) == before

    check()
    bystander = progress.get(BYSTANDER_DOCUMENT)
    assert bystander is not None and bystander.percent == 40 and bystander.stage == "ocr"
    assert tally["stored"] >= 5 and tally["refused"] >= 5, tally
