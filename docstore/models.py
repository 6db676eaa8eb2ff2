"""Pydantic models in and out of the repositories, with the names services already use.

Input models (`UserCreate`, `DocumentCreate`, ...) validate what a client sends: NUL bytes are
stripped from text, lone surrogates and out-of-range values are refused. Output models map rows
(`from_attributes=True`) and carry timezone-aware UTC timestamps.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from docstore.rules import (
    Email,
    Filename,
    IdempotencyKey,
    NonNegativeFloat,
    NonNegativeInt,
    RowId,
    S3Key,
    Sha256Hex,
    TaskId,
    Text,
    UtcDatetime,
)

DocumentStatus = Literal["PENDING", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]
DOCUMENT_STATUSES: tuple[DocumentStatus, ...] = (
    "PENDING",
    "PROCESSING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
)
# Statuses a document never leaves.
FINISHED_STATUSES: tuple[DocumentStatus, ...] = ("COMPLETED", "FAILED", "CANCELLED")
# The others: waiting for a worker, or with one.
UNFINISHED_STATUSES: tuple[DocumentStatus, ...] = tuple(
    status for status in DOCUMENT_STATUSES if status not in FINISHED_STATUSES
)

# Instances are trusted as built (assignments are validated too); `model_construct` opts out.
_INPUT = ConfigDict(extra="forbid", from_attributes=True, validate_assignment=True)
_OUTPUT = ConfigDict(from_attributes=True)


class UserCreate(BaseModel):
    """A new user; the API key is generated, never supplied."""

    model_config = _INPUT

    email: Email


class UserUpdate(BaseModel):
    """Changes to a user; fields left out (or None) stay as they are."""

    model_config = _INPUT

    email: Email | None = None


class UserResponse(BaseModel):
    """A user as stored (the key digest never leaves the database)."""

    model_config = _OUTPUT

    id: int
    email: str
    has_api_key: bool
    api_key_last_used_at: UtcDatetime | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class UserWithApiKey(BaseModel):
    """A user and its new API key: the only time the key is shown."""

    model_config = _OUTPUT

    user: UserResponse
    api_key: str = Field(repr=False)


class UserListResponse(BaseModel):
    """One page of users and the cursor of the next page (None on the last)."""

    model_config = _OUTPUT

    items: list[UserResponse]
    next_cursor: str | None


class DocumentCreate(BaseModel):
    """A new document, PENDING until a worker claims it."""

    model_config = _INPUT

    user_id: RowId
    filename: Filename
    s3_key: S3Key
    max_attempts: Annotated[int, Field(strict=True, ge=1, le=100)] = 3
    legacy_task_id: TaskId | None = None
    # The same key from the same user is the same document (`Conflict` from `create`).
    idempotency_key: IdempotencyKey | None = None
    content_sha256: Sha256Hex | None = None


class DocumentUpdate(BaseModel):
    """The fields a client may change; fields left out (or None) stay as they are."""

    model_config = _INPUT

    filename: Filename | None = None


class DocumentSummary(BaseModel):
    """A document without its extracted text (listings stay small whatever the texts weigh)."""

    model_config = _OUTPUT

    id: int
    user_id: int
    filename: str
    s3_key: str
    status: DocumentStatus
    error_message: str | None
    page_count: int | None
    extraction_time_seconds: float | None
    attempts: int
    max_attempts: int
    worker_id: str | None
    lease_expires_at: UtcDatetime | None
    # PENDING after a failed attempt: not handed out before this time (None: due now).
    next_attempt_at: UtcDatetime | None
    legacy_task_id: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    started_at: UtcDatetime | None
    completed_at: UtcDatetime | None


class DocumentResponse(DocumentSummary):
    """A document with its extracted text (NUL bytes removed)."""

    result_text: str | None


class SubmittedDocument(DocumentResponse):
    """A document found under an idempotency key, with the digest of its bytes."""

    content_sha256: str | None


class DocumentWithUser(DocumentResponse):
    """A document and its owner, read in one query."""

    user: UserResponse


class UserWithDocuments(UserResponse):
    """A user and its newest documents (summaries), read in one query."""

    documents: list[DocumentSummary]


class DocumentListResponse(BaseModel):
    """One page of a user's documents, newest first, and the cursor of the next page."""

    model_config = _OUTPUT

    items: list[DocumentSummary]
    next_cursor: str | None


class SearchHit(DocumentSummary):
    """A matching document, its rank and a snippet with matches wrapped in <mark></mark>.

    The snippet is document text, not HTML-escaped: escape it before rendering as HTML.
    """

    rank: float
    snippet: str


class SearchResponse(BaseModel):
    """One page of search hits, best first, and the cursor of the next page."""

    model_config = _OUTPUT

    items: list[SearchHit]
    next_cursor: str | None


AttemptOutcome = Literal["completed", "retrying", "failed", "expired", "cancelled"]


class DocumentAttempt(BaseModel):
    """One finished attempt at a document: who, from when to when, how it ended and why."""

    model_config = _OUTPUT

    attempt: int
    worker_id: str
    started_at: UtcDatetime
    ended_at: UtcDatetime
    outcome: AttemptOutcome
    error_message: str | None


class CompletedResult(BaseModel):
    """What a worker reports when a document is done (validated before the UPDATE)."""

    model_config = ConfigDict(extra="forbid")

    result_text: Text
    page_count: NonNegativeInt | None = None
    extraction_time_seconds: NonNegativeFloat | None = None


__all__ = [
    "DOCUMENT_STATUSES",
    "FINISHED_STATUSES",
    "UNFINISHED_STATUSES",
    "AttemptOutcome",
    "CompletedResult",
    "DocumentAttempt",
    "DocumentCreate",
    "DocumentListResponse",
    "DocumentResponse",
    "DocumentStatus",
    "DocumentSummary",
    "DocumentUpdate",
    "DocumentWithUser",
    "SearchHit",
    "SearchResponse",
    "SubmittedDocument",
    "UserCreate",
    "UserListResponse",
    "UserResponse",
    "UserUpdate",
    "UserWithApiKey",
    "UserWithDocuments",
]
