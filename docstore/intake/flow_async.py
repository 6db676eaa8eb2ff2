"""The document flow: submit (blob → row → queue message) and process (consume → claim → extract
→ complete or fail), built so that nothing is lost and nothing is processed twice.

- A blob whose row could not be written is deleted again.
- A row whose queue message could not be written stays PENDING; `requeue_stuck` re-enqueues it.
- A message only says that there is work: the worker takes the next document in fair turns
  across users (`claim_next`), so a message delivered twice, or for a document done, cancelled,
  deleted or not yet due, claims nothing more than there is.
- A worker that dies leaves a lease that runs out; `requeue_stuck` hands the document back.
- A worker with no message (an empty queue, or Redis down) takes back expired leases and claims
  straight from PostgreSQL (`claim_next`): lost messages and migrated work never wait.
- A deleted document loses its row first (its blob listed for deletion in the same statement),
  then its cached result, progress and blob: a row never points at a missing blob, and a blob
  whose delete fails is retried by `purge_deleted_blobs` (which `requeue_stuck` runs).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import IO, Any, Literal, cast

from docstore._async_runtime import (
    blocking_caller,
    finish,
    in_thread,
    in_thread_or_undone,
    sleep,
    while_beating,
)
from docstore.ephemeral.cache_async import AsyncRedisCache
from docstore.ephemeral.progress_async import AsyncProgressTracker
from docstore.ephemeral.queue_async import AsyncTaskQueue
from docstore.ephemeral.values import Progress, QueueMessage
from docstore.errors import (
    REDIS_FAILURES,
    Cancelled,
    Conflict,
    DocstoreError,
    InvalidInput,
    InvalidTransition,
    NotFound,
    RedisCommandError,
    ServiceUnavailable,
)
from docstore.intake.blobs import BlobStore, StoredBlob, read_callers_stream
from docstore.intake.extractors import Extraction
from docstore.intake.outcomes import (
    BlobPurgeReport,
    Extractor,
    Outcome,
    StuckReport,
    checked_report,
    failure_text,
)
from docstore.models import DocumentCreate, DocumentResponse, SubmittedDocument, UserResponse
from docstore.observability.blob_ops import instrumented
from docstore.observability.messaging import (
    note_replayed_submission,
    observe_processing,
    observe_submit,
)
from docstore.repositories.documents_async import AsyncDocumentRepo
from docstore.repositories.lifecycle_async import AsyncDocumentLifecycle
from docstore.repositories.users_async import AsyncUserRepo
from docstore.rules import (
    PROGRESS_STAGE_LENGTH,
    Checker,
    Seconds,
    WorkerId,
    check_function,
    parse_input,
)

logger = logging.getLogger("docstore.intake")

_worker_id: Checker[str] = Checker(WorkerId, "worker_id")
_pending_for: Checker[float] = Checker(Seconds, "pending_for")
# Seconds between writing a document row and enqueueing it, clocks of PostgreSQL and Redis
# a little apart included.
ENQUEUE_MARGIN_SECONDS = 5.0
# The progress stage of a cancelled document: a worker reporting progress sees it and stops.
CANCELLED_STAGE = "cancelled"
# The error of an attempt whose call stopped half way (cancelled, interrupted, an outage).
INTERRUPTED = "Interrupted: processing stopped before it finished (the call did not complete)"
# Expired leases an idle worker takes back per empty poll (the rest on the next polls).
EXPIRED_PER_POLL = 100
# Blobs of deleted documents deleted per batch; a failed delete is tried again after this many
# seconds, doubled at each failure (an hour at most).
BLOB_PURGE_BATCH = 100
BLOB_RETRY_SECONDS = 30.0
# Batches of blobs a delete call removes itself before leaving the rest to purge_deleted_blobs.
INLINE_PURGE_BATCHES = 10


class _SizeLimitedReader(io.RawIOBase):
    """Passes a client's stream through, refusing it as soon as it passes `limit` bytes.

    Never asks the stream for more than one byte past the limit, however large it is.
    """

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.size = 0
        self.stopped = False

    def readable(self) -> bool:
        return True

    def stop(self) -> None:
        """Refuse every later read: the submit reading it was cancelled."""
        self.stopped = True

    def read(self, size: int = -1) -> bytes:
        if self.stopped:
            raise InvalidInput("the submit was cancelled while its upload ran", field="data")
        allowed = self.limit + 1 - self.size
        chunk = self.stream.read(allowed if size < 0 else min(size, allowed))
        if not isinstance(chunk, bytes):
            return chunk  # the blob store refuses what is not bytes
        self.size += len(chunk)
        if self.size > self.limit:
            raise InvalidInput(f"upload is larger than {self.limit} bytes", field="data")
        return chunk

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _sha256_of(data: bytes | IO[bytes]) -> str:
    """Hex SHA-256 of bytes or of a stream read to its end in chunks (never whole)."""
    if isinstance(data, bytes | bytearray | memoryview):
        return hashlib.sha256(data).hexdigest()
    if not hasattr(data, "read"):
        raise InvalidInput("data must be bytes or a binary file object", field="data")
    digest = hashlib.sha256()
    while chunk := read_callers_stream(data, 1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


def _same_submission(earlier: SubmittedDocument, filename: str, digest: str) -> DocumentResponse:
    """The earlier document when it was submitted with the same content, else `Conflict`."""
    if earlier.filename != filename or earlier.content_sha256 != digest:
        raise Conflict(
            "this idempotency key was used for another submission (other filename or bytes)",
            constraint_name="documents_idempotency_key_key",
        )
    return DocumentResponse.model_validate(earlier.model_dump(exclude={"content_sha256"}))


def _nothing() -> None:
    """Nothing to stop (what no blob store takes)."""


def _drop_blob(blobs: BlobStore, blob: StoredBlob) -> None:
    """Delete the blob of a cancelled submit, which no row names; kept when the store fails
    (`docstore doctor --repair` removes blobs no row points at, after their grace)."""
    try:
        blobs.delete(blob.key)
    except DocstoreError as exc:
        logger.warning("blob %s of a cancelled submit kept: %s", blob.key, exc)


def _size_limited(data: bytes | IO[bytes], limit: int) -> bytes | IO[bytes]:
    """A file object that the blob store's upload refuses once past `limit` (nothing kept),
    and that a cancelled submit stops (`stop`): bytes too, so that a cancel waits for the
    part in flight, not the whole upload."""
    if isinstance(data, bytes | bytearray | memoryview):
        return cast(IO[bytes], _SizeLimitedReader(io.BytesIO(data), limit))
    if not hasattr(data, "read"):
        return data  # the blob store refuses it
    return cast(IO[bytes], _SizeLimitedReader(data, limit))


class AsyncDocumentIntake:
    """Ties the blob store, the document repository and the Redis queue together."""

    def __init__(
        self,
        documents: AsyncDocumentRepo,
        lifecycle: AsyncDocumentLifecycle,
        users: AsyncUserRepo,
        blobs: Callable[[], BlobStore],
        queue: AsyncTaskQueue,
        progress: AsyncProgressTracker,
        cache: AsyncRedisCache,
        *,
        max_upload_bytes: int,
        lease_seconds: float,
    ) -> None:
        self.documents = documents
        self.lifecycle = lifecycle
        self.users = users
        self._blobs = instrumented(blobs)  # blob spans, when OpenTelemetry is on
        self.queue = queue
        self.progress = progress
        self.cache = cache
        self.max_upload_bytes = max_upload_bytes
        self.lease_seconds = lease_seconds

    # -- submitting ---------------------------------------------------------------------------

    async def _drop_unrecorded_blob(
        self, blobs: BlobStore, key: str, surely_unrecorded: bool = False
    ) -> None:
        """Delete the blob of a submit whose row may not have been written, unless a row points
        at it (asked unless `surely_unrecorded`); when PostgreSQL cannot tell, keep it
        (`docstore doctor --repair` removes blobs no row points at, after their grace)."""
        try:
            if surely_unrecorded or not await self.documents.blob_is_recorded(key):
                await in_thread(blobs.delete, key)
        except DocstoreError as exc:  # the submit's own error is the one raised
            logger.warning("blob %s of a failed submit kept: %s", key, exc)

    @observe_submit
    async def submit(
        self,
        user: UserResponse | int,
        filename: str,
        data: bytes | IO[bytes],
        idempotency_key: str | None = None,
    ) -> DocumentResponse:
        """Store the bytes, record a PENDING document and enqueue it; returns the document.

        With `idempotency_key`, a second call from the same user with the same key and content
        (filename and bytes) returns the first document and stores nothing (no blob, row or
        message), also when the calls race; other content under the key raises `Conflict`.
        """
        user_id = user.id if isinstance(user, UserResponse) else user
        if (
            isinstance(data, bytes | bytearray | memoryview)
            and memoryview(data).nbytes > self.max_upload_bytes
        ):
            raise InvalidInput(f"upload is larger than {self.max_upload_bytes} bytes", field="data")
        # Validate the row before any upload, so bad input leaves no blob behind.
        checked = parse_input(
            DocumentCreate,
            {
                "user_id": user_id,
                "filename": filename,
                "s3_key": "uploads/new",
                "idempotency_key": idempotency_key,
            },
        )
        limited = _size_limited(data, self.max_upload_bytes)
        if checked.idempotency_key is not None:
            earlier = await self.documents.get_by_idempotency_key(user_id, checked.idempotency_key)
            if earlier is not None:  # a retry: compare, store nothing
                digest = await in_thread(_sha256_of, limited)
                same = _same_submission(earlier, checked.filename, digest)
                note_replayed_submission()
                return same
        blobs = self._blobs()
        # Blob I/O (boto3) runs on a thread: it never blocks the event loop. Cancelled during
        # the upload, the stream is refused from its next read, and a blob stored all the same
        # is deleted (no row was written yet) before the cancel is raised.
        blob = await in_thread_or_undone(
            functools.partial(_drop_blob, blobs),
            getattr(limited, "stop", _nothing),
            blobs.put,
            user_id,
            filename,
            limited,
        )
        row = checked.model_copy(update={"s3_key": blob.key, "content_sha256": blob.sha256})
        try:
            if row.idempotency_key is None:
                document: DocumentResponse | None = await self.documents.create(row)
            else:
                document = await self.documents.create_once(row)
        except BaseException as exc:
            # A cancel or a lost connection can hide a committed row: check before deleting,
            # unless nothing was sent (no connection, no open pool): asking would fail again.
            unsent = isinstance(exc, DocstoreError) and exc.before_sending
            await finish(self._drop_unrecorded_blob, blobs, blob.key, unsent)
            raise
        if document is None:  # a racing call with the same key won: ours goes
            await in_thread(blobs.delete, blob.key)
            assert row.idempotency_key is not None  # create_once is only called with a key
            winner = await self.documents.get_by_idempotency_key(user_id, row.idempotency_key)
            if winner is None:  # pragma: no cover - deleted between the two statements
                raise NotFound(f"the document submitted under {row.idempotency_key!r} is gone")
            same = _same_submission(winner, row.filename, blob.sha256)
            note_replayed_submission()
            return same
        try:
            await self.queue.enqueue(document.id)
        except REDIS_FAILURES as exc:
            # The row is PENDING: requeue_stuck (or a worker's claim_next) will pick it up.
            logger.warning("document %s not enqueued: %s", document.id, exc.message)
        return document

    # -- processing ---------------------------------------------------------------------------

    async def process_next(
        self,
        worker_id: str,
        extract: Extractor,
        *,
        block_ms: int = 1000,
        stopping: Callable[[], bool] | None = None,
    ) -> Outcome | None:
        """Process one document: from the queue, or straight from PostgreSQL when the queue
        has none for us (empty, or Redis down).

        Returns None when there was nothing to do, or when `stopping()` (asked after the wait
        for a message) says the worker is shutting down: then nothing is claimed, and a message
        read stays unacked, for another worker to take. Errors raised by `extract` fail the
        document (retried while attempts remain); errors of docstore's servers propagate.
        """
        # The documents table's rule, checked before a message is taken off the queue (and the
        # same cleaned id used for both).
        worker_id = _worker_id(worker_id)
        # It runs on a thread, off the event loop: a plain function, also on the async side.
        check_function(extract, "extract", "a plain function (an Extractor)", plain=True)
        check_function(
            stopping, "stopping", "a function returning a bool", optional=True, plain=True
        )
        message: QueueMessage | None = None
        queue_down = False
        try:
            messages = await self.queue.consume(worker_id, count=1, block_ms=block_ms)
        except REDIS_FAILURES as exc:
            logger.warning("queue unavailable, claiming from PostgreSQL: %s", exc.message)
            messages, queue_down = [], True
        if stopping is not None and stopping():
            return None
        if not messages:
            document = await self._claim_from_postgres(worker_id)
            if document is None:
                if queue_down:
                    # The queue did not wait `block_ms` for a message: wait here, or a worker's
                    # loop polls PostgreSQL flat out while Redis is down.
                    await sleep(block_ms / 1000)
                return None
        else:
            # A message says there is work; PostgreSQL says which, in fair turns across users
            # (the queue's own order is global, first come first served).
            message = messages[0]
            try:
                claimed = await self.lifecycle.claim_next(worker_id, self.lease_seconds)
            except ServiceUnavailable:
                # PostgreSQL is away: the document stays PENDING there, which is what a worker
                # claims from. Left pending, the message would be reclaimed by the retries
                # and dead-lettered after QUEUE_MAX_DELIVERIES though it never failed.
                await self._ack(message)
                raise
            if claimed is None:
                # Delivered twice, done, cancelled, deleted or not yet due: nothing to do now.
                await self._ack(message)
                return Outcome(
                    document_id=message.document_id,
                    action="skipped",
                    detail="no document is due for this message",
                )
            document = claimed
        with observe_processing(document.id, message) as observed:
            try:
                outcome = observed(await self._run(document, worker_id, extract))
            except GeneratorExit:  # the coroutine is being closed: nothing may be awaited
                raise
            except BaseException:
                # Cancelled, interrupted or cut off by an outage with the document in hand:
                # handed back now as a failed attempt (retried after its backoff), not when
                # its lease runs out.
                handed_back = await finish(self._let_go, document, worker_id)
                if handed_back is not None:
                    observed(handed_back)  # counted as what it became, not a bare error
                raise
        # A retry waits for its backoff in PostgreSQL (`next_attempt_at`): it is claimed from
        # there once due (by an idle worker's `claim_next`, or enqueued by `requeue_stuck`).
        await self._ack(message)
        return outcome

    async def _claim_from_postgres(self, worker_id: str) -> DocumentResponse | None:
        """The oldest PENDING document, after taking back expired leases.

        Reaches what has no message: lost messages, migrated work, expired leases (the
        migration writes in-flight tasks as leases that ran out). Duplicates are harmless:
        a later message for the document meets the conditional `claim`.
        """
        await self.lifecycle.requeue_expired(EXPIRED_PER_POLL)
        return await self.lifecycle.claim_next(worker_id, self.lease_seconds)

    async def _run(self, document: DocumentResponse, worker_id: str, extract: Extractor) -> Outcome:
        started = time.perf_counter()
        # The lease is extended at most every third of its length (progress reports do it).
        interval = self.lease_seconds / 3
        last_beat = time.monotonic()

        async def heartbeat(now: bool) -> None:
            nonlocal last_beat
            if now or time.monotonic() - last_beat >= interval:
                await self.lifecycle.heartbeat(document.id, worker_id, self.lease_seconds)
                last_beat = time.monotonic()

        # A retry starts again from 0 (progress never goes backwards otherwise); a cancel's mark,
        # made since the claim, outlives the reset.
        started_at = await self._restart_progress(document.id)
        call = blocking_caller()

        async def record(percent: float, stage: str) -> None:
            percent, stage = checked_report(percent, stage)  # the extractor's own mistake
            label = stage[:PROGRESS_STAGE_LENGTH] or "working"
            stored = await self._show_progress(document.id, max(0.0, min(100.0, percent)), label)
            # A cancel marks the progress as cancelled: PostgreSQL (the truth) confirms it at once
            # (`Cancelled`); without Redis the next regular heartbeat finds it.
            await heartbeat(stored is not None and stored.stage == CANCELLED_STAGE)

        abandoned = threading.Event()  # the call was cancelled: stop the extractor's thread
        # What a timed heartbeat found (cancelled, lease lost, deleted): the next report raises it.
        found: list[DocstoreError] = []

        async def timed_heartbeat() -> None:
            # Between reports too: an extractor silent for longer than the lease keeps it.
            try:
                await heartbeat(False)
            except (InvalidTransition, NotFound) as exc:  # Cancelled is an InvalidTransition
                found.append(exc)
                raise
            except DocstoreError as exc:  # e.g. PostgreSQL away: the next beat tries again
                logger.warning("lease of document %s not extended: %s", document.id, exc.message)

        def report(percent: float, stage: str) -> None:
            # On the asyncio side the extractor runs on a thread: its reports go to the loop.
            # Once the call is cancelled the thread runs on, but the document is handed back
            # (`_let_go`) and the thread's next report stops it.
            if abandoned.is_set():
                raise Cancelled(f"processing of document {document.id} was abandoned")
            if found:
                raise found[0]
            call(record, percent, stage)

        try:
            data = await in_thread(self._blobs().get, document.s3_key)
        except Exception as exc:  # noqa: BLE001 - an unreadable blob fails the attempt
            return await self._fail(document, worker_id, exc)
        try:
            # A cancel marked since the claim is confirmed by PostgreSQL before the extractor
            # starts; so is any, when Redis did not answer the reset. Otherwise no statement:
            # a later cancel stops the extractor at its next report.
            await heartbeat(started_at is None or started_at.stage == CANCELLED_STAGE)
            extraction = await while_beating(
                lambda: in_thread(extract, data, document.filename, report),
                interval,
                timed_heartbeat,
            )
        except Cancelled as exc:
            return Outcome(document_id=document.id, action="cancelled", detail=str(exc))
        except InvalidTransition:
            return Outcome(document_id=document.id, action="lease_lost")
        except NotFound as exc:  # a heartbeat found it deleted: nothing left to record
            return Outcome(document_id=document.id, action="skipped", detail=str(exc))
        except Exception as exc:  # noqa: BLE001 - any failure of the extractor fails the document
            return await self._fail(document, worker_id, exc)
        except BaseException:  # cancelled (or interrupted) while the extractor runs
            abandoned.set()
            raise
        if not isinstance(extraction, Extraction):  # a broken extractor fails its attempt only
            if inspect.iscoroutine(extraction):
                extraction.close()  # an async function behind a plain one: never awaited
            wrong = TypeError(f"the extractor returned {type(extraction).__name__}, not Extraction")
            return await self._fail(document, worker_id, wrong)
        elapsed = time.perf_counter() - started
        try:
            # A result in hand is recorded even when the call is cancelled meanwhile.
            done = await finish(
                self.lifecycle.mark_completed,
                document.id,
                worker_id,
                extraction.text,
                extraction.page_count,
                elapsed,
            )
        except Cancelled as exc:  # the late result is refused
            return Outcome(document_id=document.id, action="cancelled", detail=str(exc))
        except InvalidTransition as exc:
            return Outcome(document_id=document.id, action="lease_lost", detail=str(exc))
        except NotFound as exc:
            return Outcome(document_id=document.id, action="skipped", detail=str(exc))
        except InvalidInput as exc:  # e.g. text PostgreSQL cannot hold
            return await self._fail(document, worker_id, exc)
        # No cache write here: a result cached now could outlive a change (a delete) committed
        # meanwhile; readers fill the cache through single flight (`store.get_document`).
        await self._show_progress(done.id, 100, "completed")
        return Outcome(document_id=done.id, action="completed", document=done)

    async def _restart_progress(self, document_id: int) -> Progress | None:
        """Progress back to 0 for a new attempt, a cancel's mark kept; None when Redis did not
        take it (logged, as `_show_progress` does)."""
        try:
            return await self.progress.restart(document_id, "started", unless_stage=CANCELLED_STAGE)
        except RedisCommandError as exc:
            logger.warning("progress of document %s not reset: %s", document_id, exc)
            return None

    async def _show_progress(self, document_id: int, percent: float, stage: str) -> Progress | None:
        """Record progress; a label or a write Redis refuses (e.g. out of memory) is logged and
        never fails the document (an outage already returns None)."""
        try:
            return await self.progress.set(document_id, percent, stage)
        except (InvalidInput, RedisCommandError) as exc:
            logger.warning("progress of document %s not recorded: %s", document_id, exc)
            return None

    async def _fail(self, document: DocumentResponse, worker_id: str, exc: Exception) -> Outcome:
        # Bad input will not get better on a retry; anything else might.
        retry = not isinstance(exc, InvalidInput)
        return await self._record_failure(document, worker_id, failure_text(exc), retry)

    async def _let_go(self, document: DocumentResponse, worker_id: str) -> Outcome | None:
        """Hand back a document whose processing stopped half way, as a failed attempt."""
        try:
            return await self._record_failure(document, worker_id, INTERRUPTED, retry=True)
        except DocstoreError as exc:  # e.g. PostgreSQL down: the lease will run out instead
            logger.warning("document %s not handed back: %s", document.id, exc.message)
            return None

    async def _record_failure(
        self, document: DocumentResponse, worker_id: str, message: str, retry: bool
    ) -> Outcome:
        try:
            # Recorded even when the call is cancelled meanwhile: the hand-back after a cancel
            # must not replace this error (bad input is not retried).
            failed = await finish(
                self.lifecycle.mark_failed, document.id, worker_id, message, retry=retry
            )
        except Cancelled as cancelled:
            return Outcome(document_id=document.id, action="cancelled", detail=str(cancelled))
        except InvalidTransition as lost:
            return Outcome(document_id=document.id, action="lease_lost", detail=str(lost))
        except NotFound as gone:
            return Outcome(document_id=document.id, action="skipped", detail=str(gone))
        action: Literal["failed", "retrying"] = (
            "retrying" if failed.status == "PENDING" else "failed"
        )
        await self._show_progress(document.id, 100, action)
        return Outcome(document_id=document.id, action=action, detail=message, document=failed)

    # -- cancelling ---------------------------------------------------------------------------

    async def cancel_document(self, document_id: int) -> DocumentResponse:
        """Cancel in PostgreSQL (the truth), then mark the progress so that a worker on it stops
        at its next progress report."""
        cancelled = await self.lifecycle.cancel(document_id)
        # Best effort: without the mark the worker stops at its next heartbeat instead.
        await self._show_progress(document_id, 100, CANCELLED_STAGE)
        return cancelled

    async def _ack(self, message: QueueMessage | None) -> None:
        if message is None:
            return
        try:
            await self.queue.ack(message)
        except REDIS_FAILURES as exc:
            # Redelivered later, then skipped by the conditional claim.
            logger.warning("message %s not acked: %s", message.message_id, exc.message)

    # -- deleting -----------------------------------------------------------------------------

    async def delete_document(self, document_id: int) -> None:
        """Delete the row (its blob listed in the same statement), then the cached result (the
        repository's change notice), the progress and the blob (`NotFound` if absent)."""
        await self.documents.delete(document_id)
        await self._forget([document_id])

    async def delete_user(self, user_id: int) -> list[int]:
        """Delete the user, its documents and all they left in Redis and the blob store;
        returns the ids of the deleted documents."""
        removed = await self.users.delete(user_id)
        await self._forget(removed)
        return removed

    async def _forget(self, document_ids: list[int]) -> None:
        try:
            await self.progress.clear_many(document_ids)
        except REDIS_FAILURES as exc:  # expires by itself within the progress TTL
            logger.warning(
                "progress of %d deleted documents not cleared: %s", len(document_ids), exc.message
            )
        # The blobs go now, a few batches inline; whatever is left (or failed) goes with the next
        # `purge_deleted_blobs` (the worker's `requeue_stuck` runs it).
        for _ in range(min(INLINE_PURGE_BATCHES, -(-len(document_ids) // BLOB_PURGE_BATCH))):
            report = await self.purge_deleted_blobs()
            if report.deleted + report.failed < BLOB_PURGE_BATCH:
                break

    async def purge_deleted_blobs(self, limit: int = BLOB_PURGE_BATCH) -> BlobPurgeReport:
        """Delete up to `limit` blobs of deleted documents that are due; one that fails is
        tried again later, with a growing delay. Callers side by side never take the same."""
        keys = await self.documents.take_due_blob_deletions(limit, BLOB_RETRY_SECONDS)
        blobs = self._blobs()
        deleted = failed = 0
        for key in keys:
            try:
                await in_thread(blobs.delete, key)
            except DocstoreError as exc:
                failed += 1
                logger.warning("blob %s not deleted, will retry: %s", key, exc.message)
                await self.documents.note_blob_deletion_error(key, exc.message)
                continue
            await self.documents.finish_blob_deletion(key)
            deleted += 1
        return BlobPurgeReport(deleted=deleted, failed=failed)

    # -- recovering ---------------------------------------------------------------------------

    async def requeue_stuck(self, pending_for: float = 300.0, limit: int = 1000) -> StuckReport:
        """Hand back expired leases (due again after a backoff), enqueue retries now due, and
        re-enqueue documents PENDING for `pending_for` seconds whose message is lost (a Redis
        restart, a failed enqueue); deletes the blobs of deleted documents still waiting, and
        the queue's consumers of workers gone for an hour (holding no message).

        Only documents last enqueued before the oldest message still queued count as lost: a
        backlog is not copied, however old. Each is re-enqueued by one of the callers running
        side by side, at most once per `pending_for`. Duplicates would be harmless anyway
        (`claim` is conditional).
        """
        pending_for = _pending_for(pending_for)  # before any write: bad input changes nothing
        expired = await self.lifecycle.requeue_expired(limit)
        # Retries whose backoff is over (expired leases wait for theirs too): plain PENDING, so
        # workers claim them from PostgreSQL even while Redis is away.
        due = await self.lifecycle.promote_due_retries(limit)
        enqueued: set[int] = set()
        queue_unavailable = False
        forgotten = 0
        try:
            enqueued = await self._enqueue_due_and_lost(due, pending_for, limit)
            forgotten = await self.queue.forget_idle_consumers()
        except REDIS_FAILURES as exc:  # the PostgreSQL work above and below still counts
            queue_unavailable = True
            logger.warning("requeue_stuck without the queue: %s", exc.message)
        # What the cache may still owe Redis goes now too, even in an idle worker.
        await self.cache.invalidate_documents([])
        purged = await self.purge_deleted_blobs()
        handed_back = {d.id for d in expired if d.status == "PENDING"}
        return StuckReport(
            expired_leases=len(expired),
            requeued=len(enqueued | handed_back),
            failed=sum(1 for d in expired if d.status == "FAILED"),
            blobs_deleted=purged.deleted,
            consumers_forgotten=forgotten,
            queue_unavailable=queue_unavailable,
        )

    async def _enqueue_due_and_lost(
        self, due: list[int], pending_for: float, limit: int
    ) -> set[int]:
        """Enqueue the due retries and the PENDING documents whose message is lost; their ids."""
        # Messages are deleted once acked: a document enqueued before the oldest one left has
        # no message. The margin covers the time from writing a row to enqueueing it.
        oldest = await self.queue.oldest_enqueued_at()
        queued_before = oldest - timedelta(seconds=ENQUEUE_MARGIN_SECONDS) if oldest else None
        stale = await self.lifecycle.take_unqueued_pending(pending_for, queued_before, limit)
        ids = set(due) | set(stale)
        await self.queue.enqueue_many(sorted(ids))
        return ids


__all__ = ["AsyncDocumentIntake", "BlobPurgeReport", "Extractor", "Outcome", "StuckReport"]
