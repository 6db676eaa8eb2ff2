"""`AsyncDoctor`: audits what must hold between PostgreSQL, Redis and the blob store, and with
`repair=True` fixes what is safe to fix. Everything is read one page at a time.

The audits, in the order they run (a repair of one is seen by the next):

1. PROCESSING documents past their lease (repair: back to PENDING and re-enqueued, or FAILED
   after the last attempt, as `requeue_expired` does).
2. Queue messages for missing or finished documents (repair: acked and deleted). The ids of the
   documents that do have a message go to a scratch set in Redis, which lives for the run.
3. Dead letters (repair: dropped when their document is finished or gone; kept otherwise).
4. PENDING documents with no queue message and no retry scheduled (repair: re-enqueued).
5. Blobs without a row (repair: deleted once older than the grace period) and rows without a
   blob (reported only): both listings in byte order of the key, merged.
6. Cached results older than their row, or of a missing row (repair: deleted).
7. Progress keys of finished or missing documents that do not say so or never expire
   (repair: deleted).

Anything changed within the last `grace` seconds is work in flight and is left out.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, TypeVar, cast

from docstore._async_runtime import AsyncCall, in_thread
from docstore.doctor.blob_listing import ListedBlob, blobs_in_order, can_list, take
from docstore.doctor.findings import DoctorReport, Finding, FindingKind, FindingLog
from docstore.doctor.judgements import (
    DocumentState,
    cached_updated_at,
    listed_document_id,
    retry_due,
    stale_cache,
    stale_progress,
    when,
    why_not_waiting,
)
from docstore.doctor.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_GRACE,
    check_batch_size,
    check_grace,
    check_repair,
)
from docstore.ephemeral.cache_async import AsyncRedisCache, is_not_kept
from docstore.ephemeral.progress_async import AsyncProgressTracker
from docstore.ephemeral.queue_async import AsyncTaskQueue
from docstore.ephemeral.stream_entries import entry_fields
from docstore.errors import REDIS_FAILURES, DocstoreError, ServiceUnavailable
from docstore.intake.blob_access_async import AsyncBlobs
from docstore.intake.blobs import BlobStore, is_docstore_key
from docstore.postgres.executor_async import AsyncDatabase
from docstore.redis.client_async import as_text
from docstore.redis.core_async import AsyncRedisCore
from docstore.redis.keys import cache_key, progress_key, redis_key
from docstore.repositories.lifecycle_async import AsyncDocumentLifecycle
from docstore.rules import check_function

T = TypeVar("T")

# The scratch set of queued ids outlives a run that died by at most this long.
SCRATCH_TTL_MS = 3_600_000
_CACHED_RESULT = re.compile(r"docstore:cache:\{document:([0-9]{1,19}):result\}")
_PROGRESS = re.compile(r"docstore:progress:\{([0-9]{1,19})\}")


class AsyncStoreParts(Protocol):
    """What the doctor uses of a store (`AsyncDocstore` has all of it), read only."""

    @property
    def db(self) -> AsyncDatabase: ...
    @property
    def redis_core(self) -> AsyncRedisCore: ...
    @property
    def queue(self) -> AsyncTaskQueue: ...
    @property
    def lifecycle(self) -> AsyncDocumentLifecycle: ...
    @property
    def cache(self) -> AsyncRedisCache: ...
    @property
    def progress(self) -> AsyncProgressTracker: ...
    @property
    def blobs(self) -> AsyncBlobs: ...


class AsyncDoctor:
    """One audit run over a store; `run` returns the report, `on_finding` sees each finding."""

    def __init__(
        self,
        store: AsyncStoreParts,
        *,
        repair: bool = False,
        grace: float = DEFAULT_GRACE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_finding: Callable[[Finding], None] | None = None,
    ) -> None:
        self.repair = check_repair(repair)
        self.grace = check_grace(grace)
        self.store = store
        self.db = store.db
        self.core = store.redis_core
        self.queue = store.queue
        self.batch = check_batch_size(batch_size)
        self.report = DoctorReport(repair=repair)
        check_function(on_finding, "on_finding", "a function of a finding", optional=True)
        self.log = FindingLog(self.report, on_finding)
        self._scratch = redis_key("doctor", secrets.token_hex(8), "queued")

    async def run(self) -> DoctorReport:
        """Every audit in turn. One that Redis fails is left out and named in
        `report.unavailable`, and the others go on (the blob audit needs only PostgreSQL and
        the blob store); PostgreSQL that cannot be reached raises `ServiceUnavailable`."""
        try:
            await self._audit(self.expired_leases)
            queue_read = await self._audit(self.queue_messages)
            await self._audit(self.dead_letters)
            if queue_read:  # without the queue's ids every PENDING document would look lost
                await self._audit(self.unqueued_pending)
            else:
                self.report.unavailable.append("unqueued_pending: needs the queue's messages")
            await self._audit(self.blobs)
            await self._audit(self.cached_results)
            await self._audit(self.progress_keys)
        finally:
            await self._drop_scratch()
        return self.report

    async def _audit(self, audit: AsyncCall[None]) -> bool:
        """Run `audit`; False when Redis failed it, away or refusing a command (noted in the
        report)."""
        try:
            await audit()
        except REDIS_FAILURES as exc:
            if isinstance(exc, ServiceUnavailable) and exc.service != "redis":
                raise
            self.report.unavailable.append(f"{audit.__name__}: {exc.message}")
            return False
        return True

    # -- 1. leases ------------------------------------------------------------------------------

    async def expired_leases(self) -> None:
        """PROCESSING past the lease: its worker is gone."""
        if self.repair:
            await self._requeue_expired()
            return
        after = 0
        while rows := await self.db.all(
            "doctor_expired_leases", {"after_id": after, "limit": self.batch}
        ):
            after = rows[-1][0]
            for document_id, worker_id, lease_expires_at in rows:
                self._found(
                    "lease_expired",
                    document_id,
                    f"PROCESSING by {worker_id}, lease ran out at {when(lease_expires_at)}",
                )

    async def _requeue_expired(self) -> None:
        enqueue_failed = False
        while documents := await self.store.lifecycle.requeue_expired(self.batch):
            now = datetime.now(timezone.utc)
            due = [
                d.id
                for d in documents
                if d.status == "PENDING" and retry_due(d.next_attempt_at, now)
            ]
            # Committed already: an outage now must not hide what was repaired.
            enqueued = "re-enqueued"
            try:
                await self.queue.enqueue_many(due)
            except REDIS_FAILURES as exc:
                enqueued = "not enqueued (Redis failed): a worker claims it from PostgreSQL"
                if not enqueue_failed:  # once per run, however many batches
                    self.report.unavailable.append(f"expired_leases: enqueue: {exc.message}")
                enqueue_failed = True
            for document in documents:
                retry_at = document.next_attempt_at
                if document.status != "PENDING":
                    done = "FAILED (no attempts left)"
                elif retry_at is None or document.id in due:
                    done = f"back to PENDING, {enqueued}"
                else:  # a backoff first: the retry schedule brings it back
                    done = f"back to PENDING, retry due {when(retry_at)}"
                self._found("lease_expired", document.id, str(document.error_message), done)
            if len(documents) < self.batch:
                return

    # -- 2. queue messages -------------------------------------------------------------------------

    async def queue_messages(self) -> None:
        """Messages whose document is missing or finished; the others are noted as queued."""
        async for page in self._stream(self.queue.key):
            ids = [document_id for _, document_id, _ in page if document_id is not None]
            states = await self._states(ids)
            stale: list[tuple[str, int | None, str]] = []
            live: list[int] = []
            for message_id, document_id, _ in page:
                why = why_not_waiting(document_id, states)
                if why is None and document_id is not None:
                    live.append(document_id)
                elif why:
                    stale.append((message_id, document_id, why))
            if live:
                await self._note_queued(live)
            if stale and self.repair:
                await self.queue.ack(*(message_id for message_id, _, _ in stale))
            for message_id, document_id, why in stale:
                done = "acked and deleted" if self.repair else None
                self._found("stale_message", document_id, f"message {message_id}: {why}", done)

    # -- 3. dead letters ---------------------------------------------------------------------------

    async def dead_letters(self) -> None:
        """Every dead letter; those of finished or missing documents are dropped on repair."""
        key = self.queue.dead_letter_key
        async for page in self._stream(key):
            ids = [document_id for _, document_id, _ in page if document_id is not None]
            states = await self._states(ids)
            drop: list[str] = []
            findings: list[tuple[int | None, str, str | None]] = []
            for message_id, document_id, fields in page:
                why = why_not_waiting(document_id, states)
                detail = (
                    f"dead letter {message_id}: delivered {fields.get('deliveries', '?')} times, "
                    f"last to {fields.get('last_consumer', '?')}"
                )
                if why:
                    drop.append(message_id)
                    findings.append((document_id, f"{detail}; {why}", "deleted"))
                else:
                    state = states.get(document_id) if document_id is not None else None
                    status = state.status if state else "in flight"
                    findings.append((document_id, f"{detail}; document is {status}: kept", None))
            if drop and self.repair:
                with self.core.errors():
                    await self.core.client.xdel(key, *drop)
            for document_id, detail, done in findings:
                self._found("dead_letter", document_id, detail, done if self.repair else None)

    # -- 4. pending without a message --------------------------------------------------------------

    async def unqueued_pending(self) -> None:
        """PENDING documents no queue message will bring to a worker."""
        after = 0
        while rows := await self.db.all(
            "doctor_quiet_pending", {"after_id": after, "grace": self.grace, "limit": self.batch}
        ):
            after = rows[-1][0]
            ids = [row[0] for row in rows]
            with self.core.errors():
                queued = await self.core.client.smismember(self._scratch, ids)
            lost = [
                (row[0], row[1])
                for row, is_queued in zip(rows, queued, strict=True)
                if not is_queued
            ]
            if lost and self.repair:
                await self.queue.enqueue_many([document_id for document_id, _ in lost])
            for document_id, updated_at in lost:
                done = "re-enqueued" if self.repair else None
                detail = f"PENDING since {when(updated_at)} with no queue message"
                self._found("pending_unqueued", document_id, detail, done)

    # -- 5. blobs ----------------------------------------------------------------------------------

    async def blobs(self) -> None:
        """Blobs without a row and rows without a blob: two listings by key, merged."""
        store = self.store.blobs.store
        if not can_list(store):
            self.report.skipped.append(f"blobs: a {type(store).__name__} cannot be listed")
            return
        young = datetime.now(timezone.utc) - timedelta(seconds=self.grace)
        rows = self._row_keys()
        listed = self._listed_blobs(store)
        row, blob = await _next(rows), await _next(listed)
        orphans: list[ListedBlob] = []
        while row is not None or blob is not None:
            if blob is not None and (row is None or blob.key < row[1]):
                if blob.modified < young:
                    orphans.append(blob)
                    if len(orphans) >= self.batch:
                        await self._orphans(store, orphans)
                        orphans = []
                blob = await _next(listed)
            elif row is not None and (blob is None or row[1] < blob.key):
                document_id, key, status, quiet = row
                if quiet:
                    self._found("blob_missing", document_id, f"{status}, no blob at {key}")
                row = await _next(rows)
            else:  # the same key: every row with it has its blob
                assert blob is not None
                key = blob.key
                while row is not None and row[1] == key:
                    row = await _next(rows)
                blob = await _next(listed)
        await self._orphans(store, orphans)

    async def _orphans(self, store: BlobStore, blobs: list[ListedBlob]) -> None:
        """Blobs no row names, less those listed for deletion (their rows were deleted:
        `purge_deleted_blobs` removes them) or named by a row committed since. A repair
        deletes only keys of docstore's own shape (`make_blob_key`): the bucket may hold the
        legacy service's blobs, or another application's, which are reported, never deleted."""
        if not blobs:
            return
        named = await self.db.all("doctor_keys_accounted_for", {"keys": [b.key for b in blobs]})
        accounted_for = {row[0] for row in named}
        for blob in blobs:
            if blob.key in accounted_for:
                continue
            detail = f"blob {blob.key} written {when(blob.modified)} has no document"
            ours = is_docstore_key(blob.key)
            if not ours:
                detail += " (not a key docstore makes: never deleted by a repair)"
            done = None
            if ours and self.repair:
                try:
                    await in_thread(store.delete, blob.key)
                    done = "deleted"
                except DocstoreError as exc:  # reported unrepaired; the others go on
                    detail += f" (the repair could not delete it: {exc.message})"
            self._found("blob_orphaned", None, detail, done, blob.key)

    async def _row_keys(self) -> AsyncIterator[tuple[int, str, str, bool]]:
        after_key, after_id = "", 0
        while True:
            rows = await self.db.all(
                "doctor_blob_keys",
                {"after_key": after_key, "after_id": after_id, "grace": self.grace,
                 "limit": self.batch},
            )  # fmt: skip
            for document_id, key, status, quiet in rows:  # noqa: RUF100, UP028 - a loop on the async side
                yield document_id, key, status, quiet
            if len(rows) < self.batch:
                return
            after_id, after_key = rows[-1][0], rows[-1][1]

    async def _listed_blobs(self, store: BlobStore) -> AsyncIterator[ListedBlob]:
        listing = blobs_in_order(store, self.batch)
        while True:
            page = await in_thread(take, listing, self.batch)
            for blob in page:  # noqa: RUF100, UP028 - a loop on the async side
                yield blob
            if len(page) < self.batch:
                return

    # -- 6. cached results -------------------------------------------------------------------------

    async def cached_results(self) -> None:
        """Cached document results older than their row, or of a row that is gone."""
        pattern = cache_key(AsyncRedisCache.DOCUMENT_KEYS)
        async for keys in self._scan(pattern):
            ids = [int(m.group(1)) for m in map(_CACHED_RESULT.fullmatch, keys) if m]
            if not ids:
                continue
            with self.core.errors():
                # GETs in a pipeline, not an MGET: on a cluster each key has its own slot.
                pipe = self.core.client.pipeline(transaction=False)
                for document_id in ids:
                    pipe.get(cache_key(AsyncRedisCache.document_key(document_id)))
                values = await pipe.execute()
            states = await self._states(ids)
            for document_id, raw in zip(ids, values, strict=True):
                if raw is None or is_not_kept(raw):
                    continue  # expired since the scan, or the mark of an unfinished document
                why = stale_cache(cached_updated_at(raw), states.get(document_id))
                if why is None:
                    continue
                done = None
                if self.repair:
                    gone = await self.store.cache.invalidate_document(document_id)
                    done = "deleted" if gone else "not deleted: Redis failed"
                self._found("cache_stale", document_id, why, done)

    # -- 7. progress keys --------------------------------------------------------------------------

    async def progress_keys(self) -> None:
        """Progress of documents that are gone, or finished while the key says otherwise."""
        async for keys in self._scan(redis_key("progress", "*")):
            ids = [int(m.group(1)) for m in map(_PROGRESS.fullmatch, keys) if m]
            if not ids:
                continue
            replies = await self._progress_and_ttl(ids)
            states = await self._states(ids)
            for document_id, (percent, stage), ttl in zip(
                ids, replies[::2], replies[1::2], strict=True
            ):
                why = stale_progress(percent, stage, int(ttl), states.get(document_id))
                if why is None:
                    continue
                if self.repair:
                    await self.store.progress.clear(document_id)
                self._found("progress_stale", document_id, why, "deleted" if self.repair else None)

    async def _progress_and_ttl(self, ids: list[int]) -> list[Any]:
        """[percent, stage] and milliseconds to live of each document's progress, flat, in one
        round trip."""
        with self.core.errors():
            pipe = self.core.client.pipeline(transaction=False)
            for document_id in ids:
                pipe.hmget(progress_key(document_id), ["percent", "stage"])
                pipe.pttl(progress_key(document_id))
            return list(await pipe.execute())

    # -- plumbing ----------------------------------------------------------------------------------

    def _found(
        self,
        kind: FindingKind,
        document_id: int | None,
        detail: str,
        repair: str | None = None,
        subject: str | None = None,
    ) -> None:
        subject = subject or (f"document {document_id}" if document_id is not None else "-")
        finding = Finding(
            kind=kind, subject=subject, document_id=document_id, detail=detail, repair=repair
        )
        self.log.add(finding)

    async def _states(self, ids: Sequence[int]) -> dict[int, DocumentState]:
        if not ids:
            return {}
        rows = await self.db.all(
            "doctor_document_states", {"ids": sorted(set(ids)), "grace": self.grace}
        )
        return {row[0]: DocumentState(row[1], row[2], row[3]) for row in rows}

    async def _stream(
        self, key: str
    ) -> AsyncIterator[list[tuple[str, int | None, dict[str, str]]]]:
        """A stream's entries, a page at a time: (entry id, document id or None, fields)."""
        start = "-"
        while True:
            with self.core.errors():
                entries = await self.core.client.xrange(key, min=start, max="+", count=self.batch)
            if not entries:
                return
            page = []
            for entry_id, raw in cast("list[tuple[bytes, Any]]", entries):
                fields = entry_fields(raw, errors="replace")
                page.append((as_text(entry_id), listed_document_id(fields), fields))
            yield page
            if len(entries) < self.batch:
                return
            start = "(" + page[-1][0]

    async def _scan(self, pattern: str) -> AsyncIterator[list[str]]:
        """Keys matching `pattern`, up to a batch at a time (a key may come twice); on a
        cluster, every primary's (redis-py's `scan_iter` goes through them)."""
        page: list[str] = []
        with self.core.errors():
            async for key in self.core.client.scan_iter(match=pattern, count=self.batch):
                page.append(as_text(key))
                if len(page) >= self.batch:
                    yield page
                    page = []
        if page:
            yield page

    async def _note_queued(self, ids: list[int]) -> None:
        with self.core.errors():
            pipe = self.core.client.pipeline(transaction=False)
            pipe.sadd(self._scratch, *ids)
            pipe.pexpire(self._scratch, SCRATCH_TTL_MS)
            await pipe.execute()

    async def _drop_scratch(self) -> None:
        # When Redis is gone, or refuses the delete (MISCONF, an ACL), the set expires by
        # itself: the report is what matters.
        await self.core.fail_open(
            lambda: self.core.client.delete(self._scratch), lambda _: 0, also_refused=True
        )


async def run(
    store: AsyncStoreParts,
    *,
    repair: bool = False,
    grace: float = DEFAULT_GRACE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_finding: Callable[[Finding], None] | None = None,
) -> DoctorReport:
    """Audit `store` (and with `repair` fix what is safe); `on_finding` sees each finding."""
    doctor = AsyncDoctor(
        store, repair=repair, grace=grace, batch_size=batch_size, on_finding=on_finding
    )
    return await doctor.run()


async def _next(items: AsyncIterator[T]) -> T | None:
    try:
        return await items.__anext__()
    except StopAsyncIteration:
        return None


__all__ = ["AsyncDoctor", "AsyncStoreParts", "run"]
