"""Hostile input to the document flow: submit_document, process_next, requeue_stuck (hypothesis).

Property: a submission stores the bytes and a PENDING row whose filename is the one given (NULs
stripped), or raises `InvalidInput` leaving no blob, no row and no message behind; a worker id
the documents table cannot hold is refused before a message is taken off the queue; whatever
text and progress labels an extractor produces, the document ends COMPLETED with that text or
FAILED with a reason, never with a raw error.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile import (
    BIG_HOSTILE,
    BIG_PLAIN,
    BIG_SURROGATE,
    assert_only_changed,
    attempt,
    encodable,
    hostile_number,
    hostile_text,
    mostly,
    property_settings,
    snapshot,
    stored_form,
)
from hypothesis import example, given
from hypothesis import strategies as st
from sides import Side, side_fixture  # noqa: F401 (fixtures)

from docstore import Docstore, Settings
from docstore.errors import InvalidInput, NotFound
from docstore.intake.blobs import LocalBlobStore
from docstore.intake.extractors import Extraction, extract_text
from docstore.models import UserCreate

# The keys submit_document writes (reading takes more: see test_hostile_blobs).
DOCSTORE_KEY = re.compile(r"uploads/[0-9]+/[0-9]{4}/[0-9]{2}/[0-9a-f]{32}/[A-Za-z0-9._-]{1,200}")


@pytest.fixture
def store(side: Side, docstore_settings: Settings, tmp_path: Path) -> Iterator[Docstore]:
    with side.connect(docstore_settings, blobs=LocalBlobStore(tmp_path / "blobs")) as store:
        yield store


def blob_files(store: Docstore) -> set[Path]:
    root = store.blobs.root  # type: ignore[attr-defined]
    return {p for p in root.rglob("*") if p.is_file()}


def test_submit_stores_hostile_filenames_exactly_or_leaves_nothing(store: Docstore) -> None:
    user = store.users.create(UserCreate(email="owner@example.com")).user
    tally: Counter[str] = Counter()

    @property_settings(50)
    @given(
        owner=mostly(st.sampled_from([user.id, user]), hostile_number),
        filename=hostile_text,
        data=st.binary(max_size=256),
    )
    @example(owner=user.id, filename=BIG_PLAIN, data=b"x")
    @example(owner=user.id, filename=BIG_SURROGATE, data=b"x")
    @example(owner=user.id, filename="../../etc/passwd\x00", data=b"x")
    @example(owner=True, filename="a.pdf", data=b"x")
    def check(owner: Any, filename: str, data: bytes) -> None:
        before, files, queued = snapshot(store), blob_files(store), store.queue.stats()
        document, error = attempt(lambda: store.submit_document(owner, filename, data))
        if document is None:
            tally["refused"] += 1
            if not encodable(filename):
                assert isinstance(error, InvalidInput)
            assert_only_changed(before, store)
            assert blob_files(store) == files and store.queue.stats() == queued
            return
        tally["stored"] += 1
        assert document.user_id == user.id and document.filename == stored_form(filename)
        assert DOCSTORE_KEY.fullmatch(document.s3_key), document.s3_key
        assert store.blobs.get(document.s3_key) == data
        assert store.documents.get(document.id) == document
        assert_only_changed(before, store, documents={document.id})
        # Take it back out: the queue and the store stay as they were.
        (message,) = store.queue.consume("cleaner", count=1)
        assert message.document_id == document.id
        store.queue.ack(message)
        store.documents.delete(document.id)
        store.blobs.delete(document.s3_key)
        assert blob_files(store) == files

    check()
    assert tally["stored"] >= 5 and tally["refused"] >= 3, tally


def test_process_next_takes_hostile_worker_ids_texts_and_progress_labels(
    store: Docstore,
) -> None:
    user = store.users.create(UserCreate(email="owner@example.com")).user
    tally: Counter[str] = Counter()

    @property_settings(50)
    @given(
        worker=st.one_of(st.just("worker-1"), hostile_text, st.just("w" * 300)),
        text=hostile_text,
        stage=st.one_of(st.just("ocr"), hostile_text, st.just("s" * 150)),
        percent=mostly(st.floats(0, 100), hostile_number),
    )
    @example(worker="w", text=BIG_HOSTILE, stage="ocr", percent=50)
    @example(worker="w", text="ok", stage="s" * 150, percent=50)
    @example(worker="w", text="ok", stage="ocr\ud800", percent=50)
    @example(worker="w\x00", text=BIG_SURROGATE, stage="ocr", percent=50)
    def check(worker: str, text: str, stage: str, percent: Any) -> None:
        document = store.submit_document(user, "a.txt", b"bytes")

        def extract(data: bytes, filename: str, report: Any) -> Extraction:
            report(percent, stage)
            return Extraction(text=text, page_count=1)

        outcome, error = attempt(lambda: store.process_next(worker, extract, block_ms=0))
        stored = store.documents.get(document.id)
        if outcome is None:
            tally["worker refused"] += 1
            assert isinstance(error, InvalidInput)
            # Refused before the message was taken: it is still there for a good worker.
            assert stored.status == "PENDING" and store.queue.stats().pending == 0
            outcome = store.process_next("good-worker", extract, block_ms=0)
            assert outcome is not None
            stored = store.documents.get(document.id)
        else:
            tally["processed"] += 1
        assert outcome.document_id == document.id
        numeric = isinstance(percent, int | float)  # what report() accepts (it clamps)
        if numeric and encodable(text):
            tally["completed"] += 1
            assert stored.status == "COMPLETED", stored.error_message
            assert stored.result_text == stored_form(text)
        else:
            tally["failed"] += 1
            # Text PostgreSQL cannot hold fails at once; a report() the extractor misuses
            # fails the attempt (retried).
            assert stored.status in {"FAILED", "PENDING"}, stored.status
            reason = "TypeError" if not numeric else "InvalidInput"
            assert stored.error_message is not None and reason in stored.error_message
        progress = store.progress.get(document.id)
        assert progress is None or progress.percent == 100
        # Leave nothing behind for the next example.
        while store.process_next("cleaner", extract, block_ms=0) is not None:
            pass
        store.documents.delete(document.id)
        attempt(lambda: store.blobs.delete(document.s3_key), NotFound)
        assert store.queue.stats().length == 0

    check()
    assert tally["completed"] >= 5 and tally["worker refused"] >= 2, tally


def test_requeue_stuck_takes_hostile_durations(store: Docstore) -> None:
    @property_settings(40)
    @given(pending_for=hostile_number)
    @example(pending_for=float("inf"))
    @example(pending_for="300")
    def check(pending_for: Any) -> None:
        before = snapshot(store)
        report, _ = attempt(lambda: store.requeue_stuck(pending_for))
        if report is not None:
            assert not isinstance(pending_for, bool | str)
            assert report.requeued == 0
        assert_only_changed(before, store)

    check()


def test_an_extractor_raising_stop_iteration_fails_its_attempt(store: Docstore) -> None:
    """`next()` on an empty iterator in an extractor: an ordinary failed attempt on both sides
    (an asyncio future cannot carry a StopIteration: the async worker waited for good)."""
    user = store.users.create(UserCreate(email="owner@example.com")).user
    document = store.submit_document(user, "a.txt", b"bytes")

    def extract(data: bytes, filename: str, report: Any) -> Extraction:
        return next(iter([]))  # type: ignore[no-any-return]

    outcome = store.process_next("worker-1", extract, block_ms=0)
    assert outcome is not None and outcome.action == "retrying", outcome
    stored = store.documents.get(document.id)
    assert stored.status == "PENDING" and stored.lease_expires_at is None
    assert stored.error_message is not None and "StopIteration" in stored.error_message


def test_a_stream_raising_stop_iteration_fails_the_submission_and_leaves_nothing(
    store: Docstore,
) -> None:
    """A file-like over an iterator whose `read` ends with StopIteration: the submission raises
    (the same error on both sides) and leaves no row, blob or message behind."""
    user = store.users.create(UserCreate(email="owner@example.com")).user

    class IteratorStream:
        def __init__(self) -> None:
            self.chunks = iter([b"hello ", b"world"])

        def read(self, size: int = -1) -> bytes:
            return next(self.chunks)

    before, files, queued = snapshot(store), blob_files(store), store.queue.stats()
    with pytest.raises(RuntimeError, match="StopIteration"):
        store.submit_document(user, "a.txt", IteratorStream())  # type: ignore[arg-type]
    assert_only_changed(before, store)
    assert blob_files(store) == files and store.queue.stats() == queued


class ClientGone(io.RawIOBase):
    """An upload whose client goes away after the first part."""

    def __init__(self) -> None:
        self.parts = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.parts += 1
        if self.parts > 1:
            raise ConnectionResetError(104, "Connection reset by peer")
        return b"first part "


def closed_file() -> io.BytesIO:
    stream = io.BytesIO(b"gone")
    stream.close()
    return stream


@pytest.mark.parametrize("idempotency_key", [None, "once"])
@pytest.mark.parametrize("make", [closed_file, ClientGone], ids=["closed", "client-gone"])
def test_a_stream_that_fails_to_read_is_invalid_data_and_leaves_nothing(
    store: Docstore, make: Any, idempotency_key: str | None
) -> None:
    """Before, a closed file raised a raw ValueError, and a client gone mid-upload became a
    BlobStoreError ('cannot be written: None'), blamed on the store."""
    user = store.users.create(UserCreate(email="owner@example.com")).user
    before, files, queued = snapshot(store), blob_files(store), store.queue.stats()
    with pytest.raises(InvalidInput) as info:
        store.submit_document(user, "a.txt", make(), idempotency_key=idempotency_key)
    assert info.value.field == "data" and "could not be read" in info.value.message
    assert_only_changed(before, store)
    assert blob_files(store) == files and store.queue.stats() == queued


def test_an_async_def_extractor_is_refused_before_a_message_is_taken(store: Docstore) -> None:
    """Extractors run on a thread (off the loop on the async side): an `async def` one was
    accepted, and each document failed attempt after attempt with "returned coroutine"."""
    user = store.users.create(UserCreate(email="owner@example.com")).user
    document = store.submit_document(user, "a.txt", b"bytes")

    async def extract(data: bytes, filename: str, report: Any) -> Extraction:
        return Extraction(text="never", page_count=1)

    with pytest.raises(InvalidInput, match="not an async def function"):
        store.process_next("worker-1", extract, block_ms=0)  # type: ignore[arg-type]

    async def stopping() -> bool:  # its coroutine is truthy: every call stopped, unacked
        return False

    class Stopping:  # an object whose __call__ is async slipped past the check
        async def __call__(self) -> bool:
            return False

    with pytest.raises(InvalidInput, match="stopping must be"):
        store.process_next("worker-1", extract_text, block_ms=0, stopping=Stopping())  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="stopping must be"):
        store.process_next("worker-1", extract_text, block_ms=0, stopping=stopping)  # type: ignore[arg-type]
    stored = store.documents.get(document.id)
    assert stored.status == "PENDING" and stored.attempts == 0
    assert store.queue.stats().pending == 0 and store.queue.stats().length == 1
