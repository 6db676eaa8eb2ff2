"""PostgreSQL telemetry: a CLIENT span per named statement (named by its query name) and the
`db.client.operation.duration` histogram, plus the pool's connection gauges.

Attributes follow the stable database conventions: `db.system.name`, `db.operation.name`,
`db.collection.name`, `db.query.summary`, `server.address`, `server.port`, and on failure
`error.type` and `db.response.status_code` (the SQLSTATE). Never the SQL's parameter values,
never a URL or password: what is recorded comes from the query's text and the server address.
"""

from __future__ import annotations

import time
import weakref
from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache
from types import TracebackType
from typing import Any

import docstore.observability.instruments as instruments
from docstore.observability.sql_summary import summarize
from docstore.observability.state import Telemetry, reporting, telemetry

QUERY_NAME = "docstore.query.name"
_NOOP: AbstractContextManager[None] = nullcontext()


def server_attributes(address: str) -> dict[str, Any]:
    """`server.address` and `server.port` of a ``host:port`` address."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return {"server.address": address}
    return {"server.address": host.strip("[]"), "server.port": int(port)}


@lru_cache(maxsize=1024)
def _query_attributes(name: str, sql: str, address: str) -> dict[str, Any]:
    found = summarize(sql)
    attributes: dict[str, Any] = {
        "db.system.name": "postgresql",
        "db.operation.name": found.operation,
        "db.query.summary": found.summary,
        QUERY_NAME: name,
        **server_attributes(address),
    }
    if found.collection:
        attributes["db.collection.name"] = found.collection
    return attributes


class _Statement:
    """The span and duration of one statement (entered around the driver's execute)."""

    __slots__ = ("attributes", "name", "span", "started", "telemetry")

    def __init__(self, state: Telemetry, name: str, attributes: dict[str, Any]) -> None:
        self.telemetry = state
        self.name = name
        self.attributes = attributes
        self.span: Any = None
        self.started = 0.0

    def __enter__(self) -> None:
        tracer = self.telemetry.tracer()
        if tracer is not None:
            self.span = tracer.start_span(
                self.name, kind=self.telemetry.trace.SpanKind.CLIENT, attributes=self.attributes
            )
        self.started = time.perf_counter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed = time.perf_counter() - self.started
        attributes = self.attributes
        if exc_type is not None:
            attributes = {**attributes, **_error_attributes(exc_type, exc)}
        if self.span is not None:
            if exc_type is not None:
                self.span.set_attributes(attributes)
                # The type only: a driver's message may quote the values of the statement.
                self.span.set_status(
                    self.telemetry.trace.Status(
                        self.telemetry.trace.StatusCode.ERROR, exc_type.__name__
                    )
                )
            self.span.end()
        instruments.operation_duration(self.telemetry).record(elapsed, attributes)


def _error_attributes(exc_type: type[BaseException], exc: BaseException | None) -> dict[str, Any]:
    found: dict[str, Any] = {"error.type": exc_type.__name__}
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        found["db.response.status_code"] = sqlstate
    return found


def observe_query(name: str, sql: str, address: str) -> AbstractContextManager[None]:
    """Around one statement's execute: a span and a duration (a no-op when telemetry is off)."""
    state = reporting()
    if state is None:
        return _NOOP
    return _Statement(state, name, _query_attributes(name, sql, address))


def observe_pool(pool: Any, address: str) -> None:
    """Report the pool's connections (used, idle), its maximum and the requests waiting for
    one, read from `pool.get_stats()` whenever metrics are collected."""
    state = telemetry()
    if state is None:
        return
    instruments.watch_pool(state, weakref.ref(pool), {"db.client.connection.pool.name": address})


__all__ = ["QUERY_NAME", "observe_pool", "observe_query", "server_attributes"]
