# Generated from docstore/repositories/documents_async.py by tools/async_to_sync.py:
# edit that file, then run the script (CI fails when this file is stale).
"""`DocumentRepo`: documents, their keyset listing and full-text search (`store.documents`).

The processing lifecycle (claim, heartbeat, complete, fail, requeue) is its own object,
`DocumentLifecycle` (`store.lifecycle`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timezone

from docstore.errors import InvalidInput, NotFound
from docstore.models import (
    DOCUMENT_STATUSES,
    DocumentCreate,
    DocumentListResponse,
    DocumentResponse,
    DocumentStatus,
    DocumentSummary,
    DocumentUpdate,
    DocumentWithUser,
    SearchHit,
    SearchResponse,
    SubmittedDocument,
)
from docstore.postgres.executor import Connection, Database
from docstore.repositories.changes import DocumentChanges
from docstore.repositories.pagination import (
    DocumentPageCursor,
    SearchPageCursor,
    decode_cursor,
    keyset_page,
)
from docstore.repositories.search_query import collapse_negation_runs
from docstore.rules import (
    MAX_BIGINT,
    MAX_PAGE_SIZE,
    MAX_SEARCH_PAGE_SIZE,
    SEARCH_QUERY_LENGTH,
    Checker,
    IdempotencyKey,
    PositiveSeconds,
    RowId,
    StoredKey,
    TaskId,
    Text,
    checked_limit,
    clean_text,
    parse_input,
)

# Rows per INSERT statement in create_many: one round trip each, all in one transaction.
INSERT_BATCH_SIZE = 1000

_user_id: Checker[int] = Checker(RowId, "user_id")
_document_id: Checker[int] = Checker(RowId, "document_id")
_task_id: Checker[str] = Checker(TaskId, "task_id")
_idempotency_key: Checker[str] = Checker(IdempotencyKey, "idempotency_key")
# A key as stored (maybe legacy, maybe odd): looked up as is, only what PostgreSQL cannot take
# is refused.
_stored_key: Checker[str] = Checker(StoredKey, "s3_key")
_retry_in: Checker[float] = Checker(PositiveSeconds, "retry_in")
_error: Checker[str] = Checker(Text, "error")
_FIRST_PAGE = (datetime.max.replace(tzinfo=timezone.utc), MAX_BIGINT)


@contextmanager
def _unknown_user_check() -> Iterator[None]:
    """Name the user in the error when the foreign key refuses a document."""
    try:
        yield
    except InvalidInput as exc:
        if exc.constraint != "documents_user_id_fkey":
            raise
        raise InvalidInput(
            "user_id: no user has this id", field="user_id", constraint=exc.constraint
        ) from exc


def _search_query(query: object) -> str:
    if not isinstance(query, str):
        raise InvalidInput("query must be a string", field="query")
    try:
        checked = SEARCH_QUERY_LENGTH(clean_text(query).strip())
    except ValueError as exc:
        raise InvalidInput(f"query: {exc}", field="query") from None
    return collapse_negation_runs(checked)


@contextmanager
def _unparsable_query_check() -> Iterator[None]:
    """Name the query in the `InvalidInput` for a query PostgreSQL's tsquery parser cannot take:
    the last line of defence behind `collapse_negation_runs`."""
    try:
        yield
    except InvalidInput as exc:
        if exc.field != "query":  # not the parser's refusal (database_error names those)
            raise
        raise InvalidInput(f"query: {exc.message}", field="query") from exc


def _statuses(status: object) -> list[str]:
    if status is None:
        return list(DOCUMENT_STATUSES)
    if status not in DOCUMENT_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(DOCUMENT_STATUSES)}", field="status")
    return [str(status)]


class DocumentRepo:
    """Create, read, change, list and search documents.

    Every method takes an optional `conn` to run inside the caller's transaction. Changes are
    told to `changes` (the store's cache invalidation) once they are committed.
    """

    def __init__(self, db: Database, changes: DocumentChanges | None = None) -> None:
        self.db = db
        self.changes = changes or DocumentChanges()

    def create(self, data: DocumentCreate, conn: Connection | None = None) -> DocumentResponse:
        """Create one PENDING document (`InvalidInput` when the user does not exist)."""
        document = parse_input(DocumentCreate, data)
        params = document.model_dump()
        with _unknown_user_check():
            row = self.db.one("insert_document", params, DocumentResponse, conn)
        assert row is not None  # INSERT ... RETURNING always returns the row
        return row

    def create_many(
        self, items: Sequence[DocumentCreate], conn: Connection | None = None
    ) -> list[DocumentResponse]:
        """Create documents in input order: all validated first, one statement per 1,000 rows,
        all in one transaction, so a bad item writes nothing."""
        if isinstance(items, str | bytes | Mapping) or not isinstance(items, Iterable):
            raise InvalidInput("items must be a sequence of documents", field="items")
        documents = [parse_input(DocumentCreate, item) for item in items]
        created: list[DocumentResponse] = []
        if not documents:
            return created
        # One batch is one statement, atomic by itself; several share one transaction.
        if len(documents) <= INSERT_BATCH_SIZE:
            connection: AbstractContextManager[Connection | None] = nullcontext(conn)
        else:
            connection = self.db.transaction(conn)
        with _unknown_user_check(), connection as c:
            for start in range(0, len(documents), INSERT_BATCH_SIZE):
                batch = documents[start : start + INSERT_BATCH_SIZE]
                params = {
                    "user_ids": [d.user_id for d in batch],
                    "filenames": [d.filename for d in batch],
                    "s3_keys": [d.s3_key for d in batch],
                    "max_attempts": [d.max_attempts for d in batch],
                    "legacy_task_ids": [d.legacy_task_id for d in batch],
                    "idempotency_keys": [d.idempotency_key for d in batch],
                    "content_sha256s": [d.content_sha256 for d in batch],
                }
                rows = self.db.all("insert_documents", params, DocumentResponse, c)
                # Identity values follow the insert's ORDER BY: sorting by id is input order.
                created.extend(sorted(rows, key=lambda row: row.id))
        return created

    def create_once(
        self, data: DocumentCreate, conn: Connection | None = None
    ) -> DocumentResponse | None:
        """Create one PENDING document unless the user has one under `data.idempotency_key`
        already: then nothing is written and None returned (also when another call races)."""
        document = parse_input(DocumentCreate, data)
        if document.idempotency_key is None:
            raise InvalidInput("idempotency_key is required", field="idempotency_key")
        with _unknown_user_check():
            return self.db.one(
                "insert_document_once", document.model_dump(), DocumentResponse, conn
            )

    def get_by_idempotency_key(
        self, user_id: int, idempotency_key: str, conn: Connection | None = None
    ) -> SubmittedDocument | None:
        """The user's document submitted under this key (with its bytes' digest), or None."""
        params = {
            "user_id": _user_id(user_id),
            "idempotency_key": _idempotency_key(idempotency_key),
        }
        return self.db.one("get_document_by_idempotency_key", params, SubmittedDocument, conn)

    def blob_is_recorded(self, s3_key: str, conn: Connection | None = None) -> bool:
        """Whether a document points at the blob stored under `s3_key`."""
        params = {"s3_key": _stored_key(s3_key)}
        return bool(self.db.value("blob_is_recorded", params, conn))

    def get(self, document_id: int, conn: Connection | None = None) -> DocumentResponse:
        """The document with this id, text included (`NotFound` otherwise)."""
        params = {"document_id": _document_id(document_id)}
        document = self.db.one("get_document", params, DocumentResponse, conn)
        if document is None:
            raise NotFound(f"document {document_id} does not exist")
        return document

    def get_by_task_id(
        self, task_id: str, conn: Connection | None = None
    ) -> DocumentResponse | None:
        """The document moved from the legacy Redis store under this task id, or None."""
        params = {"legacy_task_id": _task_id(task_id)}
        return self.db.one("get_document_by_task_id", params, DocumentResponse, conn)

    def get_with_user(self, document_id: int, conn: Connection | None = None) -> DocumentWithUser:
        """The document and its owner, in one query (`NotFound` otherwise)."""
        params = {"document_id": _document_id(document_id)}
        document = self.db.one("get_document_with_user", params, DocumentWithUser, conn)
        if document is None:
            raise NotFound(f"document {document_id} does not exist")
        return document

    def update(
        self, document_id: int, changes: DocumentUpdate, conn: Connection | None = None
    ) -> DocumentResponse:
        """Apply the client-editable `changes` (fields left None stay as they are)."""
        update = parse_input(DocumentUpdate, changes)
        params = {"document_id": _document_id(document_id), "filename": update.filename}
        document = self.changes.write(
            [document_id],
            conn,
            lambda: self.db.one("update_document", params, DocumentResponse, conn),
            lambda written: [] if written is None else [written.id],
        )
        if document is None:
            raise NotFound(f"document {document_id} does not exist")
        return document

    def delete(self, document_id: int, conn: Connection | None = None) -> None:
        """Delete the document (`NotFound` if absent); its blob goes on the list of blobs to
        delete (`store.purge_deleted_blobs`), in the same statement."""
        params = {"document_id": _document_id(document_id)}
        deleted = self.changes.write(
            [document_id],
            conn,
            lambda: self.db.one("delete_document", params, conn=conn),
            lambda row: [] if row is None else [document_id],
        )
        if deleted is None:
            raise NotFound(f"document {document_id} does not exist")

    # -- blobs of deleted documents ---------------------------------------------------------

    def take_due_blob_deletions(
        self, limit: int, retry_in: float, conn: Connection | None = None
    ) -> list[str]:
        """Keys of up to `limit` blobs of deleted documents due for deletion, each pushed back
        by `retry_in` seconds (doubled per earlier failure) in case this attempt fails too."""
        params = {"limit": checked_limit(limit, 10_000), "retry_in": _retry_in(retry_in)}
        rows = self.db.all("take_due_blob_deletions", params, conn=conn)
        return [row[0] for row in rows]

    def finish_blob_deletion(self, s3_key: str, conn: Connection | None = None) -> None:
        """The blob is gone: drop it from the list."""
        self.db.execute("finish_blob_deletion", {"s3_key": _stored_key(s3_key)}, conn)

    def note_blob_deletion_error(
        self, s3_key: str, error: str, conn: Connection | None = None
    ) -> None:
        """Keep why the blob's deletion failed (it is retried)."""
        params = {"s3_key": _stored_key(s3_key), "error": _error(error)[:10_000]}
        self.db.execute("note_blob_deletion_error", params, conn)

    def count_blob_deletions(self, conn: Connection | None = None) -> tuple[int, int]:
        """(waiting, failing at least once) blobs of deleted documents not yet deleted."""
        row = self.db.one("count_blob_deletions", {}, conn=conn)
        assert row is not None  # an aggregate always returns its row
        return int(row[0]), int(row[1])

    def list_for_user(
        self,
        user_id: int,
        status: DocumentStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        conn: Connection | None = None,
    ) -> DocumentListResponse:
        """One page of the user's documents, newest first, optionally of one status.

        Keyset pagination on (created_at, id): pass `next_cursor` back for the next page.
        Documents created meanwhile never shift a page (they sort before the first one).
        """
        before = _FIRST_PAGE
        if cursor is not None:
            position = decode_cursor(cursor, DocumentPageCursor)
            before = (position.created_at, position.id)
        page_size = checked_limit(limit, MAX_PAGE_SIZE)
        params = {
            "user_id": _user_id(user_id),
            "statuses": _statuses(status),
            "before_created_at": before[0],
            "before_id": before[1],
            "limit": page_size + 1,
        }
        rows = self.db.all("list_user_documents", params, DocumentSummary, conn)
        items, next_cursor = keyset_page(
            rows, page_size, lambda last: DocumentPageCursor(created_at=last.created_at, id=last.id)
        )
        return DocumentListResponse(items=items, next_cursor=next_cursor)

    def count_by_status(
        self, user_id: int, conn: Connection | None = None
    ) -> dict[DocumentStatus, int]:
        """How many documents the user has in each status (every status present, maybe 0)."""
        counts: dict[DocumentStatus, int] = dict.fromkeys(DOCUMENT_STATUSES, 0)
        params = {"user_id": _user_id(user_id)}
        rows = self.db.all("count_user_documents_by_status", params, conn=conn)
        for status, count in rows:
            counts[status] = count
        return counts

    def search(
        self,
        user_id: int,
        query: str,
        limit: int = 20,
        cursor: str | None = None,
        conn: Connection | None = None,
    ) -> SearchResponse:
        """The user's documents matching `query` (web-search syntax: words, "phrases", -not,
        or), best rank first, with a snippet each.

        Only the first 200,000 characters of a text are indexed and searched. Three or more
        `-` in a row count as one or two (same parity); a query PostgreSQL still cannot parse
        raises `InvalidInput`.
        """
        after_rank, after_id = float("inf"), MAX_BIGINT
        if cursor is not None:
            position = decode_cursor(cursor, SearchPageCursor)
            after_rank, after_id = position.rank, position.id
        page_size = checked_limit(limit, MAX_SEARCH_PAGE_SIZE)
        params = {
            "user_id": _user_id(user_id),
            "query": _search_query(query),
            "after_rank": after_rank,
            "after_id": after_id,
            "limit": page_size + 1,
        }
        with _unparsable_query_check():
            hits = self.db.all("search_documents", params, SearchHit, conn)
        items, next_cursor = keyset_page(
            hits, page_size, lambda last: SearchPageCursor(rank=last.rank, id=last.id)
        )
        return SearchResponse(items=items, next_cursor=next_cursor)


__all__ = ["DocumentRepo"]
