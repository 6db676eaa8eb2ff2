"""Deletion that deletes: rows, blobs, cached results, progress, and queued messages as no-ops.

Each test runs on both sides (`side`): the sync `Docstore` and `AsyncDocstore`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import psycopg
import pytest
from sides import Side, side_fixture  # noqa: F401

from docstore import BlobStoreError, Docstore, DocumentCreate, NotFound, Settings
from docstore.intake.blobs import LocalBlobStore
from docstore.intake.extractors import extract_text
from docstore.models import DocumentResponse, UserCreate


class FlakyBlobs(LocalBlobStore):
    """A local blob store whose deletes fail while `failing` is set (an S3 outage)."""

    failing = False

    def delete(self, key: str) -> None:
        if self.failing:
            raise BlobStoreError(f"blob {key} cannot be deleted: the blob store is down")
        super().delete(key)


@pytest.fixture
def blobs(tmp_path: Path) -> FlakyBlobs:
    return FlakyBlobs(tmp_path / "blobs")


@pytest.fixture
def store(side: Side, docstore_settings: Settings, blobs: FlakyBlobs) -> Iterator[Docstore]:
    with cast(Docstore, side.connect(docstore_settings, blobs=blobs)) as opened:
        yield opened


def make_due(url: str) -> None:
    """Make every waiting blob deletion due now (as if its retry delay had passed)."""
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE blob_deletions SET next_attempt_at = now()")


def blob_exists(blobs: FlakyBlobs, key: str) -> bool:
    try:
        blobs.get(key)
    except NotFound:
        return False
    return True


def test_delete_document_leaves_no_row_blob_cached_copy_progress_or_live_message(
    store: Docstore, blobs: FlakyBlobs
) -> None:
    user = store.users.create(UserCreate(email="del@example.com")).user
    document = store.submit_document(user, "gone.txt", b"secret words")
    outcome = store.process_next("w1", extract_text, block_ms=0)
    assert outcome is not None and outcome.action == "completed"
    assert store.get_document(document.id).result_text == "secret words"  # now cached
    assert store.cache.get_document_result(document.id, DocumentResponse) is not None
    assert store.progress.get(document.id) is not None
    store.queue.enqueue(document.id)  # a message still queued for it

    store.delete_document(document.id)

    with pytest.raises(NotFound):
        store.documents.get(document.id)
    with pytest.raises(NotFound):
        store.get_document(document.id)
    assert store.cache.get_document_result(document.id, DocumentResponse) is None
    assert store.progress.get(document.id) is None
    assert not blob_exists(blobs, document.s3_key)
    assert store.documents.count_blob_deletions() == (0, 0)
    assert store.documents.search(user.id, "secret").items == []
    later = store.process_next("w2", extract_text, block_ms=0)
    assert later is None or later.action == "skipped"
    with pytest.raises(NotFound):
        store.delete_document(document.id)


def test_delete_user_removes_every_document_blob_and_cached_copy(
    store: Docstore, blobs: FlakyBlobs
) -> None:
    user = store.users.create(UserCreate(email="leaving@example.com")).user
    other = store.users.create(UserCreate(email="staying@example.com")).user
    mine = [store.submit_document(user, f"{i}.txt", f"mine {i}".encode()) for i in range(3)]
    kept = store.submit_document(other, "kept.txt", b"not mine")
    while store.process_next("w", extract_text, block_ms=0) is not None:
        pass  # finished: only such documents are cached
    for document in [*mine, kept]:
        assert store.get_document(document.id).status == "COMPLETED"
        assert store.cache.get_document_result(document.id, DocumentResponse) is not None

    removed = store.delete_user(user.id)

    assert sorted(removed) == sorted(d.id for d in mine)
    for document in mine:
        with pytest.raises(NotFound):
            store.get_document(document.id)
        assert store.cache.get_document_result(document.id, DocumentResponse) is None
        assert not blob_exists(blobs, document.s3_key)
    with pytest.raises(NotFound):
        store.users.get(user.id)
    assert store.get_document(kept.id).id == kept.id
    assert blob_exists(blobs, kept.s3_key)
    with pytest.raises(NotFound):
        store.delete_user(user.id)


def test_a_failed_blob_delete_is_retried_later_and_the_row_is_gone_first(
    store: Docstore, blobs: FlakyBlobs, docstore_database_url: str
) -> None:
    user = store.users.create(UserCreate(email="outage@example.com")).user
    document = store.submit_document(user, "kept-for-now.txt", b"bytes")
    blobs.failing = True

    store.delete_document(document.id)

    # The row went first: nothing points at the blob still there.
    with pytest.raises(NotFound):
        store.documents.get(document.id)
    assert blob_exists(blobs, document.s3_key)
    assert store.documents.count_blob_deletions() == (1, 1)
    # Not due yet (a delay after the failure): a purge leaves it alone.
    assert store.purge_deleted_blobs().deleted == 0
    blobs.failing = False
    make_due(docstore_database_url)
    report = store.requeue_stuck()  # the worker's periodic call purges too
    assert report.blobs_deleted == 1
    assert not blob_exists(blobs, document.s3_key)
    assert store.documents.count_blob_deletions() == (0, 0)


def test_a_blob_another_document_still_names_is_never_deleted(
    store: Docstore, blobs: FlakyBlobs
) -> None:
    user = store.users.create(UserCreate(email="shared@example.com")).user
    blob = blobs.put(user.id, "shared.txt", b"two rows, one blob")
    first, second = (
        store.documents.create(DocumentCreate(user_id=user.id, filename=n, s3_key=blob.key))
        for n in ("a.txt", "b.txt")
    )
    store.delete_document(first.id)
    assert blob_exists(blobs, blob.key)
    assert store.documents.count_blob_deletions() == (0, 0)
    store.delete_document(second.id)
    assert not blob_exists(blobs, blob.key)
