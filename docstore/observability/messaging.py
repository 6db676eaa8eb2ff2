"""The document flow as messaging: a PRODUCER span per submitted document whose trace context
travels in its queue message, a CONSUMER span per processed document linked to it, and the
document, cache and rate-limit counters.

`trace_fields()` is what the queue adds to a message (W3C ``traceparent``/``tracestate``, only
while a span is recording); `observe_processing` reads it back as a span link, so the trace of
the worker links to the request that submitted the document, however long it waited.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import docstore.observability.instruments as instruments
from docstore.observability.state import NO_EXCEPTION_EVENTS, Telemetry, reporting, telemetry

P = ParamSpec("P")
R = TypeVar("R")

STREAM = "documents"
TRACE_FIELDS = ("traceparent", "tracestate")
_MESSAGING = {"messaging.system": "redis", "messaging.destination.name": STREAM}
_OUTCOME_COUNTERS = {
    "completed": "docstore.documents.completed",
    "failed": "docstore.documents.failed",
    "retrying": "docstore.documents.retried",
}


def trace_fields() -> dict[Any, Any]:
    """The current trace context as queue message fields ({} when nothing is traced)."""
    state = telemetry()
    if state is None or state.tracer() is None:
        return {}
    carrier: dict[str, str] = {}
    state.propagate.inject(carrier)
    # str to str; typed loosely so that it unpacks into any field mapping (XADD takes bytes too)
    return {k: v for k, v in carrier.items() if k in TRACE_FIELDS}


def _count(state: Telemetry, name: str, attributes: Mapping[str, Any] | None = None) -> None:
    instruments.counter(state, name, "{document}", f"Documents {name.rsplit('.', 1)[1]}.").add(
        1, attributes
    )


def observe_submit(function: Callable[P, R]) -> Callable[P, R]:
    """Decorate the submit flow: a PRODUCER span ``send documents`` around it (current, so the
    blob, SQL and Redis spans are its children and the message carries its context), and
    `docstore.documents.submitted` counted when it returns a new document (not when it hands
    back an earlier one: `note_replayed_submission`)."""
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def submit_async(*args: Any, **kwargs: Any) -> Any:
            with _Submitting():
                return await function(*args, **kwargs)

        return submit_async  # type: ignore[return-value]

    @functools.wraps(function)
    def submit(*args: P.args, **kwargs: P.kwargs) -> R:
        with _Submitting():
            return function(*args, **kwargs)

    return submit


# Inside an observed submit while telemetry is on: a list that a replayed submission marks.
_replayed: ContextVar[list[bool] | None] = ContextVar("docstore_submit_replayed", default=None)


def note_replayed_submission() -> None:
    """Inside the submit flow: this call hands back an earlier document (an idempotent retry)
    and stores nothing, so it is no new submission."""
    marks = _replayed.get()
    if marks is not None:
        marks.append(True)


class _Submitting:
    __slots__ = ("replayed", "scope", "state", "token")

    def __enter__(self) -> None:
        self.state = reporting()
        self.scope: Any = None
        if self.state is None:
            return
        self.replayed: list[bool] = []
        self.token = _replayed.set(self.replayed)
        tracer = self.state.tracer()
        if tracer is not None and self.state is not None:
            self.scope = tracer.start_as_current_span(
                f"send {STREAM}",
                kind=self.state.trace.SpanKind.PRODUCER,
                attributes={
                    **_MESSAGING,
                    "messaging.operation.type": "send",
                    "messaging.operation.name": "submit",
                },
                **NO_EXCEPTION_EVENTS,
            )
            self.scope.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.state is None:
            return
        _replayed.reset(self.token)
        if self.scope is not None:
            span = self.state.trace.get_current_span()
            if exc_type is not None:
                self.state.failed(span, exc_type)
            elif self.replayed:
                span.set_attribute("docstore.submission.replayed", True)
            self.scope.__exit__(exc_type, exc, tb)
        if exc_type is None and not self.replayed:
            _count(self.state, "docstore.documents.submitted")


class Processing:
    """Around one document's processing: a CONSUMER span ``process documents`` linked to the
    submitting trace, its duration and outcome counted. Call it with the outcome."""

    __slots__ = ("document_id", "message", "outcome", "scope", "started", "state")

    def __init__(self, document_id: int, message: Any) -> None:
        self.document_id = document_id
        self.message = message
        self.outcome: str | None = None
        self.state = reporting()
        self.scope: Any = None
        self.started = 0.0

    def __call__(self, outcome: R) -> R:
        self.outcome = str(getattr(outcome, "action", outcome))
        return outcome

    def __enter__(self) -> Processing:
        state = self.state
        tracer = state.tracer() if state is not None else None
        if state is not None and tracer is not None:
            attributes: dict[str, Any] = {
                **_MESSAGING,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "docstore.document.id": self.document_id,
            }
            links = []
            if self.message is not None:
                attributes["messaging.message.id"] = self.message.message_id
                attributes["messaging.message.delivery_count"] = self.message.deliveries
                context = state.propagate.extract(getattr(self.message, "trace_context", {}) or {})
                linked = state.trace.get_current_span(context).get_span_context()
                if linked.is_valid:
                    links.append(state.trace.Link(linked))
            self.scope = tracer.start_as_current_span(
                f"process {STREAM}",
                kind=state.trace.SpanKind.CONSUMER,
                attributes=attributes,
                links=links,
                **NO_EXCEPTION_EVENTS,
            )
            self.scope.__enter__()
        self.started = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        state = self.state
        if state is None:
            return
        outcome = self.outcome or ("error" if exc_type is not None else "unknown")
        if self.scope is not None:
            span = state.trace.get_current_span()
            span.set_attribute("docstore.outcome", outcome)
            if exc_type is not None:
                state.failed(span, exc_type)
            self.scope.__exit__(exc_type, exc, tb)
        duration = instruments.seconds_histogram(
            state, "docstore.document.processing.duration", "Time to process one document."
        )
        duration.record(time.perf_counter() - self.started, {"docstore.outcome": outcome})
        if outcome in _OUTCOME_COUNTERS:
            _count(state, _OUTCOME_COUNTERS[outcome])


def observe_processing(document_id: int, message: Any = None) -> Processing:
    """``with observe_processing(document.id, message) as observed: outcome = observed(...)``."""
    return Processing(document_id, message)


_CACHE_RESULTS = {"hits": "hit", "misses": "miss", "errors": "error"}


def count_cache(result: str) -> None:
    """Count one cache request by its result: hit, miss or error (a fail-open); the cache's
    own counter names (hits, misses, errors) are taken too, others (loads) ignored."""
    result = _CACHE_RESULTS.get(result, result)
    state = reporting()
    if state is not None and result in _CACHE_RESULTS.values():
        instruments.counter(
            state, "docstore.cache.requests", "{request}", "Cache requests by result."
        ).add(1, {"docstore.cache.result": result})


def count_rate_limit(policy: str, allowed: bool, decided_by: str) -> None:
    """Count one rate-limit decision: allowed or refused, by Redis or the failure policy."""
    state = reporting()
    if state is not None:
        instruments.counter(
            state, "docstore.rate_limit.decisions", "{decision}", "Rate-limit decisions."
        ).add(
            1,
            {
                "docstore.rate_limit.policy": policy,
                "docstore.rate_limit.decision": "allowed" if allowed else "refused",
                "docstore.rate_limit.decided_by": decided_by,
            },
        )


def record_queue_state(
    stream: str, depth: int, pending: int, dead_letters: int, oldest: Any
) -> None:
    """Give the queue gauges a fresh reading (e.g. `queue.stats()` and
    `queue.oldest_enqueued_at()` before a scrape, or on a timer in a worker)."""
    state = reporting()
    if state is not None:
        instruments.record_queue(state, stream, depth, pending, dead_letters, oldest)


__all__ = [
    "TRACE_FIELDS",
    "Processing",
    "count_cache",
    "count_rate_limit",
    "note_replayed_submission",
    "observe_processing",
    "observe_submit",
    "record_queue_state",
    "trace_fields",
]
