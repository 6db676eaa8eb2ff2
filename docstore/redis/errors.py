"""Redis errors as docstore errors: one list of what counts as an outage, one translator.

`typed_error` is where an outage is told apart from a refused command; `RedisCore.errors` and
`RedisCore.fail_open` both go through it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis.exceptions

from docstore.errors import RedisCommandError, ServiceUnavailable

# Errors that mean "Redis cannot answer right now": connection errors and timeouts, and a
# cluster that lost a slot or is failing over. Listed first, before other `RedisError`s.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
    redis.exceptions.ClusterError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.RedisClusterException,
)
# Everything a Redis call can raise that a fail-open caller swallows: an outage, or a command
# Redis refused (e.g. out of memory).
REDIS_FAILURES: tuple[type[Exception], ...] = (*UNAVAILABLE_ERRORS, redis.exceptions.RedisError)


def redis_unavailable(exc: Exception, address: str) -> ServiceUnavailable:
    """The docstore error for a Redis outage (connection failure, timeout, failover)."""
    return ServiceUnavailable(
        f"Redis at {address} is unavailable: {type(exc).__name__}",
        service="redis",
        address=address,
    )


def command_error(exc: Exception, address: str) -> RedisCommandError:
    """The docstore error for a command Redis refused (not an outage)."""
    return RedisCommandError(f"Redis at {address} refused the command: {exc}")


def typed_error(exc: Exception, address: str) -> ServiceUnavailable | RedisCommandError:
    """The docstore error for one of `REDIS_FAILURES`: an outage, or a refused command."""
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return redis_unavailable(exc, address)
    return command_error(exc, address)


@contextmanager
def redis_errors(address: str) -> Iterator[None]:
    """Re-raise redis-py errors as `ServiceUnavailable` / `RedisCommandError`, chained."""
    try:
        yield
    except REDIS_FAILURES as exc:
        raise typed_error(exc, address) from exc


__all__ = [
    "REDIS_FAILURES",
    "UNAVAILABLE_ERRORS",
    "command_error",
    "redis_errors",
    "redis_unavailable",
    "typed_error",
]
