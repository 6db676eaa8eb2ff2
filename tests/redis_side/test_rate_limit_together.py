"""`RateLimiter.decide_together` on both sides: several decisions in one round trip, each as its
limiter would take it alone, failure policies included."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import redis
from sides import Side, core_on_fixture, side_fixture, unwrapped  # noqa: F401 (fixtures)

from docstore import InvalidInput, LimitCheck, RedisCore
from docstore.ephemeral.rate_limit import DecidedBy, FailurePolicy, RateLimiter
from docstore.ephemeral.values import RateLimitResult
from docstore.testing.servers import LocalRedis

pytestmark = pytest.mark.timeout(60)
HOUR = 3600.0


def together(side: Side, checks: Sequence[LimitCheck[RateLimiter]]) -> list[RateLimitResult]:
    """`decide_together(checks)` on this side (the limiters of the async side unwrapped)."""
    decide = side.blocking(side.twin(RateLimiter).decide_together)
    plain = [LimitCheck(unwrapped(c.limiter), c.key, c.cost, c.consume) for c in checks]
    return list(decide(plain))


def counted(server_url: str) -> redis.Redis:
    client = redis.Redis.from_url(server_url)
    client.config_resetstat()
    return client


def evalsha_calls(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_decisions_taken_together_are_those_taken_one_at_a_time(
    side: Side, core_on: Callable[[str], RedisCore], docstore_redis_url: str
) -> None:
    core = core_on(docstore_redis_url)
    address = side.make(RateLimiter, core, limit=3, period=HOUR, policy="address")
    key = side.make(RateLimiter, core, limit=2, period=HOUR, policy="key")
    alone = [(address.peek("a1"), key.hit("k1")) for _ in range(3)]
    both = [
        together(side, [LimitCheck(address, "a2", consume=False), LimitCheck(key, "k2")])
        for _ in range(3)
    ]

    def shape(result: RateLimitResult) -> tuple[object, ...]:
        return (result.allowed, result.remaining, result.limit, result.policy, result.decided_by)

    assert [tuple(shape(r) for r in pair) for pair in both] == [
        tuple(shape(r) for r in pair) for pair in alone
    ]
    assert [pair[1].allowed for pair in both] == [True, True, False]
    assert [pair[0].remaining for pair in both] == [3, 3, 3]  # a peek consumes nothing
    assert both[2][1].retry_after == pytest.approx(alone[2][1].retry_after, abs=5)
    assert address.peek("a2").remaining == 3 and not key.peek("k2").allowed


def test_the_decisions_cost_one_pipeline_of_scripts(
    side: Side, core_on: Callable[[str], RedisCore], docstore_redis_url: str
) -> None:
    core = core_on(docstore_redis_url)
    limiters = [
        side.make(RateLimiter, core, limit=5, period=HOUR, policy=f"p{n}") for n in range(3)
    ]
    together(side, [LimitCheck(limiter, "warm") for limiter in limiters])  # scripts loaded
    stats = counted(docstore_redis_url)
    connection_count = int(stats.info("stats")["total_connections_received"])
    results = together(side, [LimitCheck(limiter, "k", cost=2) for limiter in limiters])
    assert [r.remaining for r in results] == [3, 3, 3]
    assert evalsha_calls(stats) == 3
    # No SCRIPT EXISTS or LOAD beside them (a pipeline of registered scripts would ask), and no
    # connection of its own per call.
    commands = stats.info("commandstats")
    assert not any(name.startswith("cmdstat_script") for name in commands), commands
    assert int(stats.info("stats")["total_connections_received"]) == connection_count


def test_a_check_with_bad_input_is_refused_before_anything_is_decided(
    side: Side, core_on: Callable[[str], RedisCore], docstore_redis_url: str
) -> None:
    core = core_on(docstore_redis_url)
    limiter = side.make(RateLimiter, core, limit=2, period=HOUR, policy="input")
    with pytest.raises(InvalidInput, match="cost"):
        together(side, [LimitCheck(limiter, "first"), LimitCheck(limiter, "second", cost=3)])
    with pytest.raises(InvalidInput):
        together(side, [LimitCheck(limiter, "first"), LimitCheck(limiter, 7)])  # type: ignore[arg-type]
    decide = side.blocking(side.twin(RateLimiter).decide_together)
    for junk in (
        [("first", 1)],
        [LimitCheck("not a limiter", "first")],
        [LimitCheck(unwrapped(limiter), "first", consume="no")],  # a truthy string: no hit
    ):
        with pytest.raises(InvalidInput, match="LimitChecks"):
            decide([LimitCheck(unwrapped(limiter), "first"), *junk])
    assert limiter.peek("first").remaining == 2
    assert together(side, []) == []


def test_limiters_on_two_cores_are_refused(
    side: Side, core_on: Callable[[str], RedisCore], docstore_redis_url: str
) -> None:
    one = side.make(RateLimiter, core_on(docstore_redis_url), limit=2, period=HOUR)
    other = side.make(RateLimiter, core_on(docstore_redis_url), limit=2, period=HOUR)
    with pytest.raises(InvalidInput, match="share one RedisCore"):
        together(side, [LimitCheck(one, "k"), LimitCheck(other, "k")])
    assert one.peek("k").remaining == 2


def test_after_redis_forgot_its_scripts_each_hit_counts_once(
    side: Side, core_on: Callable[[str], RedisCore], docstore_redis_url: str
) -> None:
    core = core_on(docstore_redis_url)
    first = side.make(RateLimiter, core, limit=5, period=HOUR, policy="flushed-a")
    second = side.make(RateLimiter, core, limit=5, period=HOUR, policy="flushed-b")
    together(side, [LimitCheck(first, "k"), LimitCheck(second, "k")])
    redis.Redis.from_url(docstore_redis_url).script_flush()
    results = together(side, [LimitCheck(first, "k"), LimitCheck(second, "k", consume=False)])
    assert [r.remaining for r in results] == [3, 4]
    assert first.peek("k").remaining == 3 and second.peek("k").remaining == 4


def test_without_redis_each_limiter_s_failure_policy_decides(
    side: Side,
    core_on: Callable[[str], RedisCore],
    local_redis_factory: Callable[[], LocalRedis],
) -> None:
    server = local_redis_factory()
    core = core_on(server.url)
    lenient = side.make(RateLimiter, core, limit=2, period=HOUR, policy="lenient")
    strict = side.make(
        RateLimiter, core, limit=2, period=HOUR, policy="strict", failure_policy=FailurePolicy.DENY
    )
    assert all(
        r.allowed for r in together(side, [LimitCheck(lenient, "k"), LimitCheck(strict, "k")])
    )
    server.stop()
    allowed, denied = together(side, [LimitCheck(lenient, "k"), LimitCheck(strict, "k")])
    assert allowed.allowed and allowed.decided_by is DecidedBy.FAILURE_POLICY
    assert not denied.allowed and denied.decided_by is DecidedBy.FAILURE_POLICY
    assert denied.retry_after == strict.deny_retry_after


def test_checks_may_come_from_any_iterable_and_a_lone_check_is_refused(
    side: Side, core_on: Callable[[str], RedisCore], docstore_redis_url: str
) -> None:
    # A generator raised a bare TypeError, and so did a single LimitCheck.
    core = core_on(docstore_redis_url)
    limiter = unwrapped(side.make(RateLimiter, core, limit=2, period=HOUR, policy="iterable"))
    decide = side.blocking(side.twin(RateLimiter).decide_together)
    decisions = decide(LimitCheck(limiter, key) for key in ("a", "b"))
    assert [d.allowed for d in decisions] == [True, True]
    with pytest.raises(InvalidInput, match="LimitChecks"):
        decide(LimitCheck(limiter, "a"))
