"""What the Redis-side classes share: the client type, Lua scripts, and error translation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib import resources
from typing import Any, TypeAlias, cast

import redis
import redis.exceptions
from redis.cluster import RedisCluster
from redis.commands.core import Script

from docstore.error_mapping import redis_unavailable, wrap_redis_errors
from docstore.errors import ConfigurationError

RedisClient: TypeAlias = "redis.Redis | RedisCluster"

# Errors that mean "Redis cannot answer right now" beyond connection errors and timeouts
# (which `wrap_redis_errors` already maps): a cluster that lost a slot or is failing over.
_CLUSTER_UNAVAILABLE = (
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
        with wrap_redis_errors(address):
            yield
    except _CLUSTER_UNAVAILABLE as exc:
        raise redis_unavailable(exc, address) from exc


@cache
def lua_source(name: str) -> str:
    """Text of the shipped script ``docstore/lua/<name>.lua`` (read once per process)."""
    path = resources.files("docstore") / "lua" / f"{name}.lua"
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigurationError(f"docstore is installed without lua/{name}.lua") from exc


def register_script(client: RedisClient, name: str) -> Script:
    """A callable script: EVALSHA, loading the source again if Redis lost it (NOSCRIPT)."""
    return client.register_script(lua_source(name))


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
    "RedisClient",
    "as_text",
    "client_address",
    "lua_source",
    "redis_errors",
    "register_script",
]
