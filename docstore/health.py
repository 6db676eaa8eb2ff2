"""What `Docstore.health()` reports."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

# The longest a health check waits for a PostgreSQL connection (POOL_TIMEOUT when shorter): a
# liveness probe with a timeout of a few seconds gets a report, not a timeout of its own.
HEALTH_TIMEOUT = 2.0


class PoolStats(BaseModel):
    """A few counters of the PostgreSQL connection pool."""

    model_config = ConfigDict(frozen=True)

    size: int
    available: int
    waiting: int
    min_size: int
    max_size: int


class ReplicaHealth(BaseModel):
    """The read replica (`DATABASE_REPLICA_URL`): its state when the report was made, and the
    lag-tolerant reads it answered and those sent to the primary instead."""

    model_config = ConfigDict(frozen=True)

    address: str
    state: Literal["unknown", "ok", "lagging", "down"]
    lag_seconds: float | None
    max_lag_seconds: float
    reads: int
    reads_on_primary: int


class HealthReport(BaseModel):
    """Versions of the servers, or why one could not be reached."""

    model_config = ConfigDict(frozen=True)

    postgres_version: str | None
    postgres_error: str | None = None
    # Every connection of the pool stayed at work for the health check's wait: not an outage.
    postgres_busy: bool = False
    redis_version: str | None
    redis_error: str | None = None
    pool: PoolStats
    replica: ReplicaHealth | None = None  # None without DATABASE_REPLICA_URL

    @property
    def ok(self) -> bool:
        """True when both servers answered (a replica down or lagging is not an outage: the
        primary answers its reads; see `replica`)."""
        return self.postgres_error is None and self.redis_error is None
