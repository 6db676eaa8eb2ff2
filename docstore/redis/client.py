"""The Redis client docstore uses, with short timeouts so an outage never hangs a caller."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from docstore.settings import Settings


def new_redis(settings: Settings) -> redis.Redis:
    """A client (no connection opened yet) with the configured timeouts and no retries."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_connect_timeout,
        health_check_interval=30,
        # Fail fast: one attempt per call (redis-py retries 3 times by default); callers
        # choose their own policy on failure.
        retry=Retry(NoBackoff(), 0),
    )
