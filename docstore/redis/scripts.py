"""What the Redis-side classes share: the client type, Lua scripts, and error translation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from importlib import resources
from typing import Any, TypeAlias, cast

import redis
import redis.exceptions
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.typing import EncodableT

from docstore.errors import ConfigurationError, RedisCommandError
from docstore.postgres.errors import redis_unavailable

RedisClient: TypeAlias = "redis.Redis | RedisCluster"

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


@contextmanager
def redis_errors(address: str) -> Iterator[None]:
    """Re-raise redis-py errors as `ServiceUnavailable` / `RedisCommandError`, chained."""
    try:
        yield
    except UNAVAILABLE_ERRORS as exc:
        raise redis_unavailable(exc, address) from exc
    except redis.exceptions.RedisError as exc:
        raise command_error(exc, address) from exc


def command_error(exc: Exception, address: str) -> RedisCommandError:
    """The docstore error for a command Redis refused (not an outage)."""
    return RedisCommandError(f"Redis at {address} refused the command: {exc}")


@cache
def lua_source(name: str) -> str:
    """Text of the shipped script ``docstore/lua/<name>.lua`` (read once per process)."""
    path = resources.files("docstore.redis") / "lua" / f"{name}.lua"
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigurationError(f"docstore is installed without lua/{name}.lua") from exc


class LuaScript:
    """A shipped script, registered once with `register_script`; calls are a bare EVALSHA.

    On NOSCRIPT (Redis restarted or its script cache was flushed) the call goes through
    redis-py's `Script`, which loads the source again and retries once.
    """

    __slots__ = ("client", "script")

    def __init__(self, client: RedisClient, name: str) -> None:
        self.client = client
        self.script: Script = client.register_script(lua_source(name))

    def __call__(self, keys: Sequence[str], *args: EncodableT) -> Any:
        """Run the script with `keys` (one cluster slot) and `args`; the raw reply."""
        try:
            return self.client.evalsha(self.script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return self.script(keys=keys, args=args)


def register_script(client: RedisClient, name: str) -> LuaScript:
    """The shipped script ``docstore/lua/<name>.lua``, ready to call on `client`."""
    return LuaScript(client, name)


def client_address(client: RedisClient) -> str:
    """``host:port`` of a client, for error messages (never credentials)."""
    if isinstance(client, RedisCluster):
        node = cast(Any, client).get_default_node()  # untyped in redis-py
        return f"{node.host}:{node.port}" if node is not None else "redis-cluster"
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def as_text(value: bytes | str) -> str:
    """A reply as text, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else value


__all__ = [
    "UNAVAILABLE_ERRORS",
    "LuaScript",
    "RedisClient",
    "as_text",
    "client_address",
    "command_error",
    "lua_source",
    "redis_errors",
    "register_script",
]
