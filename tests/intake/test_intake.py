"""The document flow end to end on real PostgreSQL, Redis and S3: nothing lost, nothing twice."""

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import redis

from docstore import Docstore, DocumentCreate, InvalidInput, NotFound, Settings
from docstore.ephemeral.progress import ProgressTracker
from docstore.ephemeral.values import Progress
from docstore.intake.blobs import BlobStore, LocalBlobStore, S3BlobStore
from docstore.intake.extractors import Extraction, ProgressCallback, extract_text
from docstore.models import DocumentResponse, UserCreate, UserResponse
from docstore.quickstart import make_pdf
from docstore.repositories.lifecycle import DocumentLifecycle
from docstore.testing import LocalRedis


def bucket_keys(blobs: S3BlobStore) -> list[str]:
    listing = blobs.client.list_objects_v2(Bucket=blobs.bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


@pytest.fixture
def store(docstore_settings: Settings, docstore_blob_store: S3BlobStore) -> Iterator[Docstore]:
    # Retries at once (no backoff): the backoff has its own tests (test_shared_retries.py).
    settings = docstore_settings.model_copy(
        update={"lease_seconds": 30.0, "retry_backoff_base": 0.0}
    )
    with Docstore.connect(settings, blobs=docstore_blob_store) as opened:
        yield opened


def sharing(store: Docstore, blobs: BlobStore, **settings: Any) -> Docstore:
    """A store on `store`'s pool and Redis, with `blobs` and these settings changed."""
    return Docstore(
        store.settings.model_copy(update=settings),
        pool=store.pool,
        redis_client=store.redis,
        blobs=blobs,
    )


def abandon(store: Docstore, document_id: int) -> None:
    """Worker "doomed" claims the document and dies: its lease has run out by now."""
    store.lifecycle.claim(document_id, "doomed")
    with store.pool.connection() as conn:
        conn.execute(
            "UPDATE documents SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
            [document_id],
        )


class EndlessUpload(io.RawIOBase):
    """A client stream far larger than any limit, counting the bytes docstore reads from it."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        buffer[:n] = b"y" * n
        self.left -= n
        self.bytes_read += n
        return n


@pytest.fixture
def user(store: Docstore) -> UserResponse:
    return store.users.create(UserCreate(email="worker-test@example.com")).user


def test_submit_then_process_completes_with_text_progress_and_cache(
    store: Docstore, user: UserResponse
) -> None:
    document = store.submit_document(user, "report.pdf", make_pdf(["First page", "Second page"]))
    assert document.status == "PENDING"
    assert store.blobs.get(document.s3_key).startswith(b"%PDF")
    assert store.queue.stats().length == 1

    outcome = store.process_next("worker-1", extract_text, block_ms=0)

    assert outcome is not None and outcome.action == "completed"
    done = store.documents.get(document.id)
    assert done.status == "COMPLETED"
    assert done.page_count == 2
    assert "First page" in (done.result_text or "") and "Second page" in (done.result_text or "")
    assert done.extraction_time_seconds is not None and done.extraction_time_seconds >= 0
    progress = store.progress.get(document.id)
    assert progress is not None and progress.percent == 100 and progress.stage == "completed"
    # Readers fill the cache (single flight), never the worker: a copy it wrote could outlive
    # a change committed meanwhile.
    assert store.cache.get_document_result(document.id, type(done)) is None
    assert store.get_document(document.id) == done
    cached = store.cache.get_document_result(document.id, type(done))
    assert cached is not None and cached.result_text == done.result_text
    assert store.queue.stats().pending == 0
    assert store.process_next("worker-1", extract_text, block_ms=0) is None


def test_bad_filename_is_refused_before_any_upload(
    store: Docstore, user: UserResponse, docstore_blob_store: S3BlobStore
) -> None:
    with pytest.raises(InvalidInput):
        store.submit_document(user, "", b"hello")
    assert bucket_keys(docstore_blob_store) == []


def test_failed_row_insert_removes_the_blob(
    store: Docstore, docstore_blob_store: S3BlobStore
) -> None:
    with pytest.raises((NotFound, InvalidInput)):
        store.submit_document(999_999, "a.txt", b"orphan bytes")
    assert bucket_keys(docstore_blob_store) == []


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_too_large_upload_is_refused_and_leaves_nothing(
    store: Docstore, user: UserResponse, docstore_blob_store: S3BlobStore, kind: Any
) -> None:
    small = sharing(store, docstore_blob_store, max_upload_bytes=10)
    with pytest.raises(InvalidInput, match="larger than 10 bytes"):
        small.submit_document(user, "a.txt", kind(b"x" * 11))
    assert bucket_keys(docstore_blob_store) == []
    assert store.documents.list_for_user(user.id).items == []


@pytest.mark.parametrize(
    ("backend", "limit"),
    [("s3", 1000), ("s3", 9 * 1024 * 1024), ("local", 1000)],  # 9 MiB: past the multipart size
)
def test_an_oversized_stream_is_refused_one_byte_past_the_limit_leaving_nothing(
    store: Docstore,
    user: UserResponse,
    docstore_blob_store: S3BlobStore,
    tmp_path: Path,
    backend: str,
    limit: int,
) -> None:
    blobs = docstore_blob_store if backend == "s3" else LocalBlobStore(tmp_path / "blobs")
    small = sharing(store, blobs, max_upload_bytes=limit)
    upload = EndlessUpload(size=8 * limit)
    with pytest.raises(InvalidInput, match=f"larger than {limit} bytes"):
        small.submit_document(user, "huge.bin", upload)  # type: ignore[arg-type]
    assert upload.bytes_read == limit + 1
    if isinstance(blobs, S3BlobStore):
        assert bucket_keys(blobs) == []
        uploads = blobs.client.list_multipart_uploads(Bucket=blobs.bucket)
        assert uploads.get("Uploads", []) == []
    else:
        assert [p for p in blobs.root.rglob("*") if p.is_file()] == []
    assert store.documents.list_for_user(user.id).items == []
    assert store.queue.stats().length == 0


def test_a_stream_of_exactly_the_limit_is_accepted(
    store: Docstore, user: UserResponse, docstore_blob_store: S3BlobStore
) -> None:
    small = sharing(store, docstore_blob_store, max_upload_bytes=1000)
    document = small.submit_document(user, "fits.bin", EndlessUpload(size=1000))  # type: ignore[arg-type]
    assert store.blobs.get(document.s3_key) == b"y" * 1000


def test_a_pending_document_without_a_message_is_claimed_from_postgres_at_once(
    store: Docstore, user: UserResponse
) -> None:
    """A lost message (or a migrated PENDING row) does not wait for requeue_stuck."""
    blob = store.blobs.put(user.id, "lost.txt", b"message lost")
    lost = store.documents.create(
        DocumentCreate(user_id=user.id, filename="lost.txt", s3_key=blob.key)
    )
    assert store.queue.stats().length == 0
    outcome = store.process_next("worker-1", extract_text, block_ms=0)
    assert outcome is not None and outcome.action == "completed"
    assert outcome.document_id == lost.id
    assert store.documents.get(lost.id).result_text == "message lost"
    assert store.process_next("worker-1", extract_text, block_ms=0) is None


def test_an_idle_worker_takes_back_an_expired_lease_and_processes_the_document(
    store: Docstore, user: UserResponse
) -> None:
    document = store.submit_document(user, "orphan.txt", b"worker died")
    (message,) = store.queue.consume("doomed", count=1, block_ms=0)
    store.queue.ack(message)  # its message is gone with it
    abandon(store, document.id)
    outcome = store.process_next("survivor", extract_text, block_ms=0)
    assert outcome is not None and outcome.action == "completed"
    final = store.documents.get(document.id)
    assert (final.status, final.attempts, final.result_text) == ("COMPLETED", 2, "worker died")


def test_an_expired_lease_on_its_last_attempt_fails_and_is_not_run_again(
    store: Docstore, user: UserResponse
) -> None:
    blob = store.blobs.put(user.id, "last.txt", b"last attempt")
    document = store.documents.create(
        DocumentCreate(user_id=user.id, filename="last.txt", s3_key=blob.key, max_attempts=1)
    )
    abandon(store, document.id)
    assert store.process_next("survivor", extract_text, block_ms=0) is None
    failed = store.documents.get(document.id)
    assert failed.status == "FAILED" and failed.attempts == 1
    assert failed.error_message == "lease of worker doomed expired"


def test_a_document_delivered_twice_is_processed_once(store: Docstore, user: UserResponse) -> None:
    document = store.submit_document(user, "note.txt", b"only once")
    store.queue.enqueue(document.id)  # a duplicate delivery
    calls: list[int] = []

    def counting(data: bytes, filename: str, report: ProgressCallback) -> Extraction:
        calls.append(1)
        return extract_text(data, filename, report)

    first = store.process_next("worker-a", counting, block_ms=0)
    second = store.process_next("worker-b", counting, block_ms=0)
    assert first is not None and first.action == "completed"
    assert second is not None and second.action == "skipped"
    assert len(calls) == 1
    assert store.queue.stats().pending == 0


def test_extractor_errors_retry_then_fail_with_the_message(
    store: Docstore, user: UserResponse
) -> None:
    document = store.submit_document(user, "bad.txt", b"boom")

    seen_at_start: list[float] = []

    def broken(data: bytes, filename: str, report: ProgressCallback) -> Extraction:
        progress = store.progress.get(document.id)
        seen_at_start.append(progress.percent if progress else -1)
        raise RuntimeError("extractor exploded")

    actions = []
    while (outcome := store.process_next("worker-1", broken, block_ms=0)) is not None:
        actions.append(outcome.action)
        progress = store.progress.get(document.id)
        assert progress is not None and progress.stage == outcome.action
    assert actions == ["retrying", "retrying", "failed"]
    assert seen_at_start == [0, 0, 0]  # every attempt starts its progress afresh
    failed = store.documents.get(document.id)
    assert failed.status == "FAILED"
    assert failed.error_message == "RuntimeError: extractor exploded"
    assert failed.attempts == 3


def test_unsupported_document_fails_without_retry(store: Docstore, user: UserResponse) -> None:
    document = store.submit_document(user, "image.png", b"\x89PNG not text")
    outcome = store.process_next("worker-1", extract_text, block_ms=0)
    assert outcome is not None and outcome.action == "failed"
    assert store.documents.get(document.id).attempts == 1


class Outage(NamedTuple):
    """A store on a Redis of its own (`server`, to stop and start), and a user of it."""

    store: Docstore
    server: LocalRedis
    user: UserResponse


@pytest.fixture
def outage(
    docstore_settings: Settings,
    docstore_blob_store: S3BlobStore,
    local_redis_factory: Callable[[], LocalRedis],
) -> Iterator[Outage]:
    server = local_redis_factory()
    settings = docstore_settings.model_copy(
        update={
            "redis_url_secret": docstore_settings.redis_url_secret.__class__(server.url),
            "retry_backoff_base": 0.0,  # retries at once: see test_shared_retries.py
        }
    )
    with Docstore.connect(settings, blobs=docstore_blob_store) as opened:
        yield Outage(
            opened, server, opened.users.create(UserCreate(email="outage@example.com")).user
        )


def test_enqueue_failure_leaves_pending_and_the_next_idle_worker_claims_it(
    outage: Outage,
) -> None:
    store, server, user = outage
    server.stop()
    document = store.submit_document(user, "during-outage.txt", b"queued later")
    assert store.documents.get(document.id).status == "PENDING"
    server.start()
    assert store.queue.stats().length == 0  # no message, yet no wait for requeue_stuck
    outcome = store.process_next("worker-1", extract_text, block_ms=0)
    assert outcome is not None and outcome.action == "completed"
    assert store.documents.get(document.id).result_text == "queued later"
    assert store.requeue_stuck(pending_for=0).requeued == 0  # nothing left to recover


def test_with_redis_down_expired_leases_come_back_too(
    outage: Outage,
) -> None:
    store, server, user = outage
    document = store.submit_document(user, "a.txt", b"lease ran out while redis was down")
    abandon(store, document.id)
    server.stop()
    outcome = store.process_next("worker-1", extract_text, block_ms=0)
    assert outcome is not None and outcome.action == "completed"
    assert store.documents.get(document.id).attempts == 2


def test_with_redis_down_workers_claim_from_postgres(
    outage: Outage,
) -> None:
    store, server, user = outage
    document = store.submit_document(user, "a.txt", b"processed without redis")
    server.stop()
    outcome = store.process_next("worker-1", extract_text, block_ms=0)
    assert outcome is not None and outcome.action == "completed"
    assert store.documents.get(document.id).status == "COMPLETED"
    server.start()
    # The message left in the queue (if any) is skipped by the conditional claim.
    later = store.process_next("worker-2", extract_text, block_ms=0)
    assert later is None or later.action == "skipped"


def test_a_dead_workers_document_is_processed_by_another_exactly_once(
    store: Docstore, user: UserResponse
) -> None:
    document = store.submit_document(user, "crash.txt", b"survives a crash")
    (message,) = store.queue.consume("doomed", count=1, block_ms=0)
    assert message.document_id == document.id
    store.lifecycle.claim(document.id, "doomed", lease_seconds=0.2)  # then the worker dies
    time.sleep(0.4)
    report = store.requeue_stuck(pending_for=300)
    assert report.expired_leases == 1 and report.requeued == 1
    outcome = store.process_next("survivor", extract_text, block_ms=0)
    assert outcome is not None and outcome.action == "completed"
    final = store.documents.get(document.id)
    assert final.status == "COMPLETED" and final.worker_id in (None, "survivor")
    assert store.process_next("survivor", extract_text, block_ms=0) is None


def test_requeue_stuck_with_redis_down_does_its_postgres_work_and_says_so(
    outage: Outage,
) -> None:
    store, server, user = outage
    leased = store.submit_document(user, "a.txt", b"its worker died")
    abandon(store, leased.id)
    deleted = store.submit_document(user, "b.txt", b"deleted, its blob waits")
    server.stop()
    store.documents.delete(deleted.id)  # the blob stays listed for purge_deleted_blobs
    report = store.requeue_stuck(pending_for=0)
    assert report.queue_unavailable
    assert report.expired_leases == 1 and report.blobs_deleted == 1
    assert store.documents.get(leased.id).status == "PENDING"
    server.start()
    assert not store.requeue_stuck(pending_for=0).queue_unavailable


def test_an_extractor_returning_no_extraction_fails_only_its_attempt(
    store: Docstore, user: UserResponse
) -> None:
    document = store.submit_document(user, "a.txt", b"words")

    def broken(data: bytes, filename: str, report: ProgressCallback) -> Any:
        return None

    outcome = store.process_next("worker-1", broken, block_ms=0)
    assert outcome is not None and outcome.action in ("retrying", "failed")
    failed = store.documents.get(document.id)
    assert failed.error_message is not None and "TypeError" in failed.error_message
    assert store.process_next("worker-1", extract_text, block_ms=0) is not None  # it goes on


def test_progress_writes_redis_refuses_never_fail_the_document(
    outage: Outage,
) -> None:
    store, server, user = outage
    document = store.submit_document(user, "a.txt", b"redis is full")

    def reporting(data: bytes, filename: str, report: ProgressCallback) -> Extraction:
        report(50, "halfway")
        return extract_text(data, filename, report)

    full = redis.Redis.from_url(server.url)
    full.config_set("maxmemory", 1)  # noeviction: every write that needs memory is refused
    try:
        outcome = store.process_next("worker-1", reporting, block_ms=0)
    finally:
        full.config_set("maxmemory", 0)
        full.close()
    assert outcome is not None and outcome.action == "completed", outcome
    assert store.documents.get(document.id).status == "COMPLETED"


def test_a_cancel_between_the_claim_and_the_progress_reset_stops_the_extractor(
    store: Docstore, user: UserResponse
) -> None:
    document = store.submit_document(user, "a.txt", b"cancelled while claimed")

    class CancelledDuringReset(ProgressTracker):
        """Forces the interleaving: the cancel commits (and marks the progress) just before
        the worker's reset, which must not erase that mark."""

        def restart(self, document_id: int, stage: str, *, unless_stage: str) -> Progress | None:
            store.cancel_document(document_id)
            return super().restart(document_id, stage, unless_stage=unless_stage)

    store._intake.progress = CancelledDuringReset(store.redis_core)  # the flow's own tracker
    calls: list[int] = []

    def counting(data: bytes, filename: str, report: ProgressCallback) -> Extraction:
        calls.append(1)
        return extract_text(data, filename, report)

    outcome = store.process_next("worker-1", counting, block_ms=0)
    assert outcome is not None and outcome.action == "cancelled"
    assert calls == []  # PostgreSQL was asked before the extractor started
    assert store.documents.get(document.id).status == "CANCELLED"


def test_a_document_nobody_cancels_costs_its_worker_no_heartbeat(
    store: Docstore, user: UserResponse
) -> None:
    # Every document cost a forced heartbeat (an UPDATE) before its extractor started, to catch
    # a cancel whose mark the progress reset erased; the reset now keeps the mark.
    store.submit_document(user, "a.txt", b"nobody cancels this")
    beats: list[int] = []

    class CountingLifecycle(DocumentLifecycle):
        def heartbeat(self, document_id: int, *args: Any, **kwargs: Any) -> DocumentResponse:
            beats.append(document_id)
            return super().heartbeat(document_id, *args, **kwargs)

    store._intake.lifecycle = CountingLifecycle(store.db)  # the flow's own lifecycle
    outcome = store.process_next("worker-1", extract_text, block_ms=0)
    assert outcome is not None and outcome.action == "completed"
    assert beats == []
    progress = store.progress.get(outcome.document_id)
    assert progress is not None and (progress.percent, progress.stage) == (100.0, "completed")


def test_with_redis_down_and_nothing_to_claim_a_worker_waits_block_ms(outage: Outage) -> None:
    # It returned at once: a worker loop polled PostgreSQL (two UPDATEs and a warning a call)
    # tens of thousands of times a second for as long as Redis stayed down.
    store, server, _ = outage
    server.stop()
    started = time.monotonic()
    assert store.process_next("worker-1", extract_text, block_ms=300) is None
    assert time.monotonic() - started >= 0.3


def test_an_extractor_error_text_postgresql_cannot_hold_still_fails_only_the_attempt(
    store: Docstore, user: UserResponse
) -> None:
    # A lone surrogate in the message (a json.loads of "\ud800", a surrogate-escaped path)
    # made recording the failure raise InvalidInput, which ended the worker's loop; the
    # document came back "Interrupted" to end the next worker's the same way.
    document = store.submit_document(user, "a.txt", b"words")

    def broken(data: bytes, filename: str, report: ProgressCallback) -> Any:
        raise ValueError("cannot read \ud800 at byte \x00 7")

    outcome = store.process_next("worker-1", broken, block_ms=0)
    assert outcome is not None and outcome.action == "retrying"
    failed = store.documents.get(document.id)
    assert failed.error_message == "ValueError: cannot read \\ud800 at byte  7"


@pytest.mark.parametrize("extract", [None, "extract_text", 42])
def test_process_next_refuses_an_extractor_that_is_not_callable_before_claiming(
    store: Docstore, user: UserResponse, extract: Any
) -> None:
    document = store.submit_document(user, "a.txt", b"words")
    with pytest.raises(InvalidInput) as refused:
        store.process_next("worker-1", extract, block_ms=0)
    assert refused.value.field == "extract"
    assert store.documents.get(document.id).attempts == 0  # nothing claimed, nothing burnt
    with pytest.raises(InvalidInput):
        store.process_next("worker-1", extract_text, block_ms=0, stopping=True)  # type: ignore[arg-type]


def test_an_extractor_that_never_reports_keeps_its_lease(
    store: Docstore, user: UserResponse, docstore_blob_store: S3BlobStore
) -> None:
    # The lease was extended only by progress reports: an extractor silent for longer than
    # its lease (an OCR pass, say) lost the document to requeue_stuck, another worker took
    # it while the first still ran, and the first one's result was refused.
    short = sharing(store, docstore_blob_store, lease_seconds=0.6)
    document = short.submit_document(user, "a.txt", b"slow but sure")
    taken_back: list[int] = []

    def silent(data: bytes, filename: str, report: ProgressCallback) -> Extraction:
        for _ in range(4):  # 2 s, four times past the lease, without a report
            time.sleep(0.5)
            taken_back.append(len(store.lifecycle.requeue_expired(10)))
        return extract_text(data, filename, report)

    outcome = short.process_next("worker-1", silent, block_ms=0)
    assert outcome is not None and outcome.action == "completed", outcome
    assert taken_back == [0, 0, 0, 0]
    assert store.documents.get(document.id).attempts == 1


@pytest.mark.parametrize(
    ("percent", "stage", "said"),
    [
        (50, None, "TypeError: the progress stage must be text, not NoneType"),
        ("50", "page 1", "TypeError: the progress percent must be a number, not str"),
    ],
)
def test_a_progress_report_the_extractor_gets_wrong_fails_the_attempt_with_a_clear_reason(
    store: Docstore, user: UserResponse, percent: Any, stage: Any, said: str
) -> None:
    # It failed with a TypeError from inside docstore ('NoneType' object is not subscriptable,
    # "'<' not supported"): the extractor's author could not tell what was wrong.
    document = store.submit_document(user, "a.txt", b"words")

    def reports_badly(data: bytes, filename: str, report: ProgressCallback) -> Any:
        report(percent, stage)
        return Extraction(text="never", page_count=1)

    outcome = store.process_next("worker-1", reports_badly, block_ms=0)
    assert outcome is not None and outcome.action == "retrying"
    assert store.documents.get(document.id).error_message == said
