"""Idempotent submit: the same key from the same user is one document, one blob, one message,
also when calls race; other content under the key is a `Conflict`. Both sides (`side`)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import psycopg
import pytest
from sides import Side, side_fixture  # noqa: F401

from docstore import Conflict, Docstore, InvalidInput, Settings
from docstore.intake.blobs import LocalBlobStore
from docstore.models import DocumentResponse, UserCreate, UserResponse


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture
def store(side: Side, docstore_settings: Settings, blobs: LocalBlobStore) -> Iterator[Docstore]:
    with cast(Docstore, side.connect(docstore_settings, blobs=blobs)) as opened:
        yield opened


@pytest.fixture
def user(store: Docstore) -> UserResponse:
    return store.users.create(UserCreate(email="retry@example.com")).user


def stored(blobs: LocalBlobStore) -> list[Path]:
    return [path for path in blobs.root.rglob("*") if path.is_file()]


def rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM documents").fetchone()
    assert row is not None
    return int(row[0])


def test_a_retried_submit_returns_the_first_document_and_stores_nothing_twice(
    store: Docstore, user: UserResponse, blobs: LocalBlobStore, docstore_database_url: str
) -> None:
    first = store.submit_document(user, "a.pdf", b"%PDF same bytes", idempotency_key="req-1")
    again = store.submit_document(user, "a.pdf", b"%PDF same bytes", idempotency_key="req-1")
    streamed = store.submit_document(
        user, "a.pdf", io.BytesIO(b"%PDF same bytes"), idempotency_key="req-1"
    )
    assert again == first and streamed == first
    assert len(stored(blobs)) == 1
    assert rows(docstore_database_url) == 1
    assert store.queue.stats().length == 1


def test_the_same_key_for_other_content_is_a_conflict_and_stores_nothing(
    store: Docstore, user: UserResponse, blobs: LocalBlobStore, docstore_database_url: str
) -> None:
    store.submit_document(user, "a.txt", b"first", idempotency_key="req-2")
    with pytest.raises(Conflict) as other_bytes:
        store.submit_document(user, "a.txt", b"second", idempotency_key="req-2")
    assert other_bytes.value.constraint_name == "documents_idempotency_key_key"
    with pytest.raises(Conflict):
        store.submit_document(user, "b.txt", b"first", idempotency_key="req-2")
    assert len(stored(blobs)) == 1
    assert rows(docstore_database_url) == 1
    assert store.queue.stats().length == 1


def test_keys_belong_to_their_user_and_bad_keys_are_refused_before_any_upload(
    store: Docstore, user: UserResponse, blobs: LocalBlobStore
) -> None:
    other = store.users.create(UserCreate(email="other@example.com")).user
    mine = store.submit_document(user, "a.txt", b"x", idempotency_key="shared-key")
    theirs = store.submit_document(other, "a.txt", b"x", idempotency_key="shared-key")
    assert mine.id != theirs.id
    for bad in ("", "k" * 256, 42):
        with pytest.raises(InvalidInput) as refused:
            store.submit_document(user, "a.txt", b"x", idempotency_key=bad)  # type: ignore[arg-type]
        assert refused.value.field == "idempotency_key"
    assert len(stored(blobs)) == 2


def test_racing_submits_with_one_key_make_one_document_blob_and_message(
    store: Docstore, user: UserResponse, blobs: LocalBlobStore, docstore_database_url: str
) -> None:
    results: list[DocumentResponse] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def submit() -> None:
        start.wait()
        try:
            results.append(
                store.submit_document(user, "race.txt", b"one body", idempotency_key="race")
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({document.id for document in results}) == 1 and len(results) == 8
    assert len(stored(blobs)) == 1
    assert rows(docstore_database_url) == 1
    assert store.queue.stats().length == 1
