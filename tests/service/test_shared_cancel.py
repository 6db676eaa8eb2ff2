"""Cancel: a PENDING document is never processed, a PROCESSING one stops at its worker's next
progress report, and a late result is refused. Both sides (`side`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import psycopg
import pytest
from sides import Side, side_fixture  # noqa: F401

from docstore import (
    Cancelled,
    Docstore,
    DocumentCreate,
    InvalidTransition,
    NotFound,
    Settings,
)
from docstore.intake.blobs import LocalBlobStore
from docstore.intake.extractors import Extraction, ProgressCallback, extract_text
from docstore.models import UserCreate, UserResponse


@pytest.fixture
def store(side: Side, docstore_settings: Settings, tmp_path: Path) -> Iterator[Docstore]:
    settings = docstore_settings.model_copy(update={"lease_seconds": 60.0})
    blobs = LocalBlobStore(tmp_path / "blobs")
    with cast(Docstore, side.connect(settings, blobs=blobs)) as opened:
        yield opened


@pytest.fixture
def user(store: Docstore) -> UserResponse:
    return store.users.create(UserCreate(email="cancel@example.com")).user


def test_a_cancelled_pending_document_is_never_processed(
    store: Docstore, user: UserResponse
) -> None:
    document = store.submit_document(user, "never.txt", b"never read")
    calls: list[str] = []

    def extract(data: bytes, filename: str, report: ProgressCallback) -> Extraction:
        calls.append(filename)
        return extract_text(data, filename, report)

    cancelled = store.cancel_document(document.id)
    assert cancelled.status == "CANCELLED" and cancelled.completed_at is not None
    outcome = store.process_next("w1", extract, block_ms=0)
    assert outcome is None or outcome.action == "skipped"
    assert store.lifecycle.claim_next("w1") is None
    assert calls == []
    assert store.documents.get(document.id).status == "CANCELLED"
    assert store.documents.count_by_status(user.id)["CANCELLED"] == 1
    listed = store.documents.list_for_user(user.id, status="CANCELLED").items
    assert [d.id for d in listed] == [document.id]
    assert store.cancel_document(document.id).status == "CANCELLED"  # again: unchanged


def test_a_processing_document_stops_at_its_next_progress_report(
    store: Docstore, user: UserResponse
) -> None:
    document = store.submit_document(user, "long.txt", b"many pages")
    reports: list[int] = []

    def extract(data: bytes, filename: str, report: ProgressCallback) -> Extraction:
        for page in range(1, 11):
            reports.append(page)
            if page == 3:
                store.cancel_document(document.id)  # a client cancels meanwhile
            report(page * 10, f"page {page}")
        return Extraction(text="should never be stored", page_count=10)

    outcome = store.process_next("w1", extract, block_ms=0)

    assert outcome is not None and outcome.action == "cancelled"
    assert reports == [1, 2, 3]  # the report right after the cancel stopped it
    final = store.documents.get(document.id)
    assert final.status == "CANCELLED" and final.result_text is None


def test_a_late_result_heartbeat_or_failure_of_a_cancelled_document_is_refused(
    store: Docstore, user: UserResponse
) -> None:
    document = store.documents.create(
        DocumentCreate(user_id=user.id, filename="a.txt", s3_key="uploads/a.txt")
    )
    store.lifecycle.claim(document.id, "w1")
    store.cancel_document(document.id)
    with pytest.raises(Cancelled):
        store.lifecycle.heartbeat(document.id, "w1")
    with pytest.raises(Cancelled):
        store.lifecycle.mark_completed(document.id, "w1", "late", 1, 1.0)
    with pytest.raises(Cancelled):
        store.lifecycle.mark_failed(document.id, "w1", "late")
    assert store.documents.get(document.id).result_text is None


def test_finished_documents_cannot_be_cancelled(store: Docstore, user: UserResponse) -> None:
    document = store.submit_document(user, "done.txt", b"done")
    store.process_next("w1", extract_text, block_ms=0)
    with pytest.raises(InvalidTransition) as refused:
        store.cancel_document(document.id)
    assert not isinstance(refused.value, Cancelled)
    assert store.documents.get(document.id).status == "COMPLETED"
    with pytest.raises(NotFound):
        store.cancel_document(10**9)


def test_the_database_refuses_an_unknown_status(docstore_database_url: str) -> None:
    with psycopg.connect(docstore_database_url) as conn:
        user_id = conn.execute(
            "INSERT INTO users (email) VALUES ('s@x.io') RETURNING id"
        ).fetchone()
        assert user_id is not None
        conn.execute(
            "INSERT INTO documents (user_id, filename, s3_key, status)"
            " VALUES (%s, 'c.txt', 'k', 'CANCELLED')",
            [user_id[0]],
        )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO documents (user_id, filename, s3_key, status)"
                " VALUES (%s, 'x.txt', 'k', 'PAUSED')",
                [user_id[0]],
            )
