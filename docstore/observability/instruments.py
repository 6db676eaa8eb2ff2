"""docstore's OpenTelemetry instruments, created once per process on first use (the list,
with units and attributes, is in docs/operations.md): `db.client.operation.duration` and the
pool's `db.client.connection.*` gauges after the database conventions, and docstore's own
`docstore.queue.*`, `docstore.documents.*`, `docstore.document.processing.duration`,
`docstore.cache.requests`, `docstore.rate_limit.decisions` and
`docstore.blob.operation.duration`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from docstore.observability.state import Telemetry

_DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
_lock = threading.Lock()
# Pools and queues the observable instruments read, with their attributes.
_pools: list[tuple[Callable[[], Any], dict[str, Any]]] = []
_queues: dict[str, dict[str, float]] = {}


def operation_duration(state: Telemetry) -> Any:
    """`db.client.operation.duration`, shared by PostgreSQL and Redis."""
    found = state.instruments.get("db.client.operation.duration")
    if found is not None:  # the hot path: a dict lookup
        return found
    return state.instrument(
        "db.client.operation.duration",
        "create_histogram",
        unit="s",
        description="Duration of database client operations.",
        explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
    )


def counter(state: Telemetry, name: str, unit: str, description: str) -> Any:
    """A counter of docstore's (documents, cache requests, rate-limit decisions)."""
    found = state.instruments.get(name)
    if found is not None:
        return found
    return state.instrument(name, "create_counter", unit=unit, description=description)


def seconds_histogram(state: Telemetry, name: str, description: str) -> Any:
    """A duration histogram in seconds."""
    found = state.instruments.get(name)
    if found is not None:
        return found
    return state.instrument(
        name,
        "create_histogram",
        unit="s",
        description=description,
        explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
    )


def watch_pool(state: Telemetry, pool: Callable[[], Any], attributes: dict[str, Any]) -> None:
    """Have the connection gauges read `pool()` (a weak reference) at each collection."""
    with _lock:
        # Pools closed and dropped are forgotten here too (nothing may ever collect metrics).
        _pools[:] = [entry for entry in _pools if entry[0]() is not None]
        _pools.append((pool, attributes))
        if state.has("db.client.connection.count"):
            return
        for name, unit, description in (
            ("db.client.connection.count", "{connection}", "Connections by state."),
            ("db.client.connection.max", "{connection}", "Most connections the pool opens."),
            (
                "db.client.connection.pending_requests",
                "{request}",
                "Requests waiting for a connection.",
            ),
        ):
            state.instrument(
                name,
                "create_observable_up_down_counter",
                callbacks=[_pool_reader(state, name)],
                unit=unit,
                description=description,
            )


def _pool_reader(state: Telemetry, name: str) -> Callable[[Any], Iterable[Any]]:
    from opentelemetry.metrics import Observation

    def read(_options: Any) -> Iterable[Any]:
        alive: list[tuple[Any, dict[str, Any]]] = []
        with _lock:
            kept = []
            for ref, attributes in _pools:
                pool = ref()
                if pool is not None:  # a pool closed and dropped is forgotten
                    alive.append((pool, attributes))
                    kept.append((ref, attributes))
            _pools[:] = kept
        for pool, attributes in alive:
            stats = pool.get_stats()
            size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
            if name == "db.client.connection.count":
                yield Observation(size - idle, {**attributes, "db.client.connection.state": "used"})
                yield Observation(idle, {**attributes, "db.client.connection.state": "idle"})
            elif name == "db.client.connection.max":
                yield Observation(pool.max_size, attributes)
            else:
                yield Observation(stats.get("requests_waiting", 0), attributes)

    return read


def record_queue(
    state: Telemetry,
    stream: str,
    depth: int,
    pending: int,
    dead_letters: int,
    oldest: datetime | None,
) -> None:
    """Remember a queue's state for its gauges (read at the next collection)."""
    age = (datetime.now(timezone.utc) - oldest).total_seconds() if oldest else 0.0
    with _lock:
        _queues[stream] = {
            "docstore.queue.depth": depth,
            "docstore.queue.pending": pending,
            "docstore.queue.dead_letters": dead_letters,
            "docstore.queue.oldest_age": max(0.0, age),
        }
        if state.has("docstore.queue.depth"):
            return
        for name, unit, description in (
            ("docstore.queue.depth", "{message}", "Messages in the queue's stream."),
            ("docstore.queue.pending", "{message}", "Messages delivered and not acked."),
            ("docstore.queue.dead_letters", "{message}", "Messages in the dead-letter stream."),
            ("docstore.queue.oldest_age", "s", "Age of the oldest message in the queue."),
        ):
            state.instrument(
                name,
                "create_observable_gauge",
                callbacks=[_queue_reader(name)],
                unit=unit,
                description=description,
            )


def _queue_reader(name: str) -> Callable[[Any], Iterable[Any]]:
    from opentelemetry.metrics import Observation

    def read(_options: Any) -> Iterable[Any]:
        with _lock:
            values = [(stream, found[name]) for stream, found in _queues.items()]
        for stream, value in values:
            yield Observation(value, {"messaging.destination.name": stream})

    return read


__all__ = ["counter", "operation_duration", "record_queue", "seconds_histogram", "watch_pool"]
