"""What `Docstore.health()` reports."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class PoolStats(BaseModel):
    """A few counters of the PostgreSQL connection pool."""

    model_config = ConfigDict(frozen=True)

    size: int
    available: int
    waiting: int
    min_size: int
    max_size: int


class HealthReport(BaseModel):
    """Versions of the servers, or why one could not be reached."""

    model_config = ConfigDict(frozen=True)

    postgres_version: str | None
    postgres_error: str | None = None
    redis_version: str | None
    redis_error: str | None = None
    pool: PoolStats

    @property
    def ok(self) -> bool:
        """True when both servers answered."""
        return self.postgres_error is None and self.redis_error is None
