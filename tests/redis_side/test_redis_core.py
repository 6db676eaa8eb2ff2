"""The Redis core's contract, against real servers: an outage and a refused command are told apart
once, the fail-open helper takes the outage path (and the refused path only when asked), and each
shipped script is registered once per core and survives a flushed script cache.

The classes built on the core keep their own semantics, checked here for the refused command
(the outage tests cover the rest): the cache fails open, progress and the limiter raise.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator

import pytest
import redis
import redis.asyncio

from docstore import (
    ConfigurationError,
    DecidedBy,
    FailurePolicy,
    InvalidInput,
    ProgressTracker,
    RateLimiter,
    RedisCache,
    RedisCommandError,
    RedisCore,
    ServiceUnavailable,
    Settings,
)
from docstore.redis.keys import cache_key, progress_key, rate_limit_key
from docstore.testing.servers import LocalRedis, free_port

pytestmark = pytest.mark.timeout(30)

Error = ServiceUnavailable | RedisCommandError


def core_for(url: str) -> RedisCore:
    return RedisCore.from_settings(Settings.model_validate({"REDIS_URL": url}))


@pytest.fixture
def core(client: redis.Redis) -> RedisCore:
    return RedisCore(client)


@pytest.fixture
def unreachable() -> Iterator[RedisCore]:
    # Nothing listens on a free port: every call is refused at connect.
    core = core_for(f"redis://127.0.0.1:{free_port()}/0")
    yield core
    core.client.close()


@pytest.fixture
def wrong_type(core: RedisCore) -> str:
    """A key holding a string, which every list command refuses with WRONGTYPE."""
    core.client.set("docstore:test:{string}", "text")
    return "docstore:test:{string}"


class Fallback:
    """A fallback that records what it was given."""

    def __init__(self) -> None:
        self.errors: list[Error] = []

    def __call__(self, error: Error) -> str:
        self.errors.append(error)
        return "fell back"


# -- typed errors ---------------------------------------------------------------------------


def test_an_unreachable_redis_is_service_unavailable_naming_its_address(
    unreachable: RedisCore,
) -> None:
    with pytest.raises(ServiceUnavailable) as raised, unreachable.errors():
        unreachable.client.ping()
    assert raised.value.service == "redis"
    assert raised.value.address == unreachable.address
    assert unreachable.address in raised.value.message
    assert isinstance(raised.value.__cause__, redis.exceptions.ConnectionError)


def test_a_stopped_redis_is_service_unavailable(
    local_redis_factory: Callable[[], LocalRedis],
) -> None:
    server = local_redis_factory()
    core = core_for(server.url)
    with core.errors():
        assert core.client.ping()
    server.stop()
    with pytest.raises(ServiceUnavailable) as raised, core.errors():
        core.client.ping()
    assert raised.value.address == f"127.0.0.1:{server.port}"
    core.client.close()


def test_a_refused_command_is_a_redis_command_error_not_an_outage(
    core: RedisCore, wrong_type: str
) -> None:
    with pytest.raises(RedisCommandError, match="WRONGTYPE") as raised, core.errors():
        core.client.lpush(wrong_type, "item")
    assert not isinstance(raised.value, ServiceUnavailable)
    assert isinstance(raised.value.__cause__, redis.exceptions.ResponseError)
    assert core.address in raised.value.message


def test_errors_lets_other_exceptions_through(core: RedisCore) -> None:
    with pytest.raises(KeyError), core.errors():
        raise KeyError("not Redis")


# -- the fail-open helper -------------------------------------------------------------------


def test_fail_open_returns_the_reply_when_redis_answers(core: RedisCore) -> None:
    fallback = Fallback()
    core.client.set("docstore:test:{k}", "v")
    assert core.fail_open(lambda: core.client.get("docstore:test:{k}"), fallback) == b"v"
    assert fallback.errors == []


@pytest.mark.parametrize("also_refused", [False, True])
def test_fail_open_falls_back_on_an_outage(unreachable: RedisCore, also_refused: bool) -> None:
    fallback = Fallback()
    reply = unreachable.fail_open(
        lambda: unreachable.client.get("k"), fallback, also_refused=also_refused
    )
    assert reply == "fell back"
    (error,) = fallback.errors
    assert isinstance(error, ServiceUnavailable) and error.address == unreachable.address
    assert isinstance(error.__cause__, redis.exceptions.ConnectionError)


def test_fail_open_raises_a_refused_command_unless_asked_to_fall_back(
    core: RedisCore, wrong_type: str
) -> None:
    fallback = Fallback()
    with pytest.raises(RedisCommandError, match="WRONGTYPE") as raised:
        core.fail_open(lambda: core.client.lpush(wrong_type, "item"), fallback)
    assert isinstance(raised.value.__cause__, redis.exceptions.ResponseError)
    assert fallback.errors == []

    reply = core.fail_open(
        lambda: core.client.lpush(wrong_type, "item"), fallback, also_refused=True
    )
    assert reply == "fell back"
    (error,) = fallback.errors
    assert isinstance(error, RedisCommandError) and "WRONGTYPE" in error.message
    assert isinstance(error.__cause__, redis.exceptions.ResponseError)


def test_fail_open_never_hides_an_error_that_is_not_redis(core: RedisCore) -> None:
    def broken() -> None:
        raise ZeroDivisionError

    fallback = Fallback()
    with pytest.raises(ZeroDivisionError):
        core.fail_open(broken, fallback, also_refused=True)
    assert fallback.errors == []


def _write_on_a_torn_down_connection() -> None:
    """A raw AttributeError from inside redis-py's asyncio client, not one of its error types.

    redis-py up to 8.1 raised one by itself when another task had disconnected the connection it
    wrote on (seen on the async cluster client during a failover; redis-py issue #4287). 8.2
    checks for a closed writer first and raises ConnectionError there, so the test no longer
    waits for that race: it hands redis-py's write a writer that has none of a stream writer's
    attributes, which fails inside redis-py's own code on every version (8.1: `writelines`,
    8.2: `transport`)."""
    connection = redis.asyncio.connection.Connection(host="127.0.0.1", port=1)
    connection._writer = object()  # type: ignore[assignment]
    asyncio.run(connection._send_packed_command([b"PING"]))


def test_an_error_of_redis_pys_own_code_on_a_torn_down_connection_is_an_outage(
    core: RedisCore,
) -> None:
    with pytest.raises(AttributeError):  # what redis-py raises there
        _write_on_a_torn_down_connection()
    with pytest.raises(ServiceUnavailable) as raised, core.errors():
        _write_on_a_torn_down_connection()
    assert isinstance(raised.value.__cause__, AttributeError)
    fallback = Fallback()
    assert core.fail_open(_write_on_a_torn_down_connection, fallback) == "fell back"
    assert isinstance(fallback.errors[0], ServiceUnavailable)


def test_attribute_and_type_errors_of_other_code_are_not_outages(core: RedisCore) -> None:
    def broken() -> None:
        None.writelines([])  # type: ignore[attr-defined]  # an AttributeError of our own

    with pytest.raises(AttributeError), core.errors():
        broken()
    with pytest.raises(AttributeError):
        core.fail_open(broken, Fallback(), also_refused=True)


# -- scripts --------------------------------------------------------------------------------


def test_each_script_is_registered_once_per_core(core: RedisCore, client: redis.Redis) -> None:
    assert core.script("rate_limit") is core.script("rate_limit")
    assert core.script("rate_limit") is not core.script("progress_set")
    assert RedisCore(client).script("rate_limit") is not core.script("rate_limit")
    # Everything built on one core uses its registration.
    limiters = [RateLimiter(core, limit=5, period=60, policy=p) for p in ("a", "b")]
    assert all(limiter.core is core for limiter in limiters)
    assert RateLimiter(client, limit=5, period=60).core is not core


def test_concurrent_first_uses_register_a_script_once(core: RedisCore) -> None:
    found = []
    start = threading.Barrier(8)

    def take() -> None:
        start.wait()
        found.append(core.script("queue_reclaim"))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 8 and all(script is found[0] for script in found)


def test_a_script_is_loaded_again_after_script_flush(
    local_redis_factory: Callable[[], LocalRedis],
) -> None:
    core = core_for(local_redis_factory().url)
    script = core.script("progress_set")
    key = progress_key(1)
    assert core.client.script_exists(script.script.sha) == [False]  # loaded on first use
    assert script([key], "10.0", "ocr", 60_000)[:2] == [b"10.0", b"ocr"]
    assert core.client.script_exists(script.script.sha) == [True]
    core.client.script_flush()
    assert script([key], "20.0", "ocr", 60_000)[:2] == [b"20.0", b"ocr"]
    assert core.client.script_exists(script.script.sha) == [True]
    core.client.close()


def test_a_script_that_is_not_shipped_is_a_configuration_error(core: RedisCore) -> None:
    with pytest.raises(ConfigurationError, match=r"nope\.lua"):
        core.script("nope")


# -- building on a core ---------------------------------------------------------------------


def test_a_core_is_used_as_is_and_a_plain_client_gets_one(
    core: RedisCore, client: redis.Redis
) -> None:
    assert RedisCore.of(core) is core
    assert RedisCore.of(core, address=core.address) is core
    wrapped = RedisCore.of(client, address="redis.internal:6379")
    assert wrapped.client is client and wrapped.address == "redis.internal:6379"
    assert RedisCore.of(client).address == core.address
    with pytest.raises(InvalidInput):
        RedisCore.of(core, address="elsewhere:6379")


def test_the_cache_fails_open_on_a_refused_command(
    core: RedisCore, caplog: pytest.LogCaptureFixture
) -> None:
    cache = RedisCache(core)
    core.client.rpush(cache_key("k"), "not a value")  # GET refuses a list: WRONGTYPE
    with caplog.at_level(logging.WARNING, logger="docstore.cache"):
        assert cache.get("k", int) is None
        assert cache.set("other", 1) is True
        assert cache.get_or_set("k", lambda: 7, int) == 7
    assert cache.stats().errors == 2 and cache.stats().misses == 0
    logged = [r.getMessage() for r in caplog.records if r.name == "docstore.cache"]
    assert len(logged) == 2 and all("failed open" in m and "WRONGTYPE" in m for m in logged)


def test_progress_set_raises_a_refused_command_and_skips_an_outage(
    core: RedisCore, unreachable: RedisCore, caplog: pytest.LogCaptureFixture
) -> None:
    core.client.rpush(progress_key(1), "not a hash")
    with pytest.raises(RedisCommandError, match="WRONGTYPE"):
        ProgressTracker(core).set(1, 10, "ocr")
    with caplog.at_level(logging.WARNING, logger="docstore.progress"):
        assert ProgressTracker(unreachable).set(1, 10, "ocr") is None
    assert any("not recorded" in r.getMessage() for r in caplog.records)


def test_the_limiter_applies_its_policy_to_a_refused_script_and_to_an_outage(
    core: RedisCore, unreachable: RedisCore, caplog: pytest.LogCaptureFixture
) -> None:
    # A refused script (here WRONGTYPE; out of memory or an ACL in production) cannot decide
    # either: it raised RedisCommandError, which took down every route of a service.
    core.client.rpush(rate_limit_key("p", "k"), "not a number")
    refused = RateLimiter(core, limit=5, period=60, policy="p", failure_policy=FailurePolicy.DENY)
    decision = refused.hit("k")
    assert not decision.allowed and decision.decided_by is DecidedBy.FAILURE_POLICY
    caplog.clear()
    strict = RateLimiter(unreachable, limit=5, period=60, failure_policy=FailurePolicy.DENY)
    with caplog.at_level(logging.DEBUG, logger="docstore.rate_limit"):
        first, second = strict.hit("k"), strict.hit("k")
    assert not first.allowed and second.decided_by is DecidedBy.FAILURE_POLICY
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one warning per outage, not per decision
