"""Retry backoff: a failed attempt (or a lease that ran out) is due again after an exponential
delay with jitter, never handed out before, soon after; every attempt is kept. Both sides."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import psycopg
import pytest
from sides import Side, side_fixture  # noqa: F401

from docstore import Docstore, DocumentCreate, InvalidTransition, Settings
from docstore.intake.blobs import LocalBlobStore
from docstore.intake.extractors import Extraction, ProgressCallback
from docstore.models import DocumentResponse, UserCreate

BASE = 20.0
CAP = 50.0


@pytest.fixture
def store(side: Side, docstore_settings: Settings, tmp_path: Path) -> Iterator[Docstore]:
    settings = docstore_settings.model_copy(
        update={"retry_backoff_base": BASE, "retry_backoff_cap": CAP}
    )
    blobs = LocalBlobStore(tmp_path / "blobs")
    with cast(Docstore, side.connect(settings, blobs=blobs)) as opened:
        yield opened


def db_now(url: str) -> datetime:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return cast(datetime, row[0])


def time_passes(url: str, document_id: int) -> None:
    """Make the document's retry due now (as if its delay had passed)."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE documents SET next_attempt_at = now() - interval '1 millisecond' WHERE id = %s",
            [document_id],
        )


def new_document(store: Docstore, max_attempts: int = 5) -> DocumentResponse:
    user = store.users.create(UserCreate(email="retry@example.com")).user
    return store.documents.create(
        DocumentCreate(user_id=user.id, filename="a.txt", s3_key="k", max_attempts=max_attempts)
    )


def test_each_retry_waits_an_exponential_delay_with_jitter_up_to_the_cap(
    store: Docstore, docstore_database_url: str
) -> None:
    document = new_document(store)
    for attempt, full in ((1, BASE), (2, 2 * BASE), (3, CAP), (4, CAP)):
        store.lifecycle.claim_next("w1")
        before = db_now(docstore_database_url)
        failed = store.lifecycle.mark_failed(document.id, "w1", f"S3 down ({attempt})")
        after = db_now(docstore_database_url)
        assert failed.status == "PENDING" and failed.next_attempt_at is not None
        assert before + timedelta(seconds=full / 2) <= failed.next_attempt_at
        assert failed.next_attempt_at <= after + timedelta(seconds=full)
        # Not handed out before it is due: neither by claim_next nor by a queued message.
        assert store.lifecycle.claim_next("w2") is None
        with pytest.raises(InvalidTransition, match="next attempt is due at"):
            store.lifecycle.claim(document.id, "w2")
        time_passes(docstore_database_url, document.id)
        assert store.documents.get(document.id).status == "PENDING"


def test_a_due_retry_is_handed_out_and_every_attempt_is_kept(
    store: Docstore, docstore_database_url: str
) -> None:
    document = new_document(store, max_attempts=3)
    store.lifecycle.claim_next("w1")
    store.lifecycle.mark_failed(document.id, "w1", "timeout")
    time_passes(docstore_database_url, document.id)
    second = store.lifecycle.claim_next("w2")
    assert second is not None and second.id == document.id and second.next_attempt_at is None
    store.lifecycle.mark_failed(document.id, "w2", "S3 down", retry=True)
    time_passes(docstore_database_url, document.id)
    store.lifecycle.claim(document.id, "w3")
    done = store.lifecycle.mark_completed(document.id, "w3", "text", 1, 0.5)
    assert done.attempts == 3

    history = store.lifecycle.attempts(document.id)
    assert [(a.attempt, a.worker_id, a.outcome, a.error_message) for a in history] == [
        (1, "w1", "retrying", "timeout"),
        (2, "w2", "retrying", "S3 down"),
        (3, "w3", "completed", None),
    ]
    assert all(a.started_at <= a.ended_at for a in history)
    assert history[0].ended_at <= history[1].started_at <= history[2].started_at


def test_an_expired_lease_waits_its_backoff_and_is_kept_as_expired(
    store: Docstore, docstore_database_url: str
) -> None:
    document = new_document(store, max_attempts=2)
    store.lifecycle.claim_next("dead-worker")
    with psycopg.connect(docstore_database_url) as conn:
        conn.execute(
            "UPDATE documents SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
            [document.id],
        )
    report = store.requeue_stuck(pending_for=3600)
    assert (report.expired_leases, report.requeued) == (1, 1)
    waiting = store.documents.get(document.id)
    assert waiting.status == "PENDING" and waiting.next_attempt_at is not None
    assert store.queue.stats().length == 0  # not enqueued before it is due
    time_passes(docstore_database_url, document.id)
    store.requeue_stuck(pending_for=3600)  # due now: enqueued for a worker
    assert store.queue.stats().length == 1
    assert store.documents.get(document.id).next_attempt_at is None
    [expired] = store.lifecycle.attempts(document.id)
    assert (expired.worker_id, expired.outcome) == ("dead-worker", "expired")
    assert expired.error_message == "lease of worker dead-worker expired"


def test_documents_failed_together_come_back_spread_out(store: Docstore) -> None:
    user = store.users.create(UserCreate(email="outage@example.com")).user
    documents = store.documents.create_many(
        [DocumentCreate(user_id=user.id, filename=f"{i}.txt", s3_key=f"k{i}") for i in range(20)]
    )
    due = set()
    for _ in documents:
        claimed = store.lifecycle.claim_next("w1")
        assert claimed is not None
        due.add(store.lifecycle.mark_failed(claimed.id, "w1", "S3 down").next_attempt_at)
    assert len(due) > 10


def test_process_next_never_runs_a_retry_before_it_is_due(
    side: Side, docstore_settings: Settings, tmp_path: Path
) -> None:
    settings = docstore_settings.model_copy(update={"retry_backoff_base": 0.3})
    with cast(Docstore, side.connect(settings, blobs=LocalBlobStore(tmp_path / "b"))) as store:
        user = store.users.create(UserCreate(email="flow@example.com")).user
        document = store.submit_document(user, "flaky.txt", b"text")
        calls: list[int] = []

        def flaky(data: bytes, filename: str, report: ProgressCallback) -> Extraction:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("extractor outage")
            return Extraction(text=data.decode(), page_count=1)

        first = store.process_next("w1", flaky, block_ms=0)
        assert first is not None and first.action == "retrying"
        due = store.documents.get(document.id).next_attempt_at
        assert due is not None
        outcomes = []
        for _ in range(200):
            outcome = store.process_next("w1", flaky, block_ms=20)
            if outcome is not None:
                outcomes.append(outcome)
                if outcome.action == "completed":
                    break
        assert [o.action for o in outcomes] == ["completed"]
        second = store.lifecycle.attempts(document.id)[1]
        assert second.started_at >= due
