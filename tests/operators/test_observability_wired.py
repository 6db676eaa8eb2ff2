"""The store traced end to end, both sides: a request's submit is a PRODUCER span over the blob,
SQL and Redis spans, and the worker's CONSUMER span links to it through the queue message."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, cast

import pytest
from otel_sdk import Otel, otel_fixture  # noqa: F401
from sides import Side, side_fixture  # noqa: F401

from docstore import Docstore, Settings
from docstore.intake.blobs import S3BlobStore
from docstore.intake.extractors import extract_text
from docstore.models import DocumentResponse, UserCreate

EMAIL = "traced-user@example.com"
FILENAME = "private-report.txt"
CONTENT = b"confidential words"


@pytest.fixture
def store(
    otel: Otel, side: Side, docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> Iterator[Docstore]:
    opened = side.connect(docstore_settings, blobs=docstore_blob_store)
    with cast(AbstractContextManager[Docstore], opened) as entered:
        yield entered


def by_name(otel: Otel) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for span in otel.finished():
        found.setdefault(span.name, []).append(span)
    return found


def names_under(otel: Otel, parent: Any) -> set[str]:
    """Names of the spans whose parent is `parent`."""
    return {
        s.name for s in otel.finished() if s.parent and s.parent.span_id == parent.context.span_id
    }


def test_request_sql_redis_s3_and_worker_are_one_story(store: Docstore, otel: Otel) -> None:
    from opentelemetry import trace

    user = store.users.create(UserCreate(email=EMAIL)).user
    with trace.get_tracer("test").start_as_current_span("POST /documents") as request:
        document = store.submit_document(user, FILENAME, CONTENT)
    outcome = store.process_next("worker-1", extract_text, block_ms=0)
    assert outcome is not None and outcome.action == "completed"
    store.cache.get_document_result(document.id, DocumentResponse)
    store.limiter.hit(f"user-{user.id}")

    spans = by_name(otel)
    (send,) = spans["send documents"]
    assert send.parent.span_id == request.get_span_context().span_id
    assert send.kind.name == "PRODUCER"
    children = names_under(otel, send)
    assert {"blob put", "insert_document", "XADD"} <= children, children

    (process,) = spans["process documents"]
    assert process.kind.name == "CONSUMER"
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert process.attributes["docstore.outcome"] == "completed"
    worker = names_under(otel, process)
    assert {"blob get", "complete_document"} <= worker, worker

    (complete,) = spans["complete_document"]
    assert complete.attributes["db.system.name"] == "postgresql"
    assert complete.attributes["db.operation.name"] == "UPDATE"
    assert complete.attributes["db.collection.name"] == "documents"
    assert complete.attributes["server.port"] > 0
    assert any(name.startswith("EVALSHA ") for name in spans)  # a script, named

    text = json.dumps([json.loads(s.to_json()) for s in otel.finished()])
    for secret in (EMAIL, FILENAME, CONTENT.decode(), document.s3_key):
        assert secret not in text, secret

    metrics = otel.metrics()
    for name in (
        "db.client.operation.duration",
        "db.client.connection.count",
        "docstore.documents.submitted",
        "docstore.documents.completed",
        "docstore.document.processing.duration",
        "docstore.cache.requests",
        "docstore.rate_limit.decisions",
        "docstore.blob.operation.duration",
    ):
        assert name in metrics, name


def test_a_document_handed_back_half_way_counts_as_retrying(
    otel: Otel, docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> None:
    # Ctrl-C (or a cancel, on the async side) while the extractor runs: the document goes back
    # as a failed attempt, and its span and counters say so, not a bare "error".
    def interrupted(data: bytes, filename: str, report: Any) -> Any:
        raise KeyboardInterrupt

    with Docstore.connect(docstore_settings, blobs=docstore_blob_store) as store:
        user = store.users.create(UserCreate(email="handed-back@example.com")).user
        document = store.submit_document(user, "a.txt", b"words")
        with pytest.raises(KeyboardInterrupt):
            store.process_next("worker-1", interrupted, block_ms=0)
        assert store.documents.get(document.id).status == "PENDING"
    (process,) = by_name(otel)["process documents"]
    assert process.attributes["docstore.outcome"] == "retrying"
    assert process.attributes["error.type"] == "KeyboardInterrupt"


def test_an_idempotent_retry_of_a_submit_is_not_counted_as_a_new_submission(
    store: Docstore, otel: Otel
) -> None:
    user = store.users.create(UserCreate(email=EMAIL)).user

    def submitted() -> int:
        points = otel.metrics().get("docstore.documents.submitted", [])
        return sum(int(point.value) for point in points)

    before = submitted()
    first = store.submit_document(user, FILENAME, CONTENT, idempotency_key="once")
    again = store.submit_document(user, FILENAME, CONTENT, idempotency_key="once")
    assert again.id == first.id
    assert submitted() == before + 1
    sends = by_name(otel)["send documents"]
    assert [s.attributes.get("docstore.submission.replayed") for s in sends] == [None, True]


def test_the_heartbeats_of_a_silent_extractor_are_in_the_process_trace(
    otel: Otel, side: Side, docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> None:
    # The sync side beats on a thread of its own, which did not carry the caller's context:
    # each heartbeat's statement was the root of a trace of its own.
    settings = docstore_settings.model_copy(update={"lease_seconds": 0.6})  # a beat each 0.2 s

    def silent(data: bytes, filename: str, report: Any) -> Any:
        time.sleep(1.0)  # no progress reports: only the timed heartbeat extends the lease
        return extract_text(data, filename, report)

    opened = side.connect(settings, blobs=docstore_blob_store)
    with cast(AbstractContextManager[Docstore], opened) as store:
        user = store.users.create(UserCreate(email=EMAIL)).user
        store.submit_document(user, FILENAME, CONTENT)
        outcome = store.process_next("worker-1", silent, block_ms=0)
    assert outcome is not None and outcome.action == "completed", outcome
    spans = by_name(otel)
    (process,) = spans["process documents"]
    beats = spans["extend_document_lease"]
    assert len(beats) >= 2
    assert {beat.context.trace_id for beat in beats} == {process.context.trace_id}
