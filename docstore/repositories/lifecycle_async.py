"""The processing lifecycle of a document, enforced in SQL.

    PENDING ──claim──▶ PROCESSING ──mark_completed──▶ COMPLETED
       ▲                 │  │ ▲
       │                 │  │ └─heartbeat (same worker, lease running)
       └─mark_failed(retry, attempts left) / requeue_expired (lease ran out, attempts left)
                         └──mark_failed / requeue_expired (no attempts left)──▶ FAILED
    PENDING or PROCESSING ──cancel──▶ CANCELLED (the worker's next call raises `Cancelled`)

Each change is one conditional UPDATE whose WHERE clause is the rule (status, worker, running
lease), never a read followed by a write. When it touches no row, a cheap read says why:
`NotFound`, or `InvalidTransition` with the document unchanged.

Every step starts from PENDING or PROCESSING, and the cache keeps finished documents only
(`store.get_document`): no step has a cached copy to drop, so none of them talks to Redis.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from docstore.errors import Cancelled, InvalidInput, InvalidTransition, NotFound
from docstore.models import CompletedResult, DocumentAttempt, DocumentResponse, DocumentSummary
from docstore.postgres.executor_async import AsyncDatabase, Connection
from docstore.repositories.capped_claims import CAPPED_CLAIM_TRIES, SkipUser
from docstore.rules import (
    ERROR_MESSAGE_LENGTH,
    Checker,
    Flag,
    Instant,
    LeaseSeconds,
    PositiveInt,
    RowId,
    Seconds,
    WorkerId,
    checked_limit,
    clean_text,
    parse_input,
)

DEFAULT_LEASE_SECONDS = 300.0
# A failed attempt's retry waits base * 2^(attempt - 1) seconds, at most the cap, 50-100% of it.
DEFAULT_BACKOFF_BASE = 10.0
DEFAULT_BACKOFF_CAP = 3600.0

_document_id: Checker[int] = Checker(RowId, "document_id")
_worker_id: Checker[str] = Checker(WorkerId, "worker_id")
_lease_seconds: Checker[float] = Checker(LeaseSeconds, "lease_seconds")
_pending_for: Checker[float] = Checker(Seconds, "pending_for")
_backoff: Checker[float] = Checker(Seconds, "backoff")
_cap: Checker[int] = Checker(PositiveInt, "max_processing_per_user")
_retry: Checker[bool] = Checker(Flag, "retry")
_queued_before: Checker[datetime | None] = Checker(Instant | None, "queued_before")


def _error_message(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInput("error_message must be a string", field="error_message")
    try:
        return ERROR_MESSAGE_LENGTH(clean_text(value))
    except ValueError as exc:
        raise InvalidInput(f"error_message: {exc}", field="error_message") from None


def _lease_params(document_id: int, worker_id: str, lease_seconds: float) -> dict[str, object]:
    """Checked parameters of the statements that take or extend a lease."""
    return {
        "document_id": _document_id(document_id),
        "worker_id": _worker_id(worker_id),
        "lease_seconds": _lease_seconds(lease_seconds),
    }


def _first_column(rows: list[tuple[Any, ...]]) -> list[int]:
    """The ids a statement returning `id` rows wrote."""
    return [row[0] for row in rows]


class AsyncDocumentLifecycle:
    """Claim, heartbeat, complete, fail and requeue documents (`store.lifecycle`).

    Every method takes an optional `conn` to run inside the caller's transaction. Each changes
    only unfinished documents, of which the cache holds no copy: nothing is told to the cache.
    """

    def __init__(
        self,
        db: AsyncDatabase,
        *,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        backoff_cap: float = DEFAULT_BACKOFF_CAP,
        max_processing_per_user: int | None = None,
    ) -> None:
        self.db = db
        self.backoff_base = float(_backoff(backoff_base))
        self.backoff_cap = float(_backoff(backoff_cap))
        self.max_processing_per_user = (
            None if max_processing_per_user is None else _cap(max_processing_per_user)
        )

    async def claim_next(
        self,
        worker_id: str,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        conn: Connection | None = None,
    ) -> DocumentResponse | None:
        """Take the next PENDING document that is due for `worker_id`, or None when there is
        none: in fair turns across users (a user who submits 10,000 documents does not make the
        others wait behind them), each user's own documents oldest first; with
        `max_processing_per_user`, users holding that many PROCESSING documents are skipped.

        Concurrent workers never get the same document (FOR UPDATE SKIP LOCKED); without the cap
        the cost is two index probes, whatever the backlog. With the cap, one claim of a user
        runs at a time (a transaction lock, skipped rather than waited for), so claims at the
        same instant cannot pass it together; a capped user's waiting documents cost a filter
        each, and after three users skipped in a row the answer is None.
        """
        params: dict[str, Any] = {
            "worker_id": _worker_id(worker_id),
            "lease_seconds": _lease_seconds(lease_seconds),
        }
        if self.max_processing_per_user is None:
            return await self.db.one("claim_next_document", params, DocumentResponse, conn)
        return await self._claim_under_cap(params, conn)

    async def _claim_under_cap(
        self, params: dict[str, Any], conn: Connection | None
    ) -> DocumentResponse | None:
        """claim_next with `max_processing_per_user`: a candidate, its user's lock, then the
        claim if the user is still under the cap. A user whose lock another claim holds, or
        who reached the cap meanwhile, is skipped: that try is rolled back (its row and lock
        let go) and the next user's candidate is tried, a few times at most."""
        cap = self.max_processing_per_user
        skipped: list[int] = []
        for _ in range(CAPPED_CLAIM_TRIES):
            try:
                async with self.db.transaction(conn) as c:
                    if conn is None:  # a caller's transaction keeps its own level
                        await self.db.execute("read_committed", {}, c)
                    candidate = {"max_processing": cap, "exclude_users": skipped}
                    found = await self.db.one("claim_candidate", candidate, conn=c)
                    if found is None:
                        return None
                    document_id, user_id = found
                    if not await self.db.value("lock_user_claims", {"user_id": user_id}, c):
                        raise SkipUser(user_id)
                    claim = {**params, "max_processing": cap, "document_id": document_id}
                    claimed = await self.db.one("claim_document", claim, DocumentResponse, c)
                    if claimed is None:  # a claim at the same instant took its last place
                        raise SkipUser(user_id)
                    return claimed
            except SkipUser as skip:
                skipped.append(skip.user_id)
        return None

    async def claim(
        self,
        document_id: int,
        worker_id: str,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        conn: Connection | None = None,
    ) -> DocumentResponse:
        """Take this document for `worker_id` if it is PENDING (`InvalidTransition` otherwise);
        for consumers of a queue that may deliver a document twice."""
        # The cap is not asked here (documented): the caller named the document.
        params = {**_lease_params(document_id, worker_id, lease_seconds), "max_processing": None}
        document = await self.db.one("claim_document", params, DocumentResponse, conn)
        return document or await self._refused(document_id, "claim", worker_id, conn)

    async def heartbeat(
        self,
        document_id: int,
        worker_id: str,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        conn: Connection | None = None,
    ) -> DocumentResponse:
        """Extend the lease of `worker_id` to `lease_seconds` from now.

        `InvalidTransition` when the worker no longer holds a running lease: stop working.
        """
        params = _lease_params(document_id, worker_id, lease_seconds)
        document = await self.db.one("extend_document_lease", params, DocumentResponse, conn)
        return document or await self._refused(document_id, "heartbeat", worker_id, conn)

    async def mark_completed(
        self,
        document_id: int,
        worker_id: str,
        result_text: str,
        page_count: int | None = None,
        extraction_time_seconds: float | None = None,
        conn: Connection | None = None,
    ) -> DocumentResponse:
        """Store the result of the worker holding the document: COMPLETED.

        NUL bytes are stripped from `result_text`; only its first 200,000 characters are
        indexed for search. `InvalidTransition` when the worker's lease is gone.
        """
        result = parse_input(
            CompletedResult,
            {
                "result_text": result_text,
                "page_count": page_count,
                "extraction_time_seconds": extraction_time_seconds,
            },
        )
        params = {
            "document_id": _document_id(document_id),
            "worker_id": _worker_id(worker_id),
            **result.model_dump(),
        }
        # The statement does not send the text back: it is what we just wrote.
        summary = await self.db.one("complete_document", params, DocumentSummary, conn)
        if summary is None:
            return await self._refused(document_id, "complete", worker_id, conn)
        return DocumentResponse.model_validate(
            {**summary.__dict__, "result_text": result.result_text}
        )

    async def mark_failed(
        self,
        document_id: int,
        worker_id: str,
        error_message: str,
        retry: bool = True,
        conn: Connection | None = None,
    ) -> DocumentResponse:
        """Record the failure of the worker holding the document.

        With `retry` and attempts left it goes back to PENDING, due again after an exponential
        backoff with jitter (`next_attempt_at`), otherwise to FAILED (with `completed_at`); the
        attempt is kept in its history (`attempts`). `InvalidTransition` when the worker's
        lease is gone.
        """
        params = {
            "document_id": _document_id(document_id),
            "worker_id": _worker_id(worker_id),
            "error_message": _error_message(error_message),
            "retry": _retry(retry),
            **self._backoff_params(),
        }
        document = await self.db.one("fail_document", params, DocumentResponse, conn)
        return document or await self._refused(document_id, "fail", worker_id, conn)

    async def cancel(self, document_id: int, conn: Connection | None = None) -> DocumentResponse:
        """Cancel a PENDING or PROCESSING document: CANCELLED, never processed, and its worker's
        next heartbeat, completion or failure is refused (`Cancelled`). Cancelling a cancelled
        document returns it unchanged; a COMPLETED or FAILED one raises `InvalidTransition`."""
        params = {"document_id": _document_id(document_id)}
        document = await self.db.one("cancel_document", params, DocumentResponse, conn)
        if document is not None:
            return document
        current = await self.db.one("get_document", params, DocumentResponse, conn)
        if current is None:
            raise NotFound(f"document {document_id} does not exist")
        if current.status == "CANCELLED":
            return current
        raise InvalidTransition(f"cannot cancel document {document_id}: it is {current.status}")

    async def requeue_expired(
        self, limit: int = 1000, conn: Connection | None = None
    ) -> list[DocumentResponse]:
        """Take back up to `limit` documents whose lease ran out (their worker died): PENDING
        (due after the same backoff as a failure) while attempts remain, FAILED after the last.
        Returns them."""
        params = {"limit": checked_limit(limit, 10_000), **self._backoff_params()}
        return await self.db.all("requeue_expired_documents", params, DocumentResponse, conn)

    async def promote_due_retries(
        self, limit: int = 1000, conn: Connection | None = None
    ) -> list[int]:
        """Ids of up to `limit` documents whose retry is due, now plain PENDING (no longer
        waiting): the caller enqueues them; concurrent callers never take the same ones."""
        params = {"limit": checked_limit(limit, 10_000)}
        rows = await self.db.all("promote_due_retries", params, conn=conn)
        return _first_column(rows)

    async def attempts(
        self, document_id: int, conn: Connection | None = None
    ) -> list[DocumentAttempt]:
        """The document's finished attempts, first first: worker, start, end, outcome, error."""
        params = {"document_id": _document_id(document_id)}
        return await self.db.all("list_document_attempts", params, DocumentAttempt, conn)

    def _backoff_params(self) -> dict[str, float]:
        return {"backoff_base": self.backoff_base, "backoff_cap": self.backoff_cap}

    async def take_unqueued_pending(
        self,
        pending_for: float,
        queued_before: datetime | None,
        limit: int = 1000,
        conn: Connection | None = None,
    ) -> list[int]:
        """Ids of up to `limit` documents PENDING and unchanged for `pending_for` seconds (and,
        when given, since before `queued_before`), marked as just re-enqueued: the caller
        enqueues them, and concurrent callers never take the same ones."""
        params = {
            "pending_for": float(_pending_for(pending_for)),
            "queued_before": _queued_before(queued_before),
            "limit": checked_limit(limit, 10_000),
        }
        rows = await self.db.all("touch_stale_pending_documents", params, conn=conn)
        return _first_column(rows)

    async def _refused(
        self, document_id: int, action: str, worker_id: str, conn: Connection | None
    ) -> DocumentResponse:
        """Raise why the conditional UPDATE for `action` touched no row."""
        rows = await self.db.all("get_document_state", {"document_id": document_id}, conn=conn)
        if not rows:
            raise NotFound(f"document {document_id} does not exist")
        status, holder, lease_running, not_before = rows[0]
        if status == "CANCELLED":
            raise Cancelled(f"cannot {action} document {document_id}: it was cancelled")
        if action == "claim" and status == "PENDING" and not_before is not None:
            reason = f"its next attempt is due at {not_before.isoformat()}"
        elif action == "claim":
            reason = f"it is {status}, not PENDING"
        elif status != "PROCESSING":
            reason = f"it is {status}, not PROCESSING"
        elif holder != worker_id:
            reason = f"worker {holder!r} holds it"
        elif not lease_running:
            reason = "the worker's lease expired"
        else:  # pragma: no cover - the UPDATE would have matched; a concurrent change won
            reason = "it changed meanwhile"
        raise InvalidTransition(
            f"cannot {action} document {document_id} for worker {worker_id!r}: {reason}"
        )


__all__ = [
    "DEFAULT_BACKOFF_BASE",
    "DEFAULT_BACKOFF_CAP",
    "DEFAULT_LEASE_SECONDS",
    "AsyncDocumentLifecycle",
]
