"""Blob store telemetry: a CLIENT span (``blob put``, ``blob get``, ...) and a duration per
operation of a blob store. Never the key (it holds a user id and a file name), never bytes:
the attributes say which backend and, for S3, the bucket, service and method."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import docstore.observability.instruments as instruments
from docstore.observability.state import reporting, telemetry

T = TypeVar("T")
_MARK = "_docstore_telemetry"
# Set while a blob operation is traced: a store's get that calls its own open is one operation.
_inside: ContextVar[bool] = ContextVar("docstore_blob_operation", default=False)
# Blob store methods and the S3 API call each makes.
OPERATIONS = {
    "put": "PutObject",
    "get": "GetObject",
    "open": "GetObject",
    "delete": "DeleteObject",
    "presigned_url": "GeneratePresignedUrl",
}


def _backend_attributes(store: Any) -> dict[str, Any]:
    bucket = getattr(store, "bucket", None)
    if bucket is None:
        return {"docstore.blob.backend": type(store).__name__}
    found: dict[str, Any] = {
        "docstore.blob.backend": "s3",
        "rpc.system": "aws-api",
        "rpc.service": "S3",
        "aws.s3.bucket": bucket,
    }
    return found


def instrument_blob_store(store: T) -> T:
    """Trace and time `store`'s put/get/open/delete/presigned_url (once per store; nothing when
    telemetry is off); returns `store`."""
    if telemetry() is None or getattr(store, _MARK, False):
        return store
    backend = _backend_attributes(store)
    for operation, s3_method in OPERATIONS.items():
        method = getattr(store, operation, None)
        if method is None:
            continue
        attributes = {**backend, "docstore.blob.operation": operation}
        if "rpc.system" in backend:
            attributes["rpc.method"] = s3_method
        setattr(store, operation, _traced(method, f"blob {operation}", attributes))
    with contextlib.suppress(AttributeError):  # __slots__: wrapped again next time, harmless
        setattr(store, _MARK, True)
    return store


def _traced(method: Any, name: str, attributes: dict[str, Any]) -> Any:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        state = reporting()
        if state is None or _inside.get():
            return method(*args, **kwargs)
        token = _inside.set(True)
        tracer = state.tracer()
        span = (
            tracer.start_span(name, kind=state.trace.SpanKind.CLIENT, attributes=attributes)
            if tracer is not None
            else None
        )
        started = time.perf_counter()
        failed: dict[str, Any] = {}
        try:
            return method(*args, **kwargs)
        except BaseException as exc:
            failed = {"error.type": type(exc).__name__}
            if span is not None:
                span.set_attributes(failed)
                span.set_status(
                    state.trace.Status(state.trace.StatusCode.ERROR, type(exc).__name__)
                )
            raise
        finally:
            _inside.reset(token)
            if span is not None:
                span.end()
            duration = instruments.seconds_histogram(
                state, "docstore.blob.operation.duration", "Duration of blob store operations."
            )
            duration.record(time.perf_counter() - started, {**attributes, **failed})

    return call


def instrumented(blobs: Callable[[], T]) -> Callable[[], T]:
    """`blobs` (a function giving the blob store, made on first use), whose store is traced."""

    def traced_store() -> T:
        return instrument_blob_store(blobs())

    return traced_store


__all__ = ["OPERATIONS", "instrument_blob_store", "instrumented"]
