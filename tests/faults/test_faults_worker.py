"""A worker process killed with SIGKILL while it holds documents: once its lease runs out another
worker processes each document exactly once (or fails it, when that was its last attempt)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import store_env, wait_until
from sides import Side, side_fixture  # noqa: F401 (fixtures)

from docstore import Docstore, DocumentCreate, Settings, UserCreate
from docstore.intake.blobs import S3BlobStore
from docstore.intake.extractors import Extraction, ProgressCallback

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

# Long enough for the checks made while the leases run, even on a loaded machine (2 s was not).
DOOMED_LEASE_SECONDS = 5

# A worker whose extractor reports progress, then blocks until the process is killed; it runs
# the store of the side under test.
DOOMED_EXTRACTOR = """
import asyncio, sys, threading
from docstore import AsyncDocstore, Docstore, Settings
from docstore.intake.extractors import Extraction

def extract(data, filename, report):
    report(40, "reading")
    threading.Event().wait()
    return Extraction(text="never", page_count=1)
"""
DOOMED_WORKER = {
    "sync": DOOMED_EXTRACTOR
    + """
with Docstore.connect(Settings()) as store:
    store.process_next(sys.argv[1], extract, block_ms=30_000)
""",
    "async": DOOMED_EXTRACTOR
    + """
async def work():
    async with await AsyncDocstore.connect(Settings()) as store:
        await store.process_next(sys.argv[1], extract, block_ms=30_000)

asyncio.run(work())
""",
}


@pytest.fixture
def store(
    side: Side, docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> Iterator[Docstore]:
    # The surviving worker: a message left unacked by a dead worker comes back after 0.5 s.
    # Retries at once (RETRY_BACKOFF_BASE=0): the backoff has its own tests.
    settings = docstore_settings.model_copy(
        update={"queue_reclaim_idle": 0.5, "retry_backoff_base": 0.0}
    )
    with side.connect(settings, blobs=docstore_blob_store) as opened:
        yield opened


def start_doomed_worker(
    side: Side, store: Docstore, worker_id: str, tmp_path: Path, s3_endpoint: str
) -> subprocess.Popen[bytes]:
    blobs = store.blobs.store
    assert isinstance(blobs, S3BlobStore)
    env = store_env(
        store.settings,
        blobs,
        s3_endpoint,
        POOL_MAX_OVERFLOW="1",
        LEASE_SECONDS=str(DOOMED_LEASE_SECONDS),
    )
    script = tmp_path / "doomed_worker.py"
    script.write_text(DOOMED_WORKER[side.name])
    with (tmp_path / f"{worker_id}.err").open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, str(script), worker_id],
            cwd=tmp_path,  # away from any .env of the checkout
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def test_documents_of_a_killed_worker_are_processed_exactly_once_after_its_lease(
    side: Side, store: Docstore, docstore_s3_endpoint: str, tmp_path: Path
) -> None:
    user = store.users.create(UserCreate(email="crash@example.com")).user
    retried = store.submit_document(user, "retried.txt", b"text of the retried document")
    # On its last attempt: when its lease runs out it fails, and nobody runs it again.
    blob = store.blobs.put(user.id, "last.txt", b"text of the last attempt")
    last = store.documents.create(
        DocumentCreate(user_id=user.id, filename="last.txt", s3_key=blob.key, max_attempts=1)
    )
    store.queue.enqueue(last.id)

    doomed = [
        start_doomed_worker(side, store, f"doomed-{i}", tmp_path, docstore_s3_endpoint)
        for i in (1, 2)
    ]
    try:

        def both_held() -> bool:
            if any(proc.poll() is not None for proc in doomed):
                errors = [(tmp_path / f"doomed-{i}.err").read_text() for i in (1, 2)]
                pytest.fail(f"a doomed worker exited early: {errors}")
            docs = [store.documents.get(d.id) for d in (retried, last)]
            progress = [store.progress.get(d.id) for d in (retried, last)]
            return all(d.status == "PROCESSING" for d in docs) and all(
                p is not None and p.stage == "reading" for p in progress
            )

        wait_until(both_held, 60, "both documents are held by the doomed workers")
        for proc in doomed:
            proc.send_signal(signal.SIGKILL)
        for proc in doomed:
            proc.wait(timeout=10)
    finally:
        for proc in doomed:
            if proc.poll() is None:
                proc.kill()
    assert [proc.returncode for proc in doomed] == [-signal.SIGKILL, -signal.SIGKILL]
    held = {d.id: store.documents.get(d.id) for d in (retried, last)}
    assert {d.worker_id for d in held.values()} == {"doomed-1", "doomed-2"}
    assert all(d.attempts == 1 for d in held.values())

    completions: Counter[str] = Counter()

    def extract(data: bytes, filename: str, report: ProgressCallback) -> Extraction:
        report(50, "rescuing")
        completions[filename] += 1
        return Extraction(text=data.decode(), page_count=1)

    # While the leases run nobody else may take the documents, whatever the queue hands out
    # (checked only with a second of both leases left: the point is the lease, not the clock).
    margin = datetime.now(UTC) + timedelta(seconds=1)
    if all(d.lease_expires_at is not None and d.lease_expires_at > margin for d in held.values()):
        early = store.process_next("rescuer", extract, block_ms=0)
        assert early is None or early.action == "skipped"
        assert all(store.documents.get(d).status == "PROCESSING" for d in held)

    # Lease gone: requeue_stuck hands back the one with attempts left, fails the other.
    reports = []

    def leases_taken_back() -> bool:
        reports.append(store.requeue_stuck(pending_for=3600))
        return sum(r.expired_leases for r in reports) == 2

    wait_until(leases_taken_back, 30, "both leases expired")
    assert sum(r.requeued for r in reports) == 1 and sum(r.failed for r in reports) == 1

    # The survivor drains the queue: new message and the dead workers' redelivered ones.
    outcomes = []

    def drained() -> bool:
        outcome = store.process_next("rescuer", extract, block_ms=100)
        if outcome is not None:
            outcomes.append(outcome)
        stats = store.queue.stats()
        return stats.length == 0 and stats.pending == 0

    wait_until(drained, 30, "the queue is drained")

    assert completions == Counter({"retried.txt": 1})
    done = [o for o in outcomes if o.action == "completed"]
    assert [o.document_id for o in done] == [retried.id]
    assert {o.action for o in outcomes} <= {"completed", "skipped"}
    final = store.documents.get(retried.id)
    assert final.status == "COMPLETED" and final.worker_id == "rescuer"
    assert final.attempts == 2 and final.result_text == "text of the retried document"
    progress = store.progress.get(retried.id)
    assert progress is not None and (progress.percent, progress.stage) == (100, "completed")
    failed = store.documents.get(last.id)
    assert failed.status == "FAILED" and failed.attempts == 1
    assert failed.error_message is not None and "expired" in failed.error_message
    assert failed.completed_at is not None
    # Nothing left to recover, nothing dead-lettered, and a later pass changes nothing.
    again = store.requeue_stuck(pending_for=0)
    assert (again.expired_leases, again.requeued, again.failed) == (0, 0, 0)
    assert store.queue.stats().dead_letters == 0
    assert store.process_next("rescuer", extract, block_ms=0) is None
    assert completions == Counter({"retried.txt": 1})


def test_requeue_stuck_re_enqueues_lost_messages_once_and_never_a_waiting_backlog(
    store: Docstore,
) -> None:
    """Every worker runs requeue_stuck: a document whose message was lost comes back once, not
    once per caller and call; a document whose message still waits in the queue, however long,
    is left alone (re-enqueueing a backlog older than `pending_for` used to copy it on every
    call)."""
    user = store.users.create(UserCreate(email="lost@example.com")).user

    def create(prefix: str) -> list[int]:
        items = [
            DocumentCreate(user_id=user.id, filename=f"{prefix}{i}.txt", s3_key=f"k/{prefix}{i}")
            for i in range(10)
        ]
        return [d.id for d in store.documents.create_many(items)]

    lost, backlog = create("lost"), create("waiting")
    with store.pool.connection() as conn:
        # Lost two hours ago (no message); waiting in the queue for an hour.
        conn.execute(
            "UPDATE documents SET updated_at = now() - interval '2 hours' WHERE id = ANY(%s)",
            [lost],
        )
        conn.execute(
            "UPDATE documents SET updated_at = now() - interval '1 hour' WHERE id = ANY(%s)",
            [backlog],
        )
    seconds, _ = store.redis.time()
    for i, document_id in enumerate(backlog):  # what enqueue wrote an hour ago
        store.redis.xadd(
            store.queue.key, {"document_id": document_id}, id=f"{(seconds - 3600) * 1000 + i}-0"
        )
    callers = 4
    together = threading.Barrier(callers)
    requeued: list[int] = []

    def janitor() -> None:
        together.wait(10)
        requeued.append(store.requeue_stuck(pending_for=60).requeued)

    threads = [threading.Thread(target=janitor) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(requeued) == len(lost) and len(requeued) == callers
    assert store.requeue_stuck(pending_for=60).requeued == 0  # not again within pending_for
    messages = store.queue.consume("w", count=100, block_ms=0)
    assert sorted(m.document_id for m in messages) == sorted(lost + backlog)  # each once
