"""RateLimiter on a real Redis: exact GCRA decisions, headers, peek/reset, concurrency."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import redis

from docstore import InvalidInput
from docstore.ephemeral.rate_limit import DecidedBy, FailurePolicy, RateLimiter

HOUR = 3600.0


def test_a_burst_up_to_the_limit_is_allowed_and_the_next_hit_denied(client: redis.Redis) -> None:
    limiter = RateLimiter(client, limit=5, period=HOUR)
    results = [limiter.hit("user:1") for _ in range(6)]
    assert [r.allowed for r in results] == [True] * 5 + [False]
    assert [r.remaining for r in results] == [4, 3, 2, 1, 0, 0]
    assert all(r.retry_after == 0 for r in results[:5])
    denied = results[5]
    # One unit comes back every period / limit = 720 s.
    assert 700 < denied.retry_after <= 720
    assert 3500 < denied.reset_after <= HOUR
    assert denied.decided_by is DecidedBy.REDIS and not denied.degraded


def test_cost_takes_several_units_and_a_refused_cost_takes_none(client: redis.Redis) -> None:
    limiter = RateLimiter(client, limit=10, period=HOUR)
    assert limiter.hit("k", cost=4).remaining == 6
    too_big = limiter.hit("k", cost=7)
    assert not too_big.allowed and too_big.remaining == 6
    exact = limiter.hit("k", cost=6)
    assert exact.allowed and exact.remaining == 0
    assert not limiter.hit("k").allowed
    with pytest.raises(InvalidInput):
        limiter.hit("k", cost=11)
    with pytest.raises(InvalidInput):
        limiter.hit("k", cost=0)


def test_units_come_back_one_interval_apart(client: redis.Redis) -> None:
    limiter = RateLimiter(client, limit=2, period=2.0)  # one unit per second
    assert limiter.hit("k").allowed and limiter.hit("k").allowed
    denied = limiter.hit("k")
    assert not denied.allowed and 0 < denied.retry_after <= 1.0
    time.sleep(denied.retry_after + 0.02)
    assert limiter.hit("k").allowed
    assert not limiter.hit("k").allowed  # exactly one unit came back


def test_concurrent_hitters_get_exactly_the_limit(client: redis.Redis) -> None:
    limiter = RateLimiter(client, limit=100, period=HOUR)
    results = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait()
        for _ in range(30):
            result = limiter.hit("shared")
            with lock:
                results.append(result)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    allowed = [r for r in results if r.allowed]
    assert len(results) == 240
    assert len(allowed) == 100
    # Each allowed decision saw its own remaining count: the script runs atomically.
    assert sorted(r.remaining for r in allowed) == list(range(100))


def test_peek_does_not_consume(client: redis.Redis) -> None:
    limiter = RateLimiter(client, limit=3, period=HOUR)
    assert limiter.peek("k").remaining == 3
    limiter.hit("k", cost=2)
    assert [limiter.peek("k").remaining for _ in range(3)] == [1, 1, 1]
    assert limiter.peek("k").allowed
    assert not limiter.peek("k", cost=2).allowed
    limiter.hit("k")
    look = limiter.peek("k")
    assert not look.allowed and look.retry_after > 0


def test_reset_gives_the_whole_limit_back(client: redis.Redis) -> None:
    limiter = RateLimiter(client, limit=2, period=HOUR)
    limiter.hit("k", cost=2)
    assert not limiter.hit("k").allowed
    limiter.reset("k")
    assert limiter.hit("k").remaining == 1


def test_headers_follow_the_ietf_fields(client: redis.Redis) -> None:
    limiter = RateLimiter(client, limit=5, period=60, policy="api")
    first = limiter.hit("k")
    assert first.headers() == {
        "RateLimit-Policy": '"api";q=5;w=60',
        "RateLimit": '"api";r=4;t=12',
    }
    limiter.hit("k", cost=4)
    denied = limiter.hit("k")
    headers = denied.headers()
    assert headers["RateLimit"] == '"api";r=0;t=60'
    assert headers["Retry-After"] == "12"


def test_result_is_immutable(client: redis.Redis) -> None:
    result = RateLimiter(client, limit=1, period=1).hit("k")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.allowed = False  # type: ignore[misc]


def test_one_hash_tagged_key_of_constant_size_per_client(client: redis.Redis) -> None:
    limiter = RateLimiter(client, limit=100_000, period=HOUR, policy="big")
    limiter.hit("user:7")
    key = "docstore:ratelimit:big:{user:7}"
    assert client.keys("*") == [key.encode()]
    size = client.memory_usage(key)
    for _ in range(500):
        limiter.hit("user:7")
    assert client.keys("*") == [key.encode()]
    assert client.type(key) == b"string"
    assert client.memory_usage(key) == size
    assert 0 < client.pttl(key) <= HOUR * 1000


def test_keys_and_policies_are_independent(client: redis.Redis) -> None:
    per_minute = RateLimiter(client, limit=1, period=60, policy="minute")
    per_hour = RateLimiter(client, limit=1, period=HOUR, policy="hour")
    assert per_minute.hit("a").allowed
    assert per_minute.hit("b").allowed
    assert per_hour.hit("a").allowed
    assert not per_minute.hit("a").allowed


def test_a_flushed_script_cache_is_reloaded(client: redis.Redis) -> None:
    limiter = RateLimiter(client, limit=2, period=HOUR)
    assert limiter.hit("k").allowed
    client.script_flush()
    result = limiter.hit("k")
    assert result.allowed and result.remaining == 0


def test_bad_arguments_are_refused(client: redis.Redis) -> None:
    with pytest.raises(InvalidInput):
        RateLimiter(client, limit=0, period=60)
    with pytest.raises(InvalidInput):
        RateLimiter(client, limit=1, period=0)
    with pytest.raises(InvalidInput):
        RateLimiter(client, limit=1, period=1, policy="a{b}")
    with pytest.raises(InvalidInput):
        RateLimiter(client, limit=1, period=1).hit("")
    strict = RateLimiter(client, limit=1, period=1, failure_policy=FailurePolicy.DENY)
    assert strict.failure_policy is FailurePolicy.DENY


@pytest.mark.parametrize("retry_after", [float("nan"), float("inf"), -1.0, "soon", None])
def test_a_deny_retry_after_that_is_no_number_of_seconds_is_refused(
    client: redis.Redis, retry_after: object
) -> None:
    # It was kept as given, and only broke headers() during an outage, the worst moment.
    with pytest.raises(InvalidInput):
        RateLimiter(client, limit=1, period=1, deny_retry_after=retry_after)  # type: ignore[arg-type]


def test_remaining_is_never_negative_when_a_policy_changes_its_limit(client: redis.Redis) -> None:
    # A deploy that lowers a policy's limit (or two limiters sharing a policy name) reads
    # the state the other left: remaining came out negative, an invalid RateLimit r=.
    wide = RateLimiter(client, limit=100, period=60, policy="changed")
    for _ in range(50):
        wide.hit("k")
    narrow = RateLimiter(client, limit=10, period=1, policy="changed")
    decision = narrow.peek("k")
    assert decision.remaining == 0 and not decision.allowed
    assert "r=0;" in decision.headers()["RateLimit"]
