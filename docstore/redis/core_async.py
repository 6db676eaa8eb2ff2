"""`AsyncRedisCore`: the one object the cache, limiter, queue, progress and migration talk to Redis
through — the client and its address, the Lua scripts, typed errors and the fail-open helper."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from docstore._async_runtime import AsyncCall
from docstore.errors import InvalidInput, RedisCommandError, ServiceUnavailable
from docstore.observability.redis_commands import instrument_redis
from docstore.redis.cancels import keep_cancels
from docstore.redis.client_async import (
    REDIS_CLIENT_TYPES,
    RedisClient,
    client_address,
    new_redis,
)
from docstore.redis.errors import (
    DRIVER_BREAKAGE,
    REDIS_FAILURES,
    driver_breakage,
    redis_errors,
    redis_unavailable,
    typed_error,
)
from docstore.redis.scripts_async import AsyncLuaScript
from docstore.settings import Settings

R = TypeVar("R")
F = TypeVar("F")


class AsyncRedisCore:
    """A Redis client, the address its errors name, and the shipped scripts registered on it.

    Share one core between everything that uses one client: each script is registered once
    per core. `address` defaults to the client's ``host:port``.
    """

    __slots__ = ("_scripts", "_scripts_lock", "address", "client")

    def __init__(self, client: RedisClient, *, address: str | None = None) -> None:
        if not isinstance(client, REDIS_CLIENT_TYPES):
            wanted = " or ".join(f"{t.__module__}.{t.__qualname__}" for t in REDIS_CLIENT_TYPES)
            raise InvalidInput(
                f"a Redis client ({wanted}) is needed here, not "
                f"{type(client).__module__}.{type(client).__qualname__}",
                field="redis",
            )
        self.client = client
        self.address = address or client_address(client)
        keep_cancels(client)  # before Python 3.12, redis-py may drop a cancel (see `cancels`)
        instrument_redis(client, self.address)  # a span per command, when OpenTelemetry is on
        self._scripts: dict[str, AsyncLuaScript] = {}
        # Held only while a script object is built (no I/O, never across an await).
        self._scripts_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        socket_timeout: float | None = None,
        connect_timeout: float | None = None,
    ) -> AsyncRedisCore:
        """A core on a new client (`new_redis`); the timeouts override the settings'."""
        client = new_redis(settings, socket_timeout=socket_timeout, connect_timeout=connect_timeout)
        return cls(client, address=settings.redis_address)

    @classmethod
    def of(
        cls, redis: RedisClient | AsyncRedisCore, *, address: str | None = None
    ) -> AsyncRedisCore:
        """`redis` itself if it is a core, else a new core on the plain client `redis`."""
        if not isinstance(redis, AsyncRedisCore):
            return cls(redis, address=address)
        if address is not None and address != redis.address:
            raise InvalidInput(
                "a RedisCore has its own address: do not pass another", field="address"
            )
        return redis

    @property
    def socket_timeout(self) -> float | None:
        """The client's socket timeout in seconds (None: it waits forever)."""
        # A cluster client keeps its nodes' options in its nodes manager.
        holder = getattr(self.client, "connection_pool", None) or getattr(
            self.client, "nodes_manager", None
        )
        kwargs: dict[str, Any] = holder.connection_kwargs if holder is not None else {}
        timeout = kwargs.get("socket_timeout")
        return float(timeout) if timeout else None

    def script(self, name: str) -> AsyncLuaScript:
        """The shipped script ``docstore/redis/lua/<name>.lua``, registered once per core."""
        script = self._scripts.get(name)
        if script is None:
            with self._scripts_lock:
                script = self._scripts.get(name)
                if script is None:
                    script = self._scripts[name] = AsyncLuaScript(self.client, name)
        return script

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Re-raise redis-py errors as `ServiceUnavailable` (an outage: Redis cannot answer) or
        `RedisCommandError` (Redis answered and refused), chained to the original.

        A plain context manager on both sides: it does no I/O, and wraps awaits as well."""
        with redis_errors(self.address):
            yield

    async def fail_open(
        self,
        call: AsyncCall[R],
        fallback: Callable[[ServiceUnavailable | RedisCommandError], F],
        *,
        also_refused: bool = False,
    ) -> R | F:
        """`await call()`, or `fallback(error)` when Redis is unavailable; with `also_refused`
        also when Redis refused the command, which otherwise raises `RedisCommandError`.

        `fallback` is a plain function (it does no I/O). No context manager: the rate limiter's
        hot path runs through here.
        """
        try:
            return await call()
        except REDIS_FAILURES as exc:
            error = typed_error(exc, self.address)
            if isinstance(error, RedisCommandError) and not also_refused:
                raise error from exc
            error.__cause__ = exc  # as if raised from it, for whoever logs the error
            return fallback(error)
        except DRIVER_BREAKAGE as exc:
            if not driver_breakage(exc):
                raise
            outage = redis_unavailable(exc, self.address)
            outage.__cause__ = exc
            return fallback(outage)

    def __repr__(self) -> str:
        return f"AsyncRedisCore({self.address})"


__all__ = ["AsyncRedisCore"]
