"""The Redis client docstore uses, with short timeouts so an outage never hangs a caller, and
its address for messages."""

from __future__ import annotations

from typing import Any, TypeAlias, Union, cast

import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from docstore.redis.errors import redis_errors
from docstore.redis.held_async import hold_connections
from docstore.redis.sends import send_under_timeout
from docstore.settings import Settings

RedisClient: TypeAlias = Union[redis.asyncio.Redis, RedisCluster]  # noqa: UP007 (evaluated at run time)
# The same two, for `isinstance`.
REDIS_CLIENT_TYPES = (redis.asyncio.Redis, RedisCluster)


def new_redis(
    settings: Settings,
    *,
    socket_timeout: float | None = None,
    connect_timeout: float | None = None,
) -> RedisClient:
    """A client (no connection opened yet) with the configured timeouts and no retries: a
    `RedisCluster` when `REDIS_CLUSTER` is set (it finds the other nodes from the one in
    `REDIS_URL`; a call failing on a node re-reads the layout and is tried once more, which
    follows a failover; the sync client asks that node for the layout at once:
    `ServiceUnavailable` when it is down).

    `socket_timeout` / `connect_timeout` override the settings (the migration reads big
    pipelines and waits longer per round trip).
    """
    options: dict[str, Any] = {
        "socket_timeout": (
            settings.redis_socket_timeout if socket_timeout is None else socket_timeout
        ),
        "socket_connect_timeout": (
            settings.redis_connect_timeout if connect_timeout is None else connect_timeout
        ),
        # Fail fast: one attempt per call (redis-py retries 3 times by default); callers
        # choose their own policy on failure.
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.redis_cluster:
        # One retry, after the client re-reads the cluster's layout: a call after a failover
        # then reaches the promoted replica instead of failing once on the dead primary.
        options["retry"] = Retry(NoBackoff(), 1)
        # The sync client asks the node for the layout right here (the async one on its first
        # command): that node being down is an outage like any other.
        with redis_errors(settings.redis_address):
            return RedisCluster.from_url(settings.redis_url, **options)
    client = redis.asyncio.Redis.from_url(settings.redis_url, health_check_interval=30, **options)
    send_under_timeout(client)  # before Python 3.12, no task per command (see `sends`)
    hold_connections(client)  # no pool checkout per command (see `held_async`)
    return client


def client_address(client: RedisClient) -> str:
    """``host:port`` (or socket path) of a client, for error messages (never credentials)."""
    if isinstance(client, RedisCluster):
        node = cast(Any, client).get_default_node()  # untyped in redis-py
        return f"{node.host}:{node.port}" if node is not None else "redis-cluster"
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def as_text(value: bytes | str, errors: str = "strict") -> str:
    """A reply as text, whether or not the client decodes responses (`errors` as for
    `bytes.decode`)."""
    return value.decode(errors=errors) if isinstance(value, bytes) else value


__all__ = ["REDIS_CLIENT_TYPES", "RedisClient", "as_text", "client_address", "new_redis"]
