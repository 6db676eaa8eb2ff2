"""Redis errors as docstore errors: one list of what counts as an outage, one translator.

`typed_error` is where an outage is told apart from a refused command; `RedisCore.errors` and
`RedisCore.fail_open` both go through it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager

import redis
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
# What `driver_breakage` may turn into an outage.
DRIVER_BREAKAGE: tuple[type[Exception], ...] = (AttributeError, TypeError)
_REDIS_DIR = os.path.dirname(os.path.abspath(redis.__file__)) + os.sep
_ASYNCIO_DIR = os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep


def driver_breakage(exc: BaseException) -> bool:
    """True for an `AttributeError` / `TypeError` raised inside redis-py (or the asyncio
    transport under it) on a connection torn down meanwhile: an outage that escaped redis-py's
    own error types (seen on the async cluster client during a failover: `'NoneType' object has
    no attribute 'writelines'`; redis-py issue #4287). Errors of any other code stay as they are.
    """
    if not isinstance(exc, AttributeError | TypeError):
        return False
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    if not frames or not any(_in_package(name, _REDIS_DIR) for name in frames):
        return False
    return _in_package(frames[-1], _REDIS_DIR) or _in_package(frames[-1], _ASYNCIO_DIR)


def _in_package(filename: str, folder: str) -> bool:
    return os.path.abspath(filename).startswith(folder)


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
    except DRIVER_BREAKAGE as exc:
        if not driver_breakage(exc):
            raise
        raise redis_unavailable(exc, address) from exc


__all__ = [
    "DRIVER_BREAKAGE",
    "REDIS_FAILURES",
    "UNAVAILABLE_ERRORS",
    "command_error",
    "driver_breakage",
    "redis_errors",
    "redis_unavailable",
    "typed_error",
]
