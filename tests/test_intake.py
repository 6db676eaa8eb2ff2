"""The document flow end to end on real PostgreSQL, Redis and S3: nothing lost, nothing twice."""

import time
from collections.abc import Callable, Iterator

import pytest

from docstore import Docstore, InvalidInput, NotFound, Settings
from docstore.intake.blobs import S3BlobStore
from docstore.intake.extractors import Extraction, ProgressCallback, extract_text
from docstore.models import UserCreate, UserResponse
from docstore.quickstart import make_pdf
from docstore.testing import LocalRedis


def bucket_keys(blobs: S3BlobStore) -> list[str]:
    listing = blobs.client.list_objects_v2(Bucket=blobs.bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


@pytest.fixture
def store(docstore_settings: Settings, docstore_blob_store: S3BlobStore) -> Iterator[Docstore]:
    settings = docstore_settings.model_copy(update={"lease_seconds": 30.0})
    with Docstore.connect(settings, blobs=docstore_blob_store) as opened:
        yield opened


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


def test_too_large_upload_is_refused_and_leaves_nothing(
    store: Docstore, user: UserResponse, docstore_blob_store: S3BlobStore
) -> None:
    small = Docstore(
        store.settings.model_copy(update={"max_upload_bytes": 10}),
        pool=store.pool,
        redis_client=store.redis,
        blobs=docstore_blob_store,
    )
    with pytest.raises(InvalidInput, match="larger than 10 bytes"):
        small.submit_document(user, "a.txt", b"x" * 11)
    assert bucket_keys(docstore_blob_store) == []
    assert store.documents.list_for_user(user.id).items == []


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


@pytest.fixture
def outage_store(
    docstore_settings: Settings,
    docstore_blob_store: S3BlobStore,
    local_redis_factory: Callable[[], LocalRedis],
) -> Iterator[tuple[Docstore, LocalRedis]]:
    server = local_redis_factory()
    settings = docstore_settings.model_copy(
        update={"redis_url_secret": docstore_settings.redis_url_secret.__class__(server.url)}
    )
    with Docstore.connect(settings, blobs=docstore_blob_store) as opened:
        yield opened, server


def test_enqueue_failure_leaves_pending_then_requeue_stuck_recovers(
    outage_store: tuple[Docstore, LocalRedis],
) -> None:
    store, server = outage_store
    user = store.users.create(UserCreate(email="outage@example.com")).user
    server.stop()
    document = store.submit_document(user, "during-outage.txt", b"queued later")
    assert store.documents.get(document.id).status == "PENDING"
    server.start()
    assert store.process_next("worker-1", extract_text, block_ms=0) is None  # no message
    report = store.requeue_stuck(pending_for=0)
    assert report.requeued == 1
    outcome = store.process_next("worker-1", extract_text, block_ms=0)
    assert outcome is not None and outcome.action == "completed"
    assert store.documents.get(document.id).result_text == "queued later"


def test_with_redis_down_workers_claim_from_postgres(
    outage_store: tuple[Docstore, LocalRedis],
) -> None:
    store, server = outage_store
    user = store.users.create(UserCreate(email="pg-only@example.com")).user
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
    store.documents.claim(document.id, "doomed", lease_seconds=0.2)  # then the worker dies
    time.sleep(0.4)
    report = store.requeue_stuck(pending_for=300)
    assert report.expired_leases == 1 and report.requeued == 1
    outcome = store.process_next("survivor", extract_text, block_ms=0)
    assert outcome is not None and outcome.action == "completed"
    final = store.documents.get(document.id)
    assert final.status == "COMPLETED" and final.worker_id in (None, "survivor")
    assert store.process_next("survivor", extract_text, block_ms=0) is None
