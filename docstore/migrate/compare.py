"""Legacy task against document: the fields that differ, and the conflicts of a catch-up run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from docstore.migrate.fingerprint import text_md5
from docstore.migrate.legacy_records import LegacyDocument

DELETED_IN_DOCSTORE = "deleted in docstore since the migration wrote it"
CHANGED_IN_DOCSTORE = "changed in docstore since the migration wrote it"
UNRECORDED = "migrated before the migration ledger existed (0004) and differs from Redis"


class MigratedDocument(BaseModel):
    """A legacy task's document (if any) and ledger state, with the columns verify compares."""

    legacy_task_id: str
    present: bool
    recorded: bool  # the ledger holds what the migration wrote
    changed_in_docstore: bool  # recorded, and the document (if any) no longer holds it
    ledger_source_md5: bytes | None  # digest of the legacy task the ledger last took
    kept_docstore_at: datetime | None  # when the operator kept docstore's version (a conflict)
    user_email: str | None
    filename: str | None
    s3_key: str | None
    status: str | None
    result_md5: str | None
    error_message: str | None
    page_count: int | None
    extraction_time_seconds: float | None
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None


class DocstoreVersion(BaseModel):
    """A document as docstore holds it, for a conflict listing (the text cut short)."""

    legacy_task_id: str
    user_email: str
    filename: str
    s3_key: str
    status: str
    result_text: str | None
    result_length: int | None
    result_md5: str | None
    error_message: str | None
    page_count: int | None
    extraction_time_seconds: float | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    worker_id: str | None
    attempts: int

    def listing(self) -> dict[str, Any]:
        """JSON-ready, without the task id (the listing names it)."""
        return self.model_dump(mode="json", exclude={"legacy_task_id"})


@dataclass(frozen=True, slots=True)
class MigrationConflict:
    """A task changed in Redis whose document docstore changed too: left alone, listed."""

    key: str
    task_id: str
    reason: str
    legacy: dict[str, Any]
    docstore: dict[str, Any] | None  # None: the document was deleted


def differing_fields(doc: LegacyDocument, row: MigratedDocument) -> tuple[str, ...]:
    """Names of the columns where `row` does not hold what `doc` says."""
    expected = {
        "user_email": doc.user_email.lower(),
        "filename": doc.filename,
        "s3_key": doc.s3_key,
        "status": doc.status,
        "result_text": text_md5(doc.result_text),
        "error_message": doc.error_message,
        "page_count": doc.page_count,
        "extraction_time_seconds": doc.extraction_time_seconds,
        "started_at": doc.started_at,
        "completed_at": doc.completed_at,
    }
    actual = row.model_dump()
    actual["result_text"] = row.result_md5
    names = [name for name, value in expected.items() if actual[name] != value]
    # Without a legacy created_at the migration used its own clock: nothing to compare.
    if doc.created_at is not None and row.created_at != doc.created_at:
        names.append("created_at")
    return tuple(names)
