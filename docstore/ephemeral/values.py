"""What the cache, limiter, queue and progress hand back: one definition each, shared by the
async classes and their generated sync twins (which re-export them from their own modules)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import lru_cache
from typing import Any, Generic, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PydanticSchemaGenerationError,
    TypeAdapter,
    ValidationError,
)
from pydantic.errors import PydanticUserError

from docstore.errors import InvalidInput

# -- cache ------------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _adapter(type_: Any) -> TypeAdapter[Any]:
    return TypeAdapter(type_)


def type_adapter(type_: object) -> TypeAdapter[Any]:
    """The pydantic adapter a cached value of `type_` is read with; `InvalidInput` for what is
    no type pydantic can read (a value, a list of types, a string: pydantic would take it for
    the name of a type, resolved nobody knows where)."""
    if isinstance(type_, str | bytes):
        raise InvalidInput("type_ must be a type, not a string", field="type_")
    try:
        return _adapter(type_)
    except (TypeError, PydanticSchemaGenerationError, PydanticUserError):
        raise InvalidInput(f"type_ must be a type, not {type_!r}"[:200], field="type_") from None


def loaded_as(type_: object, value: object) -> Any:
    """A loader's `value` as `type_`, as a hit reads it back (a dict becomes the model, "5" the
    int 5): a miss and a hit return the same. `InvalidInput` when it is no `type_`, before it
    is stored (a copy no read could decode would make every read a miss)."""
    try:
        return type_adapter(type_).validate_python(value)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        name = getattr(type_, "__name__", repr(type_))
        raise InvalidInput(
            f"the loader returned a value that is not a {name}: {error['msg']}"[:300],
            field="loader",
        ) from None


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since the cache was created."""

    hits: int
    misses: int
    errors: int
    loads: int


# -- rate limit -------------------------------------------------------------------------------


class FailurePolicy(str, Enum):
    """What a limiter decides when Redis cannot be reached."""

    ALLOW = "allow"
    DENY = "deny"


class DecidedBy(str, Enum):
    """Who took a decision: Redis (the normal case) or the failure policy (Redis down)."""

    REDIS = "redis"
    FAILURE_POLICY = "failure_policy"


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    """The outcome of one `hit` or `peek`. Times are in seconds."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float
    policy: str
    period: float
    decided_by: DecidedBy = DecidedBy.REDIS

    @property
    def degraded(self) -> bool:
        """True when Redis was unreachable and the failure policy decided."""
        return self.decided_by is DecidedBy.FAILURE_POLICY

    def headers(self) -> dict[str, str]:
        """IETF ``RateLimit`` and ``RateLimit-Policy`` headers, plus ``Retry-After`` on a denial."""
        window = max(1, math.ceil(self.period))
        headers = {
            "RateLimit-Policy": f'"{self.policy}";q={self.limit};w={window}',
            "RateLimit": f'"{self.policy}";r={self.remaining};t={math.ceil(self.reset_after)}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


Limiter = TypeVar("Limiter")


@dataclass(frozen=True, slots=True)
class LimitCheck(Generic[Limiter]):
    """One decision of `RateLimiter.decide_together`: `limiter` hits `key` (`consume`), or only
    peeks at it."""

    limiter: Limiter
    key: str
    cost: int = 1
    consume: bool = True


# -- queue ------------------------------------------------------------------------------------


class QueueMessage(BaseModel):
    """One delivery of a document id to a worker."""

    model_config = ConfigDict(frozen=True)

    message_id: str
    document_id: int
    deliveries: int
    enqueued_at: datetime
    # W3C trace context of the span that enqueued it (`traceparent`, `tracestate`), if traced.
    trace_context: dict[str, str] = Field(default_factory=dict)


class DeadLetter(BaseModel):
    """A message that was delivered `max_deliveries` times and never acknowledged, or an entry
    that names no document (`document_id` None, `reason` says why)."""

    model_config = ConfigDict(frozen=True)

    message_id: str
    source_id: str
    document_id: int | None
    deliveries: int
    last_consumer: str
    dead_at: datetime
    reason: str | None = None


class QueueStats(BaseModel):
    """Sizes an operator watches: unfinished messages, those being worked on, dead letters."""

    model_config = ConfigDict(frozen=True)

    length: int
    pending: int
    dead_letters: int


# -- progress ---------------------------------------------------------------------------------


class Progress(BaseModel):
    """A document's progress as last reported by its worker."""

    model_config = ConfigDict(frozen=True)

    document_id: int
    percent: float = Field(ge=0, le=100)
    stage: str
    updated_at: datetime


__all__ = [
    "CacheStats",
    "DeadLetter",
    "DecidedBy",
    "FailurePolicy",
    "Progress",
    "QueueMessage",
    "QueueStats",
    "RateLimitResult",
    "loaded_as",
]
